"""Repeating weather patterns (rain-rain-sun-rain-rain-sun...) seen through flip noise.

A task is a period L, uniform on 1 .. ``max_period``, and a pattern of L symbols,
uniform over all K^L strings.  Token t is pattern[t mod L], except that with
probability ``flip_probability`` it is replaced by one of the other K - 1 symbols
(uniformly): a flip, with two symbols.

The Bayes predictor is exact enumeration over every (period, pattern) pair, done
without listing the sum_L K^L patterns: given L, the pattern's symbols are
independent a priori and each is seen only at its own phase, so the posterior
factorises into one K-way posterior per (period, phase).  The filter keeps those
plus the posterior over periods, O(max_period^2 K) numbers per episode, which is
what ``MAX_PERIOD`` bounds (a memory limit, not an approximation).

With ``flip_probability`` 0 some histories are impossible under the prior (a
pattern broken before the horizon reveals every phase); there the Bayes predictor
returns all-zero rows.  Sampled episodes are never impossible.
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
    check_probability,
    normalise,
)
from mesaprobe.settings import SettingError

#: Largest max_period: the filter holds max_period^2 * symbols probabilities per episode.
MAX_PERIOD = 32


@dataclass(frozen=True)
class PeriodicConfig:
    symbols: int = 2
    """Alphabet size K (2: 0 = sun, 1 = rain)."""
    horizon: int = 100
    """Tokens per episode."""
    max_period: int = 4
    """Longest period; the period is uniform on 1 .. max_period (at most 32)."""
    flip_probability: float = 0.1
    """Probability that a token differs from the pattern (it is then one of the other K - 1 symbols,
    uniformly)."""

    def validate(self) -> None:
        check_alphabet(self)
        if not 1 <= self.max_period <= MAX_PERIOD:
            raise SettingError("max_period", f"expected 1 .. {MAX_PERIOD}, got {self.max_period}")
        check_probability(self, "flip_probability")


@dataclass(frozen=True)
class PeriodicTasks:
    period: Tensor
    """(B,) length L of the repeating pattern."""
    pattern: Tensor
    """(B, max_period) the pattern in its first L entries (the rest is never used)."""


@dataclass(frozen=True)
class PatternPosterior:
    period_weights: Tensor
    """(B, max_period) posterior of period L = index + 1."""
    phase_posterior: Tensor
    """(B, max_period, max_period, K) posterior of pattern[j] given period L (index L - 1, j < L)."""
    step: Tensor
    """(B,) tokens seen so far."""


@dataclass(frozen=True)
class PeriodicOracleState:
    tasks: PeriodicTasks
    step: Tensor
    """(B,) tokens seen so far."""


class Periodic(PredictionEnvironment):
    Config: ClassVar[type] = PeriodicConfig

    def __init__(self, config: PeriodicConfig):
        super().__init__(config)
        symbols, flip = config.symbols, config.flip_probability
        # emission[s, x] = P(token x | pattern symbol s)
        self.emission = torch.full((symbols, symbols), flip / (symbols - 1), dtype=PROBABILITY)
        self.emission.fill_diagonal_(1.0 - flip)
        self.periods = torch.arange(1, config.max_period + 1)  # (M,)

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> PeriodicTasks:
        config = self.config
        period = torch.randint(1, config.max_period + 1, (n,), generator=generator, device=device)
        pattern = torch.randint(config.symbols, (n, config.max_period), generator=generator, device=device)
        return PeriodicTasks(period=period, pattern=pattern)

    def prior_state(self, batch: int, device: torch.device | str) -> PatternPosterior:
        periods, symbols = self.config.max_period, self.symbols
        return PatternPosterior(
            period_weights=torch.full((batch, periods), 1.0 / periods, dtype=PROBABILITY, device=device),
            phase_posterior=torch.full(
                (batch, periods, periods, symbols), 1.0 / symbols, dtype=PROBABILITY, device=device
            ),
            step=torch.zeros(batch, dtype=torch.long, device=device),
        )

    def current_phase(self, state: PatternPosterior) -> tuple[Tensor, Tensor]:
        """(index, posterior): phase index (B, M, 1, K) under every period, and its posterior (B, M, K)."""
        batch, periods, _, symbols = state.phase_posterior.shape
        phase = state.step[:, None] % self.periods.to(state.step.device)[None, :]  # (B, M)
        index = phase[:, :, None, None].expand(batch, periods, 1, symbols)
        return index, state.phase_posterior.gather(2, index).squeeze(2)

    def posterior_predictive(self, state: PatternPosterior) -> Tensor:
        _, phase_posterior = self.current_phase(state)
        by_period = phase_posterior @ self.emission.to(phase_posterior.device)  # (B, M, K)
        return torch.einsum("bm,bmk->bk", state.period_weights, by_period)

    def posterior_update(self, state: PatternPosterior, token: Tensor) -> PatternPosterior:
        index, phase_posterior = self.current_phase(state)
        likelihood = self.emission.to(token.device).T[token]  # (B, K): P(token | pattern symbol s)
        joint = phase_posterior * likelihood[:, None, :]  # (B, M, K)
        evidence = joint.sum(dim=2)  # (B, M): P(token | period, history)
        phase_posterior = state.phase_posterior.scatter(2, index, normalise(joint)[:, :, None, :])
        return PatternPosterior(
            period_weights=normalise(state.period_weights * evidence),
            phase_posterior=phase_posterior,
            step=state.step + 1,
        )

    def oracle_state(self, tasks: PeriodicTasks) -> PeriodicOracleState:
        return PeriodicOracleState(tasks=tasks, step=torch.zeros_like(tasks.period))

    def oracle_predictive(self, state: PeriodicOracleState) -> Tensor:
        phase = state.step % state.tasks.period
        symbol = state.tasks.pattern.gather(1, phase[:, None]).squeeze(1)
        return self.emission.to(symbol.device)[symbol]

    def oracle_update(self, state: PeriodicOracleState, token: Tensor) -> PeriodicOracleState:
        return PeriodicOracleState(tasks=state.tasks, step=state.step + 1)
