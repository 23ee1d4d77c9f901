"""Charts of the inside tables: what a frozen learner computes.

Drawn from ``inside.parquet`` (:func:`mesaprobe.analysis.inside.summarise`), one chart of
each kind an inside probe kind declares (its ``charts`` attribute) per (environment,
probe) that plays it, named ``<chart>_<environment>_<probe>``:

* ``readout_r2``: heat maps of the held-out R^2 of ridge read-outs, time step across,
  layer down, a column per statistic and a row per agent, each trained model above its
  untrained control (the same architecture at its initial weights);
* ``learning_rate``: the fitted effective learning rate alpha_n of a Rescorla-Wagner /
  Q-learning model per pull count n, one line per agent with its band, Bayes'
  1 / (n + a + b) dashed in black;
* ``choice_surprisal_bits``: bits per choice of each agent's choices under each fitted
  model (lower fits better), bars with intervals;
* ``sgd_regret``: the expected regret per step of a memoryless policy fine-tuned by SGD
  on each task's own pulls, against SGD steps, one line per agent (its in-context
  regret as a horizontal rule of the same colour);
* ``sgd_steps_to_match``: SGD steps the fine-tuned policy needs to reach each agent's
  in-context regret, bars with intervals.

Every value is the mean over seeds with the two-level (seeds x episode replicates)
bootstrap interval of the summary.  Each kind is an entry of :data:`INSIDE_CHARTS` that
carries its draw function and title, so adding an inside chart is one function here plus
one ``register`` line (and its name in the probe kind's ``charts``); the study names its
files (:func:`mesaprobe.study.outputs.chart_outputs`) and
:func:`mesaprobe.analysis.charts.make_charts` draws them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import altair as alt
import polars as pl

from mesaprobe.analysis.chart_style import WIDTH, agent_color, count_text, interval_tooltips, study_agents
from mesaprobe.registry import Registry


@dataclass  # not frozen: the registry sets its registered_name
class InsideChart:
    """One kind of inside chart: how it is drawn and the start of its title."""

    draw: Callable[[pl.DataFrame, float, str], alt.TopLevelMixin]
    """``draw(rows, confidence, title)``: the chart of one (environment, probe)'s inside rows."""
    title: str
    """Title prefix, followed by environment and probe."""


#: Inside chart kinds by name; an inside probe kind names its charts (its ``charts``) from these.
INSIDE_CHARTS: Registry[InsideChart] = Registry("inside chart")


def _interval_text(confidence: float) -> str:
    return f"{round(confidence * 100)}% interval"


def _tooltips(confidence: float) -> list[alt.Tooltip]:
    return [*interval_tooltips(confidence), alt.Tooltip("seeds:Q")]


def _subtitle(rows: pl.DataFrame, confidence: float) -> str:
    replicates = rows["replicates"].unique().to_list()
    return (
        f"mean over {count_text(rows['seeds'].unique().to_list())} seeds; bands/bars: {_interval_text(confidence)} "
        f"(two-level bootstrap over seeds and {max(replicates)} episode resamples per seed)"
    )


