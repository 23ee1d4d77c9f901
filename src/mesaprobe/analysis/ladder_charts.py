"""Charts of the architecture ladder: what an architecture scores against what it carries and computes.

Drawn for studies with ``ladder_charts: true`` (:func:`mesaprobe.study.outputs.ladder_charts`
names them), from ``summary.parquet``: per (environment, probe), one point per architecture
at its cumulative regret (mean over seeds, with the summary's interval as a vertical bar)
against one of the summary's cost columns (:data:`mesaprobe.analysis.costs.MODEL_COST_COLUMNS`):

* ``ladder_state_floats_<environment>_<probe>``: numbers carried from one step to the next
  at the last step of an episode (hidden state, SSM state, fast weights, key/value cache);
* ``ladder_flops_per_step_<environment>_<probe>``: FLOPs of one step there.

The x axis is symmetric-logarithmic, so a memoryless model (no state) sits at 0 next to
models carrying thousands of numbers.  Baselines, which have no cost, are drawn as dashed
horizontal rules at their cumulative regret, in their colour, for reference.  Each point is
labelled with its agent; colours are the study's (:mod:`mesaprobe.analysis.chart_style`).
"""

from __future__ import annotations

import math
from pathlib import Path

import altair as alt
import polars as pl

from mesaprobe.analysis.chart_style import HEIGHT, WIDTH, agent_color, interval_tooltips, seeds_subtitle
from mesaprobe.analysis.costs import MODEL_COST_COLUMNS
from mesaprobe.analysis.tables import GROUP_COLUMNS, TABLE_FILES, read_table
from mesaprobe.errors import ArtifactError
from mesaprobe.study.outputs import LADDER_AXES, Chart

#: Axis titles of the cost axes.
AXIS_TITLES = {
    "state_floats": "numbers carried between steps at the last step (state floats, symlog scale)",
    "flops_per_step": "FLOPs of one step at the last step (2 x multiply-adds, symlog scale)",
}
#: Chart titles of the cost axes.
AXIS_NAMES = {"state_floats": "state size", "flops_per_step": "compute per step"}

#: Summary columns a ladder chart reads.
LADDER_COLUMNS: dict[str, pl.DataType] = {
    **GROUP_COLUMNS,
    "metric": pl.String(),
    "mean": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "seeds": pl.Int64(),
    "episodes": pl.Int64(),
    **MODEL_COST_COLUMNS,
}


def read_ladder_summary(tables_dir: str | Path) -> pl.DataFrame:
    """The summary's rows with their cost columns; ArtifactError if the table lacks them."""
    return read_table(Path(tables_dir) / TABLE_FILES["summary"], LADDER_COLUMNS)


def ladder_data(summary: pl.DataFrame, chart: Chart) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(architecture points, baseline rules) of one ladder chart: the cumulative-regret rows of
    its environment and probe, the architectures' with the cost of the chart's axis as ``cost``."""
    axis = chart.chart.removeprefix("ladder_")
    assert axis in LADDER_AXES, chart.chart
    rows = summary.filter(
        (pl.col("environment") == chart.environment)
        & (pl.col("probe") == chart.probe)
        & (pl.col("metric") == chart.family.cumulative_regret)
    )
    points = rows.filter(pl.col("agent_kind") == "architecture").with_columns(cost=pl.col(axis))
    rules = rows.filter(pl.col("agent_kind") == "baseline")
    return points, rules


def ladder_chart(
    tables_dir: str | Path,
    chart: Chart,
    agents: list[str],
    confidence: float,
    summary: pl.DataFrame | None = None,
) -> alt.TopLevelMixin:
    """The ladder chart ``chart`` (see the module docstring) from the study's summary.

    ArtifactError when the summary has no architecture row for it, or an architecture without
    its cost (a summary collected without the runs' frozen manifests).
    """
    summary = read_ladder_summary(tables_dir) if summary is None else summary
    points, rules = ladder_data(summary, chart)
    where = Path(tables_dir) / TABLE_FILES["summary"]
    if points.height == 0:
        raise ArtifactError(
            where, f"no architecture rows for environment {chart.environment!r}, probe {chart.probe!r}"
        )
    missing = points.filter(pl.col("cost").is_null())["agent"].to_list()
    if missing:
        axis = chart.chart.removeprefix("ladder_")
        raise ArtifactError(
            where, f"agent {missing[0]!r} has no {axis}; collect the study with its runs' frozen manifests"
        )
    axis = chart.chart.removeprefix("ladder_")
    metric = chart.family.cumulative_regret
    y_title = chart.family.chart_title(metric)
    largest = max(int(points["cost"].max()), 1)  # type: ignore[arg-type]
    ticks = [0, *(10**power for power in range(math.ceil(math.log10(largest)) + 1))]  # 0, 1, 10, ...
    x = alt.X(
        "cost:Q",
        title=AXIS_TITLES[axis],
        scale=alt.Scale(type="symlog", domain=[0, ticks[-1]]),
        axis=alt.Axis(values=ticks, labelExpr="format(datum.value, ',')"),
    )
    y = alt.Y("mean:Q", title=y_title)
    tooltips = [
        alt.Tooltip("agent:N"),
        alt.Tooltip("cost:Q", title=axis, format=","),
        alt.Tooltip("parameters:Q", format=","),
        *interval_tooltips(confidence),
        alt.Tooltip("seeds:Q"),
    ]
    base = alt.Chart(points)
    bars = base.mark_rule(strokeWidth=2).encode(
        x=x, y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q", color=agent_color(agents, legend=False)
    )
    dots = base.mark_point(filled=True, size=80).encode(
        x=x, y=y, color=agent_color(agents, legend=True), tooltip=tooltips
    )
    labels = base.mark_text(align="left", dx=7, dy=-7, fontSize=11).encode(
        x=x, y=y, text="agent:N", color=agent_color(agents, legend=False)
    )
    layers = [bars, dots, labels]
    if rules.height:
        reference = alt.Chart(rules)
        layers.insert(
            0,
            reference.mark_rule(strokeDash=[6, 3], opacity=0.7).encode(
                y="mean:Q",
                color=agent_color(agents, legend=True),
                tooltip=[alt.Tooltip("agent:N"), *interval_tooltips(confidence)],
            ),
        )
    subtitle = [
        seeds_subtitle(points, confidence),
        "dashed: baselines (no state or compute counted)" if rules.height else "architectures only",
    ]
    title = alt.TitleParams(
        text=f"{y_title} vs {AXIS_NAMES[axis]}: {chart.environment}, probe {chart.probe}",
        subtitle=subtitle,
        anchor="start",
    )
    return alt.layer(*layers).properties(width=WIDTH, height=HEIGHT, title=title)
