"""Batched Bernoulli multi-armed bandits with independent or dependent arm priors.

Each task is one vector of arm success probabilities; an episode is ``horizon``
pulls.  The agent sees the RL^2 input of Duan et al. (2016): one-hot previous
action, previous reward, and the fraction of the episode elapsed.

Trials (``trial_episodes: K > 1``): one task lasts K episodes played back to back as one
sequence of K x horizon pulls; the time input starts again at every episode, and a done
flag (an extra last column) is 1 on the first observation of every episode after the first.  Dependent
priors are the two-armed bandits of Wang et al. (2016), where the arms pay with
probabilities p and 1 - p.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from mesaprobe.envs.base import Environment
from mesaprobe.seeding import fixed_permutation, uniform
from mesaprobe.settings import SettingError

Prior = Literal[
    "uniform", "beta", "dependent_uniform", "dependent_easy", "dependent_medium", "dependent_hard"
]

#: The two values p can take under each discrete dependent prior (Wang et al. 2016).
DEPENDENT_LEVELS: dict[str, tuple[float, float]] = {
    "dependent_easy": (0.1, 0.9),
    "dependent_medium": (0.25, 0.75),
    "dependent_hard": (0.4, 0.6),
}


@dataclass(frozen=True)
class BernoulliBanditConfig:
    arms: int = 2
    """Number of arms (at least 2)."""
    horizon: int = 100
    """Pulls per episode."""
    prior: Prior = "uniform"
    """How arm probabilities are drawn. uniform: each arm independently U(0, 1);
    beta: each arm independently Beta(prior_alpha, prior_beta); dependent_*: two arms
    paying p and 1 - p with p ~ U(0, 1) (uniform) or p uniform on {0.1, 0.9} (easy),
    {0.25, 0.75} (medium), {0.4, 0.6} (hard)."""
    prior_alpha: float = 1.0
    """First Beta parameter of the beta prior."""
    prior_beta: float = 1.0
    """Second Beta parameter of the beta prior."""
    trial_episodes: int = 1
    """Episodes per trial: one task lasts this many episodes, played as one sequence of
    trial_episodes x horizon pulls whose memory carries across episode boundaries (the time
    input restarts and a done flag column marks each boundary; 1: no flag column)."""

    #: Left out of run ids at their default (see Component.resolved).
    id_neutral_defaults: ClassVar[tuple[str, ...]] = ("trial_episodes",)

    def validate(self) -> None:
        if self.arms < 2:
            raise SettingError("arms", f"expected at least 2 arms, got {self.arms}")
        if self.horizon < 1:
            raise SettingError("horizon", f"expected a positive horizon, got {self.horizon}")
        if self.trial_episodes < 1:
            raise SettingError(
                "trial_episodes",
                f"expected a positive number of episodes per trial, got {self.trial_episodes}",
            )
        if self.prior.startswith("dependent") and self.arms != 2:
            raise SettingError("prior", f"the {self.prior} prior needs arms: 2, got arms: {self.arms}")
        if self.prior_alpha <= 0 or self.prior_beta <= 0:
            key = "prior_alpha" if self.prior_alpha <= 0 else "prior_beta"
            raise SettingError(key, "expected a positive Beta parameter")
        if self.prior != "beta" and (self.prior_alpha, self.prior_beta) != (1.0, 1.0):
            raise SettingError("prior", "prior_alpha and prior_beta are only used with prior: beta")

    @property
    def independent_beta_prior(self) -> tuple[float, float] | None:
        """(alpha, beta) when arms are independent Beta draws, else None."""
        if self.prior == "uniform":
            return (1.0, 1.0)
        if self.prior == "beta":
            return (self.prior_alpha, self.prior_beta)
        return None


@dataclass(frozen=True)
class BanditTasks:
    probs: Tensor
    """(B, arms) success probability of each arm."""
    probs_after_switch: Tensor | None = None
    """(B, arms) probabilities from pull ``switch_step`` on (restless probes), or None."""
    switch_step: int | None = None
    """Pulls after which ``probs_after_switch`` replaces ``probs``."""

    @property
    def batch(self) -> int:
        return self.probs.shape[0]

    def probs_at(self, t: int) -> Tensor:
        """(B, arms) arm probabilities of pull ``t + 1`` (after ``t`` pulls)."""
        if self.switch_step is not None and t >= self.switch_step:
            return self.probs_after_switch
        return self.probs


@dataclass(frozen=True)
class BanditState:
    tasks: BanditTasks
    t: int
    """Pulls made so far in this episode (the same for every episode of the batch)."""

    @property
    def probs(self) -> Tensor:
        return self.tasks.probs_at(self.t)


@dataclass(frozen=True)
class BanditTransform:
    """An out-of-distribution variant of a bandit environment (all defaults: no change)."""

    horizon_factor: int = 1
    """Episodes are this many times longer; the time input keeps the trained scale, so it
    runs past 1."""
    prior_alpha: float | None = None
    """Arms drawn independently from Beta(prior_alpha, prior_beta) instead of the trained prior."""
    prior_beta: float | None = None
    """See prior_alpha."""
    squeeze: tuple[float, float] | None = None
    """Arm probabilities mapped linearly from [0, 1] into [low, high] (harder to tell apart)."""
    permute_labels: bool = False
    """Arm labels permuted by one fixed random permutation."""
    switch_at: float | None = None
    """Fraction of the episode after which every arm probability is drawn afresh (restless)."""

    def validate(self) -> None:
        if self.horizon_factor < 1:
            raise SettingError("horizon_factor", f"expected a positive integer, got {self.horizon_factor}")
        if (self.prior_alpha is None) != (self.prior_beta is None):
            raise SettingError("prior_alpha", "set both prior_alpha and prior_beta, or neither")
        if self.prior_alpha is not None and (self.prior_alpha <= 0 or self.prior_beta <= 0):
            raise SettingError("prior_alpha", "expected positive Beta parameters")
        if self.squeeze is not None and not 0.0 <= self.squeeze[0] < self.squeeze[1] <= 1.0:
            raise SettingError(
                "squeeze", f"expected [low, high] with 0 <= low < high <= 1, got {list(self.squeeze)}"
            )
        if self.switch_at is not None and not 0.0 < self.switch_at < 1.0:
            raise SettingError(
                "switch_at", f"expected a fraction of the episode in (0, 1), got {self.switch_at}"
            )


class BernoulliBandit(Environment):
    kind: ClassVar[str] = "bandit"
    Config: ClassVar[type] = BernoulliBanditConfig

    def __init__(self, config: BernoulliBanditConfig, transform: BanditTransform | None = None):
        super().__init__(config)
        self.transform = transform or BanditTransform()
        self.arms = config.arms
        self.action_count = config.arms
        # one-hot action, reward, time fraction (and the done flag of trials)
        self.observation_size = config.arms + 2 + (1 if config.trial_episodes > 1 else 0)
        self.time_horizon = config.horizon  # the time input is t / trained horizon

    @property
    def trial_episodes(self) -> int:
        return self.config.trial_episodes

    @property
    def episode_length(self) -> int:
        """Pulls of one episode."""
        return self.config.horizon * self.transform.horizon_factor

    @property
    def horizon(self) -> int:
        """Pulls of one sequence: the whole trial."""
        return self.episode_length * self.trial_episodes

    def transformed(self, transform: BanditTransform) -> BernoulliBandit:
        """The same environment with an out-of-distribution transform (see BanditTransform)."""
        return BernoulliBandit(self.config, transform)

    @property
    def prior(self) -> tuple[float, float] | None:
        """(alpha, beta) of independent Beta arm priors as played (after transforms), else None."""
        if self.transform.prior_alpha is not None:
            return (self.transform.prior_alpha, self.transform.prior_beta)
        if self.transform.squeeze is not None:
            return None
        return self.config.independent_beta_prior

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> BanditTasks:
        transform = self.transform
        probs = self.sample_probs(n, generator, device)
        if transform.permute_labels:
            probs = probs[:, fixed_permutation(self.arms, "label-permutation").to(probs.device)]
        if transform.switch_at is None:
            return BanditTasks(probs=probs)
        after = self.sample_probs(n, generator, device)
        switch_step = max(1, round(transform.switch_at * self.horizon))
        return BanditTasks(probs=probs, probs_after_switch=after, switch_step=switch_step)

    def sample_probs(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """(n, arms) arm probabilities from the prior as played (trained prior or transform's)."""
        config, transform = self.config, self.transform
        shape = (n, config.arms)
        if transform.prior_alpha is not None:
            probs = sample_beta(transform.prior_alpha, transform.prior_beta, shape, generator, device)
        elif config.prior in ("uniform", "beta"):
            alpha, beta = config.independent_beta_prior
            if (alpha, beta) == (1.0, 1.0):
                probs = torch.rand(shape, generator=generator, device=device)
            else:
                probs = sample_beta(alpha, beta, shape, generator, device)
        else:
            if config.prior == "dependent_uniform":
                p = torch.rand((n,), generator=generator, device=device)
            else:
                low, high = DEPENDENT_LEVELS[config.prior]
                coin = torch.rand((n,), generator=generator, device=device) < 0.5
                p = torch.where(coin, torch.tensor(high, device=device), torch.tensor(low, device=device))
            probs = torch.stack([p, 1.0 - p], dim=1)  # (B, 2)
        if transform.squeeze is not None:
            low, high = transform.squeeze
            probs = low + (high - low) * probs
        return probs

    def reset(self, tasks: BanditTasks) -> tuple[BanditState, Tensor]:
        observation = torch.zeros(tasks.batch, self.observation_size, device=tasks.probs.device)
        return BanditState(tasks=tasks, t=0), observation

    def step(
        self, state: BanditState, action: Tensor, generator: torch.Generator
    ) -> tuple[BanditState, Tensor, Tensor, bool]:
        """Pull ``action`` (B,) in every episode; rewards are drawn with common random numbers.

        One uniform per episode per step decides the reward whatever arm is pulled,
        so two agents playing the same tasks with the same generator see the same
        luck, which sharpens comparisons between them.
        """
        probs = state.probs
        luck = uniform((probs.shape[0],), generator, probs.device)
        reward = (luck < self.expected_reward(state, action)).to(probs.dtype)
        t = state.t + 1
        observation = self.observation(action, reward, t)
        return BanditState(tasks=state.tasks, t=t), observation, reward, t >= self.horizon

    def observation(self, action: Tensor, reward: Tensor, t: int) -> Tensor:
        """RL^2 input after ``t`` pulls of the trial: one-hot last action, last reward, pulls of
        this episode / trained horizon, and in trials the done flag (a new episode begins)."""
        one_hot = torch.nn.functional.one_hot(action, self.arms).to(reward.dtype)
        new_episode = t % self.episode_length == 0 and t < self.horizon
        pulls_this_episode = 0 if new_episode else t - self.episode_length * ((t - 1) // self.episode_length)
        time = torch.full_like(reward, pulls_this_episode / self.time_horizon)
        columns = [one_hot, reward[:, None], time[:, None]]
        if self.trial_episodes > 1:
            columns.append(torch.full_like(reward, float(new_episode))[:, None])
        return torch.cat(columns, dim=1)  # (B, observation_size)

    @staticmethod
    def episode_start_observation(observation: Tensor) -> Tensor:
        """What ``reset`` shows in place of ``observation`` (B, I): nothing (zeros)."""
        return torch.zeros_like(observation)

    @staticmethod
    def expected_reward(state: BanditState, action: Tensor) -> Tensor:
        """(B,) success probability of ``action`` at this pull."""
        return state.probs.gather(1, action[:, None]).squeeze(1)

    @staticmethod
    def best_expected_reward(state: BanditState) -> Tensor:
        """(B,) success probability of the best arm at this pull."""
        return state.probs.max(dim=1).values

    @staticmethod
    def decode_observation(observation: Tensor, arms: int) -> tuple[Tensor, Tensor, Tensor]:
        """Split an observation into (previous action, previous reward, has_previous)."""
        one_hot = observation[:, :arms]
        has_previous = one_hot.sum(dim=1) > 0
        return one_hot.argmax(dim=1), observation[:, arms], has_previous


def sample_beta(
    alpha: float, beta: float, shape: tuple[int, ...], generator: torch.Generator, device
) -> Tensor:
    """Beta(alpha, beta) draws from an explicit generator (via two Gamma draws)."""
    x = torch._standard_gamma(torch.full(shape, alpha, device=device), generator=generator)
    y = torch._standard_gamma(torch.full(shape, beta, device=device), generator=generator)
    return x / (x + y)
