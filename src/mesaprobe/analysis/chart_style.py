"""How every chart of a study looks: size, agent colours and line styles, tooltips, titles.

Both chart families draw with these, the charts of the curve bands and summary
(:mod:`mesaprobe.analysis.chart_builders`) and the charts of the inside tables
(:mod:`mesaprobe.analysis.inside_charts`), so an agent has one colour in every chart of
a study (:func:`study_agents` fixes the order of the palette), architectures are drawn
solid and baselines dashed (:data:`STROKE_DASH`), and every interval reads the same.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from mesaprobe.analysis.tables import AGENT_KINDS
from mesaprobe.metrics import MetricFamily

#: Size of one chart (one panel of a faceted chart is a fraction of the width).
WIDTH, HEIGHT = 640, 360

#: Line style per agent kind: architectures solid, baselines dashed.
STROKE_DASH = {"architecture": [1, 0], "baseline": [6, 3]}


def study_agents(rows: pl.DataFrame) -> list[str]:
    """Every agent of ``rows`` in table order (architectures first), for stable colors."""
    kind_rank = pl.col("agent_kind").replace_strict(
        {kind: rank for rank, kind in enumerate(AGENT_KINDS)}, return_dtype=pl.Int64
    )
    agents = rows.select("agent", kind_rank.alias("kind_rank")).unique().sort("kind_rank", "agent")
    return agents["agent"].unique(maintain_order=True).to_list()


def agent_scale(agents: list[str]) -> alt.Scale:
    """One color per agent, stable across every chart of a study."""
    return alt.Scale(domain=agents, scheme="tableau10" if len(agents) <= 10 else "tableau20")


def agent_color(agents: list[str], legend: bool) -> alt.Color:
    """Color by agent (:func:`agent_scale`), with or without a legend."""
    return alt.Color(
        "agent:N",
        scale=agent_scale(agents),
        title="agent",
        legend=alt.Legend() if legend else None,
    )


def agent_kind_dash() -> alt.StrokeDash:
    """Line style by agent kind (:data:`STROKE_DASH`)."""
    return alt.StrokeDash(
        "agent_kind:N",
        scale=alt.Scale(domain=list(STROKE_DASH), range=list(STROKE_DASH.values())),
        title="agent kind",
    )


def interval_tooltips(confidence: float, digits: int = 3) -> list[alt.Tooltip]:
    """Tooltips of a mean with its bootstrap interval."""
    interval = f"{confidence:.0%} CI"
    return [
        alt.Tooltip("mean:Q", format=f".{digits}f"),
        alt.Tooltip("ci_low:Q", format=f".{digits}f", title=f"{interval} low"),
        alt.Tooltip("ci_high:Q", format=f".{digits}f", title=f"{interval} high"),
    ]


def count_text(counts: list[int]) -> str:
    """``"4"`` when all counts agree, ``"1-4"`` when they differ."""
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"


def seeds_subtitle(rows: pl.DataFrame, confidence: float) -> str:
    """``mean over N seeds x M episodes, 95% CI ...`` (M episodes per seed) of summary rows."""
    per_agent = rows.group_by("agent").agg(pl.col("seeds").first(), pl.col("episodes").first())
    seeds = per_agent["seeds"].to_list()
    episodes_per_seed = [
        round(episodes / seed_count)
        for episodes, seed_count in zip(per_agent["episodes"], seeds, strict=True)
    ]
    return (
        f"mean over {count_text(seeds)} seeds x {count_text(episodes_per_seed)} episodes, "
        f"{confidence:.0%} CI: Student t over training seeds (architectures; none under 3 seeds), "
        "over episodes (baselines)"
    )


def view_title(
    family: MetricFamily, metric: str, environment: str, probe: str, subtitle: str
) -> alt.TitleParams:
    """The family's title of the chart of ``metric``, followed by environment and probe."""
    return alt.TitleParams(
        text=f"{family.chart_title(metric)}: {environment}, probe {probe}", subtitle=subtitle, anchor="start"
    )
