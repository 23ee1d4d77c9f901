"""The charts of a study's curve bands and summary, each built from the rows it draws.

* :func:`curve_chart`: a step metric's mean curve over seeds with its bootstrap band, one
  line per agent (architectures solid, baselines dashed): per-step regret (bandits:
  ``regret``, expected; sequence prediction: ``regret_bits`` against the Bayes-optimal
  predictor; regression: ``regret_mse`` against ridge) and cumulative regret
  (``cumulative_regret``, ``cumulative_regret_bits``, ``cumulative_regret_mse``);
* :func:`total_chart`: an episode metric, one bar per agent with its bootstrap interval,
  best first: the total per episode (``total_reward``, ``total_logloss_bits``,
  ``total_mse_per_dim``), or each metric of a per-episode family (the commitment game:
  ``success``, ``game_reward``, ``z_surprisal_bits``);
* :func:`trial_chart`: in trials of K episodes, the regret summed over each episode of the
  trial against its position 1..K, one line per agent with its band: falling when an agent
  learns across episodes (``tables/trial_episodes``);
* :func:`overview_chart`: every metric of a per-episode family across all environments
  of one probe (in a commitment study, success, reward and entropy of z per function
  and noise);
* :func:`sweep_chart`: the family total against a sweep on a log2 axis, one line per
  agent with its bootstrap band (each baseline drawn from its own rows at every point,
  whether or not it depends on the swept value), one panel per probe: against the
  task-pool size M of a task-pool sweep (:func:`transition_data`; the environment
  without a pool is the point marked ``∞`` at the right end, not joined to the line), so
  fresh-task and pool-task probes side by side show the memorisation gap; or against
  the memory window w of the ``window[w=...]`` probes (:func:`window_data`; the
  full-context adaptation probe is the point marked ``full``).

Titles and axis titles are the metric family's (:class:`mesaprobe.metrics.MetricFamily`);
colours, line styles and tooltips are the study's (:mod:`mesaprobe.analysis.chart_style`).
"""

from __future__ import annotations

import math

import altair as alt
import polars as pl

from mesaprobe.analysis.chart_style import (
    HEIGHT,
    WIDTH,
    agent_color,
    agent_dash,
    agent_kind_dash,
    agent_scale,
    interval_tooltips,
    seeds_subtitle,
    view_title,
)
from mesaprobe.metrics import REGRET_RATIO, MetricFamily, family_of_metric
from mesaprobe.study.sweeps import PoolSweep, WindowSweep


def curve_chart(
    bands: pl.DataFrame,
    metric: str,
    agents: list[str],
    confidence: float,
    log_steps: bool = False,
) -> alt.LayerChart:
    """Mean curve of the step metric ``metric`` with its bootstrap band, one line per agent.

    ``bands`` holds the curve-band rows of one (environment, probe);
    ``agents`` fixes the color of every agent in the study.  The y axis carries the
    metric family's title of ``metric``; ``log_steps`` draws the steps on a log scale.
    """
    family = family_of_metric(metric)
    y_title = family.step_titles[family.step_metrics.index(metric)]
    rows = bands.filter(pl.col("metric") == metric).sort("agent", "step")
    first = rows.row(0, named=True)
    data = rows.select("agent", "agent_kind", "step", "mean", "ci_low", "ci_high")
    x = alt.X("step:Q", title="step", scale=alt.Scale(nice=False, type="log" if log_steps else "linear"))
    band = (
        alt.Chart(data)
        .mark_area(opacity=0.2)
        .encode(
            x=x,
            y=alt.Y("ci_low:Q", title=y_title),
            y2="ci_high:Q",
            color=agent_color(agents, legend=False),
        )
    )
    line = (
        alt.Chart(data)
        .mark_line(strokeWidth=2)
        .encode(
            x=x,
            y=alt.Y("mean:Q", title=y_title),
            color=agent_color(agents, legend=True),
            strokeDash=agent_dash(agents),
            tooltip=[
                alt.Tooltip("agent:N"),
                alt.Tooltip("step:Q"),
                *interval_tooltips(confidence, digits=4),
            ],
        )
    )
    title = view_title(family, metric, first["environment"], first["probe"], seeds_subtitle(rows, confidence))
    # Independent legends: the lines' layer has the one agent legend, whose colour and dash (on
    # the same field) merge, so it shows each agent's line, not the faint bands.
    layered = alt.layer(band, line).resolve_legend(color="independent", strokeDash="independent")
    return layered.properties(width=WIDTH, height=HEIGHT, title=title)


