"""Reptile: meta-learning an initialisation from which in-weights SGD adapts to a task.

First-order Reptile (Nichol, Achiam & Schulman 2018) for a memoryless learner on
bandits: can a learner without memory, which cannot learn within an episode except by
a one-step rule, *meta-learn* weights from which a few steps of ordinary policy-gradient
SGD learn each new task?  The run's weights are the meta-initialisation theta (what is
frozen and probed).  Each meta-update:

1. samples ``batch`` tasks with the run's task generator (fresh from the prior, or from
   the run's task pool);
2. copies theta once per task and, ``inner_steps`` times, plays ``inner_episodes``
   episodes of every task with that task's current weights, then takes one plain SGD
   step (learning rate ``inner_lr``, no clipping) on the A2C loss of those episodes
   (:func:`mesaprobe.train.losses.actor_critic_loss`: policy gradient with the value
   head as baseline, GAE advantages standardised within the task's own episodes when
   ``normalize_advantages``, value regression, entropy bonus with A2C's schedule);
3. moves theta towards the adapted weights: the run's optimizer steps with the
   gradient ``theta - mean_task(theta_task)``, the negative Reptile direction.  With
   ``torch.optim.SGD(lr=epsilon)`` this is the paper's
   ``theta <- theta + epsilon (mean_task(theta_task) - theta)``; the pipeline's runs use
   Adam (``lr`` and its linear decay as for the other algorithms), which rescales the
   direction per coordinate.  ``max_grad_norm`` does not apply.

Every task is adapted at once: the weights carry a leading task dimension, the inner
gradients are ``vmap(grad(...))`` of the loss through ``torch.func.functional_call`` of
the model, and acting (once per pull) is the memoryless MLP written as batched matrix
products; there is no Python loop over tasks, only over time and inner steps.  Episodes
are task-major: episode ``j`` of a batch plays task ``j // inner_episodes``.

An update plays ``batch x inner_steps x inner_episodes`` episodes; every pull counts as
an env step (:meth:`Reptile.episodes_per_task`).  Besides A2C's statistics it
returns the reward of the first inner step's episodes (played with theta itself: before
adaptation) and of the last inner step's (after ``inner_steps - 1`` SGD steps: after
adaptation, the quantity Reptile improves).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from mesaprobe.agents import policy_and_value, sample_categorical
from mesaprobe.envs.task_pool import select_tasks
from mesaprobe.models.base import SequenceModel
from mesaprobe.models.memoryless import Memoryless
from mesaprobe.settings import SettingError
from mesaprobe.train.algorithm import Algorithm
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.losses import actor_critic_loss, generalized_advantages, normalized
from mesaprobe.train.rollout import Trajectory, play
from mesaprobe.train.state import TrainingState, schedule

#: Architecture families whose weights Reptile adapts.
REPTILE_ARCHITECTURES = ("memoryless",)

#: Environment kinds Reptile trains on.
REPTILE_KINDS = ("bandit",)

Weights = dict[str, Tensor]
"""Parameter name -> tensor with a leading task dimension (tasks, *parameter shape)."""


def memoryless_forward(model: Memoryless, weights: Weights, xs: Tensor) -> Tensor:
    """``model.forward`` with every task's own weights: (N, R, I) -> (N, R, O), R rows per task.

    The same computation as ``vmap(functional_call(model, ...))`` written as batched matrix
    products, about four times faster on a CPU at this size; acting calls it once per pull
    (the tests check it against per-task copies of the model).
    """
    h = xs  # (N, R, I)
    for i in range(len(model.layers)):
        weight, bias = weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"]  # (N, H, I'), (N, H)
        h = torch.relu(torch.baddbmm(bias[:, None], h, weight.transpose(1, 2)))  # (N, R, H)
    return torch.baddbmm(weights["head.bias"][:, None], h, weights["head.weight"].transpose(1, 2))


class TaskWeightsAgent:
    """The memoryless model acting in every episode with the weights of that episode's task.

    Episodes are task-major: rows ``i * episodes_per_task ... (i + 1) * episodes_per_task - 1``
    of every observation belong to task ``i``.
    """

    def __init__(self, model: Memoryless, weights: Weights, actions: int, episodes_per_task: int):
        self.model = model
        self.weights = weights
        self.actions = actions
        self.episodes_per_task = episodes_per_task

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> None:
        return None  # memoryless: nothing is carried from one pull to the next

    def act(self, state: None, observation: Tensor, generator: torch.Generator) -> tuple[None, Tensor]:
        episodes, inputs = observation.shape
        tasks = episodes // self.episodes_per_task
        xs = observation.view(tasks, self.episodes_per_task, inputs)  # (N, E, I)
        outputs = memoryless_forward(self.model, self.weights, xs).view(episodes, -1)  # (N * E, O)
        logits, _ = policy_and_value(outputs, self.actions)
        return None, sample_categorical(logits, generator)


def check_fits(environment, model: SequenceModel) -> None:
    """SettingError on ``algorithm`` unless Reptile can train ``model`` on ``environment``."""
    family = getattr(type(model), "registered_name", type(model).__name__)
    if environment.kind not in REPTILE_KINDS:
        raise SettingError(
            "algorithm",
            f"reptile trains on {', '.join(REPTILE_KINDS)} environments, not {environment.kind}",
        )
    if family not in REPTILE_ARCHITECTURES:
        raise SettingError(
            "algorithm",
            f"reptile adapts the weights of a {', '.join(REPTILE_ARCHITECTURES)} architecture, not {family}",
        )


def task_weights(model: SequenceModel, tasks: int) -> Weights:
    """theta repeated once per task: (tasks, *shape) copies that no longer track theta."""
    return {
        name: parameter.detach()[None].repeat(tasks, *[1] * parameter.dim())
        for name, parameter in model.named_parameters()
    }


def adapt(
    model: SequenceModel,
    environment,
    tasks,
    config: TrainingConfig,
    entropy_coef: float,
    luck_generator: torch.Generator,
    action_generator: torch.Generator,
) -> tuple[Weights, list[Trajectory], dict[str, Tensor]]:
    """The inner loop: ``inner_steps`` SGD steps on every task, all tasks at once.

    Returns the adapted weights (tasks, *shape), the trajectory each inner step played
    (tasks x inner_episodes episodes, task-major) and the mean entropy and value loss of
    the inner steps' losses.
    """
    actions = environment.action_count
    task_count = tasks.batch
    per_task = config.inner_episodes
    episode_tasks = select_tasks(tasks, torch.arange(task_count).repeat_interleave(per_task))
    weights = task_weights(model, task_count)
    forward = vmap(lambda one_task, xs: functional_call(model, one_task, (xs,)))

    def task_loss(one_task: Weights, observations, actions_taken, advantages, returns):
        outputs = functional_call(model, one_task, (observations,))  # (E, T, actions + 1)
        loss = actor_critic_loss(outputs, actions_taken, advantages, returns, config.value_coef, entropy_coef)
        return loss.total, (loss.entropy, loss.value)

    task_gradients = vmap(grad(task_loss, has_aux=True))
    trajectories, entropies, value_losses = [], [], []
    for _ in range(config.inner_steps):
        with torch.no_grad():
            agent = TaskWeightsAgent(model, weights, actions, per_task)
            trajectory = play(environment, episode_tasks, agent, luck_generator, action_generator)
            horizon = trajectory.actions.shape[1]
            observations = trajectory.observations.view(task_count, per_task, horizon, -1)  # (N, E, T, I)
            values = policy_and_value(forward(weights, observations), actions)[1]  # (N, E, T)
            advantages, returns = generalized_advantages(
                trajectory.rewards, values.reshape(-1, horizon), config.gamma, config.gae_lambda
            )  # (N * E, T) each
            advantages = advantages.view(task_count, per_task, horizon)
            if config.normalize_advantages:
                advantages = vmap(normalized)(advantages)  # within each task's own episodes
        gradients, (entropy, value_loss) = task_gradients(
            weights,
            observations,
            trajectory.actions.view(task_count, per_task, horizon),
            advantages,
            returns.view(task_count, per_task, horizon),
        )
        weights = {name: weights[name] - config.inner_lr * gradients[name] for name in weights}
        trajectories.append(trajectory)
        entropies.append(entropy.mean())
        value_losses.append(value_loss.mean())
    statistics = {"entropy": torch.stack(entropies).mean(), "value_loss": torch.stack(value_losses).mean()}
    return weights, trajectories, statistics


def reptile_step(model: SequenceModel, optimizer: torch.optim.Optimizer, adapted: Weights) -> None:
    """Move theta towards the tasks' adapted weights: ``optimizer`` steps on theta - mean(adapted)."""
    optimizer.zero_grad(set_to_none=True)
    for name, parameter in model.named_parameters():
        parameter.grad = parameter.detach() - adapted[name].mean(dim=0)
    optimizer.step()


