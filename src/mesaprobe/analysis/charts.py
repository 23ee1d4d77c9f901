"""Altair charts of a study's tables: self-contained HTML plus a static SVG.

For every (environment, probe) of ``curve_bands.parquet`` and
``summary.parquet`` (written by :func:`mesaprobe.analysis.tables.collect`),
:func:`make_charts` draws one chart of each kind its metric family declares
(:attr:`mesaprobe.metrics.MetricFamily.charts`; :data:`CHARTS` for bandits and
sequence prediction):

* ``regret``: per-step regret (bandits: ``regret``, expected; sequence prediction:
  ``regret_bits`` against the Bayes-optimal predictor; regression: ``regret_mse``
  against ridge), mean over seeds with its
  bootstrap band, one line per agent (architectures solid, baselines dashed);
* ``cumulative_regret``: the same for cumulative regret (``cumulative_regret``,
  ``cumulative_regret_bits``, ``cumulative_regret_mse``);
* ``total``: the total per episode (``total_reward``, ``total_logloss_bits``,
  ``total_mse_per_dim``), one
  bar per agent with its bootstrap interval, best first.

A per-episode family (the commitment game) gets bars of each of its metrics
(``success``, ``game_reward``, ``z_surprisal_bits``), and per probe one overview
of all its metrics across all its environments (``overview_<kind>_<probe>``): in a
commitment study, success, reward and entropy of z per function and noise.

Given the study's sweeps (:func:`mesaprobe.analysis.sweeps.study_sweeps`; the
``mesaprobe chart`` command passes them), two more kinds plot the family total of the
summary (``total_reward``, ``total_logloss_bits``, ...) against a sweep on a log2 axis,
one line per agent with its bootstrap band (architectures solid, baselines dashed,
each baseline drawn from its own rows at every point, whether or not it depends on
the swept value):

* ``transition_<total>_<environment>``: against the task-pool size M of a task-pool
  sweep (:class:`~mesaprobe.analysis.sweeps.PoolSweep`), one panel per probe, so the
  fresh-task and pool-task probes side by side show the memorisation gap; environments
  without a pool (``task_pool: null``) are the point marked ``∞`` at the right end, not
  joined to the line (:func:`transition_data`);
* ``window_<total>_<environment>``: against the memory window w of the ``window[w=...]``
  probes, one panel per window probe, with the full-context adaptation probe as the point
  marked ``full`` at the right end (:func:`window_data`).

A chart's file name is ``<metric>_<environment>_<probe>``, the plotted metric's name
followed by environment and probe made safe for file names (:func:`chart_stem`),
e.g. ``total_reward_bandit2_adaptation`` or ``regret_bits_markov_prediction``.  Agents of every grid variant share the chart of their
environment (their names carry the variant, e.g. ``gru[lr=0.001]``), so baselines
always appear next to every trained model.  HTML files embed Vega, Vega-Lite and vega-embed (no CDN), so
reports open offline; SVG files are rendered by vl-convert.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import altair as alt
import polars as pl

from mesaprobe.analysis.sweeps import PoolSweep, Sweeps, WindowSweep
from mesaprobe.analysis.tables import (
    AGENT_KINDS,
    CURVE_BANDS_COLUMNS,
    SUMMARY_COLUMNS,
    TABLE_FILES,
    read_table,
)
from mesaprobe.artifacts import atomic_path, read_json
from mesaprobe.errors import ArtifactError
from mesaprobe.metrics import METRIC_FAMILIES, MetricFamily, family_of_metric

#: Chart kinds drawn for every (environment, probe) of a step family, in the order written.
CHARTS = ("regret", "cumulative_regret", "total")

#: File formats written for every chart.
CHART_FORMATS = ("html", "svg")

#: Title of the chart of each plotted metric; followed by environment and probe.
CHART_TITLES = {
    "regret": "Regret per step",
    "cumulative_regret": "Cumulative regret",
    "total_reward": "Total reward per episode",
    "regret_bits": "Regret per step vs Bayes-optimal (bits)",
    "cumulative_regret_bits": "Cumulative regret vs Bayes-optimal (bits)",
    "total_logloss_bits": "Total log-loss per episode (bits)",
    "regret_mse": "Regret per step vs ridge (squared error / D)",
    "cumulative_regret_mse": "Cumulative regret vs ridge (squared error / D)",
    "total_mse_per_dim": "Total squared error / D per episode",
    "success": "Success rate (y = f(z))",
    "game_reward": "Reward per episode (success - predictability penalty)",
    "z_surprisal_bits": "Entropy of z (bits, plug-in)",
}

#: X-axis title of each total bar chart, given the horizon the total is summed over.
TOTAL_AXIS_TITLES = {
    "total_reward": "total reward per episode (expected, sum over {horizon} steps)",
    "total_logloss_bits": "total log-loss per episode (bits, sum over {horizon} steps)",
    "total_mse_per_dim": "total squared error / D per episode (sum over {horizon} examples)",
    "success": "fraction of episodes with y = f(z)",
    "game_reward": "reward per episode (success - predictability penalty)",
    "z_surprisal_bits": "entropy of z over the probe's episodes (bits)",
}

# Line style per agent kind: architectures solid, baselines dashed.
_STROKE_DASH = {"architecture": [1, 0], "baseline": [6, 3]}
_WIDTH, _HEIGHT = 640, 360


def slugify(text: str) -> str:
    """``text`` reduced to letters, digits, ``.``, ``_`` and ``-`` (other runs become ``-``).

    >>> slugify("training.lr=0.001")
    'training.lr-0.001'
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return slug or "unnamed"


