"""Reference policies of the commitment game (:mod:`mesaprobe.envs.commitment`), exact by construction.

* ``commit_optimal``: draw z uniformly at random, keep it, emit f(z) and then z.  It
  always succeeds and its z has n bits of entropy: expected reward exactly 1 against
  the marginal and conditional adversaries (the recurrent strategy of the game).
* ``commit_deterministic``: the best policy that uses no randomness at all (neither
  its own nor the environment's noise): one constant z, the complement of the fixed
  adversary's guess, with f(z) first.  It always succeeds, its z has entropy 0, and
  its reward is 1 - penalty against the marginal and conditional adversaries (every
  constant z does as well) and 1 + penalty / (2^n - 1) against the fixed guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mesaprobe.baselines.base import Baseline
from mesaprobe.envs.commitment import Commitment, bits_of


@dataclass(frozen=True)
class CommitConfig:
    """The reference policies have no settings."""


@dataclass(frozen=True)
class CommitState:
    bits: Tensor
    """(B, 2n) the whole episode's actions, chosen at the first step."""
    t: int


class CommitBaseline(Baseline):
    """Choose z at the first step, then emit f(z) and z bit by bit."""

    Config: ClassVar[type] = CommitConfig
    serves: ClassVar[tuple[str, ...]] = ("commitment",)

    def __init__(self, config: CommitConfig, environment: Commitment):
        self.check(environment)
        self.config = config
        self.environment = environment

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> CommitState | None:
        return None

    def choose_z(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        raise NotImplementedError

    def act(self, state: CommitState | None, observation: Tensor, generator: torch.Generator):
        if state is None:
            environment = self.environment
            z = self.choose_z(observation.shape[0], generator, observation.device)
            y = environment.table.to(z.device)[z]
            bits = torch.cat([bits_of(y, environment.bits), bits_of(z, environment.bits)], dim=1)
            state = CommitState(bits=bits, t=0)
        return CommitState(bits=state.bits, t=state.t + 1), state.bits[:, state.t]


class CommitOptimal(CommitBaseline):
    """z uniform over all 2^bits values: the optimal policy (the adversary cannot guess z)."""

    optimal_for: ClassVar[tuple[str, ...]] = ("commitment",)

    def choose_z(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        return torch.randint(0, 2**self.environment.bits, (batch,), generator=generator, device=device)


class CommitDeterministic(CommitBaseline):
    def choose_z(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        environment = self.environment
        constant = (2**environment.bits - 1) ^ environment.config.guess
        return torch.full((batch,), constant, dtype=torch.long, device=device)
