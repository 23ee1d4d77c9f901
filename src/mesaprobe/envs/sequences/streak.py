"""Run-length dependent weather: whether today repeats yesterday depends on the streak so far.

After a run of r equal tokens (r >= 1), the next token continues the run with
probability

    continue(r) = sigmoid(intercept + slope * log(1 + r))

and otherwise switches to one of the other K - 1 symbols uniformly; the first token
is uniform.  The same law holds for sunny and rainy streaks.  A task is one
(intercept, slope) pair drawn uniformly from the grid ``intercepts`` x slopes, where
``mode`` sets the slopes' sign: *sticky* worlds (slope > 0) make long streaks ever
more likely to go on, *fatigue* worlds (slope < 0) make them more likely to end.

Because the prior is a finite grid, the Bayes predictor is exact enumeration: it
keeps the posterior weight of every grid point and mixes their continue
probabilities.
"""

from __future__ import annotations

import itertools
import math
import typing
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from mesaprobe.envs.sequences.base import PROBABILITY, PredictionEnvironment, check_alphabet, normalise
from mesaprobe.settings import SettingError

Mode = Literal["sticky", "fatigue", "either"]
MODES: tuple[str, ...] = typing.get_args(Mode)


@dataclass(frozen=True)
class StreakConfig:
    symbols: int = 2
    """Alphabet size K (2: 0 = sun, 1 = rain); a run that ends moves to one of the other K - 1
    symbols uniformly."""
    horizon: int = 100
    """Tokens per episode."""
    mode: Mode = "sticky"
    """Sign of the slope. sticky: slope = +s (longer runs more likely to continue); fatigue:
    slope = -s (more likely to end); either: both signs, each equally likely."""
    intercepts: tuple[float, ...] = (-1.0, 0.0, 1.0)
    """Values the intercept can take (uniform prior); continue(r) = sigmoid(intercept + slope * log(1 + r))."""
    slopes: tuple[float, ...] = (0.5, 1.0, 2.0)
    """Magnitudes s > 0 the slope can take (uniform prior); ``mode`` gives their sign."""

    def validate(self) -> None:
        check_alphabet(self)
        if self.mode not in MODES:
            raise SettingError("mode", f"expected one of {', '.join(MODES)}, got {self.mode!r}")
        for key in ("intercepts", "slopes"):
            values = getattr(self, key)
            if not values:
                raise SettingError(key, "expected at least one value")
            if not all(math.isfinite(value) for value in values):
                raise SettingError(key, f"expected finite numbers, got {list(values)}")
            if len(set(values)) != len(values):
                raise SettingError(key, f"expected distinct values, got {list(values)}")
        if not all(slope > 0 for slope in self.slopes):
            raise SettingError(
                "slopes", f"expected positive magnitudes (mode sets the sign), got {list(self.slopes)}"
            )

    def grid(self) -> list[tuple[float, float]]:
        """Every (intercept, slope) pair of the prior, each with prior weight 1 / len(grid)."""
        signs = {"sticky": (1.0,), "fatigue": (-1.0,), "either": (1.0, -1.0)}[self.mode]
        slopes = [sign * slope for sign in signs for slope in self.slopes]
        return list(itertools.product(self.intercepts, slopes))


@dataclass(frozen=True)
class StreakTasks:
    intercept: Tensor
    """(B,) intercept of the continue law."""
    slope: Tensor
    """(B,) slope of the continue law (per log(1 + run length))."""


@dataclass(frozen=True)
class Run:
    previous: Tensor
    """(B,) the last token (0 before the first)."""
    length: Tensor
    """(B,) length of the current run of equal tokens (0 before the first token)."""


@dataclass(frozen=True)
class StreakPosterior:
    weights: Tensor
    """(B, grid) posterior probability of each (intercept, slope) pair."""
    run: Run


@dataclass(frozen=True)
class StreakOracleState:
    tasks: StreakTasks
    run: Run


