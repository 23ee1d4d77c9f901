"""Independent draws from one unknown distribution: the memoryless weather world.

Each task is a distribution p over the ``symbols`` values, drawn from a Dirichlet
prior (a Beta(prior_counts[1], prior_counts[0]) prior on P(rain) with two symbols);
every token is an independent draw from p.  The Bayes predictor is the count rule
(n_k + a_k) / (t + sum a): Laplace's rule for a uniform prior, Krichevsky-Trofimov
for prior_counts 1/2.
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
    dirichlet_concentration,
    sample_dirichlet,
)


@dataclass(frozen=True)
class IIDConfig:
    symbols: int = 2
    """Alphabet size K (2: 0 = sun, 1 = rain)."""
    horizon: int = 100
    """Tokens per episode."""
    prior_counts: tuple[float, ...] = (1.0,)
    """Dirichlet concentration of p, one value per symbol in symbol order (sun, rain, ...) or one
    value for all. (1.0,) is uniform (Laplace's rule); (0.5,) gives the KT estimator."""

    def validate(self) -> None:
        check_alphabet(self)
        check_prior_counts(self)


@dataclass(frozen=True)
class IIDTasks:
    probs: Tensor
    """(B, K) distribution of every token."""


@dataclass(frozen=True)
class CountState:
    counts: Tensor
    """(B, K) how often each symbol has been seen."""


class IID(PredictionEnvironment):
    Config: ClassVar[type] = IIDConfig

    def concentration(self, device) -> Tensor:
        return dirichlet_concentration(self.config.prior_counts, self.symbols, device)

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> IIDTasks:
        return IIDTasks(probs=sample_dirichlet(self.concentration(device), (n,), generator))

    def prior_state(self, batch: int, device: torch.device | str) -> CountState:
        return CountState(counts=torch.zeros(batch, self.symbols, dtype=PROBABILITY, device=device))

    def posterior_predictive(self, state: CountState) -> Tensor:
        pseudo = state.counts + self.concentration(state.counts.device)  # (B, K)
        return pseudo / pseudo.sum(dim=1, keepdim=True)

    def posterior_update(self, state: CountState, token: Tensor) -> CountState:
        seen = torch.nn.functional.one_hot(token, self.symbols).to(PROBABILITY)
        return CountState(counts=state.counts + seen)

    def oracle_state(self, tasks: IIDTasks) -> IIDTasks:
        return tasks

    def oracle_predictive(self, state: IIDTasks) -> Tensor:
        return state.probs

    def oracle_update(self, state: IIDTasks, token: Tensor) -> IIDTasks:
        return state
