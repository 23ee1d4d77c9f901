"""A study's headline numbers, read from ``tables/summary.csv``: shown when a run ends, and
checked against a stored copy when a study is rerun.

:func:`headline_groups` picks, for each (environment, variant, probe) of a summary, the
total of its metric family (``total_reward`` for bandits, ``total_logloss_bits`` for
prediction, ...) and orders the agents best first; ``mesaprobe summary`` prints them
(:func:`headline_text`) with where the results are and how to build the report.

:func:`compare_summaries` holds a rerun's summary against a stored one (``mesaprobe
compare NEW STORED``): for every stored row (environment, variant, probe, agent, metric)
it asks whether the rerun's mean lies inside the stored row's confidence interval.  On
the machine and software stack that wrote the stored table a rerun is bit-identical, so
every mean equals the stored one; on another processor the trained models' weights drift
apart in the last bits (floating-point sums in another order) and the means move, and
being inside the interval is what "statistically equal" promises.  A rerun row outside
the interval, or missing, fails the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mesaprobe.errors import ArtifactError
from mesaprobe.metrics import METRIC_FAMILIES, MetricFamily

#: What names one row of a summary (the study column aside: a rerun may carry another name).
ROW_KEY = ("environment", "variant", "probe", "agent", "metric")

#: The columns a summary CSV must hold for these checks, with their types.
SUMMARY_CSV_COLUMNS: dict[str, pl.DataType] = {
    **{name: pl.String() for name in ROW_KEY},
    "agent_kind": pl.String(),
    "mean": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
}


def read_summary_csv(path: str | Path) -> pl.DataFrame:
    """The rows of a ``summary.csv`` (:data:`SUMMARY_CSV_COLUMNS`; other columns are ignored).

    Raises :class:`ArtifactError` naming the file for a missing or unreadable file, a
    missing column, a number that is not one, or a row named twice.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "file not found")
    try:
        header = pl.read_csv(path, n_rows=0).columns
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as error:
        raise ArtifactError(path, f"not a readable CSV file ({' '.join(str(error).split())[:200]})") from None
    missing = [name for name in SUMMARY_CSV_COLUMNS if name not in header]
    if missing:
        raise ArtifactError(
            path, f"missing column {missing[0]!r}; a summary.csv has {', '.join(SUMMARY_CSV_COLUMNS)}"
        )
    try:
        frame = pl.read_csv(
            path,
            columns=list(SUMMARY_CSV_COLUMNS),
            schema_overrides=SUMMARY_CSV_COLUMNS,
        ).with_columns(pl.col(*ROW_KEY).fill_null(""))  # an empty variant (no grid) may read as null
    except (pl.exceptions.PolarsError, OSError) as error:
        raise ArtifactError(path, f"not a summary table ({' '.join(str(error).split())[:200]})") from None
    if frame["mean"].null_count():
        row = frame["mean"].is_null().arg_true()[0]
        raise ArtifactError(path, f"row {row + 2}: column 'mean' has no number")
    # ci_low and ci_high are empty where there is no interval (a single seed).
    repeated = frame.filter(frame.select(ROW_KEY).is_duplicated())
    if repeated.height:
        raise ArtifactError(path, f"row {describe_key(repeated.row(0, named=True))} appears more than once")
    return frame


def describe_key(row: dict) -> str:
    """``bandit2, probe adaptation, agent gru: total_reward`` (and ``[variant]`` when there is one)."""
    variant = f" [{row['variant']}]" if row["variant"] else ""
    return f"{row['environment']}{variant}, probe {row['probe']}, agent {row['agent']}: {row['metric']}"


# --------------------------------------------------------------------------- headline


@dataclass(frozen=True)
class HeadlineGroup:
    """The agents of one (environment, variant, probe), by the total of their metric family."""

    environment: str
    variant: str
    probe: str
    family: MetricFamily
    rows: pl.DataFrame
    """One row per agent: agent, agent_kind, mean, ci_low, ci_high; best first."""

    @property
    def title(self) -> str:
        variant = f" [{self.variant}]" if self.variant else ""
        return f"{self.family.total}, {self.environment}{variant}, probe {self.probe}"


def family_of_group(metrics: set[str]) -> MetricFamily | None:
    """The metric family whose episode metrics a group's rows hold (None: no family's total)."""
    for family in METRIC_FAMILIES.values():
        if family.total in metrics and set(family.episode_metrics) <= metrics:
            return family
    return None


