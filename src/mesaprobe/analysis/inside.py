"""Inside tables: what the probes that look inside a frozen learner write, and their summary.

The adaptation family of probes writes per-episode curves (:mod:`mesaprobe.analysis.tables`).
The probes that ask *what* a frozen model computes (``readout``, ``fitted_learner``,
``in_weights``) estimate quantities that are not episode means: an R^2 of a read-out
fitted on some episodes and scored on others, a learning rate fitted by maximum
likelihood to all of a seed's choices.  Each such probe job writes one *inside table*
(:data:`INSIDE_COLUMNS`), long form, one row per (quantity, layer, target, index,
replicate):

* ``replicate`` 0 is the estimate on all of the seed's held-out episodes;
* replicates 1..R are the same estimate on episode-bootstrap resamples (episodes drawn
  with replacement, :func:`episode_bootstrap_weights`), computed by the probe itself,
  so that a statistic which is not a mean still gets its sampling spread over episodes.

:func:`summarise` turns the inside tables of a study into ``inside.parquet`` (and
``inside.csv``): per (agent group, quantity, layer, target, index) the mean over seeds
of the replicate-0 estimates, with a two-level bootstrap percentile interval: each
resample draws S seeds with replacement and, for each drawn seed, one of its episode
replicates at random (the seed level and the episode level, as for the curves).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl

from mesaprobe.analysis.stats import two_level_replicate_bootstrap
from mesaprobe.analysis.tables import GROUP_COLUMNS, read_table, rows_problem, write_validated
from mesaprobe.errors import ArtifactError
from mesaprobe.metrics import INSIDE_QUANTITIES
from mesaprobe.probes.inside import INSIDE_ROW_COLUMNS

#: Schema of an inside table: identifying columns, then the probe's rows.
INSIDE_COLUMNS: dict[str, pl.DataType] = {
    **GROUP_COLUMNS,
    "run": pl.String(),  # run id (architectures) or baseline id
    "seed": pl.Int64(),  # one independent replicate (a training seed)
    **INSIDE_ROW_COLUMNS,
}

#: Columns naming one summarised cell of ``inside.parquet``.
INSIDE_CELL_COLUMNS = [*GROUP_COLUMNS, "quantity", "layer", "target", "index"]

#: Schema of ``inside.parquet`` / ``inside.csv``: one row per cell.
INSIDE_SUMMARY_COLUMNS: dict[str, pl.DataType] = {
    **GROUP_COLUMNS,
    "quantity": pl.String(),
    "layer": pl.String(),
    "target": pl.String(),
    "index": pl.Int64(),
    "mean": pl.Float64(),  # mean over seeds of the replicate-0 estimates
    "ci_low": pl.Float64(),  # two-level (seeds x episode replicates) bootstrap percentile interval
    "ci_high": pl.Float64(),
    "seeds": pl.Int64(),
    "replicates": pl.Int64(),  # episode-bootstrap replicates per seed
}


def _content_problem(frame: pl.DataFrame) -> str | None:
    if (problem := rows_problem(frame)) is not None:
        return problem
    unknown = sorted(set(frame["quantity"].unique().to_list()) - set(INSIDE_QUANTITIES))
    if unknown:
        return f"unknown quantity {unknown[0]!r}; expected one of: {', '.join(INSIDE_QUANTITIES)}"
    if frame["replicate"].min() < 0:
        return "negative replicate; replicates are 0 (all episodes) and 1..R"
    non_finite = int((~frame["value"].is_finite()).sum())
    if non_finite:
        return f"column 'value' has {non_finite} NaN or infinite values"
    cells = frame.group_by([*INSIDE_CELL_COLUMNS, "seed"]).agg(
        replicates=pl.col("replicate").n_unique(), rows=pl.len(), first=pl.col("replicate").min()
    )
    bad = cells.filter((pl.col("replicates") != pl.col("rows")) | (pl.col("first") != 0))
    if bad.height:
        row = bad.row(0, named=True)
        return (
            f"cell quantity={row['quantity']!r} layer={row['layer']!r} target={row['target']!r} "
            f"index={row['index']} seed {row['seed']} repeats a replicate or lacks replicate 0"
        )
    return None


def write_inside_table(frame: pl.DataFrame, path: str | Path) -> Path:
    """Validate ``frame`` against :data:`INSIDE_COLUMNS` and write it as parquet, atomically.

    Raises ``ValueError`` (a bug in the probe, not user input) for a missing, extra or
    wrong-typed column, a null, an unknown quantity, a repeated replicate or a non-finite value.
    """
    return write_validated(frame, path, INSIDE_COLUMNS, _content_problem, "inside table")


def read_inside_table(path: str | Path) -> pl.DataFrame:
    """Read and validate one inside table, raising :class:`ArtifactError` naming the file."""
    return read_table(path, INSIDE_COLUMNS, _content_problem)


def summarise(
    paths: Iterable[str | Path], resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> pl.DataFrame:
    """The summary (:data:`INSIDE_SUMMARY_COLUMNS`) of a study's inside tables.

    Cells whose seeds have no episode replicates (R = 0) get the seed-level bootstrap only.
    Same inputs and settings give the same table.
    """
    paths = sorted({Path(path) for path in paths}, key=str)
    frame = pl.concat([read_inside_table(path) for path in paths])
    groups = []
    for key, part in frame.partition_by(
        [*GROUP_COLUMNS, "quantity", "layer", "target"], as_dict=True, maintain_order=False
    ).items():
        seeds = part["seed"].unique().sort().to_list()
        indices = part["index"].unique().sort().to_list()
        counts = part.group_by("seed").agg(pl.col("replicate").max())["replicate"].unique().to_list()
        if len(counts) > 1:
            raise ArtifactError(paths[0], f"cell {key} has seeds with different replicate counts {counts}")
        replicate_count = counts[0]
        dense = part.sort("seed", "replicate", "index")
        expected = len(seeds) * (replicate_count + 1) * len(indices)
        if dense.height != expected:
            raise ArtifactError(
                paths[0],
                f"cell {key}: {dense.height} rows, expected seeds x replicates x indices = {expected}",
            )
        values = dense["value"].to_numpy().reshape(len(seeds), replicate_count + 1, len(indices))
        generator = np.random.default_rng(np.random.SeedSequence([seed, len(seeds), replicate_count]))
        pool = values[:, 1:] if replicate_count else values[:, :1]
        mean, low, high = two_level_replicate_bootstrap(values[:, 0], pool, resamples, confidence, generator)
        groups.append(
            pl.DataFrame(
                {
                    **{
                        name: [value] * len(indices)
                        for name, value in zip(
                            [*GROUP_COLUMNS, "quantity", "layer", "target"], key, strict=True
                        )
                    },
                    "index": indices,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "seeds": [len(seeds)] * len(indices),
                    "replicates": [replicate_count] * len(indices),
                },
                schema=INSIDE_SUMMARY_COLUMNS,
            )
        )
    return pl.concat(groups).sort(INSIDE_CELL_COLUMNS)
