"""Altair charts of a study's tables: self-contained HTML plus a static SVG.

For every (environment, probe) of ``curve_bands.parquet`` and
``summary.parquet`` (written by :func:`mesaprobe.analysis.tables.collect`),
:func:`make_charts` draws

* ``regret_<stem>``: expected regret per step, mean over seeds with its bootstrap
  band, one line per agent (architectures solid, baselines dashed);
* ``cumulative_regret_<stem>``: the same for cumulative regret;
* ``total_reward_<stem>``: total expected reward per episode, one bar per agent
  with its bootstrap interval, best first;

where ``<stem>`` is ``<environment>_<probe>`` made safe for file names
(:func:`chart_stem`).  Agents of every grid variant share the chart of their
environment (their names carry the variant, e.g. ``gru[lr=0.001]``), so baselines
always appear next to every trained model.  HTML files embed Vega, Vega-Lite and vega-embed (no CDN), so
reports open offline; SVG files are rendered by vl-convert.
"""

from __future__ import annotations

import re
from pathlib import Path

import altair as alt
import polars as pl

from mesaprobe.analysis.tables import (
    AGENT_KINDS,
    CURVE_BANDS_COLUMNS,
    SUMMARY_COLUMNS,
    TABLE_FILES,
    read_table,
)
from mesaprobe.artifacts import atomic_path, read_json
from mesaprobe.errors import ArtifactError

#: Chart kinds drawn for every (environment, probe), in the order written.
CHARTS = ("regret", "cumulative_regret", "total_reward")

#: File formats written for every chart.
CHART_FORMATS = ("html", "svg")

#: Y-axis title of each curve chart (units: expected reward, not sampled).
CURVE_AXIS_TITLES = {
    "regret": "regret per step (expected)",
    "cumulative_regret": "cumulative regret (expected)",
}

