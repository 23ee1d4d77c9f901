"""A finite pool of training tasks: the task-diversity axis of any environment family.

With ``task_pool: M`` in an environment block, a run is trained on M tasks drawn once
from the family's prior, not on a fresh task per episode (Raventós et al. 2023: with
few tasks a model can memorise them and *locate* the current one; with many it has to
*learn* each in context).  The wrapper works for every family because tasks are data:
a frozen dataclass of tensors with a leading batch dimension.  The pool is M rows drawn
once with the family's own ``sample_tasks``; each batch of training tasks is M-uniform
random indices into it, applied to every tensor of the tasks (fields that are not
tensors, such as a switch step, are shared by all rows).

Which pool: the pool's generator is named by (environment id, seed).  The environment
id hashes the family's settings and the pool size, so every architecture trained at
one seed sees the same pool, each seed is an independent replicate with a pool of its
own, and a different M is a different pool (pools of different sizes are not nested).
The pool is drawn on the CPU, so it is the same whatever device trains or probes.

The adaptation probe's ``tasks: pool`` plays tasks from the same pool (and so do the
baselines it is compared with); ``tasks: fresh`` plays new draws from the prior.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mesaprobe.envs.sequences.base import cat_rows, combine
from mesaprobe.seeding import make_generator

#: Largest pool a study may ask for (2**20 tasks).
MAX_TASK_POOL = 2**20

#: Tasks drawn per call of the family's sampler while the pool is built (bounds its scratch memory).
POOL_CHUNK = 2**16


def select_tasks(tasks: Any, indices: Tensor) -> Any:
    """Rows ``indices`` (n,) of ``tasks``: every tensor is indexed on its first (batch) dimension."""
    return combine(lambda tensor: tensor[indices.to(tensor.device)], tasks)


class TaskPool:
    """An environment whose tasks are drawn uniformly from a fixed pool of ``size`` tasks.

    Everything but ``sample_tasks`` (reset, step, sample, bayes_predict, horizon, ...)
    is the wrapped environment's own.
    """

    def __init__(self, environment, size: int, key: tuple):
        if not 1 <= size <= MAX_TASK_POOL:
            raise ValueError(f"a task pool holds 1 to {MAX_TASK_POOL} tasks, got {size}")
        self.environment = environment
        self.size = size
        self.key = key
        """Names the pool's generator: (environment id, seed)."""
        self._pools: dict[str, Any] = {}  # device -> the pool's tasks there

    def __getattr__(self, name: str):
        # Only called for names the pool does not have itself: the environment's.
        if name == "environment" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.environment, name)

    def pool(self, device: torch.device | str = "cpu") -> Any:
        """All ``size`` tasks of the pool, on ``device`` (drawn on the CPU on first use)."""
        device = str(torch.device(device))
        if device not in self._pools:
            if "cpu" not in self._pools:
                generator = make_generator("task-pool", *self.key)
                pool = None
                for start in range(0, self.size, POOL_CHUNK):
                    count = min(POOL_CHUNK, self.size - start)
                    chunk = self.environment.sample_tasks(count, generator, "cpu")
                    pool = chunk if pool is None else cat_rows(pool, chunk)
                self._pools["cpu"] = pool
            self._pools[device] = combine(lambda tensor: tensor.to(device), self._pools["cpu"])
        return self._pools[device]

    def sample_indices(self, n: int, generator: torch.Generator) -> Tensor:
        """(n,) pool indices, uniform with replacement, drawn from ``generator`` on its device."""
        return torch.randint(self.size, (n,), generator=generator, device=generator.device)

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> Any:
        """``n`` tasks drawn uniformly (with replacement) from the pool."""
        return select_tasks(self.pool(device), self.sample_indices(n, generator))
