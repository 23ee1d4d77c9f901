"""The contract every training algorithm follows.

An algorithm is one class, registered by name in :data:`mesaprobe.train.ALGORITHMS`
(``training.algorithm`` of a study names it).  Its class attributes say what it can
train; its :meth:`Algorithm.update` takes one update of the run's model: it samples its
own batch of tasks with the state's generators, takes its gradient steps, and returns its
statistics (tensors, one value per seed when several seeds train together).  The loop in
:mod:`mesaprobe.train.loop` does the rest (counting, progress, checkpoints, preemption).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from mesaprobe.envs.base import Environment
from mesaprobe.settings import SettingError
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.state import TrainingState


class Algorithm:
    """Base of the training algorithms; a subclass sets ``serves`` and ``update``."""

    #: Filled in by the registry.
    registered_name: ClassVar[str]
    #: Environment kinds it trains on (``bandit``, ``commitment``, ``prediction``, ``regression``).
    serves: ClassVar[tuple[str, ...]]
    #: Architecture families it can train (None: every family).
    architectures: ClassVar[tuple[str, ...] | None] = None
    #: Whether several seeds of a run can train together in one process (stacked weights,
    #: ``seeds_per_job``) and in bf16 mixed precision (``precision``).
    stacks_seeds: ClassVar[bool] = True

    @classmethod
    def episodes_per_task(cls, config: TrainingConfig) -> int:
        """Episodes one update plays of each of its ``batch`` tasks."""
        return 1

    @classmethod
    def env_steps_per_update(cls, config: TrainingConfig, horizon: int) -> int:
        """Pulls (or tokens, examples) one update plays: every episode of every task."""
        return config.batch * cls.episodes_per_task(config) * horizon

    @classmethod
    def updates(cls, config: TrainingConfig, horizon: int) -> int:
        """Number of updates that covers ``env_steps`` (whole batches of whole episodes)."""
        return -(-config.env_steps // cls.env_steps_per_update(config, horizon))

    @classmethod
    def seeds_in_job(cls, config: TrainingConfig) -> int:
        """Seeds per training job: ``seeds_per_job``, with auto resolved by the device the study
        names (see :meth:`TrainingConfig.auto_seeds_per_job`); 1 if the algorithm cannot stack."""
        if config.seeds_per_job != "auto":
            return config.seeds_per_job
        return config.auto_seeds_per_job() if cls.stacks_seeds else 1

    @classmethod
    def check(cls, config: TrainingConfig, stacking: tuple[str, ...]) -> None:
        """SettingError for settings this algorithm cannot honour; ``stacking`` names the
        algorithms that can (for the message)."""
        if cls.stacks_seeds:
            return
        if config.seeds_per_job not in ("auto", 1):
            raise SettingError(
                "seeds_per_job",
                f"{cls.registered_name} trains one seed per job (expected 1 or auto); "
                f"several seeds per job: {', '.join(stacking)}",
            )
        if config.precision != "float32":
            raise SettingError(
                "precision",
                f"{cls.registered_name} trains in float32 only; bf16: {', '.join(stacking)}",
            )

    @staticmethod
    def update(
        environment: Environment, state: TrainingState, config: TrainingConfig, total_updates: int
    ) -> dict[str, Tensor]:
        """One update of ``state``'s model; returns its statistics."""
        raise NotImplementedError