#: Title of each chart; followed by environment and probe.
CHART_TITLES = {
    "regret": "Regret per step",
    "cumulative_regret": "Cumulative regret",
    "total_reward": "Total reward per episode",
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


def chart_stem(chart: str, environment: str, probe: str) -> str:
    """File name (without suffix) of one chart, e.g. ``regret_bandit2_adaptation``."""
    if chart not in CHARTS:
        raise ValueError(f"unknown chart {chart!r}; expected one of: {', '.join(CHARTS)}")
    return "_".join([chart, slugify(environment), slugify(probe)])


def chart_files(environments: list[str], probes: list[str]) -> list[str]:
    """Every file :func:`make_charts` writes for these environments and probes (for workflows)."""
    return [
        f"{chart_stem(chart, environment, probe)}.{file_format}"
        for environment in environments
        for probe in probes
        for chart in CHARTS
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


def _title(chart: str, environment: str, probe: str, subtitle: str) -> alt.TitleParams:
    return alt.TitleParams(
        text=f"{CHART_TITLES[chart]}: {environment}, probe {probe}", subtitle=subtitle, anchor="start"
    )


def _agent_color(agents: list[str], legend: bool) -> alt.Color:
    """One color per agent, stable across every chart of a study."""
    scheme = "tableau10" if len(agents) <= 10 else "tableau20"
    return alt.Color(
        "agent:N",
        scale=alt.Scale(domain=agents, scheme=scheme),
        title="agent",
        legend=alt.Legend() if legend else None,
    )


def curve_chart(
    bands: pl.DataFrame,
    metric: str,
    agents: list[str],
    confidence: float,
) -> alt.LayerChart:
    """Mean curve of ``metric`` with its bootstrap band, one line per agent.

    ``bands`` holds the curve-band rows of one (environment, probe);
    ``agents`` fixes the color of every agent in the study.
    """
    rows = bands.filter(pl.col("metric") == metric).sort("agent", "step")
    first = rows.row(0, named=True)
    data = rows.select("agent", "agent_kind", "step", "mean", "ci_low", "ci_high")
    x = alt.X("step:Q", title="step", scale=alt.Scale(nice=False))
    interval = f"{confidence:.0%} CI"
    band = (
        alt.Chart(data)
        .mark_area(opacity=0.2)
        .encode(
            x=x,
            y=alt.Y("ci_low:Q", title=CURVE_AXIS_TITLES[metric]),
            y2="ci_high:Q",
            color=_agent_color(agents, legend=False),
        )
    )
    line = (
        alt.Chart(data)
        .mark_line(strokeWidth=2)
        .encode(
            x=x,
            y=alt.Y("mean:Q", title=CURVE_AXIS_TITLES[metric]),
            color=_agent_color(agents, legend=True),
            strokeDash=alt.StrokeDash(
                "agent_kind:N",
                scale=alt.Scale(domain=list(_STROKE_DASH), range=list(_STROKE_DASH.values())),
                title="agent kind",
            ),
            tooltip=[
                alt.Tooltip("agent:N"),
                alt.Tooltip("step:Q"),
                alt.Tooltip("mean:Q", format=".4f"),
                alt.Tooltip("ci_low:Q", format=".4f", title=f"{interval} low"),
                alt.Tooltip("ci_high:Q", format=".4f", title=f"{interval} high"),
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


def total_reward_chart(
    summary: pl.DataFrame, horizon: int, agents: list[str], confidence: float
) -> alt.LayerChart:
    """Horizontal bars of mean total reward per agent with bootstrap error bars, best first.

    ``summary`` holds the summary rows of one (environment, probe);
    ``horizon`` is the episode length the rewards are summed over.
    """
    rows = summary.filter(pl.col("metric") == "total_reward").sort("agent")
    first = rows.row(0, named=True)
    data = rows.select("agent", "agent_kind", "mean", "ci_low", "ci_high")
    y = alt.Y("agent:N", sort=alt.EncodingSortField(field="mean", order="descending"), title="agent")
    x_title = f"total reward per episode (expected, sum over {horizon} steps)"
    interval = f"{confidence:.0%} CI"
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
                alt.Tooltip("mean:Q", format=".3f"),
                alt.Tooltip("ci_low:Q", format=".3f", title=f"{interval} low"),
                alt.Tooltip("ci_high:Q", format=".3f", title=f"{interval} high"),
            ],
        )
    )
    error_bars = (
        alt.Chart(data)
        .mark_errorbar(ticks=True, color="black")
        .encode(x=alt.X("ci_low:Q", title=x_title), x2="ci_high:Q", y=y)
    )
    title = _title(
        "total_reward",
        first["environment"],
        first["probe"],
        _subtitle(rows, confidence),
    )
    bar_height = max(_HEIGHT // 2, 24 * rows.height)
    return alt.layer(bars, error_bars).properties(width=_WIDTH, height=bar_height, title=title)


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


def make_charts(tables_dir: str | Path, charts_dir: str | Path) -> list[Path]:
    """Draw every chart of a study's tables into ``charts_dir``; return the files written.

    Reads ``curve_bands.parquet``, ``summary.parquet`` and ``tables.json`` (for the
    confidence level) from ``tables_dir``; raises :class:`ArtifactError` when one is
    missing or malformed, or when two charts would get the same file name.
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
        for chart in CHARTS:
            stem = chart_stem(chart, environment, probe)
            if stems.setdefault(stem, key) != key:
                raise ArtifactError(
                    tables_dir,
                    f"views {stems[stem]} and {key} both chart to {stem!r}; rename one",
                )
        view_summary = summary.filter((pl.col("environment") == environment) & (pl.col("probe") == probe))
        horizon = int(view_bands["step"].max())  # type: ignore[arg-type]
        charts = {
            "regret": curve_chart(view_bands, "regret", agents, confidence),
            "cumulative_regret": curve_chart(view_bands, "cumulative_regret", agents, confidence),
            "total_reward": total_reward_chart(view_summary, horizon, agents, confidence),
        }
        for chart, drawn in charts.items():
            written += save_chart(drawn, charts_dir, chart_stem(chart, environment, probe))
    return written
