"""What each architecture costs, beside what it scores: the summary table's cost columns.

Every frozen manifest records its model's trained parameters, the numbers one episode
carries from one step to the next at its last step (``state_floats``) and the FLOPs of one
step there (``flops_per_step``), at the horizon of the environment it was trained on
(:class:`mesaprobe.manifests.FrozenManifest`).  :func:`with_model_costs` appends them to the
summary as :data:`MODEL_COST_COLUMNS`, one value per (environment, variant, agent): the seeds
of a run share their settings, so they share their costs.  Baselines, and runs whose
manifests predate the costs, get nulls.  A probe that restricts memory or lengthens
episodes does not change them: they describe the model as trained.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl

from mesaprobe.errors import ArtifactError
from mesaprobe.manifests import FrozenManifest

#: Columns :func:`with_model_costs` appends to the summary (null for baselines).
MODEL_COST_COLUMNS: dict[str, pl.DataType] = {
    "parameters": pl.Int64(),  # trained numbers of the model
    "state_floats": pl.Int64(),  # numbers carried between steps, at the last step of an episode
    "flops_per_step": pl.Int64(),  # 2 x multiply-adds of one step there
}

#: What a manifest's costs are joined on: the summary's names of a run's agent group.
COST_KEY = ("environment", "variant", "agent")


def model_costs(frozen_paths: Iterable[str | Path]) -> pl.DataFrame:
    """One row per (environment, variant, agent) of the runs whose ``frozen.json`` are given,
    with :data:`MODEL_COST_COLUMNS`; ArtifactError for a damaged manifest, or for seeds of
    one agent that disagree."""
    costs: dict[tuple[str, str, str], tuple[int | None, ...]] = {}
    for path in sorted({Path(path) for path in frozen_paths}, key=str):
        manifest = FrozenManifest.read(path)
        key = (manifest.environment, manifest.variant, manifest.agent)
        values = (manifest.parameters, manifest.state_floats, manifest.flops_per_step)
        first = costs.setdefault(key, values)
        if first != values:
            named = dict(zip(MODEL_COST_COLUMNS, values, strict=True))
            raise ArtifactError(
                path,
                f"agent {manifest.agent!r} on {manifest.environment!r} records costs {named}; "
                f"another seed of it records {dict(zip(MODEL_COST_COLUMNS, first, strict=True))}",
            )
    columns = [*COST_KEY, *MODEL_COST_COLUMNS]
    rows = [(*key, *values) for key, values in costs.items()]
    schema = {name: pl.String() for name in COST_KEY} | MODEL_COST_COLUMNS
    return pl.DataFrame(rows, schema=schema, orient="row").select(columns)


def with_model_costs(summary: pl.DataFrame, frozen_paths: Iterable[str | Path]) -> pl.DataFrame:
    """``summary`` with :data:`MODEL_COST_COLUMNS` appended: each architecture row gets its runs'
    costs from their frozen manifests, every other row nulls; rows and their order unchanged."""
    costs = model_costs(frozen_paths).with_columns(agent_kind=pl.lit("architecture"))
    joined = summary.join(
        costs, on=[*COST_KEY, "agent_kind"], how="left", maintain_order="left", nulls_equal=False
    )
    assert joined.height == summary.height, "one cost row per agent group"
    return joined.select(*summary.columns, *MODEL_COST_COLUMNS)
