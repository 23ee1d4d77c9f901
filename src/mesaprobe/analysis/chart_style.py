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


#: Colour families: trained architectures in saturated colours, baselines in muted greys and
#: browns, so the two kinds are told apart at a glance (and by line style, :data:`STROKE_DASH`).
ARCHITECTURE_COLOURS = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#bcbd22",
    "#08519c", "#a50f15", "#006d2c", "#54278f",
)  # fmt: skip
BASELINE_COLOURS = (
    "#7f7f7f", "#8c564b", "#525252", "#c49c94", "#969696", "#6b4e3d", "#bdbdbd", "#a6761d",
    "#3f3f3f", "#d9b99b",
)  # fmt: skip


class AgentOrder(list):
    """Agents in table order, architectures first; ``architectures`` counts them (the rest are
    baselines), so every chart gives each kind its colour family and line style."""

    def __init__(self, agents: list[str], architectures: int):
        super().__init__(agents)
        self.architectures = architectures


def study_agents(rows: pl.DataFrame) -> AgentOrder:
    """Every agent of ``rows`` in table order (architectures first), for stable colors."""
    kind_rank = pl.col("agent_kind").replace_strict(
        {kind: rank for rank, kind in enumerate(AGENT_KINDS)}, return_dtype=pl.Int64
    )
    agents = rows.select("agent", kind_rank.alias("kind_rank")).unique().sort("kind_rank", "agent")
    names = agents["agent"].unique(maintain_order=True).to_list()
    architectures = agents.filter(pl.col("kind_rank") == 0)["agent"].n_unique()
    return AgentOrder(names, architectures)


def _architecture_count(agents: list[str]) -> int:
    return agents.architectures if isinstance(agents, AgentOrder) else len(agents)


def agent_scale(agents: list[str]) -> alt.Scale:
    """One color per agent, stable across every chart of a study: architectures from
    :data:`ARCHITECTURE_COLOURS`, baselines from :data:`BASELINE_COLOURS`."""
    count = _architecture_count(agents)
    colours = [ARCHITECTURE_COLOURS[i % len(ARCHITECTURE_COLOURS)] for i in range(count)]
    colours += [BASELINE_COLOURS[i % len(BASELINE_COLOURS)] for i in range(len(agents) - count)]
    return alt.Scale(domain=list(agents), range=colours)


def agent_dash(agents: list[str]) -> alt.StrokeDash:
    """Line style by agent (solid architectures, dashed baselines: :data:`STROKE_DASH`), on the same
    field and title as :func:`agent_color`, so one legend shows each agent's colour and dash."""
    count = _architecture_count(agents)
    dashes = [STROKE_DASH["architecture"]] * count + [STROKE_DASH["baseline"]] * (len(agents) - count)
    return alt.StrokeDash("agent:N", scale=alt.Scale(domain=list(agents), range=dashes), title="agent")


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