def trial_chart(rows: pl.DataFrame, metric: str, agents: list[str], confidence: float) -> alt.LayerChart:
    """The trial-episode rows (``trial_episodes.parquet``) of one (environment, probe) and
    ``metric`` (e.g. ``episode_regret``) against the episode of the trial, one line per agent
    with its interval band."""
    rows = rows.filter(pl.col("metric") == metric).sort("agent", "episode_in_trial")
    first = rows.row(0, named=True)
    data = rows.select("agent", "agent_kind", "episode_in_trial", "mean", "ci_low", "ci_high")
    x = alt.X("episode_in_trial:Q", title="episode of the trial", scale=alt.Scale(nice=False))
    y_title = f"{metric.replace('_', ' ')} (summed over the episode)"
    band = (
        alt.Chart(data)
        .mark_area(opacity=0.2)
        .encode(
            x=x, y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q", color=agent_color(agents, legend=False)
        )
    )
    line = (
        alt.Chart(data)
        .mark_line(strokeWidth=2, point=True)
        .encode(
            x=x,
            y=alt.Y("mean:Q", title=y_title),
            color=agent_color(agents, legend=True),
            strokeDash=agent_dash(agents),
            tooltip=[
                alt.Tooltip("agent:N"),
                alt.Tooltip("episode_in_trial:Q", title="episode of the trial"),
                *interval_tooltips(confidence, digits=4),
            ],
        )
    )
    title = alt.TitleParams(
        text=f"{metric.replace('_', ' ').capitalize()} per episode of a trial: "
        f"{first['environment']}, probe {first['probe']}",
        subtitle=seeds_subtitle(rows, confidence).replace("episodes", "trials", 1),
        anchor="start",
    )
    layered = alt.layer(band, line).resolve_legend(color="independent", strokeDash="independent")
    return layered.properties(width=WIDTH, height=HEIGHT, title=title)


