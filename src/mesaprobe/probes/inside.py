"""What the probes that look inside a frozen learner share (``readout``, ``fitted_learner``,
``in_weights``): they write inside tables (rows of :data:`INSIDE_ROW_COLUMNS`, collected by
:mod:`mesaprobe.analysis.inside`) rather than
per-episode curves, play the environment as it was trained, and declare their charts
(:mod:`mesaprobe.analysis.inside_charts`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
import torch

from mesaprobe.metrics import INSIDE_QUANTITIES
from mesaprobe.probes.base import Probe

#: What an inside probe's ``run`` returns: one row per (quantity, layer, target, index, replicate).
INSIDE_ROW_COLUMNS: dict[str, pl.DataType] = {
    "quantity": pl.String(),  # one of mesaprobe.metrics.INSIDE_QUANTITIES
    "layer": pl.String(),  # the hidden representation read ("" when none), e.g. "state", "layer2"
    "target": pl.String(),  # the statistic read out or the model fitted ("" when none)
    "index": pl.Int64(),  # what the quantity's INSIDE_QUANTITIES entry says: a step, a pull count, ...
    "replicate": pl.Int64(),  # 0: all held-out episodes; 1..R: episode-bootstrap resamples
    "value": pl.Float64(),
}


def episode_bootstrap_weights(episodes: int, replicates: int, generator: torch.Generator) -> torch.Tensor:
    """(replicates + 1, episodes) float64 weights: row 0 all ones (the estimate on every episode),
    rows 1..R how often each episode is drawn in one resample of ``episodes`` draws with replacement.

    A statistic computed with episode weights (a weighted mean, a weighted likelihood) on
    row r is its value on resample r.
    """
    if episodes < 1 or replicates < 0:
        raise ValueError(f"need episodes >= 1 and replicates >= 0, got {episodes}, {replicates}")
    draws = torch.randint(
        0, episodes, (replicates, episodes), generator=generator, device=generator.device
    )  # (R, E)
    counts = torch.zeros(replicates, episodes, dtype=torch.float64, device=generator.device)
    counts.scatter_add_(1, draws, torch.ones_like(counts))
    ones = torch.ones(1, episodes, dtype=torch.float64, device=generator.device)
    return torch.cat([ones, counts])  # (R + 1, E)


def rows_frame(
    quantity: str, values: torch.Tensor | np.ndarray, index: Iterable[int], layer: str = "", target: str = ""
) -> pl.DataFrame:
    """Inside rows of one (quantity, layer, target) from ``values`` of shape (replicates + 1, indices)."""
    if quantity not in INSIDE_QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; known: {', '.join(INSIDE_QUANTITIES)}")
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    values = np.asarray(values, dtype=np.float64)
    index = np.asarray(list(index), dtype=np.int64)
    assert values.ndim == 2 and values.shape[1] == index.size, (values.shape, index.size)
    replicates = values.shape[0]
    return pl.DataFrame(
        {
            "quantity": [quantity] * values.size,
            "layer": [layer] * values.size,
            "target": [target] * values.size,
            "index": np.tile(index, replicates),
            "replicate": np.repeat(np.arange(replicates, dtype=np.int64), index.size),
            "value": values.ravel(),
        },
        schema=INSIDE_ROW_COLUMNS,
    )


class InsideProbe(Probe):
    """Base of the inside probe kinds; a kind sets ``Config``, ``serves``, ``charts``,
    ``task`` and ``run(agent, environment, heldout_key, agent_key, device, untrained)``: the
    job passes ``untrained``, the run's architecture with its initial weights, as a control."""

    writes: ClassVar[Literal["curves", "inside"]] = "inside"
    #: What it does, for the note of a study that asks it of another kind of environment.
    task: ClassVar[str]

    @classmethod
    def not_applicable(cls, config: Any, kind: str) -> str | None:
        """Why these settings cannot probe an environment of ``kind`` (None: they can)."""
        if kind not in cls.serves:
            return f"the {cls.task}; it serves {' and '.join(cls.serves)} environments, not {kind}"
        return None
