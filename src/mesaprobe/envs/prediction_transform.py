"""Out-of-distribution variants of a sequence-prediction environment, as a transform.

* ``horizon_factor``: sequences this many times longer than trained; the time input
  keeps the trained scale (``t / trained horizon``) and runs past 1;
* ``permute_labels``: every token relabelled by one fixed permutation of the symbols
  (rain <-> sun for the binary weather world);
* ``switch_at``: a regime change: after this fraction of the sequence a fresh task
  starts a fresh sequence (a new segment from the prior).

The Bayes-optimal and oracle predictors of the transformed process stay exact: the
relabelled process is predicted by relabelling the original predictor, and a regime
change at a known step restarts both predictors there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mesaprobe.envs.sequences.base import prediction_inputs
from mesaprobe.errors import UserError
from mesaprobe.seeding import fixed_permutation


@dataclass(frozen=True)
class SwitchedTasks:
    before: Any
    """Tasks of the first segment."""
    after: Any
    """Tasks of the segment after the regime change."""


class TransformedPrediction:
    """A prediction environment seen through an out-of-distribution transform."""

    kind = "prediction"

    def __init__(
        self, base, horizon_factor: int = 1, permute_labels: bool = False, switch_at: float | None = None
    ):
        self.base = base
        self.horizon_factor = horizon_factor
        self.permute_labels = permute_labels
        self.switch_at = switch_at
        self.time_horizon = base.horizon
        self.horizon = base.horizon * horizon_factor
        self.symbols = base.symbols
        self.observation_size = base.observation_size
        self.config = base.config
        self.switch_step = None if switch_at is None else max(1, round(switch_at * self.horizon))
        segment = (
            self.horizon
            if self.switch_step is None
            else max(self.switch_step, self.horizon - self.switch_step)
        )
        try:
            # One family instance long enough for the longest segment.
            self.family = type(base)(dataclasses.replace(base.config, horizon=segment))
        except Exception as error:  # a family whose exact predictor limits the horizon
            raise UserError(
                f"cannot lengthen {type(base).__name__} sequences to {segment} steps: {error}"
            ) from None
        identity = torch.arange(self.symbols)
        permutation = fixed_permutation(self.symbols, "label-permutation") if permute_labels else identity
        self.permutation = permutation  # new label of each original symbol
        self.inverse = torch.argsort(permutation)

    def sample_tasks(self, n: int, generator: torch.Generator, device) -> Any:
        before = self.family.sample_tasks(n, generator, device)
        if self.switch_step is None:
            return before
        return SwitchedTasks(before, self.family.sample_tasks(n, generator, device))

    def sample(self, tasks, generator: torch.Generator) -> Tensor:
        if self.switch_step is None:
            tokens = self.family.sample(tasks, generator)[:, : self.horizon]
        else:
            first = self.family.sample(tasks.before, generator)[:, : self.switch_step]
            second = self.family.sample(tasks.after, generator)[:, : self.horizon - self.switch_step]
            tokens = torch.cat([first, second], dim=1)
        return self.permutation.to(tokens.device)[tokens]

    def _segments(self, tokens: Tensor, predict) -> Tensor:
        """Apply ``predict(segment_tokens, segment_index)`` per segment, in original labels."""
        original = self.inverse.to(tokens.device)[tokens]
        if self.switch_step is None:
            probs = predict(original, 0)
        else:
            s = self.switch_step
            probs = torch.cat([predict(original[:, :s], 0), predict(original[:, s:], 1)], dim=1)
        return probs[..., self.inverse.to(tokens.device)]  # column k: P(new label k) = P(original inverse[k])

    def bayes_predict(self, tokens: Tensor) -> Tensor:
        return self._segments(tokens, lambda segment, _: self.family.bayes_predict(segment))

    def oracle_predict(self, tasks, tokens: Tensor) -> Tensor:
        def predict(segment: Tensor, index: int) -> Tensor:
            segment_tasks = tasks if self.switch_step is None else (tasks.before, tasks.after)[index]
            return self.family.oracle_predict(segment_tasks, segment)

        return self._segments(tokens, predict)

    def observation(self, tokens: Tensor) -> Tensor:
        """Model inputs (B, T, K + 1) with the time input on the trained scale, t / trained horizon."""
        return prediction_inputs(tokens, self.symbols, self.time_horizon)
