"""Playing whole episodes: the one loop over time shared by training and probes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mesaprobe.envs.base import Environment


@dataclass(frozen=True)
class Trajectory:
    """A batch of complete episodes; every tensor has shape (B, T) unless noted."""

    observations: Tensor
    """(B, T, I) what the agent saw before each action."""
    actions: Tensor
    rewards: Tensor
    expected_rewards: Tensor
    """Expected reward of each chosen action (regret without sampling noise)."""
    best_expected_rewards: Tensor
    """Expected reward of the best action at each step."""

    @property
    def regrets(self) -> Tensor:
        return self.best_expected_rewards - self.expected_rewards


def play(
    environment: Environment,
    tasks,
    agent,
    environment_generator: torch.Generator,
    agent_generator: torch.Generator,
) -> Trajectory:
    """Let ``agent`` play one episode of every task in ``tasks``; returns the trajectory."""
    horizon = environment.horizon
    state, observation = environment.reset(tasks)
    batch, device = observation.shape[0], observation.device
    agent_state = agent.initial_state(batch, horizon, device)
    observations = torch.empty(batch, horizon, observation.shape[1], device=device)
    actions = torch.empty(batch, horizon, dtype=torch.long, device=device)
    rewards = torch.empty(batch, horizon, device=device)
    expected = torch.empty(batch, horizon, device=device)
    best = torch.empty(batch, horizon, device=device)
    for t in range(horizon):
        observations[:, t] = observation
        agent_state, action = agent.act(agent_state, observation, agent_generator)
        actions[:, t] = action
        expected[:, t] = environment.expected_reward(state, action)
        best[:, t] = environment.best_expected_reward(state)
        state, observation, reward, _ = environment.step(state, action, environment_generator)
        rewards[:, t] = reward
    return Trajectory(
        observations=observations,
        actions=actions,
        rewards=rewards,
        expected_rewards=expected,
        best_expected_rewards=best,
    )
