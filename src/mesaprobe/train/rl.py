"""Actor-critic updates over whole episodes: A2C and PPO share the rollout and the loss.

Each update samples ``batch`` fresh tasks, plays one episode of each with the current
policy (acting step by step through the model's ``step``), then recomputes the
outputs of the whole episodes with ``forward`` for the gradient: the two agree
numerically (tested), so A2C is exactly on-policy and PPO's first epoch starts at
ratio 1.  The policy and the value are two heads of one sequence model (outputs
``[..., :actions]`` and ``[..., actions]``); recurrent state is reset at every
episode boundary because every sequence is one whole episode.

Several seeds trained together (:mod:`mesaprobe.train.stacked`) play seed-major batches of
``batch`` episodes per seed; losses, standardised advantages, gradient clipping and PPO's
minibatches are each seed's own.

* ``a2c``: one gradient step on the whole batch (advantage actor-critic);
* ``ppo``: ``ppo_epochs`` passes over ``ppo_minibatches`` minibatches of whole
  episodes with the clipped surrogate objective (Schulman et al. 2017), advantages
  from GAE computed once per rollout.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mesaprobe.agents import ModelAgent, policy_and_value
from mesaprobe.envs.base import ACTING_KINDS, Environment
from mesaprobe.train.algorithm import Algorithm
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.losses import actor_critic_loss, generalized_advantages, normalized
from mesaprobe.train.rollout import Trajectory, play
from mesaprobe.train.stacked import per_seed_mean
from mesaprobe.train.state import TrainingState, gradient_step, schedule


def rollout(environment: Environment, state: TrainingState, batch: int) -> Trajectory:
    """Play one episode of ``batch`` fresh tasks with the current (sampling) policy."""
    model = state.model
    tasks = environment.sample_tasks(batch, state.task_generator, model.device)
    with torch.no_grad():
        agent = ModelAgent(model, environment.action_count)
        return play(environment, tasks, agent, state.task_generator, state.action_generator)


def episode_order(state: TrainingState, batch: int) -> Tensor:
    """A random order of the ``batch`` episodes of each seed, as rows of the whole batch:
    seed-major, so that every minibatch holds the same number of each seed's episodes."""
    device = state.model.device
    if state.seeds == 1:
        return torch.randperm(batch, generator=state.action_generator, device=device)
    orders = [
        torch.randperm(batch, generator=generator, device=device) + index * batch
        for index, generator in enumerate(state.action_generator)
    ]
    return torch.stack(orders)  # (S, batch)


def rl_update(
    environment: Environment,
    state: TrainingState,
    config: TrainingConfig,
    total_updates: int,
    clipped: bool = False,
) -> dict[str, Tensor]:
    """One rollout and its A2C step, or its PPO epochs when ``clipped``; returns the update's statistics."""
    progress = schedule(config, state, total_updates)
    seeds = state.seeds
    entropy_coef = config.entropy_coef + (config.entropy_final - config.entropy_coef) * progress
    actions = environment.action_count
    trajectory = rollout(environment, state, config.batch)

    if not clipped:
        outputs = state.model(trajectory.observations)  # (B, T, actions + 1)
        values = policy_and_value(outputs, actions)[1].detach()
        advantages, returns = generalized_advantages(
            trajectory.rewards, values, config.gamma, config.gae_lambda
        )
        if config.normalize_advantages:
            advantages = normalized(advantages, seeds)
        loss = actor_critic_loss(
            outputs, trajectory.actions, advantages, returns, config.value_coef, entropy_coef, seeds=seeds
        )
        gradient_step(state, loss.total, config)
    else:
        with torch.no_grad():
            logits, values = policy_and_value(state.model(trajectory.observations), actions)
            old_log_probs = (
                torch.log_softmax(logits, -1).gather(-1, trajectory.actions[..., None]).squeeze(-1)
            )
        advantages, returns = generalized_advantages(
            trajectory.rewards, values, config.gamma, config.gae_lambda
        )
        batch = config.batch
        size = -(-batch // config.ppo_minibatches)
        for _ in range(config.ppo_epochs):
            order = episode_order(state, batch)
            for start in range(0, batch, size):
                episodes = order[..., start : start + size].reshape(-1)
                minibatch_advantages = advantages[episodes]
                if config.normalize_advantages:
                    minibatch_advantages = normalized(minibatch_advantages, seeds)
                outputs = state.model(trajectory.observations[episodes])
                loss = actor_critic_loss(
                    outputs,
                    trajectory.actions[episodes],
                    minibatch_advantages,
                    returns[episodes],
                    config.value_coef,
                    entropy_coef,
                    old_log_probs=old_log_probs[episodes],
                    clip=config.ppo_clip,
                    seeds=seeds,
                )
                gradient_step(state, loss.total, config)

    return {
        "reward_per_step": per_seed_mean(trajectory.expected_rewards, seeds),
        "regret_per_step": per_seed_mean(trajectory.regrets, seeds),
        "entropy": loss.entropy.detach(),
        "value_loss": loss.value.detach(),
    }


class A2C(Algorithm):
    """Advantage actor-critic over whole episodes: one gradient step per rollout."""

    serves: ClassVar[tuple[str, ...]] = ACTING_KINDS

    @staticmethod
    def update(
        environment: Environment, state: TrainingState, config: TrainingConfig, total_updates: int
    ) -> dict[str, Tensor]:
        return rl_update(environment, state, config, total_updates, clipped=False)


class PPO(Algorithm):
    """Proximal policy optimisation over whole episodes: clipped surrogate, GAE, several epochs
    of minibatches per rollout."""

    serves: ClassVar[tuple[str, ...]] = ACTING_KINDS

    @staticmethod
    def update(
        environment: Environment, state: TrainingState, config: TrainingConfig, total_updates: int
    ) -> dict[str, Tensor]:
        return rl_update(environment, state, config, total_updates, clipped=True)