def headline_groups(summary: pl.DataFrame) -> list[HeadlineGroup]:
    """Every (environment, variant, probe) of ``summary`` with its family total, agents best first,
    in the order of the table."""
    groups = []
    views = summary.partition_by(["environment", "variant", "probe"], as_dict=True, maintain_order=True)
    for (environment, variant, probe), rows in views.items():
        family = family_of_group(set(rows["metric"]))
        if family is None:
            continue
        higher_is_better = family.higher_is_better[family.episode_metrics.index(family.total)]
        totals = rows.filter(pl.col("metric") == family.total).select(
            "agent", "agent_kind", "mean", "ci_low", "ci_high"
        )
        totals = totals.sort("mean", descending=higher_is_better, maintain_order=True)
        groups.append(HeadlineGroup(environment, variant, probe, family, totals))
    return groups


def number(value: float) -> str:
    """A table value with two decimals, or three significant figures when it is below 1."""
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def interval_text(low: float | None, high: float | None) -> str:
    """``[62.95, 64.48]``, or ``(no interval: one seed)``."""
    if low is None or high is None:
        return "(no interval: one seed)"
    return f"[{number(low)}, {number(high)}]"


def headline_text(summary: pl.DataFrame, confidence: float | None = None, most_groups: int = 6) -> str:
    """The headline numbers of a summary as text: the first ``most_groups`` groups, each agent's
    family total with its interval, best first."""
    groups = headline_groups(summary)
    interval = f"{confidence:.0%} interval" if confidence else "interval"
    lines = []
    for group in groups[:most_groups]:
        lines.append(f"{group.title} (mean over seeds [{interval}], best first):")
        width = max(len(agent) for agent in group.rows["agent"])
        for row in group.rows.iter_rows(named=True):
            lines.append(
                f"  {row['agent']:<{width}}  {row['agent_kind']:<12}  {number(row['mean']):>8}  "
                + interval_text(row["ci_low"], row["ci_high"])
            )
    if len(groups) > most_groups:
        lines.append(f"... and {len(groups) - most_groups} more environment and probe groups in the table")
    if not groups:
        lines.append("(the summary has no rows yet)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- rerun check


@dataclass(frozen=True)
class RowCheck:
    """One stored summary row and the rerun's mean for it."""

    key: dict[str, str]
    """The row's :data:`ROW_KEY` values."""
    stored_mean: float
    stored_low: float | None
    stored_high: float | None
    """The stored interval; None where it has none (one seed)."""
    new_mean: float | None
    """None: the rerun has no such row."""

    @property
    def inside(self) -> bool:
        """Whether the rerun's mean lies in the stored interval (ends included); a row without an
        interval needs the same mean (to a relative 1e-9)."""
        if self.new_mean is None or not math.isfinite(self.new_mean):
            return False
        if self.stored_low is None or self.stored_high is None:
            return math.isclose(self.new_mean, self.stored_mean, rel_tol=1e-9, abs_tol=1e-12)
        return self.stored_low <= self.new_mean <= self.stored_high

    @property
    def verdict(self) -> str:
        if self.new_mean is None:
            return "MISSING"
        if self.stored_low is None or self.stored_high is None:
            return "same" if self.inside else "DIFFERS"
        return "inside" if self.inside else "OUTSIDE"


def compare_summaries(new: pl.DataFrame, stored: pl.DataFrame) -> list[RowCheck]:
    """Every row of ``stored``, in its order, with the mean ``new`` has for it."""
    new_means = {tuple(row[:-1]): row[-1] for row in new.select(*ROW_KEY, "mean").iter_rows()}
    return [
        RowCheck(
            key=dict(zip(ROW_KEY, row[: len(ROW_KEY)], strict=True)),
            stored_mean=row[-3],
            stored_low=row[-2],
            stored_high=row[-1],
            new_mean=new_means.get(tuple(row[: len(ROW_KEY)])),
        )
        for row in stored.select(*ROW_KEY, "mean", "ci_low", "ci_high").iter_rows()
    ]


def comparison_text(checks: list[RowCheck], extra_rows: int = 0) -> str:
    """One line per stored row (its verdict, the rerun's mean, the stored mean and interval),
    then a count."""
    lines = []
    for check in checks:
        new = "-" if check.new_mean is None else number(check.new_mean)
        lines.append(
            f"{check.verdict:<8} {describe_key(check.key)}: rerun {new}, stored {number(check.stored_mean)} "
            + interval_text(check.stored_low, check.stored_high)
        )
    failed = sum(not check.inside for check in checks)
    lines.append(
        f"{len(checks) - failed} of {len(checks)} stored rows reproduced within their intervals"
        + (f"; {failed} not" if failed else "")
        + (f" ({extra_rows} rerun rows have no stored counterpart)" if extra_rows else "")
    )
    return "\n".join(lines)


def extra_row_count(new: pl.DataFrame, stored: pl.DataFrame) -> int:
    """Rows of the rerun that the stored table does not have."""
    return new.select(ROW_KEY).join(stored.select(ROW_KEY), on=list(ROW_KEY), how="anti").height
