"""Altair charts of a study's tables: self-contained HTML plus a static SVG.

:func:`make_charts` draws the charts it is given, each a
:class:`~mesaprobe.study.outputs.Chart` that names its file, what it plots and the rows it
draws.  A study's charts are :func:`mesaprobe.study.outputs.chart_outputs`, the list the
workflow's ``chart`` rule promises too, so the files written are exactly the files expected
(the module docstring of :mod:`mesaprobe.study.outputs` lists the kinds and their names).

Each chart is drawn from the tables :func:`mesaprobe.analysis.collect.collect` wrote:
the charts of an (environment, probe) from its rows of ``curve_bands.parquet`` and
``summary.parquet``, with the metric family the study gives its environment (the tables
must agree); overviews and sweep charts from the summary rows of their probes and
environments; the charts of inside probes from ``inside.parquet`` (by the kind's entry in
:data:`mesaprobe.analysis.inside_charts.INSIDE_CHARTS`).  The builders are in
:mod:`mesaprobe.analysis.chart_builders` and :mod:`mesaprobe.analysis.inside_charts`.
HTML files embed Vega, Vega-Lite and vega-embed (no CDN), so reports open offline; SVG
files are rendered by vl-convert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import polars as pl

from mesaprobe.analysis.chart_builders import (
    TRANSITION_END,
    WINDOW_END,
    curve_chart,
    overview_chart,
    regret_ratio_chart,
    sweep_chart,
    total_chart,
    transition_data,
    trial_chart,
    window_data,
)
from mesaprobe.analysis.chart_style import count_text, study_agents
from mesaprobe.analysis.inside import INSIDE_SUMMARY_COLUMNS
from mesaprobe.analysis.inside_charts import INSIDE_CHARTS
from mesaprobe.analysis.ladder_charts import ladder_chart
from mesaprobe.analysis.tables import (
    CURVE_BANDS_COLUMNS,
    SUMMARY_COLUMNS,
    TABLE_FILES,
    TRIAL_EPISODES_COLUMNS,
    read_table,
)
from mesaprobe.analysis.training_charts import draw_learning_curve
from mesaprobe.artifacts import atomic_path, read_json
from mesaprobe.errors import ArtifactError
from mesaprobe.metrics import REGRET_RATIO
from mesaprobe.study.outputs import CHART_FORMATS, LEARNING_CURVE, TRIAL_EPISODES, Chart, trial_metric


@dataclass(frozen=True)
class _Tables:
    """What the charts of a study are drawn from."""

    directory: Path
    bands: pl.DataFrame  # curve_bands.parquet
    summary: pl.DataFrame  # summary.parquet
    inside: pl.DataFrame | None  # inside.parquet, read when an inside chart is drawn
    confidence: float  # the bootstrap's, from tables.json
    agents: list[str]  # every agent of the curve bands, in the order of their colours
    view_bands: dict[tuple, pl.DataFrame]  # curve bands by (environment, probe)
    view_summaries: dict[tuple, pl.DataFrame]  # summary by (environment, probe)


def _read_tables(tables_dir: Path, inside: bool) -> _Tables:
    bands = read_table(tables_dir / TABLE_FILES["curve_bands"], CURVE_BANDS_COLUMNS)
    summary = read_table(tables_dir / TABLE_FILES["summary"], SUMMARY_COLUMNS)
    tables_json = tables_dir / TABLE_FILES["provenance"]
    settings = read_json(tables_json)
    confidence = settings.get("confidence") if isinstance(settings, dict) else None
    if not isinstance(confidence, float):
        raise ArtifactError(tables_json, "missing the bootstrap 'confidence' (a number in (0, 1))")
    views = ["environment", "probe"]
    return _Tables(
        directory=tables_dir,
        bands=bands,
        summary=summary,
        inside=read_table(tables_dir / TABLE_FILES["inside"], INSIDE_SUMMARY_COLUMNS) if inside else None,
        confidence=confidence,
        agents=study_agents(bands),
        view_bands=bands.partition_by(views, as_dict=True, maintain_order=True),
        view_summaries=summary.partition_by(views, as_dict=True, maintain_order=True),
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


def make_charts(
    tables_dir: str | Path, charts_dir: str | Path, charts: Sequence[Chart], log_steps: bool = False
) -> list[Path]:
    """Draw ``charts`` from a study's tables into ``charts_dir``; return the files written.

    ``charts`` are a study's :func:`~mesaprobe.study.outputs.chart_outputs` (or, for tables
    without a study, :func:`~mesaprobe.study.outputs.summary_charts`); the files written are
    their :attr:`~mesaprobe.study.outputs.Chart.files`, in order.  Reads
    ``curve_bands.parquet``, ``summary.parquet``, ``tables.json`` (for the confidence
    level) and, for inside charts, ``inside.parquet`` from ``tables_dir``.  Raises
    :class:`ArtifactError` when a table is missing or malformed, when a chart has no rows,
    or when the metrics of an (environment, probe) are not those of the family its
    environment's kind gives.
    """
    tables = _read_tables(Path(tables_dir), inside=any(chart.inside for chart in charts))
    written: list[Path] = []
    for chart in charts:
        written += save_chart(_draw(chart, tables, log_steps), charts_dir, chart.stem)
    return written


def _draw(chart: Chart, tables: _Tables, log_steps: bool = False) -> alt.TopLevelMixin:
    if chart.inside:
        return _inside_chart(chart, tables)
    if chart.chart == "overview":
        return _overview_chart(chart, tables)
    if chart.chart == "transition":
        return _transition_chart(chart, tables)
    if chart.chart == "window":
        return _window_chart(chart, tables)
    if chart.chart == LEARNING_CURVE:  # from the training table (mesaprobe.analysis.training_charts)
        return draw_learning_curve(tables.directory, chart.environment, tables.agents)
    if chart.chart == REGRET_RATIO:
        return _regret_ratio_chart(chart, tables)
    if chart.chart == TRIAL_EPISODES:
        return _trial_chart(chart, tables)
    if chart.plots == "ladder":  # from the summary's cost columns (mesaprobe.analysis.ladder_charts)
        return ladder_chart(tables.directory, chart, tables.agents, tables.confidence)
    return _view_chart(chart, tables, log_steps)


def _regret_ratio_chart(chart: Chart, tables: _Tables) -> alt.TopLevelMixin:
    """The regret ratios of one (environment, probe)."""
    key = (chart.environment, chart.probe)
    view_summary = tables.view_summaries.get(key)
    if view_summary is None or REGRET_RATIO not in set(view_summary["metric"]):
        raise ArtifactError(
            tables.directory / TABLE_FILES["summary"],
            f"no {REGRET_RATIO} rows for environment {key[0]!r}, probe {key[1]!r}; collect with the study's plan",
        )
    return regret_ratio_chart(view_summary, tables.agents, tables.confidence)


def _trial_chart(chart: Chart, tables: _Tables) -> alt.TopLevelMixin:
    """The regret per episode of a trial of one (environment, probe)."""
    path = tables.directory / TABLE_FILES["trial_episodes"]
    metric = trial_metric(chart.family)
    rows = read_table(path, TRIAL_EPISODES_COLUMNS).filter(
        (pl.col("environment") == chart.environment)
        & (pl.col("probe") == chart.probe)
        & (pl.col("metric") == metric)
    )
    if rows.height == 0:
        raise ArtifactError(
            path,
            f"no {metric} rows for environment {chart.environment!r}, probe {chart.probe!r}; collect with the study's plan",
        )
    return trial_chart(rows, metric, tables.agents, tables.confidence)


def _view_chart(chart: Chart, tables: _Tables, log_steps: bool = False) -> alt.TopLevelMixin:
    """A curve or bars of one (environment, probe)."""
    key = (chart.environment, chart.probe)
    family = chart.family
    view_bands = tables.view_bands.get(key)
    if view_bands is None:
        raise ArtifactError(
            tables.directory / TABLE_FILES["curve_bands"],
            f"no rows for environment {key[0]!r}, probe {key[1]!r}",
        )
    metrics = sorted(set(view_bands["metric"]))
    if metrics != sorted(family.step_metrics):
        raise ArtifactError(
            tables.directory / TABLE_FILES["curve_bands"],
            f"view {key} has the metrics {metrics}; its environment is of kind {family.kind!r}, "
            f"whose metrics are {', '.join(family.step_metrics)}",
        )
    if family.is_curve(chart.chart):
        return curve_chart(view_bands, chart.plots, tables.agents, tables.confidence, log_steps)
    view_summary = tables.view_summaries.get(key)
    if view_summary is None:
        raise ArtifactError(
            tables.directory / TABLE_FILES["summary"], f"no rows for environment {key[0]!r}, probe {key[1]!r}"
        )
    horizon = int(view_bands["step"].max())  # type: ignore[arg-type]
    return total_chart(
        view_summary,
        family,
        horizon,
        tables.agents,
        tables.confidence,
        metric=chart.plots,
        optimum=chart.optimum,
    )


def _overview_chart(chart: Chart, tables: _Tables) -> alt.TopLevelMixin:
    """Every metric of a per-episode family across the environments of one probe."""
    family = chart.family
    rows = tables.summary.filter(
        (pl.col("probe") == chart.probe) & pl.col("metric").is_in(family.episode_metrics)
    )
    if rows.height == 0:
        raise ArtifactError(
            tables.directory / TABLE_FILES["summary"], f"no {family.kind} rows for probe {chart.probe!r}"
        )
    return overview_chart(rows, family, tables.agents, tables.confidence)


def _horizon_text(bands: pl.DataFrame, environments: list[str], probes: list[str]) -> str:
    """The episode length of these environments and probes, e.g. ``20`` or ``20-40``."""
    rows = bands.filter(pl.col("environment").is_in(environments) & pl.col("probe").is_in(probes))
    return count_text(rows.group_by("environment", "probe").agg(pl.col("step").max())["step"].to_list())


def _transition_chart(chart: Chart, tables: _Tables) -> alt.TopLevelMixin:
    """The family total against the task-pool size M, a panel per probe."""
    sweep, family = chart.sweep, chart.family
    data = transition_data(tables.summary, sweep, family.total)
    if data.height == 0:
        raise ArtifactError(
            tables.directory, f"no {family.total} rows for the task-pool sweep {sweep.environment}"
        )
    environments = [environment for _, environment in sweep.pools]
    return sweep_chart(
        data,
        title=f"{family.chart_title(family.total)} vs task pool size M: {sweep.environment}",
        x_title="task pool size M (training tasks, log2 scale)",
        y_title=family.bar_axis_title(
            family.total, _horizon_text(tables.bands, environments, list(sweep.probes))
        ),
        end_label=TRANSITION_END,
        end_note=f"{TRANSITION_END}: no task pool, a fresh task every episode",
        agents=tables.agents,
        confidence=tables.confidence,
    )


def _window_chart(chart: Chart, tables: _Tables) -> alt.TopLevelMixin:
    """The family total of one environment against the memory window w, a panel per window probe."""
    environment, served, family = chart.environment, chart.sweep, chart.family
    data = window_data(tables.summary, environment, served, family.total)
    if data.height == 0:
        raise ArtifactError(
            tables.directory, f"no {family.total} rows for the window probes of {environment}"
        )
    probes = [probe for sweep in served for _, probe in sweep.windows]
    references = ", ".join(sweep.reference for sweep in served if sweep.reference)
    return sweep_chart(
        data,
        title=f"{family.chart_title(family.total)} vs memory window w: {environment}",
        x_title="memory window w (steps, log2 scale)",
        y_title=family.bar_axis_title(family.total, _horizon_text(tables.bands, [environment], probes)),
        end_label=WINDOW_END,
        end_note=f"{WINDOW_END}: whole episode in context (probe {references})",
        agents=tables.agents,
        confidence=tables.confidence,
    )


def _inside_chart(chart: Chart, tables: _Tables) -> alt.TopLevelMixin:
    """One chart of an inside probe, drawn by its kind's entry in :data:`INSIDE_CHARTS`."""
    kind = INSIDE_CHARTS.get(chart.chart)
    assert tables.inside is not None
    rows = tables.inside.filter(
        (pl.col("environment") == chart.environment) & (pl.col("probe") == chart.probe)
    )
    if rows.height == 0:
        raise ArtifactError(
            tables.directory / TABLE_FILES["inside"], f"no rows for {chart.environment}/{chart.probe}"
        )
    return kind.draw(rows, tables.confidence, f"{kind.title}: {chart.environment}, {chart.probe}")
