"""The training loop shared by every algorithm: progress, checkpoints, preemption, divergence.

Each update (see :mod:`mesaprobe.train.rl` for A2C/PPO, :mod:`mesaprobe.train.predict`
for log-loss training, :mod:`mesaprobe.train.regress` for squared-error training and
:mod:`mesaprobe.train.meta` for Reptile) samples a batch of fresh tasks and takes gradient steps; this
loop counts env steps, shows progress (steps, reward or log-loss, env-steps/s) and
keeps the run resumable.

Training is resumable: every ``checkpoint_every`` updates, and when the process is
asked to stop (SIGTERM, SIGUSR1: preemption), the model, optimiser, generator states
and history go to ``partial.pt``; a rerun picks up from there.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mesaprobe.envs.base import Environment
from mesaprobe.errors import ArtifactError, UserError
from mesaprobe.models.base import SequenceModel
from mesaprobe.train.config import TrainingConfig


class Preempted(UserError):
    """Training was asked to stop (SIGTERM/SIGUSR1); its state is saved for resuming."""

    exit_code = 3


class TrainingDiverged(UserError):
    """A loss or a weight became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainingState:
    """Everything needed to continue training exactly where it stopped."""

    model: SequenceModel
    optimizer: torch.optim.Optimizer
    task_generator: torch.Generator
    action_generator: torch.Generator
    update: int = 0
    env_steps: int = 0
    wall_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_checkpoint(self) -> dict[str, Any]:
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

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.task_generator.set_state(checkpoint["task_generator"])
        self.action_generator.set_state(checkpoint["action_generator"])
        self.update = int(checkpoint["update"])
        self.env_steps = int(checkpoint["env_steps"])
        self.wall_seconds = float(checkpoint["wall_seconds"])
        self.history = list(checkpoint["history"])


def save_checkpoint(state: TrainingState, path: Path, identity: dict[str, Any]) -> None:
    from mesaprobe.artifacts import atomic_path

    with atomic_path(path) as temporary:
        torch.save({"identity": identity, **state.to_checkpoint()}, temporary)


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint written for the run ``identity``, without unpickling code."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(path, "checkpoint not found") from None
    except Exception as error:  # truncated zip, bad magic, foreign pickle
        raise ArtifactError(path, f"unreadable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("identity") != identity:
        raise ArtifactError(path, "checkpoint belongs to different run settings; delete it to start over")
    return checkpoint


def update(
    environment: Environment, state: TrainingState, config: TrainingConfig, total_updates: int
) -> dict:
    """One update of the run's algorithm; returns its statistics (tensors or numbers)."""
    if config.algorithm in ("a2c", "ppo"):
        from mesaprobe.train.rl import rl_update

        return rl_update(environment, state, config, total_updates)
    if config.algorithm == "predict":
        from mesaprobe.train.predict import predict_update

        return predict_update(environment, state, config, total_updates)
    if config.algorithm == "regress":
        from mesaprobe.train.regress import regress_update

        return regress_update(environment, state, config, total_updates)
    if config.algorithm == "reptile":
        from mesaprobe.train.meta import reptile_update

        return reptile_update(environment, state, config, total_updates)
    raise ValueError(f"unknown training algorithm {config.algorithm!r}")


def schedule(config: TrainingConfig, state: TrainingState, total_updates: int) -> float:
    """Set this update's learning rate (linear decay); returns the fraction of training done."""
    progress = state.update / max(1, total_updates)
    for group in state.optimizer.param_groups:
        group["lr"] = config.lr * (1.0 + (config.lr_final_fraction - 1.0) * progress)
    return progress


def mean_of_last(history: list[dict[str, float]], count: int = 10) -> dict[str, float]:
    """Each metric of the last ``count`` history entries, averaged (the run's final metrics)."""
    last = history[-count:]
    keys = [key for key in (last[0] if last else {}) if key not in ("update", "env_steps")]
    return {key: sum(entry[key] for entry in last) / len(last) for key in keys}


class StopRequest:
    """Turns SIGTERM/SIGUSR1 into a flag checked between updates (checkpoint, then exit)."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)

    def __init__(self):
        self.received: int | None = None
        self.previous = {}

    def __enter__(self):
        for number in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: no signal handling
                self.previous[number] = signal.signal(number, self.handle)
        return self

    def handle(self, number, frame) -> None:
        self.received = number

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def train(
    environment: Environment,
    state: TrainingState,
    config: TrainingConfig,
    partial_path: Path,
    identity: dict[str, Any],
    progress: bool = True,
    description: str = "train",
) -> TrainingState:
    """Train until ``config.env_steps``, checkpointing to ``partial_path``; returns the final state."""
    total_updates = config.updates(environment.horizon)
    steps_per_update = config.env_steps_per_update(environment.horizon)
    state.model.train()
    bar = tqdm(
        total=total_updates * steps_per_update,
        initial=state.env_steps,
        unit="step",
        unit_scale=True,
        desc=description,
        disable=not progress,
        mininterval=2.0,
        smoothing=0.1,
    )
    with StopRequest() as stop, bar:
        started = time.perf_counter() - state.wall_seconds
        while state.update < total_updates:
            statistics = update(environment, state, config, total_updates)
            values = {name: float(value) for name, value in statistics.items()}  # one sync per update
            if not all(math.isfinite(value) for value in values.values()) or not all(
                torch.isfinite(p).all() for p in state.model.parameters()
            ):
                raise TrainingDiverged(
                    f"{partial_path.parent}: training diverged at update {state.update + 1} "
                    f"({values}); the last good checkpoint is {partial_path.name}"
                )
            state.update += 1
            state.env_steps += steps_per_update
            state.wall_seconds = time.perf_counter() - started
            state.history.append({"update": state.update, "env_steps": state.env_steps} | values)
            bar.update(steps_per_update)
            bar.set_postfix({key: f"{value:.3f}" for key, value in list(values.items())[:2]}, refresh=False)
            if state.update % config.checkpoint_every == 0 and state.update < total_updates:
                save_checkpoint(state, partial_path, identity)
            if stop.received is not None:
                save_checkpoint(state, partial_path, identity)
                raise Preempted(
                    f"{partial_path.parent}: stopped by signal {signal.Signals(stop.received).name} at "
                    f"update {state.update}/{total_updates}; rerun to resume from {partial_path.name}"
                )
    return state