def chart_metric(chart: str, family: MetricFamily) -> str:
    """The metric a chart kind plots for one metric family, e.g. ``regret_bits``."""
    if chart not in family.charts:
        raise ValueError(f"unknown chart {chart!r}; expected one of: {', '.join(family.charts)}")
    return family.charts[chart]


def chart_stem(chart: str, environment: str, probe: str, kind: str) -> str:
    """File name (without suffix) of one chart of an environment of this kind.

    >>> chart_stem("regret", "bandit2", "adaptation", "bandit")
    'regret_bandit2_adaptation'
    >>> chart_stem("total", "markov", "prediction", "prediction")
    'total_logloss_bits_markov_prediction'
    """
    if kind not in METRIC_FAMILIES:
        raise ValueError(f"unknown environment kind {kind!r}; expected one of: {', '.join(METRIC_FAMILIES)}")
    return "_".join([chart_metric(chart, METRIC_FAMILIES[kind]), slugify(environment), slugify(probe)])


def overview_stem(family: MetricFamily, probe: str) -> str:
    """File name (without suffix) of a per-episode family's overview of one probe."""
    return "_".join(["overview", family.kind, slugify(probe)])


def transition_stem(family: MetricFamily, environment: str) -> str:
    """File name (without suffix) of the transition chart of a task-pool sweep.

    >>> from mesaprobe.metrics import BANDIT_METRICS
    >>> transition_stem(BANDIT_METRICS, "bandit2")
    'transition_total_reward_bandit2'
    """
    return "_".join(["transition", family.total, slugify(environment)])


def window_stem(family: MetricFamily, environment: str) -> str:
    """File name (without suffix) of the window chart of one environment.

    >>> from mesaprobe.metrics import PREDICTION_METRICS
    >>> window_stem(PREDICTION_METRICS, "markov")
    'window_total_logloss_bits_markov'
    """
    return "_".join(["window", family.total, slugify(environment)])


def chart_stems(
    views: list[tuple[str, str]], probes: list[str] | dict[str, list[str]], sweeps: Sweeps | None = None
) -> dict[str, str]:
    """Every chart :func:`make_charts` draws for these environments and probes: stem -> metric.

    ``views`` lists each environment as (label, kind), the kind selecting its metric family.
    ``probes`` lists the probe labels, or maps each environment label to the probes that play
    it (a study's plan leaves out probes that do not serve or apply to an environment).
    ``sweeps`` (:func:`mesaprobe.analysis.sweeps.study_sweeps`) adds a transition chart per
    task-pool sweep and a window chart per environment a window sweep serves; their
    "metric" is ``transition`` or ``window`` (which names their report caption).
    """
    probes_of = probes if isinstance(probes, dict) else {environment: probes for environment, _ in views}
    stems = {}
    for environment, kind in views:
        family = METRIC_FAMILIES[kind]
        for probe in probes_of.get(environment, []):
            for chart, metric in family.charts.items():
                stems[chart_stem(chart, environment, probe, kind)] = metric
    for kind in dict.fromkeys(kind for _, kind in views):
        if METRIC_FAMILIES[kind].per_episode:
            played = [probes_of.get(environment, []) for environment, k in views if k == kind]
            for probe in dict.fromkeys(probe for labels in played for probe in labels):
                stems[overview_stem(METRIC_FAMILIES[kind], probe)] = "overview"
    sweeps = sweeps or Sweeps()
    for sweep in sweeps.pools:
        stems[transition_stem(METRIC_FAMILIES[sweep.kind], sweep.environment)] = "transition"
    for environment, kind in views:
        if sweeps.window_sweeps_of(kind):
            stems[window_stem(METRIC_FAMILIES[kind], environment)] = "window"
    return stems