class Streak(PredictionEnvironment):
    Config: ClassVar[type] = StreakConfig

    def __init__(self, config: StreakConfig):
        super().__init__(config)
        grid = torch.tensor(config.grid(), dtype=PROBABILITY)  # (G, 2)
        self.grid_intercepts, self.grid_slopes = grid[:, 0], grid[:, 1]

    @staticmethod
    def continue_probability(intercept: Tensor, slope: Tensor, length: Tensor) -> Tensor:
        return torch.sigmoid(intercept + slope * torch.log1p(length.to(PROBABILITY)))

    def run_predictive(self, run: Run, keep: Tensor) -> Tensor:
        """(B, K) next-token distribution when the run continues with probability ``keep`` (B,)."""
        batch = run.previous.shape[0]
        same = torch.nn.functional.one_hot(run.previous, self.symbols).to(PROBABILITY)  # (B, K)
        probs = keep[:, None] * same + ((1.0 - keep) / (self.symbols - 1))[:, None] * (1.0 - same)
        uniform = torch.full((batch, self.symbols), 1.0 / self.symbols, dtype=PROBABILITY, device=keep.device)
        return torch.where((run.length == 0)[:, None], uniform, probs)

    @staticmethod
    def extend(run: Run, token: Tensor) -> Run:
        continued = (token == run.previous) & (run.length > 0)
        return Run(previous=token, length=torch.where(continued, run.length + 1, 1))

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> StreakTasks:
        index = torch.randint(len(self.grid_intercepts), (n,), generator=generator, device=device)
        return StreakTasks(
            intercept=self.grid_intercepts.to(device)[index], slope=self.grid_slopes.to(device)[index]
        )

    def start_run(self, batch: int, device) -> Run:
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        return Run(previous=zeros, length=zeros)

    def prior_state(self, batch: int, device: torch.device | str) -> StreakPosterior:
        points = len(self.grid_intercepts)
        weights = torch.full((batch, points), 1.0 / points, dtype=PROBABILITY, device=device)
        return StreakPosterior(weights=weights, run=self.start_run(batch, device))

    def grid_keep(self, state: StreakPosterior) -> Tensor:
        """(B, G) continue probability of the current run under every grid point."""
        device = state.weights.device
        return self.continue_probability(
            self.grid_intercepts.to(device)[None, :],
            self.grid_slopes.to(device)[None, :],
            state.run.length[:, None],
        )

    def posterior_predictive(self, state: StreakPosterior) -> Tensor:
        # The predictive is linear in the continue probability, so mixing it is enough.
        keep = (state.weights * self.grid_keep(state)).sum(dim=1)
        return self.run_predictive(state.run, keep)

    def posterior_update(self, state: StreakPosterior, token: Tensor) -> StreakPosterior:
        keep = self.grid_keep(state)  # (B, G)
        continued = (token == state.run.previous)[:, None]
        likelihood = torch.where(continued, keep, (1.0 - keep) / (self.symbols - 1))
        # Before the first token every grid point predicts uniformly: no evidence yet.
        likelihood = torch.where((state.run.length == 0)[:, None], 1.0, likelihood)
        return StreakPosterior(
            weights=normalise(state.weights * likelihood), run=self.extend(state.run, token)
        )

    def oracle_state(self, tasks: StreakTasks) -> StreakOracleState:
        return StreakOracleState(
            tasks=tasks, run=self.start_run(tasks.intercept.shape[0], tasks.intercept.device)
        )

    def oracle_predictive(self, state: StreakOracleState) -> Tensor:
        keep = self.continue_probability(state.tasks.intercept, state.tasks.slope, state.run.length)
        return self.run_predictive(state.run, keep)

    def oracle_update(self, state: StreakOracleState, token: Tensor) -> StreakOracleState:
        return StreakOracleState(tasks=state.tasks, run=self.extend(state.run, token))
