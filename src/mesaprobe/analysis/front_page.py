"""The report's front page: the study's question, its headline table and the chart that answers it.

:func:`write_front_page` writes ``results/<study>/report/front.rst`` after the charts; the
Snakefile's ``report:`` directive uses it once it exists (Snakemake's report renders it as the
report's opening text), otherwise ``workflow/report/workflow.rst``.  The headline is the first
probe writing curves on each environment (at most :data:`MAX_ENVIRONMENTS` environments): every
agent's total and cumulative regret with their intervals, its regret ratio to the exact optimum
and its paired difference from the reference (:mod:`mesaprobe.analysis.differences`), and the
regret-ratio chart of the first environment (its total chart where there is no ratio) inlined
as SVG, so the page works offline.  Sections without rows are left out.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from mesaprobe.analysis.tables import DIFFERENCES_COLUMNS, SUMMARY_COLUMNS, TABLE_FILES, read_table
from mesaprobe.artifacts import atomic_path
from mesaprobe.metrics import METRIC_FAMILIES, REGRET_RATIO
from mesaprobe.study.load import Study
from mesaprobe.study.outputs import Chart

#: Environments given a headline table (a large study lists the rest in its tables).
MAX_ENVIRONMENTS = 6

FRONT_PAGE = "front.rst"


def _cell(row: dict | None, digits: int = 2) -> str:
    if row is None:
        return ""
    mean = f"{row['mean']:.{digits}f}"
    if row["ci_low"] is None:
        return f"{mean} (no interval: {row['interval_note']})"
    return f"{mean} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"


def _difference_cell(row: dict | None) -> str:
    if row is None:
        return ""
    interval = "no interval" if row["ci_low"] is None else f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    return f"{row['mean_difference']:+.2f} {interval}, P(better) {row['p_better']:.2f} vs {row['reference']}"


def _table(summary: pl.DataFrame, differences: pl.DataFrame) -> list[str]:
    """A list-table of one (environment, probe): one row per agent."""
    family = next(f for f in METRIC_FAMILIES.values() if set(f.episode_metrics) <= set(summary["metric"]))
    total, regret = family.episode_metrics[0], family.episode_metrics[1]
    has_ratio = REGRET_RATIO in set(summary["metric"])
    header = (
        ["agent", "kind", total, regret]
        + ([REGRET_RATIO] if has_ratio else [])
        + [f"paired difference in {regret}"]
    )
    lines = [".. list-table::", "   :header-rows: 1", ""]
    lines += ["   * - " + header[0], *[f"     - {text}" for text in header[1:]]]
    agents = summary.select("agent", "agent_kind").unique(maintain_order=True)
    for agent, agent_kind in agents.iter_rows():
        rows = {row["metric"]: row for row in summary.filter(pl.col("agent") == agent).iter_rows(named=True)}
        difference = differences.filter((pl.col("agent") == agent) & (pl.col("metric") == regret))
        cells = [agent, agent_kind, _cell(rows.get(total)), _cell(rows.get(regret))]
        if has_ratio:
            cells.append(_cell(rows.get(REGRET_RATIO)))
        cells.append(_difference_cell(difference.row(0, named=True) if difference.height else None))
        lines += ["   * - " + cells[0], *[f"     - {text}" for text in cells[1:]]]
    return lines


#: docutils refuses lines longer than this (its line-length-limit, 10,000 characters).
MAX_LINE = 9_000


def svg_lines(svg: str) -> list[str]:
    """An SVG as lines short enough for docutils: broken between elements; where one element is
    still too long (a long path), the whole image as a base64 data URI in wrapped lines
    (browsers skip the whitespace in base64)."""
    lines = svg.replace("><", ">\n<").splitlines()
    if max(map(len, lines), default=0) <= MAX_LINE:
        return lines
    encoded = base64.b64encode(svg.encode()).decode()
    wrapped = [encoded[start : start + 76] for start in range(0, len(encoded), 76)]
    return ['<img alt="headline chart" src="data:image/svg+xml;base64,', *wrapped, '"/>']


def front_page(study: Study, tables_dir: Path, charts_dir: Path, charts: Sequence[Chart]) -> str:
    """The front page's reStructuredText (see the module docstring)."""
    summary = read_table(tables_dir / TABLE_FILES["summary"], SUMMARY_COLUMNS)
    differences_path = tables_dir / TABLE_FILES["differences"]
    differences = (
        read_table(differences_path, DIFFERENCES_COLUMNS)
        if differences_path.exists()
        else pl.DataFrame(schema=DIFFERENCES_COLUMNS)
    )
    title = f"mesaprobe study: {study.name}"
    lines = [title, "=" * len(title), ""]
    if study.question:
        lines += [f"**{study.question}**", ""]
    seeds = len(study.seeds)
    lines += [
        f"Environments: {', '.join(e.label for e in study.environments)}. "
        f"Architectures ({seeds} training seeds each): "
        f"{', '.join(a.label for a in study.architectures) or 'none'}. "
        f"Baselines: {', '.join(b.label for b in study.baselines) or 'none'}.",
        "",
        "Means over seeds of per-seed means over held-out episodes; every agent plays the same "
        "tasks. Intervals are 95%: Student t over training seeds for architectures (none with "
        "fewer than 3 seeds), over episodes for baselines. The regret ratio is the agent's regret "
        "(loss) over the exact optimum's on the same tasks (1 = optimal); the paired difference is "
        "agent minus reference, episode by episode on shared tasks, with the probability of "
        "improvement over seed pairs.",
        "",
    ]
    shown = 0
    embedded = False
    for environment in study.environments:
        rows = summary.filter(pl.col("environment") == environment.label)
        if rows.height == 0 or shown >= MAX_ENVIRONMENTS:
            continue
        probe = rows["probe"][0]
        view = rows.filter(pl.col("probe") == probe)
        if not any(
            set(f.episode_metrics) <= set(view["metric"]) and len(f.episode_metrics) > 1
            for f in METRIC_FAMILIES.values()
        ):
            continue
        heading = f"{environment.label}, probe {probe}"
        lines += [heading, "-" * len(heading), ""]
        view_differences = differences.filter(
            (pl.col("environment") == environment.label) & (pl.col("probe") == probe)
        )
        lines += [*_table(view, view_differences), ""]
        shown += 1
        if not embedded:
            candidates = [c for c in charts if (c.environment, c.probe) == (environment.label, probe)]
            chosen = next((c for c in candidates if c.chart == REGRET_RATIO), None) or next(
                (c for c in candidates if c.chart == "total"), None
            )
            svg = charts_dir / f"{chosen.stem}.svg" if chosen is not None else None
            if svg is not None and svg.exists():
                lines += ["{% raw %}", ".. raw:: html", ""]
                lines += ["   " + line for line in svg_lines(svg.read_text())]
                lines += ["", "{% endraw %}", ""]
                embedded = True
    if shown == 0:
        lines += ["The study has no per-step metrics to summarise here; see its tables and charts.", ""]
    lines += [
        "Every table and chart of the study follows, with its caption; the paired differences table "
        "holds every comparison between agents.",
        "",
    ]
    return "\n".join(lines)


def write_front_page(
    study: Study, tables_dir: Path, charts_dir: Path, charts: Sequence[Chart], path: Path
) -> Path:
    """Write :func:`front_page` to ``path`` atomically."""
    text = front_page(study, Path(tables_dir), Path(charts_dir), charts)
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path
