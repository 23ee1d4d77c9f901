"""Order-k Markov chains with unknown transition probabilities.

Each task gives every context (the previous ``order`` symbols) its own next-symbol
distribution, drawn independently from a Dirichlet prior; the weather of order 1
is "rain follows rain" stickiness, with the strength unknown.  Before the first
``order`` tokens the context is padded with sun (symbol 0): every episode starts
after ``order`` known sunny days, for the sampler and the predictors alike.  The
Bayes predictor keeps per-context counts: (n_{c,k} + a_k) / (n_c + sum a).
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
from mesaprobe.settings import SettingError

#: Most contexts (symbols ** order) a chain may have; count tables are (B, contexts, K).
MAX_CONTEXTS = 4096


@dataclass(frozen=True)
class MarkovConfig:
    symbols: int = 2
    """Alphabet size K (2: 0 = sun, 1 = rain)."""
    horizon: int = 100
    """Tokens per episode."""
    order: int = 1
    """How many previous tokens the next one depends on (0 is the iid family); symbols ** order
    may be at most 4096."""
    prior_counts: tuple[float, ...] = (1.0,)
    """Dirichlet concentration of each context's next-symbol distribution, one value per symbol
    (sun, rain, ...) or one value for all."""

    def validate(self) -> None:
        check_alphabet(self)
        if self.order < 0:
            raise SettingError("order", f"expected a non-negative order, got {self.order}")
        if self.symbols**self.order > MAX_CONTEXTS:
            raise SettingError(
                "order", f"symbols ** order = {self.symbols**self.order} contexts, more than {MAX_CONTEXTS}"
            )
        check_prior_counts(self)


@dataclass(frozen=True)
class MarkovTasks:
    transitions: Tensor
    """(B, contexts, K) next-symbol distribution of each context; context index = the previous
    ``order`` symbols read as a base-K number, oldest digit first."""


@dataclass(frozen=True)
class ContextCounts:
    counts: Tensor
    """(B, contexts, K) how often each symbol followed each context."""
    context: Tensor
    """(B,) index of the current context."""


@dataclass(frozen=True)
class MarkovOracleState:
    transitions: Tensor
    """(B, contexts, K) the task's transition table."""
    context: Tensor
    """(B,) index of the current context."""


class Markov(PredictionEnvironment):
    Config: ClassVar[type] = MarkovConfig

    def __init__(self, config: MarkovConfig):
        super().__init__(config)
        self.contexts = config.symbols**config.order

    def concentration(self, device) -> Tensor:
        return dirichlet_concentration(self.config.prior_counts, self.symbols, device)

    def next_context(self, context: Tensor, token: Tensor) -> Tensor:
        # Shift the oldest digit out, the new token in.
        return (context * self.symbols + token) % self.contexts

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> MarkovTasks:
        transitions = sample_dirichlet(self.concentration(device), (n, self.contexts), generator)
        return MarkovTasks(transitions=transitions)

    def prior_state(self, batch: int, device: torch.device | str) -> ContextCounts:
        counts = torch.zeros(batch, self.contexts, self.symbols, dtype=PROBABILITY, device=device)
        return ContextCounts(counts=counts, context=torch.zeros(batch, dtype=torch.long, device=device))

    def posterior_predictive(self, state: ContextCounts) -> Tensor:
        rows = torch.arange(state.context.shape[0], device=state.context.device)
        pseudo = state.counts[rows, state.context] + self.concentration(state.counts.device)  # (B, K)
        return pseudo / pseudo.sum(dim=1, keepdim=True)

    def posterior_update(self, state: ContextCounts, token: Tensor) -> ContextCounts:
        rows = torch.arange(token.shape[0], device=token.device)
        one = torch.ones(token.shape[0], dtype=PROBABILITY, device=token.device)
        counts = state.counts.index_put((rows, state.context, token), one, accumulate=True)
        return ContextCounts(counts=counts, context=self.next_context(state.context, token))

    def oracle_state(self, tasks: MarkovTasks) -> MarkovOracleState:
        batch = tasks.transitions.shape[0]
        context = torch.zeros(batch, dtype=torch.long, device=tasks.transitions.device)
        return MarkovOracleState(transitions=tasks.transitions, context=context)

    def oracle_predictive(self, state: MarkovOracleState) -> Tensor:
        rows = torch.arange(state.context.shape[0], device=state.context.device)
        return state.transitions[rows, state.context]

    def oracle_update(self, state: MarkovOracleState, token: Tensor) -> MarkovOracleState:
        return MarkovOracleState(state.transitions, self.next_context(state.context, token))