def chart_files(
    views: list[tuple[str, str]], probes: list[str] | dict[str, list[str]], sweeps: Sweeps | None = None
) -> list[str]:
    """Every file :func:`make_charts` writes for these environments, probes and sweeps (for workflows)."""
    return [
        f"{stem}.{file_format}"
        for stem in chart_stems(views, probes, sweeps)
        for file_format in CHART_FORMATS
    ]


def _count_text(counts: list[int]) -> str:
    """``"4"`` when all counts agree, ``"1-4"`` when they differ."""
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"


def _subtitle(frame: pl.DataFrame, confidence: float) -> str:
    """``mean over N seeds x M episodes, 95% bootstrap CI`` (M episodes per seed)."""
    per_agent = frame.group_by("agent").agg(pl.col("seeds").first(), pl.col("episodes").first())
    seeds = per_agent["seeds"].to_list()
    episodes_per_seed = [
        round(episodes / seed_count)
        for episodes, seed_count in zip(per_agent["episodes"], seeds, strict=True)
    ]
    return (
        f"mean over {_count_text(seeds)} seeds x {_count_text(episodes_per_seed)} episodes, "
        f"{confidence:.0%} bootstrap CI"
    )


def _title(metric: str, environment: str, probe: str, subtitle: str) -> alt.TitleParams:
    return alt.TitleParams(
        text=f"{CHART_TITLES[metric]}: {environment}, probe {probe}", subtitle=subtitle, anchor="start"
    )


def _interval_tooltips(confidence: float, digits: int = 3) -> list[alt.Tooltip]:
    """Tooltips of a mean with its bootstrap interval."""
    interval = f"{confidence:.0%} CI"
    return [
        alt.Tooltip("mean:Q", format=f".{digits}f"),
        alt.Tooltip("ci_low:Q", format=f".{digits}f", title=f"{interval} low"),
        alt.Tooltip("ci_high:Q", format=f".{digits}f", title=f"{interval} high"),
    ]


def _agent_scale(agents: list[str]) -> alt.Scale:
    """One color per agent, stable across every chart of a study."""
    return alt.Scale(domain=agents, scheme="tableau10" if len(agents) <= 10 else "tableau20")


def _agent_color(agents: list[str], legend: bool) -> alt.Color:
    """Color by agent (:func:`_agent_scale`), with or without a legend."""
    return alt.Color(
        "agent:N",
        scale=_agent_scale(agents),
        title="agent",
        legend=alt.Legend() if legend else None,
    )


def curve_chart(
    bands: pl.DataFrame,
    metric: str,
    agents: list[str],
    confidence: float,
) -> alt.LayerChart:
    """Mean curve of the step metric ``metric`` with its bootstrap band, one line per agent.

    ``bands`` holds the curve-band rows of one (environment, probe);
    ``agents`` fixes the color of every agent in the study.  The y axis carries the
    metric family's title of ``metric``.
    """
    family = family_of_metric(metric)
    y_title = family.step_titles[family.step_metrics.index(metric)]
    rows = bands.filter(pl.col("metric") == metric).sort("agent", "step")
    first = rows.row(0, named=True)
    data = rows.select("agent", "agent_kind", "step", "mean", "ci_low", "ci_high")
    x = alt.X("step:Q", title="step", scale=alt.Scale(nice=False))
    band = (
        alt.Chart(data)
        .mark_area(opacity=0.2)
        .encode(
            x=x,
            y=alt.Y("ci_low:Q", title=y_title),
            y2="ci_high:Q",
            color=_agent_color(agents, legend=False),
        )
    )
    line = (
        alt.Chart(data)
        .mark_line(strokeWidth=2)
        .encode(
            x=x,
            y=alt.Y("mean:Q", title=y_title),
            color=_agent_color(agents, legend=True),
            strokeDash=alt.StrokeDash(
                "agent_kind:N",
                scale=alt.Scale(domain=list(_STROKE_DASH), range=list(_STROKE_DASH.values())),
                title="agent kind",
            ),
            tooltip=[
                alt.Tooltip("agent:N"),
                alt.Tooltip("step:Q"),
                *_interval_tooltips(confidence, digits=4),
            ],
        )
    )
    title = _title(
        metric,
        first["environment"],
        first["probe"],
        _subtitle(rows, confidence),
    )
    # Independent legends, so that the agent legend shows the lines, not the faint bands.
    layered = alt.layer(band, line).resolve_legend(color="independent")
    return layered.properties(width=_WIDTH, height=_HEIGHT, title=title)


