"""Classic bandit policies: random, greedy, epsilon-greedy, UCB1, Thompson and optimistic Thompson sampling.

Every baseline is an agent like :class:`mesaprobe.agents.ModelAgent`: it has
``initial_state(batch, horizon, device)`` and ``act(state, observation, generator)``,
so :func:`mesaprobe.train.rollout.play` plays it unchanged.  A baseline never sees
the task: like the sequence models, it learns only from the RL^2 observations (the
previous action and reward), which it folds into per-arm pull and success counts.
All episodes of a batch are handled at once with tensor operations, and every random
choice, tie-breaks included, comes from the generator passed to ``act``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mesaprobe.baselines.base import Baseline
from mesaprobe.envs.bernoulli_bandit import BernoulliBandit
from mesaprobe.settings import SettingError


@dataclass(frozen=True)
class ArmCounts:
    """What a counting baseline remembers of the episode so far."""

    pulls: Tensor
    """(B, arms) how often each arm has been pulled."""
    successes: Tensor
    """(B, arms) how many of those pulls paid a reward of 1."""


def argmax_breaking_ties(scores: Tensor, generator: torch.Generator) -> Tensor:
    """Index of the largest score in each row (B, arms) -> (B,), ties broken uniformly at random."""
    best = scores == scores.max(dim=1, keepdim=True).values  # (B, arms)
    # A fresh uniform key per arm; only the tied best arms compete, so each wins equally often.
    keys = torch.rand(scores.shape, generator=generator, device=scores.device)
    return torch.where(best, keys, -1.0).argmax(dim=1)


def uniform_arm(batch: int, arms: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """One uniformly random arm per episode, (B,)."""
    return torch.randint(arms, (batch,), generator=generator, device=device)


def greedy_arm(counts: ArmCounts, generator: torch.Generator) -> Tensor:
    """The arm with the highest posterior mean under a Beta(1, 1) prior per arm, (B,)."""
    posterior_mean = (counts.successes + 1.0) / (counts.pulls + 2.0)  # (B, arms)
    return argmax_breaking_ties(posterior_mean, generator)


def sample_beta_tensor(alpha: Tensor, beta: Tensor, generator: torch.Generator) -> Tensor:
    """One Beta(alpha, beta) draw per element of ``alpha``/``beta`` (same shape), via two Gammas.

    Same construction as :func:`mesaprobe.envs.bernoulli_bandit.sample_beta`, which
    only takes scalar parameters; here every arm of every episode has its own posterior.
    """
    x = torch._standard_gamma(alpha, generator=generator)
    y = torch._standard_gamma(beta, generator=generator)
    total = x + y
    # Both Gammas can underflow to 0 for tiny parameters; the draw is then uninformative.
    return torch.where(total > 0, x / total, 0.5)


class BanditBaseline(Baseline):
    """Shared body: count pulls and successes from observations, then ``choose`` an arm."""

    serves: ClassVar[tuple[str, ...]] = ("bandit",)

    def __init__(self, config, environment: BernoulliBandit):
        self.check(environment)
        self.config = config
        self.environment = environment
        self.arms = environment.arms

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> ArmCounts:
        pulls = torch.zeros(batch, self.arms, device=device)
        return ArmCounts(pulls=pulls, successes=torch.zeros_like(pulls))

    def act(
        self, state: ArmCounts, observation: Tensor, generator: torch.Generator
    ) -> tuple[ArmCounts, Tensor]:
        state = self.update(state, observation)
        return state, self.choose(state, generator)

    def update(self, state: ArmCounts, observation: Tensor) -> ArmCounts:
        """Fold the previous pull and its reward (if any) into the counts."""
        action, reward, has_previous = BernoulliBandit.decode_observation(observation, self.arms)
        # The first observation of an episode is all zeros: no pull to count.
        pulled = torch.nn.functional.one_hot(action, self.arms).to(state.pulls.dtype)  # (B, arms)
        pulled = pulled * has_previous[:, None].to(pulled.dtype)
        return ArmCounts(
            pulls=state.pulls + pulled,
            successes=state.successes + pulled * reward[:, None].to(pulled.dtype),
        )

    def choose(self, counts: ArmCounts, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class RandomConfig:
    """Uniformly random play has no settings."""


class RandomBaseline(BanditBaseline):
    """Pull a uniformly random arm every step: the no-learning reference."""

    Config: ClassVar[type] = RandomConfig

    def choose(self, counts: ArmCounts, generator: torch.Generator) -> Tensor:
        return uniform_arm(counts.pulls.shape[0], self.arms, generator, counts.pulls.device)


@dataclass(frozen=True)
class GreedyConfig:
    """Greedy play has no settings."""


class GreedyBaseline(BanditBaseline):
    """Pull the arm with the highest posterior mean (successes + 1) / (pulls + 2)."""

    Config: ClassVar[type] = GreedyConfig

    def choose(self, counts: ArmCounts, generator: torch.Generator) -> Tensor:
        return greedy_arm(counts, generator)


@dataclass(frozen=True)
class EpsilonGreedyConfig:
    epsilon: float = 0.1
    """Probability of pulling a uniformly random arm instead of the greedy one."""

    def validate(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise SettingError("epsilon", f"expected a probability in [0, 1], got {self.epsilon}")


class EpsilonGreedyBaseline(BanditBaseline):
    """With probability epsilon a uniformly random arm, otherwise the greedy arm."""

    Config: ClassVar[type] = EpsilonGreedyConfig

    def choose(self, counts: ArmCounts, generator: torch.Generator) -> Tensor:
        batch, device = counts.pulls.shape[0], counts.pulls.device
        # Draw all three every step so the generator advances the same whatever is chosen.
        explore = torch.rand(batch, generator=generator, device=device) < self.config.epsilon
        uniform = uniform_arm(batch, self.arms, generator, device)
        return torch.where(explore, uniform, greedy_arm(counts, generator))


@dataclass(frozen=True)
class UCB1Config:
    exploration: float = 2.0
    """c in the index mean + sqrt(c ln t / n); 2 is UCB1 of Auer et al. (2002)."""

    def validate(self) -> None:
        if self.exploration < 0:
            raise SettingError("exploration", f"expected a non-negative number, got {self.exploration}")


class UCB1Baseline(BanditBaseline):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002): each arm once, then the highest upper bound.

    After t pulls in total, an arm pulled n times with empirical mean m has the index
    m + sqrt(c ln t / n); arms not yet pulled come first, in random order.
    """

    Config: ClassVar[type] = UCB1Config

    def choose(self, counts: ArmCounts, generator: torch.Generator) -> Tensor:
        pulls = counts.pulls
        pulled = pulls > 0
        safe_pulls = pulls.clamp_min(1.0)  # the index of unpulled arms is replaced below
        total = pulls.sum(dim=1, keepdim=True).clamp_min(1.0)  # (B, 1)
        mean = counts.successes / safe_pulls
        bonus = torch.sqrt(self.config.exploration * torch.log(total) / safe_pulls)
        index = torch.where(pulled, mean + bonus, torch.inf)  # (B, arms)
        return argmax_breaking_ties(index, generator)


