"""Piecewise-stationary weather: iid segments whose distribution is redrawn at random times.

Before the first token, and before every later token with probability ``hazard``,
the world draws a fresh distribution p ~ Dirichlet(prior_counts); tokens are iid
draws from the current p.  The Bayes predictor is exact Bayesian online change-point
detection (Adams & MacKay 2007): a posterior over the run length r (tokens since the
last change, 0 <= r <= t) with Dirichlet counts of the last r tokens under each r.
No run length is pruned, so it is exact, at O(t K) work per episode at step t.

The oracle knows every change point and every segment's p: its predictive at step t
is the p in force at t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mesaprobe.envs.sequences.base import (
    PROBABILITY,
    PredictionEnvironment,
    check_alphabet,
    check_prior_counts,
    check_probability,
    dirichlet_concentration,
    normalise,
    sample_dirichlet,
    uniform_open,
)


@dataclass(frozen=True)
class SwitchingConfig:
    symbols: int = 2
    """Alphabet size K (2: 0 = sun, 1 = rain)."""
    horizon: int = 100
    """Tokens per episode."""
    hazard: float = 0.05
    """Probability that a fresh distribution is drawn before each token after the first (mean
    segment length 1 / hazard); 0 is the iid family."""
    prior_counts: tuple[float, ...] = (1.0,)
    """Dirichlet concentration of each segment's distribution, one value per symbol (sun, rain, ...)
    or one value for all."""

    def validate(self) -> None:
        check_alphabet(self)
        check_probability(self, "hazard")
        check_prior_counts(self)


def sample_change_points(
    batch: int, horizon: int, hazard: float, generator: torch.Generator, device
) -> tuple[Tensor, Tensor]:
    """(changes, segment_start): (B, T) bool, true at t = 0 and w.p. ``hazard`` later; (B, T) long start of the segment holding t."""
    changes = uniform_open((batch, horizon), generator, device) <= hazard
    changes[:, 0] = True
    steps = torch.arange(horizon, device=device).expand(batch, horizon)
    segment_start = torch.where(changes, steps, 0).cummax(dim=1).values
    return changes, segment_start


@dataclass(frozen=True)
class SwitchingTasks:
    probs: Tensor
    """(B, T, K) distribution in force at each step."""
    changes: Tensor
    """(B, T) true where a fresh distribution was drawn (always at t = 0)."""


@dataclass(frozen=True)
class RunLengthPosterior:
    weights: Tensor
    """(B, R) posterior of the run length r = 0 .. R - 1 before the next token."""
    counts: Tensor
    """(B, R, K) counts of the last r tokens, for each run length r."""


@dataclass(frozen=True)
class SwitchingOracleState:
    probs: Tensor
    """(B, T, K) the task's distribution at each step."""
    step: int
    """Tokens seen so far."""


class Switching(PredictionEnvironment):
    Config: ClassVar[type] = SwitchingConfig

    def concentration(self, device) -> Tensor:
        return dirichlet_concentration(self.config.prior_counts, self.symbols, device)

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> SwitchingTasks:
        changes, segment_start = sample_change_points(n, self.horizon, self.config.hazard, generator, device)
        fresh = sample_dirichlet(self.concentration(device), (n, self.horizon), generator)  # (B, T, K)
        probs = fresh.gather(1, segment_start[:, :, None].expand(-1, -1, self.symbols))
        return SwitchingTasks(probs=probs, changes=changes)

    def prior_state(self, batch: int, device: torch.device | str) -> RunLengthPosterior:
        # The first token always starts a segment: run length 0 for sure.
        return RunLengthPosterior(
            weights=torch.ones(batch, 1, dtype=PROBABILITY, device=device),
            counts=torch.zeros(batch, 1, self.symbols, dtype=PROBABILITY, device=device),
        )

    def run_predictives(self, state: RunLengthPosterior) -> Tensor:
        """(B, R, K) predictive of the next token under each run length."""
        pseudo = state.counts + self.concentration(state.counts.device)
        return pseudo / pseudo.sum(dim=2, keepdim=True)

    def posterior_predictive(self, state: RunLengthPosterior) -> Tensor:
        return torch.einsum("br,brk->bk", state.weights, self.run_predictives(state))

    def posterior_update(self, state: RunLengthPosterior, token: Tensor) -> RunLengthPosterior:
        batch = token.shape[0]
        index = token[:, None, None].expand(-1, state.weights.shape[1], 1)
        likelihood = self.run_predictives(state).gather(2, index).squeeze(2)  # (B, R)
        weights = normalise(state.weights * likelihood)
        seen = torch.nn.functional.one_hot(token, self.symbols).to(PROBABILITY)[:, None, :]  # (B, 1, K)
        # Next step: every run grows by one (no change) or a new run of length 0 starts (change).
        hazard = self.config.hazard
        fresh = torch.zeros(batch, 1, self.symbols, dtype=PROBABILITY, device=token.device)
        return RunLengthPosterior(
            weights=torch.cat([hazard * weights.sum(dim=1, keepdim=True), (1.0 - hazard) * weights], dim=1),
            counts=torch.cat([fresh, state.counts + seen], dim=1),
        )

    def filtered_run_lengths(self, state: RunLengthPosterior) -> Tensor:
        """(B, R - 1) posterior, given the token just seen, of the run length before it
        (r = 0: that token started a segment), read from the state that token produced.

        :meth:`posterior_update` stores it scaled by 1 - hazard behind the new run of length 0.
        """
        hazard = self.config.hazard
        if hazard < 1.0:
            return state.weights[:, 1:] / (1.0 - hazard)
        certain = torch.zeros_like(state.weights[:, 1:])  # every token starts a segment
        certain[:, 0] = 1.0
        return certain

    def oracle_state(self, tasks: SwitchingTasks) -> SwitchingOracleState:
        return SwitchingOracleState(probs=tasks.probs, step=0)

    def oracle_predictive(self, state: SwitchingOracleState) -> Tensor:
        return state.probs[:, state.step]

    def oracle_update(self, state: SwitchingOracleState, token: Tensor) -> SwitchingOracleState:
        return SwitchingOracleState(probs=state.probs, step=state.step + 1)
