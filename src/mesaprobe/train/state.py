"""What every training algorithm works on: the training state, the learning-rate schedule and
one optimiser step.

:class:`TrainingState` is everything needed to continue training exactly where it stopped
(model, optimiser, generators, counters, history); with several seeds trained together
(:mod:`mesaprobe.train.stacked`) it saves and loads one checkpoint per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mesaprobe.models.base import SequenceModel
from mesaprobe.models.stacked import member_state_dict
from mesaprobe.seeding import SeedGenerators
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.stacked import (
    clip_gradients,
    member_history,
    member_optimizer_state,
    stacked_history,
    stacked_optimizer_state,
)


@dataclass
class TrainingState:
    """Everything needed to continue training exactly where it stopped."""

    model: SequenceModel
    optimizer: torch.optim.Optimizer
    task_generator: torch.Generator | SeedGenerators
    action_generator: torch.Generator | SeedGenerators
    update: int = 0
    env_steps: int = 0
    wall_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def seeds(self) -> int:
        """Seeds trained together in this state (1: one run; see :mod:`mesaprobe.train.stacked`)."""
        return len(self.task_generator) if isinstance(self.task_generator, SeedGenerators) else 1

    def to_checkpoint(self) -> dict[str, Any]:
        assert self.seeds == 1, "a state of several seeds is saved per seed (member_checkpoints)"
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "task_generator": self.task_generator.get_state(),
            "action_generator": self.action_generator.get_state(),
            "update": self.update,
            "env_steps": self.env_steps,
            "wall_seconds": self.wall_seconds,
            "history": self.history,
        }

    def member_checkpoints(self) -> list[dict[str, Any]]:
        """One checkpoint per seed, each what that seed trained alone would save."""
        if self.seeds == 1:
            return [self.to_checkpoint()]
        optimizer = self.optimizer.state_dict()
        return [
            {
                "model": member_state_dict(self.model, index),
                "optimizer": member_optimizer_state(optimizer, index, self.seeds),
                "task_generator": self.task_generator[index].get_state(),
                "action_generator": self.action_generator[index].get_state(),
                "update": self.update,
                "env_steps": self.env_steps,
                "wall_seconds": self.wall_seconds,
                "history": member_history(self.history, index),
            }
            for index in range(self.seeds)
        ]

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        assert self.seeds == 1, "a state of several seeds is loaded per seed (load_member_checkpoints)"
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.task_generator.set_state(checkpoint["task_generator"])
        self.action_generator.set_state(checkpoint["action_generator"])
        self.load_counters(checkpoint)
        self.history = list(checkpoint["history"])

    def load_member_checkpoints(self, checkpoints: list[dict[str, Any]]) -> None:
        """Continue from every seed's own checkpoint; all must be at the same update."""
        if self.seeds == 1:
            self.load_checkpoint(checkpoints[0])
            return
        updates = {int(checkpoint["update"]) for checkpoint in checkpoints}
        assert len(updates) == 1, f"seeds stopped at different updates {sorted(updates)}"
        self.model.load_state_dict(
            {key: torch.stack([c["model"][key] for c in checkpoints]) for key in checkpoints[0]["model"]}
        )
        self.optimizer.load_state_dict(stacked_optimizer_state([c["optimizer"] for c in checkpoints]))
        for index, checkpoint in enumerate(checkpoints):
            self.task_generator[index].set_state(checkpoint["task_generator"])
            self.action_generator[index].set_state(checkpoint["action_generator"])
        self.load_counters(checkpoints[0])
        self.history = stacked_history([list(c["history"]) for c in checkpoints])

    def load_counters(self, checkpoint: dict[str, Any]) -> None:
        self.update = int(checkpoint["update"])
        self.env_steps = int(checkpoint["env_steps"])
        self.wall_seconds = float(checkpoint["wall_seconds"])


def schedule(config: TrainingConfig, state: TrainingState, total_updates: int) -> float:
    """Set this update's learning rate (linear decay); returns the fraction of training done."""
    progress = state.update / max(1, total_updates)
    for group in state.optimizer.param_groups:
        group["lr"] = config.lr * (1.0 + (config.lr_final_fraction - 1.0) * progress)
    return progress


def gradient_step(state: TrainingState, loss: Tensor, config: TrainingConfig) -> None:
    """One optimiser step on ``loss`` (several seeds: their losses, one each, summed)."""
    state.optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()
    clip_gradients(list(state.model.parameters()), config.max_grad_norm, state.seeds)
    state.optimizer.step()