@dataclass(frozen=True)
class ThompsonConfig:
    """Thompson sampling has no settings: its prior is the environment's."""


class ThompsonBaseline(BanditBaseline):
    """Thompson sampling (Thompson 1933): draw each arm's success rate from its Beta
    posterior and pull the arm with the largest draw.

    The prior is the environment's own independent Beta(alpha, beta) prior, so on
    such environments this is exact posterior sampling; for dependent priors (arms
    paying p and 1 - p) it falls back to Beta(1, 1) per arm.
    """

    Config: ClassVar[type] = ThompsonConfig

    def __init__(self, config, environment: BernoulliBandit):
        super().__init__(config, environment)
        self.prior: tuple[float, float] = environment.prior or (1.0, 1.0)

    def choose(self, counts: ArmCounts, generator: torch.Generator) -> Tensor:
        alpha, beta = self.prior
        failures = counts.pulls - counts.successes
        draws = sample_beta_tensor(alpha + counts.successes, beta + failures, generator)  # (B, arms)
        return argmax_breaking_ties(draws, generator)


@dataclass(frozen=True)
class OptimisticThompsonConfig:
    """Optimistic Thompson sampling has no settings: its prior is the environment's."""


class OptimisticThompsonBaseline(ThompsonBaseline):
    """Optimistic Thompson sampling (Chapelle & Li 2011; a baseline of Duan et al. 2016, RL^2):
    like Thompson sampling, but a draw below the arm's posterior mean counts as the mean.

    Each arm scores max(draw from its Beta posterior, posterior mean), and the arm
    with the largest score is pulled; the prior is the environment's, as for
    :class:`ThompsonBaseline` (Beta(1, 1) per arm for dependent priors).
    """

    Config: ClassVar[type] = OptimisticThompsonConfig

    def choose(self, counts: ArmCounts, generator: torch.Generator) -> Tensor:
        alpha, beta = self.prior
        failures = counts.pulls - counts.successes
        draws = sample_beta_tensor(alpha + counts.successes, beta + failures, generator)  # (B, arms)
        posterior_mean = (alpha + counts.successes) / (alpha + beta + counts.pulls)
        return argmax_breaking_ties(torch.maximum(draws, posterior_mean), generator)
