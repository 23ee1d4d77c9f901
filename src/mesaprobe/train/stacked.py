"""Several seeds of one run trained in one process (``training.seeds_per_job``).

Small models leave most of a GPU idle; S seeds of the same run trained together fill it
with S times the work per kernel.  The seeds' models become one *stacked* model
(:func:`mesaprobe.models.stacked.stack_models`: every weight gains a leading seed
dimension, computed with batched matrix products) and every batch is seed-major: seed
``s`` owns the ``s``-th of S equal blocks of rows.  Nothing is shared between seeds but
the kernels:

* each seed samples its tasks, its environment's luck and its actions from its own
  generators (:class:`mesaprobe.seeding.SeedGenerators`), drawing exactly what it would
  draw trained alone;
* each seed's loss is a mean over its own rows (advantages standardised within its own
  rows), the gradient of the sum of the seeds' losses is each seed's own gradient, the
  gradient norm is clipped per seed, and Adam's update is elementwise;
* each seed keeps its own history, ``partial.pt`` and ``checkpoint.pt``, in the format a
  run trained alone writes, so freezing, probing and resuming do not know how a run was
  trained, and a preempted group may resume with any grouping.

A run's results therefore do not depend on which seeds share its job, up to the order of
floating-point reductions (as between a CPU and a GPU); ``seeds_per_job`` is not part of
a run's id.  The tests check stacked training against each seed trained alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mesaprobe.envs.sequences.base import combine
from mesaprobe.seeding import SeedGenerators


class SeedEnvironments:
    """The environments of S seeds of one run, as one environment over seed-major batches.

    Sampling goes to each seed's own environment (a task pool differs by seed) with its own
    generator; everything else (reset, step, observations, horizon, ...) is the first
    environment's, which is the same for every seed.  ``n`` in :meth:`sample_tasks` counts
    tasks per seed.
    """

    def __init__(self, environments: Sequence[Any]):
        self.environments = list(environments)

    def __getattr__(self, name: str):
        if name == "environments" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.environments[0], name)

    def step(
        self, state: Any, action: Tensor, generators: SeedGenerators
    ) -> tuple[Any, Tensor, Tensor, bool]:
        if self.environments[0].rows_independent:
            return self.environments[0].step(state, action, generators)
        steps = [
            environment.step(
                self.block(state, index), action.tensor_split(len(self.environments))[index], generator
            )
            for index, (environment, generator) in enumerate(zip(self.environments, generators, strict=True))
        ]
        states, observations, rewards, done = zip(*steps, strict=True)
        return concatenated(states), torch.cat(observations), torch.cat(rewards), done[0]

    def expected_reward(self, state: Any, action: Tensor) -> Tensor:
        if self.environments[0].rows_independent:
            return self.environments[0].expected_reward(state, action)
        seeds = len(self.environments)
        return torch.cat(
            [
                environment.expected_reward(self.block(state, index), action.tensor_split(seeds)[index])
                for index, environment in enumerate(self.environments)
            ]
        )

    def block(self, data: Any, index: int) -> Any:
        """Seed ``index``'s rows of a batch's tasks or state."""
        seeds = len(self.environments)
        return combine(lambda tensor: tensor.tensor_split(seeds)[index], data)

    def sample_tasks(self, n: int, generators: SeedGenerators, device: torch.device | str) -> Any:
        tasks = [
            environment.sample_tasks(n, generator, device)
            for environment, generator in zip(self.environments, generators, strict=True)
        ]
        return concatenated(tasks)

    def sample(self, tasks: Any, generators: SeedGenerators) -> Any:
        """Each seed's episodes of its own block of ``tasks``."""
        return concatenated(
            [
                environment.sample(self.block(tasks, index), generator)
                for index, (environment, generator) in enumerate(
                    zip(self.environments, generators, strict=True)
                )
            ]
        )


def concatenated(blocks: Sequence[Any]) -> Any:
    """The seeds' tasks, states or samples (same structure) as one seed-major batch."""
    return combine(lambda *tensors: torch.cat(tensors), *blocks)


def per_seed_mean(values: Tensor, seeds: int) -> Tensor:
    """Mean over all of ``values`` (one run: a scalar) or over each seed's block of rows
    (several seeds: shape (seeds,))."""
    if seeds == 1:
        return values.mean()
    return values.reshape(seeds, -1).mean(dim=1)


def clip_gradients(parameters: Sequence[Tensor], max_norm: float, seeds: int) -> None:
    """``torch.nn.utils.clip_grad_norm_`` on one run; per seed on a stacked model, whose every
    parameter carries the seed dimension first."""
    if seeds == 1:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    squares = torch.stack([g.reshape(seeds, -1).pow(2).sum(dim=1) for g in grads]).sum(dim=0)  # (S,)
    scale = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)  # torch's rule, per seed
    for g in grads:
        g.mul_(scale.view(seeds, *([1] * (g.dim() - 1))))


def member_optimizer_state(state: dict[str, Any], index: int, seeds: int) -> dict[str, Any]:
    """The state dict a seed's own optimizer would have: every per-parameter tensor with the
    seed dimension first is cut to the seed's slice (Adam's step counts are shared)."""
    return {
        "state": {
            key: {
                name: value[index].clone() if _stacked(value, seeds) else value
                for name, value in parameter_state.items()
            }
            for key, parameter_state in state["state"].items()
        },
        "param_groups": state["param_groups"],
    }


def stacked_optimizer_state(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Inverse of :func:`member_optimizer_state`: the seeds' optimizer states, stacked."""
    first = states[0]
    stacked = {}
    for key, parameter_state in first["state"].items():
        stacked[key] = {}
        for name, value in parameter_state.items():
            values = [state["state"][key][name] for state in states]
            if isinstance(value, Tensor) and value.dim() > 0:
                stacked[key][name] = torch.stack(values)
            else:
                if any(not torch.equal(torch.as_tensor(v), torch.as_tensor(value)) for v in values):
                    raise ValueError(f"seeds disagree on the optimizer's {name!r}; they cannot be stacked")
                stacked[key][name] = value
    return {"state": stacked, "param_groups": first["param_groups"]}


def _stacked(value: Any, seeds: int) -> bool:
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == seeds


def member_history(history: list[dict[str, Any]], index: int) -> list[dict[str, float]]:
    """A seed's own history from a group's (metrics recorded as one value per seed)."""
    return [
        {key: value[index] if isinstance(value, list) else value for key, value in entry.items()}
        for entry in history
    ]


def stacked_history(histories: Sequence[list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Inverse of :func:`member_history`."""
    stacked = []
    for entries in zip(*histories, strict=True):
        first = entries[0]
        stacked.append(
            {
                key: first[key] if key in ("update", "env_steps") else [entry[key] for entry in entries]
                for key in first
            }
        )
    return stacked
