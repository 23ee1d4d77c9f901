"""Learning curves: every run's training statistics against environment steps.

The chart step draws one learning-curve chart per environment that has trained runs
(:func:`learning_curve_chart`; its file name comes from
:func:`mesaprobe.study.outputs.learning_curve_stem`) from the training table the collect
step wrote (:mod:`mesaprobe.analysis.training`): a panel per training statistic, one line
per run (its colour the agent's, as in every chart of the study), each point the mean over
a bin of consecutive updates, so a long run draws as about :data:`POINTS_PER_RUN` points.
The training reward of bandits and of the commitment game is the panel ``reward_per_step``.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from mesaprobe.analysis.chart_style import HEIGHT, WIDTH, agent_color
from mesaprobe.analysis.tables import read_table
from mesaprobe.analysis.training import TRAINING_COLUMNS, TRAINING_TABLE
from mesaprobe.errors import ArtifactError

#: About how many points a learning curve draws per run and statistic.
POINTS_PER_RUN = 100

#: Panels drawn first, where a run has them: the training reward (and regret) of acting agents,
#: the training loss of predictors; the other statistics follow in alphabetical order.
LEADING_STATISTICS = ("reward_per_step", "regret_per_step", "logloss_bits", "mse_per_dim")


def binned(rows: pl.DataFrame, points: int = POINTS_PER_RUN) -> pl.DataFrame:
    """Each run's statistics averaged over bins of consecutive updates, about ``points`` bins per
    run: value is the bin's mean, env_steps its last (a run of fewer updates keeps them all)."""
    updates = pl.col("update").max().over("run")
    bins = ((pl.col("update") - 1) * points // updates).alias("bin")
    return (
        rows.with_columns(bins)
        .group_by("agent", "run", "seed", "statistic", "bin", maintain_order=True)
        .agg(
            pl.col("env_steps").max(),
            pl.col("update").max(),
            pl.col("value").mean(),
        )
        .drop("bin")
    )


def learning_curve_chart(rows: pl.DataFrame, agents: list[str], title: str) -> alt.TopLevelMixin:
    """A panel per training statistic of ``rows`` (one environment's training table rows), one
    line per run, coloured by agent in the order of ``agents`` (the study's agents)."""
    found = set(rows["statistic"])
    statistics = [name for name in LEADING_STATISTICS if name in found]
    statistics += sorted(found - set(statistics))
    data = binned(rows)
    columns = 2 if len(statistics) > 1 else 1
    known = [agent for agent in agents if agent in set(data["agent"])]
    colours = known + sorted(set(data["agent"]) - set(known))
    base = alt.Chart(data).encode(
        x=alt.X("env_steps:Q", title="environment steps (training)"),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        color=agent_color(colours, legend=True),
        detail="run:N",
        tooltip=[
            alt.Tooltip("agent:N"),
            alt.Tooltip("seed:Q"),
            alt.Tooltip("update:Q", title="update (end of bin)"),
            alt.Tooltip("env_steps:Q", format=","),
            alt.Tooltip("statistic:N"),
            alt.Tooltip("value:Q", format=".4f", title="mean over the bin"),
        ],
    )
    return (
        base.mark_line(strokeWidth=1.5, opacity=0.85)
        .properties(width=WIDTH // columns - 30, height=HEIGHT // 2)
        .facet(
            facet=alt.Facet("statistic:N", title=None, sort=statistics, header=alt.Header(labelFontSize=12)),
            columns=columns,
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.TitleParams(
                text=title,
                subtitle=(
                    "one line per run (training seed); each point the mean over about "
                    f"1/{POINTS_PER_RUN} of its updates"
                ),
                anchor="start",
            )
        )
    )


def draw_learning_curve(tables_dir: Path, environment: str, agents: list[str]) -> alt.TopLevelMixin:
    """The learning-curve chart of ``environment`` from ``tables_dir``'s training table;
    ArtifactError if the table is missing, malformed or has no rows of the environment."""
    path = tables_dir / TRAINING_TABLE
    rows = read_table(path, TRAINING_COLUMNS).filter(pl.col("environment") == environment)
    if rows.height == 0:
        raise ArtifactError(path, f"no training history of environment {environment!r}")
    return learning_curve_chart(rows, agents, f"Training curves: {environment}")
