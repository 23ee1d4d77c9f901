"""Batched random tabular MDPs: the MDP protocol of RL^2 (Duan et al. 2016).

A task is one MDP with ``states`` states and ``actions`` actions: the mean reward of each
(state, action) is drawn from Normal(reward_prior_mean, reward_prior_std^2) and the
transition distribution of each (state, action) from a flat Dirichlet (every parameter
``transition_concentration``).  An episode is ``horizon`` steps from state 0; each reward
is the mean reward of the chosen action in the current state plus unit Gaussian noise.

The agent sees the RL^2 input: one-hot current state, one-hot previous action, previous
reward, and a done flag that is 1 on the first observation of every episode after the
first of a trial (the state shown is then the fresh initial state).

Trials (``trial_episodes: K``): one task lasts K episodes played back to back as one
sequence of K x horizon steps; at each episode boundary the state returns to state 0 while
the task stays, and the agent's memory carries on.

Regret without sampling noise: the optimal action values Q*_t(s, a) of the true MDP
(finite-horizon value iteration, t the step within the episode) say what each action
loses.  A step's ``value_regret`` is V*_t(s_t) - Q*_t(s_t, a_t) >= 0, the optimal value
given up by the chosen action in the state the agent is in; by the performance-difference
lemma its expected sum over an episode is V*_0(s_0) minus the agent's expected return, so
it carries neither reward noise nor the luck of later transitions.  The oracle (greedy on
Q*) has zero value regret at every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mesaprobe.envs.base import Environment
from mesaprobe.seeding import uniform
from mesaprobe.settings import SettingError

#: Standard deviation of the Gaussian noise on every observed reward (known to the agents).
REWARD_NOISE_STD = 1.0

#: The state every episode starts in.
INITIAL_STATE = 0


@dataclass(frozen=True)
class TabularMDPConfig:
    states: int = 10
    """Number of states S (at least 2)."""
    actions: int = 5
    """Number of actions A (at least 2)."""
    horizon: int = 10
    """Steps per episode."""
    trial_episodes: int = 1
    """Episodes per trial: one task lasts this many episodes, played as one sequence of
    trial_episodes x horizon steps whose memory carries across episode boundaries (the
    state returns to state 0 at each boundary, the done flag marks it)."""
    reward_prior_mean: float = 1.0
    """Mean of the Normal prior of every mean reward (RL^2: 1)."""
    reward_prior_std: float = 1.0
    """Standard deviation of the Normal prior of every mean reward (RL^2: 1)."""
    transition_concentration: float = 1.0
    """Every parameter of the Dirichlet prior of each transition distribution (1: flat)."""

    #: Left out of run ids at their default (see Component.resolved).
    id_neutral_defaults: ClassVar[tuple[str, ...]] = ("trial_episodes",)

    def validate(self) -> None:
        if self.states < 2:
            raise SettingError("states", f"expected at least 2 states, got {self.states}")
        if self.actions < 2:
            raise SettingError("actions", f"expected at least 2 actions, got {self.actions}")
        if self.horizon < 1:
            raise SettingError("horizon", f"expected a positive episode length, got {self.horizon}")
        if self.trial_episodes < 1:
            raise SettingError(
                "trial_episodes",
                f"expected a positive number of episodes per trial, got {self.trial_episodes}",
            )
        if not self.reward_prior_std > 0:
            raise SettingError(
                "reward_prior_std", f"expected a positive standard deviation, got {self.reward_prior_std}"
            )
        if not self.transition_concentration > 0:
            raise SettingError(
                "transition_concentration",
                f"expected a positive Dirichlet parameter, got {self.transition_concentration}",
            )


@dataclass(frozen=True)
class MDPTasks:
    mean_rewards: Tensor
    """(B, S, A) mean reward of each action in each state."""
    transitions: Tensor
    """(B, S, A, S) probability of each next state."""

    @property
    def batch(self) -> int:
        return self.mean_rewards.shape[0]


@dataclass(frozen=True)
class MDPState:
    tasks: MDPTasks
    state: Tensor
    """(B,) current state of every episode."""
    t: int
    """Steps made so far in this trial (the same for every episode of the batch)."""


def optimal_action_values(mean_rewards: Tensor, transitions: Tensor, horizon: int) -> Tensor:
    """(B, H, S, A) Q*_t(s, a) of finite-horizon value iteration, t = 0 .. H - 1 steps made.

    Q*_(H-1) = r and Q*_t(s, a) = r(s, a) + sum_s' P(s' | s, a) max_a' Q*_(t+1)(s', a').
    """
    values = torch.zeros(mean_rewards.shape[:2], dtype=mean_rewards.dtype, device=mean_rewards.device)
    q = []
    for _ in range(horizon):
        q_t = mean_rewards + torch.einsum("bsan,bn->bsa", transitions, values)  # (B, S, A)
        q.append(q_t)
        values = q_t.max(dim=2).values  # (B, S)
    return torch.stack(q[::-1], dim=1)  # (B, H, S, A)


def sample_dirichlet(concentration: Tensor, generator: torch.Generator) -> Tensor:
    """One Dirichlet draw along the last dimension of ``concentration`` (via Gamma draws)."""
    gammas = torch._standard_gamma(concentration, generator=generator)
    total = gammas.sum(dim=-1, keepdim=True)
    # Every Gamma can underflow to 0 for tiny parameters; the draw is then uniform.
    return torch.where(
        total > 0, gammas / total.clamp_min(torch.finfo(gammas.dtype).tiny), 1.0 / gammas.shape[-1]
    )


class TabularMDP(Environment):
    kind: ClassVar[str] = "mdp"
    Config: ClassVar[type] = TabularMDPConfig

    def __init__(self, config: TabularMDPConfig):
        super().__init__(config)
        self.states = config.states
        self.action_count = config.actions
        # one-hot state, one-hot previous action, previous reward, done flag
        self.observation_size = config.states + config.actions + 2

    @property
    def episode_length(self) -> int:
        return self.config.horizon

    @property
    def trial_episodes(self) -> int:
        return self.config.trial_episodes

    @property
    def horizon(self) -> int:
        """Steps of one sequence: the whole trial."""
        return self.episode_length * self.trial_episodes

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> MDPTasks:
        config = self.config
        shape = (n, config.states, config.actions)
        mean_rewards = config.reward_prior_mean + config.reward_prior_std * torch.randn(
            shape, generator=generator, device=device
        )
        concentration = torch.full((*shape, config.states), config.transition_concentration, device=device)
        return MDPTasks(mean_rewards=mean_rewards, transitions=sample_dirichlet(concentration, generator))

    def optimal_action_values(self, tasks: MDPTasks) -> Tensor:
        """(B, H, S, A) optimal action values of each task's episode (H = horizon of one episode)."""
        return optimal_action_values(tasks.mean_rewards, tasks.transitions, self.episode_length)

    def reset(self, tasks: MDPTasks) -> tuple[MDPState, Tensor]:
        device = tasks.mean_rewards.device
        state = torch.full((tasks.batch,), INITIAL_STATE, dtype=torch.long, device=device)
        observation = torch.zeros(tasks.batch, self.observation_size, device=device)
        observation[:, : self.states] = torch.nn.functional.one_hot(state, self.states)
        return MDPState(tasks=tasks, state=state, t=0), observation

    def step(
        self, state: MDPState, action: Tensor, generator: torch.Generator
    ) -> tuple[MDPState, Tensor, Tensor, bool]:
        """Take ``action`` (B,) in every episode; noise and transitions use common random numbers.

        Two uniforms per episode per step, drawn whatever the action: one gives the reward
        noise (through the inverse normal CDF), the other picks the next state (inverse CDF
        of the transition distribution), so agents playing the same tasks with the same
        generator see the same luck.
        """
        tasks = state.tasks
        batch, device = tasks.batch, tasks.mean_rewards.device
        luck = uniform((batch, 2), generator, device)
        noise = REWARD_NOISE_STD * torch.special.ndtri(luck[:, 0].clamp(1e-7, 1 - 1e-7))
        reward = self.expected_reward(state, action) + noise
        rows = torch.arange(batch, device=device)
        cumulative = tasks.transitions[rows, state.state, action].cumsum(dim=1)  # (B, S)
        next_state = (luck[:, 1:2] >= cumulative).sum(dim=1).clamp_max(self.states - 1)
        t = state.t + 1
        episode_over = t % self.episode_length == 0
        if episode_over:  # the task stays, the state starts again
            next_state = torch.full_like(next_state, INITIAL_STATE)
        observation = self.observation(next_state, action, reward, episode_over and t < self.horizon)
        return MDPState(tasks=tasks, state=next_state, t=t), observation, reward, t >= self.horizon

    def observation(self, state: Tensor, action: Tensor, reward: Tensor, done: bool) -> Tensor:
        """RL^2 input: one-hot state, one-hot previous action, previous reward, done flag."""
        one_hot_state = torch.nn.functional.one_hot(state, self.states).to(reward.dtype)
        one_hot_action = torch.nn.functional.one_hot(action, self.action_count).to(reward.dtype)
        done_flag = torch.full_like(reward, float(done))
        return torch.cat([one_hot_state, one_hot_action, reward[:, None], done_flag[:, None]], dim=1)

    def episode_start_observation(self, observation: Tensor) -> Tensor:
        """What ``reset`` shows in place of ``observation`` (B, I): its state, nothing else."""
        start = torch.zeros_like(observation)
        start[:, : self.states] = observation[:, : self.states]
        return start

    def decode_observation(self, observation: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Split observations (..., S + A + 2) into (state, previous action, previous reward,
        has_previous, done)."""
        states, actions = self.states, self.action_count
        one_hot_action = observation[..., states : states + actions]
        return (
            observation[..., :states].argmax(dim=-1),
            one_hot_action.argmax(dim=-1),
            observation[..., states + actions],
            one_hot_action.sum(dim=-1) > 0,
            observation[..., states + actions + 1] > 0.5,
        )

    @staticmethod
    def expected_reward(state: MDPState, action: Tensor) -> Tensor:
        """(B,) mean reward of ``action`` in the current state."""
        rewards = state.tasks.mean_rewards[torch.arange(action.shape[0], device=action.device), state.state]
        return rewards.gather(1, action[:, None]).squeeze(1)

    @staticmethod
    def best_expected_reward(state: MDPState) -> Tensor:
        """(B,) the largest mean reward in the current state (myopic; the MDP's regret is
        :meth:`value_regret`, which accounts for where actions lead)."""
        rewards = state.tasks.mean_rewards[
            torch.arange(state.state.shape[0], device=state.state.device), state.state
        ]
        return rewards.max(dim=1).values

    def value_regret(self, tasks: MDPTasks, observations: Tensor, actions: Tensor) -> Tensor:
        """(B, T) V*_t(s_t) - Q*_t(s_t, a_t) of played trials: observations (B, T, I) seen
        before each action, actions (B, T), t the step within the episode."""
        q = self.optimal_action_values(tasks)  # (B, H, S, A)
        batch, steps = actions.shape
        states = observations[..., : self.states].argmax(dim=-1)  # (B, T)
        step_in_episode = torch.arange(steps, device=actions.device) % self.episode_length  # (T,)
        rows = torch.arange(batch, device=actions.device)[:, None]
        q_played = q[rows, step_in_episode[None, :], states]  # (B, T, A)
        chosen = q_played.gather(2, actions[..., None]).squeeze(2)
        return q_played.max(dim=2).values - chosen