def total_chart(
    summary: pl.DataFrame,
    family: MetricFamily,
    horizon: int,
    agents: list[str],
    confidence: float,
    metric: str | None = None,
) -> alt.LayerChart:
    """Horizontal bars of an episode metric's mean per agent with bootstrap error bars, best first.

    ``summary`` holds the summary rows of one (environment, probe); ``metric`` is the
    family's total unless given; ``horizon`` is the episode length the total is summed
    over.  Best is the largest value where the family says higher is better (reward),
    else the smallest (log-loss).
    """
    metric = metric or family.total
    rows = summary.filter(pl.col("metric") == metric).sort("agent")
    first = rows.row(0, named=True)
    data = rows.select("agent", "agent_kind", "mean", "ci_low", "ci_high")
    order = "descending" if family.higher_is_better[family.episode_metrics.index(metric)] else "ascending"
    y = alt.Y("agent:N", sort=alt.EncodingSortField(field="mean", order=order), title="agent")
    x_title = TOTAL_AXIS_TITLES[metric].format(horizon=horizon)
    bars = (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("mean:Q", title=x_title),
            y=y,
            color=_agent_color(agents, legend=False),
            tooltip=[
                alt.Tooltip("agent:N"),
                alt.Tooltip("agent_kind:N", title="agent kind"),
                *_interval_tooltips(confidence, digits=3),
            ],
        )
    )
    error_bars = (
        alt.Chart(data)
        .mark_errorbar(ticks=True, color="black")
        .encode(x=alt.X("ci_low:Q", title=x_title), x2="ci_high:Q", y=y)
    )
    title = _title(
        metric,
        first["environment"],
        first["probe"],
        _subtitle(rows, confidence),
    )
    bar_height = max(_HEIGHT // 2, 24 * rows.height)
    return alt.layer(bars, error_bars).properties(width=_WIDTH, height=bar_height, title=title)


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
            color=_agent_color(agents, legend=True),
            tooltip=[
                alt.Tooltip("environment:N"),
                alt.Tooltip("metric:N"),
                alt.Tooltip("agent:N"),
                *_interval_tooltips(confidence, digits=3),
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
        + ", ".join(CHART_TITLES[metric].split(" (")[0].lower() for metric in metric_order),
        subtitle=_subtitle(rows.filter(pl.col("metric") == family.total), confidence),
        anchor="start",
    )
    return (
        alt.layer(bars, error_bars, data=data)
        .properties(width=_WIDTH // 3, height=14 * len(agents))
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
        *_interval_tooltips(confidence, digits=3),
    ]
    # Bands and points are colored by the fill channel, whose legend is independent (and
    # hidden), so the one agent legend (color: the lines' stroke) shows lines.
    fill = alt.Fill("agent:N", scale=_agent_scale(agents), legend=None)
    lines = alt.Chart().transform_filter("!datum.end")
    ends = alt.Chart().transform_filter("datum.end")
    band = lines.mark_area(opacity=0.15).encode(
        x=x, y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q", fill=fill
    )
    line = lines.mark_line(strokeWidth=2).encode(
        x=x,
        y=y,
        color=_agent_color(agents, legend=True),
        strokeDash=alt.StrokeDash(
            "agent_kind:N",
            scale=alt.Scale(domain=list(_STROKE_DASH), range=list(_STROKE_DASH.values())),
            title="agent kind",
        ),
    )
    points = lines.mark_point(filled=True, size=30).encode(x=x, y=y, fill=fill, tooltip=tooltip)
    # Every point's interval as a rule too: a band needs two points, the end point has none.
    intervals = (
        alt.Chart()
        .mark_rule(strokeWidth=1.5)
        .encode(
            x=x, y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q", color=_agent_color(agents, legend=True)
        )
    )
    end_point = ends.mark_point(shape="diamond", filled=True, size=90).encode(
        x=x, y=y, fill=fill, tooltip=tooltip
    )
    panels = data["panel"].unique(maintain_order=True).to_list()
    layered = alt.layer(band, line, intervals, points, end_point, data=data)
    width = max(_WIDTH // 2, _WIDTH // len(panels))
    subtitle = _subtitle(data, confidence) + (f"; {end_note}" if end_positions and end_note else "")
    return (
        layered.resolve_legend(fill="independent")
        .properties(width=width, height=_HEIGHT)
        .facet(column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=12)))
        .properties(title=alt.TitleParams(text=title, subtitle=subtitle, anchor="start"))
    )


def save_chart(chart: alt.TopLevelMixin, charts_dir: str | Path, stem: str) -> list[Path]:
    """Write ``chart`` as self-contained HTML and as SVG, atomically; return both paths."""
    written = []
    for file_format in CHART_FORMATS:
        target = Path(charts_dir) / f"{stem}.{file_format}"
        with atomic_path(target) as temporary:
            if file_format == "html":
                chart.save(temporary, format="html", inline=True)
            else:
                chart.save(temporary, format=file_format)
        written.append(target)
    return written


def _study_agents(bands: pl.DataFrame) -> list[str]:
    """Every agent of the study in table order (architectures first), for stable colors."""
    kind_rank = pl.col("agent_kind").replace_strict(
        {kind: rank for rank, kind in enumerate(AGENT_KINDS)}, return_dtype=pl.Int64
    )
    agents = bands.select("agent", kind_rank.alias("kind_rank")).unique().sort("kind_rank", "agent")
    return agents["agent"].unique(maintain_order=True).to_list()


def _view_family(view_bands: pl.DataFrame, key: tuple, tables_dir: Path) -> MetricFamily:
    """The one metric family of the curve bands of one (environment, probe)."""
    metrics = view_bands["metric"].unique().sort().to_list()
    try:
        families = sorted({family_of_metric(name).kind for name in metrics})
    except KeyError as error:
        raise ArtifactError(tables_dir, f"view {key} has unknown metric {error.args[0]!r}") from None
    if len(families) != 1:
        raise ArtifactError(tables_dir, f"view {key} mixes the metric families {families}")
    return METRIC_FAMILIES[families[0]]


def _horizon_text(bands: pl.DataFrame, environments: list[str], probes: list[str]) -> str:
    """The episode length of these environments and probes, e.g. ``20`` or ``20-40``."""
    rows = bands.filter(pl.col("environment").is_in(environments) & pl.col("probe").is_in(probes))
    return _count_text(rows.group_by("environment", "probe").agg(pl.col("step").max())["step"].to_list())


def _sweep_charts(
    bands: pl.DataFrame,
    summary: pl.DataFrame,
    sweeps: Sweeps,
    agents: list[str],
    confidence: float,
    tables_dir: Path,
) -> list[tuple[str, alt.TopLevelMixin]]:
    """(stem, chart) of every transition and window chart of ``sweeps``."""
    drawn = []
    for sweep in sweeps.pools:
        family = METRIC_FAMILIES[sweep.kind]
        data = transition_data(summary, sweep, family.total)
        if data.height == 0:
            raise ArtifactError(
                tables_dir, f"no {family.total} rows for the task-pool sweep {sweep.environment}"
            )
        environments = [environment for _, environment in sweep.pools]
        chart = sweep_chart(
            data,
            title=f"{CHART_TITLES[family.total]} vs task pool size M: {sweep.environment}",
            x_title="task pool size M (training tasks, log2 scale)",
            y_title=TOTAL_AXIS_TITLES[family.total].format(
                horizon=_horizon_text(bands, environments, list(sweep.probes))
            ),
            end_label=TRANSITION_END,
            end_note=f"{TRANSITION_END}: no task pool, a fresh task every episode",
            agents=agents,
            confidence=confidence,
        )
        drawn.append((transition_stem(family, sweep.environment), chart))
    if not sweeps.windows:
        return drawn
    for key, view_bands in bands.partition_by("environment", as_dict=True, maintain_order=True).items():
        environment = key[0]
        family = _view_family(view_bands, key, tables_dir)
        served = sweeps.window_sweeps_of(family.kind)
        if not served:
            continue
        data = window_data(summary, environment, served, family.total)
        if data.height == 0:
            raise ArtifactError(tables_dir, f"no {family.total} rows for the window probes of {environment}")
        probes = [probe for sweep in served for _, probe in sweep.windows]
        references = ", ".join(sweep.reference for sweep in served if sweep.reference)
        chart = sweep_chart(
            data,
            title=f"{CHART_TITLES[family.total]} vs memory window w: {environment}",
            x_title="memory window w (steps, log2 scale)",
            y_title=TOTAL_AXIS_TITLES[family.total].format(
                horizon=_horizon_text(bands, [environment], probes)
            ),
            end_label=WINDOW_END,
            end_note=f"{WINDOW_END}: whole episode in context (probe {references})",
            agents=agents,
            confidence=confidence,
        )
        drawn.append((window_stem(family, environment), chart))
    return drawn


def make_charts(tables_dir: str | Path, charts_dir: str | Path, sweeps: Sweeps | None = None) -> list[Path]:
    """Draw every chart of a study's tables into ``charts_dir``; return the files written.

    Reads ``curve_bands.parquet``, ``summary.parquet`` and ``tables.json`` (for the
    confidence level) from ``tables_dir``; each (environment, probe) is drawn with the
    metric family of its curve-band metrics.  ``sweeps`` (the study's, from
    :func:`mesaprobe.analysis.sweeps.study_sweeps`) adds the transition and window
    charts.  Raises :class:`ArtifactError` when a table is missing or malformed, when a
    view mixes metric families, when a sweep has no rows, or when two charts would get
    the same file name.
    """
    tables_dir = Path(tables_dir)
    bands = read_table(tables_dir / TABLE_FILES["curve_bands"], CURVE_BANDS_COLUMNS)
    summary = read_table(tables_dir / TABLE_FILES["summary"], SUMMARY_COLUMNS)
    tables_json = tables_dir / TABLE_FILES["provenance"]
    settings = read_json(tables_json)
    confidence = settings.get("confidence") if isinstance(settings, dict) else None
    if not isinstance(confidence, float):
        raise ArtifactError(tables_json, "missing the bootstrap 'confidence' (a number in (0, 1))")
    agents = _study_agents(bands)
    views = ["environment", "probe"]
    written: list[Path] = []
    stems: dict[str, tuple] = {}
    for key, view_bands in bands.partition_by(views, as_dict=True, maintain_order=True).items():
        environment, probe = key
        family = _view_family(view_bands, key, tables_dir)
        view_stems = {chart: chart_stem(chart, environment, probe, family.kind) for chart in family.charts}
        for stem in view_stems.values():
            if stems.setdefault(stem, key) != key:
                raise ArtifactError(
                    tables_dir,
                    f"views {stems[stem]} and {key} both chart to {stem!r}; rename one",
                )
        view_summary = summary.filter((pl.col("environment") == environment) & (pl.col("probe") == probe))
        horizon = int(view_bands["step"].max())  # type: ignore[arg-type]
        for chart, metric in family.charts.items():
            if family.is_curve(chart):
                drawn = curve_chart(view_bands, metric, agents, confidence)
            else:
                drawn = total_chart(view_summary, family, horizon, agents, confidence, metric=metric)
            written += save_chart(drawn, charts_dir, view_stems[chart])
    for key, probe_bands in bands.partition_by("probe", as_dict=True, maintain_order=True).items():
        probe = key[0]
        families = {family_of_metric(name) for name in probe_bands["metric"].unique()}
        for family in sorted((f for f in families if f.per_episode), key=lambda f: f.kind):
            rows = summary.filter((pl.col("probe") == probe) & pl.col("metric").is_in(family.episode_metrics))
            written += save_chart(
                overview_chart(rows, family, agents, confidence), charts_dir, overview_stem(family, probe)
            )
    for stem, chart in _sweep_charts(bands, summary, sweeps or Sweeps(), agents, confidence, tables_dir):
        if stem in stems:
            raise ArtifactError(tables_dir, f"the sweep chart {stem!r} has the name of another chart")
        stems[stem] = ()
        written += save_chart(chart, charts_dir, stem)
    return written