def total_chart(
    summary: pl.DataFrame,
    family: MetricFamily,
    horizon: int,
    agents: list[str],
    confidence: float,
    metric: str | None = None,
    optimum: str | None = None,
) -> alt.LayerChart:
    """Horizontal bars of an episode metric's mean per agent with error bars, best first, on an
    axis zoomed to the values (not from 0: differences of a few percent stay visible).

    ``summary`` holds the summary rows of one (environment, probe); ``metric`` is the
    family's total unless given; ``horizon`` is the episode length the total is summed
    over.  Best is the largest value where the family says higher is better (reward),
    else the smallest (log-loss).  ``optimum`` names the exact optimum's agent, drawn also
    as a dashed reference rule across the chart.
    """
    metric = metric or family.total
    rows = summary.filter(pl.col("metric") == metric).sort("agent")
    first = rows.row(0, named=True)
    data = rows.select("agent", "agent_kind", "mean", "ci_low", "ci_high")
    order = "descending" if family.higher_is_better[family.episode_metrics.index(metric)] else "ascending"
    # An explicit order (best first): a sort by field does not survive layers of other data.
    y = alt.Y(
        "agent:N", sort=rows.sort("mean", descending=order == "descending")["agent"].to_list(), title="agent"
    )
    x_title = family.bar_axis_title(metric, horizon)
    bars = (
        alt.Chart(data)
        .mark_bar(clip=True)
        .encode(
            x=alt.X("mean:Q", title=x_title, scale=alt.Scale(zero=False), stack=None),
            y=y,
            color=agent_color(agents, legend=False),
            tooltip=[
                alt.Tooltip("agent:N"),
                alt.Tooltip("agent_kind:N", title="agent kind"),
                *interval_tooltips(confidence, digits=3),
            ],
        )
    )
    error_bars = (
        alt.Chart(data)
        .mark_errorbar(ticks=True, color="black")
        .encode(x=alt.X("ci_low:Q", title=x_title, scale=alt.Scale(zero=False)), x2="ci_high:Q", y=y)
    )
    layers = [bars, error_bars]
    reference = rows.filter(pl.col("agent") == optimum) if optimum is not None else rows.clear()
    if reference.height:
        rule = pl.DataFrame({"mean": [reference["mean"][0]], "label": [f"exact optimum ({optimum})"]})
        layers.append(alt.Chart(rule).mark_rule(strokeDash=[4, 3], color="black").encode(x=alt.X("mean:Q")))
        layers.append(
            alt.Chart(rule)
            .mark_text(align="left", dx=4, dy=-6, fontSize=11)
            .encode(x=alt.X("mean:Q", scale=alt.Scale(zero=False)), y=alt.value(0), text="label:N")
        )
    title = view_title(family, metric, first["environment"], first["probe"], seeds_subtitle(rows, confidence))
    bar_height = max(HEIGHT // 2, 24 * rows.height)
    return alt.layer(*layers).properties(width=WIDTH, height=bar_height, title=title)


def regret_ratio_chart(summary: pl.DataFrame, agents: list[str], confidence: float) -> alt.LayerChart:
    """Horizontal bars of each agent's regret ratio to the exact optimum with its interval, best
    (smallest) first, and a rule at 1 (the optimum).  ``summary`` holds the summary rows of one
    (environment, probe)."""
    rows = summary.filter(pl.col("metric") == REGRET_RATIO).sort("agent")
    first = rows.row(0, named=True)
    data = rows.select("agent", "agent_kind", "mean", "ci_low", "ci_high", "interval", "interval_note")
    # An explicit order (best first): a sort by field does not survive layers of other data.
    y = alt.Y("agent:N", sort=rows.sort("mean")["agent"].to_list(), title="agent")
    x_title = "regret ratio to the exact optimum (1 = optimal)"
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("mean:Q", title=x_title),
            y=y,
            color=agent_color(agents, legend=False),
            tooltip=[
                alt.Tooltip("agent:N"),
                alt.Tooltip("agent_kind:N", title="agent kind"),
                *interval_tooltips(confidence, digits=3),
                alt.Tooltip("interval:N", title="interval over"),
                alt.Tooltip("interval_note:N", title="note"),
            ],
        )
    )
    error_bars = (
        alt.Chart(data)
        .mark_errorbar(ticks=True, color="black")
        .encode(x=alt.X("ci_low:Q", title=x_title), x2="ci_high:Q", y=y)
    )
    optimum = (
        alt.Chart(pl.DataFrame({"ratio": [1.0]}))
        .mark_rule(strokeDash=[4, 3], color="black")
        .encode(x="ratio:Q")
    )
    title = alt.TitleParams(
        text=f"Regret ratio to the exact optimum: {first['environment']}, probe {first['probe']}",
        subtitle=seeds_subtitle(rows, confidence),
        anchor="start",
    )
    bar_height = max(HEIGHT // 2, 24 * rows.height)
    return alt.layer(bars, error_bars, optimum).properties(width=WIDTH, height=bar_height, title=title)


def overview_chart(summary: pl.DataFrame, family: MetricFamily, agents: list[str], confidence: float):
    """Every episode metric of a per-episode family for every environment of one probe.

    One row of panels per environment, one column per metric (each with its own x
    scale), one bar per agent with its bootstrap interval.  ``summary`` holds the
    summary rows of one probe and one per-episode family.
    """
    rows = summary.filter(pl.col("metric").is_in(family.episode_metrics)).sort("environment", "agent")
    first = rows.row(0, named=True)
    data = rows.select("environment", "metric", "agent", "agent_kind", "mean", "ci_low", "ci_high")
    y = alt.Y("agent:N", sort=agents, title=None)
    x = alt.X("mean:Q", title=None)
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=x,
            y=y,
            color=agent_color(agents, legend=True),
            tooltip=[
                alt.Tooltip("environment:N"),
                alt.Tooltip("metric:N"),
                alt.Tooltip("agent:N"),
                *interval_tooltips(confidence, digits=3),
            ],
        )
    )
    error_bars = (
        alt.Chart()
        .mark_errorbar(ticks=True, color="black")
        .encode(x=alt.X("ci_low:Q", title=None), x2="ci_high:Q", y=y)
    )
    metric_order = list(family.episode_metrics)
    title = alt.TitleParams(
        text=f"Every {family.kind} environment, probe {first['probe']}: "
        + ", ".join(family.chart_title(metric).split(" (")[0].lower() for metric in metric_order),
        subtitle=seeds_subtitle(rows.filter(pl.col("metric") == family.total), confidence),
        anchor="start",
    )
    return (
        alt.layer(bars, error_bars, data=data)
        .properties(width=WIDTH // 3, height=14 * len(agents))
        .facet(
            row=alt.Row("environment:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
            column=alt.Column("metric:N", title=None, sort=metric_order),
        )
        .resolve_scale(x="independent")
        .properties(title=title)
    )


#: The end point of a sweep (no pool, full context) sits this factor right of the largest swept value.
SWEEP_END_FACTOR = 4

#: Label of the end point of each sweep on its x axis.
TRANSITION_END, WINDOW_END = "∞", "full"


def _sweep_data(
    summary: pl.DataFrame,
    metric: str,
    placements: list[tuple[str, str, str, int | None]],
    end_label: str,
) -> pl.DataFrame:
    """Summary rows of ``metric`` placed on a sweep's log2 axis, one row per (panel, agent, point).

    ``placements`` lists (panel, environment, probe, swept value) for every point of the
    chart; the value None is the end point (no pool, full context), placed at
    :data:`SWEEP_END_FACTOR` times the largest value and flagged ``end``.  Columns:
    ``panel``, ``environment``, ``probe``, ``value`` (the swept value, null at the end),
    ``tick`` (the value as the axis labels it), ``position`` (x on the chart), ``end``,
    ``agent``, ``agent_kind``, ``mean``, ``ci_low``, ``ci_high``, ``seeds``, ``episodes``.
    """
    finite = [value for *_, value in placements if value is not None]
    end_position = float(SWEEP_END_FACTOR * max(finite))
    where = pl.DataFrame(
        {
            "panel": [panel for panel, *_ in placements],
            "panel_order": list(range(len(placements))),
            "environment": [environment for _, environment, _, _ in placements],
            "probe": [probe for _, _, probe, _ in placements],
            "value": [value for *_, value in placements],
        },
        schema={
            "panel": pl.String(),
            "panel_order": pl.Int64(),
            "environment": pl.String(),
            "probe": pl.String(),
            "value": pl.Int64(),
        },
    )
    rows = where.join(summary.filter(pl.col("metric") == metric), on=["environment", "probe"], how="inner")
    return (
        rows.with_columns(
            tick=pl.col("value").cast(pl.String).fill_null(end_label),
            position=pl.col("value").cast(pl.Float64).fill_null(end_position),
            end=pl.col("value").is_null(),
        )
        .with_columns(pl.col("panel_order").min().over("panel"))
        .sort("panel_order", "agent", "position")
        .select(
            "panel",
            "environment",
            "probe",
            "value",
            "tick",
            "position",
            "end",
            "agent",
            "agent_kind",
            "mean",
            "ci_low",
            "ci_high",
            "seeds",
            "episodes",
        )
    )


def transition_data(summary: pl.DataFrame, sweep: PoolSweep, metric: str) -> pl.DataFrame:
    """The points of a transition chart: ``metric`` per probe (panel), pool size M (value) and agent.

    One row per (probe, M, agent) that the summary holds; M is null for the environment
    without a pool (the ``∞`` point).  Columns as :func:`_sweep_data` returns them.
    """
    placements = [
        (probe, environment, probe, size) for probe in sweep.probes for size, environment in sweep.pools
    ]
    return _sweep_data(summary, metric, placements, TRANSITION_END)


def window_data(
    summary: pl.DataFrame, environment: str, sweeps: tuple[WindowSweep, ...], metric: str
) -> pl.DataFrame:
    """The points of one environment's window chart: ``metric`` per window probe (panel), w and agent.

    One row per (window probe, w, agent) that the summary holds, plus the full-context
    reference probe's rows with w null (the ``full`` point).
    """
    placements: list[tuple[str, str, str, int | None]] = []
    for sweep in sweeps:
        placements += [(sweep.probe, environment, probe, window) for window, probe in sweep.windows]
        if sweep.reference is not None:
            placements.append((sweep.probe, environment, sweep.reference, None))
    return _sweep_data(summary, metric, placements, WINDOW_END)


def sweep_chart(
    data: pl.DataFrame,
    *,
    title: str,
    x_title: str,
    y_title: str,
    end_label: str,
    end_note: str,
    agents: list[str],
    confidence: float,
) -> alt.FacetChart:
    """``mean`` against ``position`` on a log2 axis, one line and band per agent, one panel per ``panel``.

    ``data`` is what :func:`transition_data` or :func:`window_data` return.  Every point
    carries its interval as a rule; the end point (``end``) is a diamond, not joined to
    the line, labelled ``end_label`` on the axis and explained by ``end_note`` in the
    subtitle.
    """
    positions = sorted(set(data["position"].to_list()))
    end_positions = data.filter(pl.col("end"))["position"].unique().to_list()
    low, high = positions[0] / math.sqrt(2), positions[-1] * math.sqrt(2)  # half an octave of margin
    label = "format(datum.value, 'd')"
    if end_positions:
        label = f"datum.value == {end_positions[0]} ? '{end_label}' : {label}"
    x = alt.X(
        "position:Q",
        title=x_title,
        scale=alt.Scale(type="log", base=2, domain=[low, high], nice=False),
        axis=alt.Axis(values=positions, labelExpr=label, grid=False),
    )
    y = alt.Y("mean:Q", title=y_title, scale=alt.Scale(zero=False))
    tooltip = [
        alt.Tooltip("agent:N"),
        alt.Tooltip("probe:N"),
        alt.Tooltip("environment:N"),
        alt.Tooltip("tick:N", title=x_title.split(" (")[0]),
        *interval_tooltips(confidence, digits=3),
    ]
    # Bands and points are colored by the fill channel, whose legend is independent (and
    # hidden), so the one agent legend (color: the lines' stroke) shows lines.
    fill = alt.Fill("agent:N", scale=agent_scale(agents), legend=None)
    lines = alt.Chart().transform_filter("!datum.end")
    ends = alt.Chart().transform_filter("datum.end")
    band = lines.mark_area(opacity=0.15).encode(
        x=x, y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q", fill=fill
    )
    line = lines.mark_line(strokeWidth=2).encode(
        x=x,
        y=y,
        color=agent_color(agents, legend=True),
        strokeDash=agent_kind_dash(),
    )
    points = lines.mark_point(filled=True, size=30).encode(x=x, y=y, fill=fill, tooltip=tooltip)
    # Every point's interval as a rule too: a band needs two points, the end point has none.
    intervals = (
        alt.Chart()
        .mark_rule(strokeWidth=1.5)
        .encode(
            x=x, y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q", color=agent_color(agents, legend=True)
        )
    )
    end_point = ends.mark_point(shape="diamond", filled=True, size=90).encode(
        x=x, y=y, fill=fill, tooltip=tooltip
    )
    panels = data["panel"].unique(maintain_order=True).to_list()
    layered = alt.layer(band, line, intervals, points, end_point, data=data)
    width = max(WIDTH // 2, WIDTH // len(panels))
    subtitle = seeds_subtitle(data, confidence) + (f"; {end_note}" if end_positions and end_note else "")
    return (
        layered.resolve_legend(fill="independent")
        .properties(width=width, height=HEIGHT)
        .facet(column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=12)))
        .properties(title=alt.TitleParams(text=title, subtitle=subtitle, anchor="start"))
    )