def readout_chart(rows: pl.DataFrame, confidence: float, title: str) -> alt.TopLevelMixin:
    """Heat maps of read-out R^2: step across, layer down; a column per statistic, a row per agent
    (trained, then untrained)."""
    data = rows.filter(pl.col("quantity").is_in(["readout_r2", "readout_r2_untrained"])).with_columns(
        model=pl.when(pl.col("quantity") == "readout_r2")
        .then(pl.col("agent"))
        .otherwise(pl.col("agent") + " (untrained)")
    )
    models = [
        name
        for agent in study_agents(data)
        for name in (agent, f"{agent} (untrained)")
        if name in set(data["model"])
    ]
    steps = int(data["index"].max())  # type: ignore[arg-type]
    cell_width = max(2, min(12, 240 // max(steps, 1)))
    return (
        alt.Chart(data.to_pandas())
        .mark_rect()
        .encode(
            x=alt.X(
                "index:O",
                title="time step",
                axis=alt.Axis(values=list(range(0, steps + 1, max(1, steps // 10)))),
            ),
            y=alt.Y("layer:N", title="layer"),
            color=alt.Color(
                "mean:Q",
                title="held-out R^2",
                scale=alt.Scale(domain=[0, 1], clamp=True, scheme="viridis"),
            ),
            tooltip=[
                "model:N",
                "target:N",
                "layer:N",
                alt.Tooltip("index:Q", title="step"),
                *_tooltips(confidence),
            ],
        )
        .properties(width=cell_width * steps, height=60)
        .facet(
            row=alt.Row("model:N", title=None, sort=models),
            column=alt.Column("target:N", title="statistic"),
        )
        .resolve_scale(y="independent")
        .properties(
            title=alt.TitleParams(
                title,
                subtitle=[
                    _subtitle(data, confidence).replace("bands/bars", "tooltips"),
                    "(untrained): the same architecture at its initial weights; steps where the "
                    "statistic does not vary (step 1) have no R^2",
                ],
            )
        )
    )


#: An agent whose fitted learning rate at n = 1 has an interval wider than this factor is left
#: out of the learning-rate chart: its choices do not determine the rate (e.g. random play).
UNDETERMINED_RATE_RATIO = 10.0


def learning_rate_chart(rows: pl.DataFrame, confidence: float, title: str) -> alt.TopLevelMixin:
    """Fitted learning rate per pull count, a line per agent with its band; Bayes dashed in black."""
    fitted = rows.filter((pl.col("quantity") == "learning_rate") & (pl.col("target") != "bayes"))
    first = fitted.filter(pl.col("index") == fitted["index"].min())
    undetermined = first.filter(
        pl.col("ci_high") > UNDETERMINED_RATE_RATIO * pl.col("ci_low").clip(lower_bound=1e-12)
    )["agent"].to_list()
    fitted = fitted.filter(~pl.col("agent").is_in(undetermined))
    bayes = (
        rows.filter((pl.col("quantity") == "learning_rate") & (pl.col("target") == "bayes"))
        .group_by("index")
        .agg(pl.col("mean").first())
        .sort("index")
    )
    agents = study_agents(fitted)
    y_scale = alt.Scale(type="log", domain=[1e-3, 1], clamp=True)
    base = alt.Chart(fitted.to_pandas()).encode(
        x=alt.X(
            "index:Q",
            title="pulls n of the arm (counting the pull learned from)",
            scale=alt.Scale(type="log"),
        ),
        color=agent_color(agents, legend=True),
    )
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("ci_low:Q", scale=y_scale), y2="ci_high:Q")
    line = base.mark_line().encode(
        y=alt.Y("mean:Q", title="effective learning rate alpha_n", scale=y_scale),
        tooltip=["agent:N", alt.Tooltip("index:Q", title="n"), *_tooltips(confidence)],
    )
    layers = [band, line]
    if bayes.height:
        layers.append(
            alt.Chart(bayes.to_pandas())
            .mark_line(color="black", strokeDash=[6, 3])
            .encode(
                x="index:Q",
                y=alt.Y("mean:Q", scale=y_scale),
                tooltip=[alt.Tooltip("mean:Q", title="Bayes 1/(n+a+b)", format=".3f")],
            )
        )
    notes = [_subtitle(fitted, confidence), "black dashed: Bayes 1 / (n + a + b)"]
    if undetermined:
        notes.append(
            f"left out, rate not determined by the choices (interval wider than x10): {', '.join(undetermined)}"
        )
    return alt.layer(*layers).properties(
        width=WIDTH, height=360, title=alt.TitleParams(title, subtitle=notes)
    )


def _bars(rows: pl.DataFrame, confidence: float, title: str, x_title: str, group: str, group_title: str):
    """Bars of ``mean`` per agent, grouped by ``group``, with interval whiskers."""
    agents = study_agents(rows)
    base = alt.Chart(rows.to_pandas()).encode(
        y=alt.Y("agent:N", title=None, sort=agents),
        color=agent_color(agents, legend=False),
    )
    bars = base.mark_bar().encode(
        x=alt.X("mean:Q", title=x_title),
        tooltip=["agent:N", f"{group}:N", *_tooltips(confidence)],
    )
    whiskers = base.mark_rule(color="black").encode(x="ci_low:Q", x2="ci_high:Q")
    return (
        (bars + whiskers)
        .properties(width=WIDTH // 2, height=alt.Step(18))
        .facet(row=alt.Row(f"{group}:N", title=group_title))
        .resolve_scale(y="independent")
        .properties(title=alt.TitleParams(title, subtitle=_subtitle(rows, confidence)))
    )


def choice_surprisal_chart(rows: pl.DataFrame, confidence: float, title: str) -> alt.TopLevelMixin:
    data = rows.filter(pl.col("quantity") == "choice_surprisal_bits")
    return _bars(
        data,
        confidence,
        title,
        "bits per choice (lower: the model explains the choices better)",
        "target",
        "fitted model",
    )


def sgd_regret_chart(rows: pl.DataFrame, confidence: float, title: str) -> alt.TopLevelMixin:
    """SGD regret curves, each agent's in-context regret as a rule of its colour.

    SGD from fresh weights plays the same tasks with the same luck whichever agent is probed
    (it depends on the held-out tasks only), so it is one black line; SGD from a memoryless
    agent's own weights (e.g. a Reptile meta-initialisation) is a dashed line in its colour.
    """
    curves = rows.filter(pl.col("quantity") == "sgd_regret")
    targets = rows.filter(pl.col("quantity") == "in_context_regret")
    agents = study_agents(rows)
    color = agent_color(agents, legend=True)
    fresh = curves.filter((pl.col("target") == "fresh_init") & (pl.col("agent") == study_agents(curves)[0]))
    own = curves.filter(pl.col("target") == "own_init")
    x = alt.X("index:Q", title="SGD steps on the task (one pull each)")
    y = alt.Y("mean:Q", title="expected regret per step")
    fresh_base = alt.Chart(fresh.to_pandas()).encode(x=x)
    layers = [
        fresh_base.mark_area(opacity=0.15, color="black").encode(y="ci_low:Q", y2="ci_high:Q"),
        fresh_base.mark_line(color="black").encode(
            y=y, tooltip=[alt.Tooltip("index:Q", title="SGD steps"), *_tooltips(confidence)]
        ),
    ]
    if own.height:
        own_base = alt.Chart(own.to_pandas()).encode(x=x, color=color)
        layers += [
            own_base.mark_area(opacity=0.15).encode(y="ci_low:Q", y2="ci_high:Q"),
            own_base.mark_line(strokeDash=[6, 3]).encode(
                y=y, tooltip=["agent:N", alt.Tooltip("index:Q", title="SGD steps"), *_tooltips(confidence)]
            ),
        ]
    layers.append(
        alt.Chart(targets.to_pandas())
        .mark_rule(strokeWidth=2, opacity=0.7)
        .encode(y="mean:Q", color=color, tooltip=["agent:N", *_tooltips(confidence)])
    )
    notes = [
        _subtitle(curves, confidence),
        "black: SGD from fresh weights; dashed: from the agent's own (memoryless) weights;",
        "horizontal rules: each agent's in-context regret on the same tasks",
    ]
    return alt.layer(*layers).properties(
        width=WIDTH, height=360, title=alt.TitleParams(title, subtitle=notes)
    )


def steps_to_match_chart(rows: pl.DataFrame, confidence: float, title: str) -> alt.TopLevelMixin:
    data = rows.filter(pl.col("quantity") == "sgd_steps_to_match")
    return _bars(
        data,
        confidence,
        title,
        "SGD steps to reach the agent's in-context regret",
        "target",
        "initial weights",
    )


INSIDE_CHARTS.register("readout_r2")(InsideChart(readout_chart, "Read-out R^2 of posterior statistics"))
INSIDE_CHARTS.register("learning_rate")(InsideChart(learning_rate_chart, "Fitted learning rate per pull"))
INSIDE_CHARTS.register("choice_surprisal_bits")(
    InsideChart(choice_surprisal_chart, "Choices under fitted learning models")
)
INSIDE_CHARTS.register("sgd_regret")(
    InsideChart(sgd_regret_chart, "In-weights SGD on each task vs in-context learning")
)
INSIDE_CHARTS.register("sgd_steps_to_match")(
    InsideChart(steps_to_match_chart, "SGD steps to match in-context learning")
)