def reptile_update(
    environment, state: TrainingState, config: TrainingConfig, total_updates: int
) -> dict[str, Tensor]:
    """One meta-update; returns A2C's statistics plus the reward before and after adaptation."""
    check_fits(environment, state.model)
    progress = schedule(config, state, total_updates)
    entropy_coef = config.entropy_coef + (config.entropy_final - config.entropy_coef) * progress
    tasks = environment.sample_tasks(config.batch, state.task_generator, state.model.device)
    adapted, trajectories, statistics = adapt(
        state.model,
        environment,
        tasks,
        config,
        entropy_coef,
        state.task_generator,
        state.action_generator,
    )
    reptile_step(state.model, state.optimizer, adapted)
    expected = torch.stack([trajectory.expected_rewards for trajectory in trajectories])  # (S, N * E, T)
    regrets = torch.stack([trajectory.regrets for trajectory in trajectories])
    result: dict[str, Any] = {
        "reward_per_step_before_adaptation": expected[0].mean(),
        "reward_per_step_after_adaptation": expected[-1].mean(),
        "reward_per_step": expected.mean(),
        "regret_per_step": regrets.mean(),
    }
    return result | statistics


class Reptile(Algorithm):
    """First-order Reptile: a meta-learned initialisation of a memoryless architecture, from
    which a few in-weights SGD steps adapt to each task (bandits)."""

    serves: ClassVar[tuple[str, ...]] = REPTILE_KINDS
    architectures: ClassVar[tuple[str, ...] | None] = REPTILE_ARCHITECTURES
    #: Reptile already batches its tasks (one weight copy per task): one seed per job, float32.
    stacks_seeds: ClassVar[bool] = False
    update = staticmethod(reptile_update)

    @classmethod
    def episodes_per_task(cls, config: TrainingConfig) -> int:
        """Every inner step plays ``inner_episodes`` episodes of each task."""
        return config.inner_steps * config.inner_episodes
