"""What a frozen agent did, in the form the fitted-learner probe's learning models read.

:class:`Choices` is one agent's play on held-out bandit tasks: the data that every learning
model (:mod:`mesaprobe.probes.learner_q_learning`, :mod:`mesaprobe.probes.learner_thompson`)
is fitted to by :mod:`mesaprobe.probes.learner_fitting`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Choices:
    """One agent's play: the data every learning model is fitted to."""

    actions: Tensor
    """(E, T) int64 arm pulled at each step."""
    rewards: Tensor
    """(E, T) float64 reward of each pull (0 or 1)."""
    arms: int
    """Number of arms K."""

    @property
    def episodes(self) -> int:
        return self.actions.shape[0]

    @property
    def horizon(self) -> int:
        return self.actions.shape[1]

    def counts_before(self) -> tuple[Tensor, Tensor]:
        """(pulls, successes), each (E, T, K) int64: of each arm before each step's choice."""
        pulled = torch.nn.functional.one_hot(self.actions, self.arms)  # (E, T, K)
        paid = pulled * self.rewards.round().long()[..., None]  # (E, T, K)
        return pulled.cumsum(1) - pulled, paid.cumsum(1) - paid


def other_arms(actions: Tensor, arms: int) -> Tensor:
    """(..., K - 1) the arms other than ``actions`` (...), in order."""
    every = torch.arange(arms, device=actions.device).expand(*actions.shape, arms)
    return every[every != actions[..., None]].reshape(*actions.shape, arms - 1)
