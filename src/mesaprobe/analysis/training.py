"""The training table: every run's training history, gathered by the collect step.

Each run's ``train.json`` records one entry per update (the algorithm's statistics, e.g.
``reward_per_step``, ``regret_per_step``, ``entropy`` and ``value_loss`` for A2C,
``logloss_bits`` for prediction).  :func:`write_training_table` gathers them into
``tables/training.parquet`` (:data:`TRAINING_COLUMNS`, long format: one row per run,
update and statistic), from which :mod:`mesaprobe.analysis.training_charts` draws the
learning curves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mesaprobe.analysis.tables import TABLE_FILES
from mesaprobe.artifacts import atomic_path
from mesaprobe.manifests import TrainingManifest

#: The training table's file name, in the study's ``tables/`` folder.
TRAINING_TABLE = TABLE_FILES["training"]

#: The training table: one row per run, update and training statistic.
TRAINING_COLUMNS: dict[str, pl.DataType] = {
    "study": pl.String(),
    "environment": pl.String(),  # the environment's label, as in the probe tables
    "variant": pl.String(),  # the run's grid values as text ("" without a grid)
    "agent": pl.String(),  # the architecture's name plus its grid values, as in the probe tables
    "run": pl.String(),
    "seed": pl.Int64(),
    "update": pl.Int64(),  # 1 for the first update
    "env_steps": pl.Int64(),  # environment steps of this run after the update
    "statistic": pl.String(),  # the algorithm's name of the statistic (reward_per_step, ...)
    "value": pl.Float64(),
}


@dataclass(frozen=True)
class TrainedRun:
    """A run whose training history goes into the training table, with its labels in the tables."""

    manifest: Path
    """Its ``runs/<run>/train.json``."""
    environment: str
    """The environment's label."""
    variant: str
    """The run's grid values as text ("" without a grid)."""
    agent: str
    """The architecture's name plus its grid values."""


def training_table(runs: Iterable[TrainedRun]) -> pl.DataFrame:
    """Every update's statistics of every run, in the order of ``runs`` (:data:`TRAINING_COLUMNS`).

    Raises :class:`ArtifactError` for a missing or malformed ``train.json``.
    """
    frames = []
    for run in runs:
        manifest = TrainingManifest.read(run.manifest)
        statistics = list(manifest.history[0].metrics) if manifest.history else []
        rows = {name: [] for name in ("update", "env_steps", "statistic", "value")}
        for entry in manifest.history:
            for statistic in statistics:
                rows["update"].append(entry.update)
                rows["env_steps"].append(entry.env_steps)
                rows["statistic"].append(statistic)
                rows["value"].append(entry.metrics.get(statistic))
        labels = {
            "study": manifest.study,
            "environment": run.environment,
            "variant": run.variant,
            "agent": run.agent,
            "run": manifest.run,
            "seed": manifest.seed,
        }
        frame = pl.DataFrame(rows, schema={name: TRAINING_COLUMNS[name] for name in rows})
        frames.append(frame.with_columns(pl.lit(value).alias(name) for name, value in labels.items()))
    if not frames:
        return pl.DataFrame(schema=TRAINING_COLUMNS)
    return pl.concat(frames).select(pl.col(name).cast(dtype) for name, dtype in TRAINING_COLUMNS.items())


def write_training_table(runs: Iterable[TrainedRun], path: str | Path) -> Path:
    """Write :func:`training_table` of ``runs`` to ``path`` atomically; return the path."""
    table = training_table(runs)
    with atomic_path(path) as temporary:
        table.write_parquet(temporary)
    return Path(path)
