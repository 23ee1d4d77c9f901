"""The training loop shared by every algorithm: progress, checkpoints, preemption, divergence.

Each update (see :mod:`mesaprobe.train.rl` for A2C/PPO, :mod:`mesaprobe.train.predict`
for log-loss training, :mod:`mesaprobe.train.regress` for squared-error training and
:mod:`mesaprobe.train.meta` for Reptile) samples a batch of fresh tasks and takes gradient steps; this
loop counts env steps, shows progress (steps, reward or log-loss, env-steps/s) and
keeps the run resumable.

Training is resumable: every ``checkpoint_every`` updates, and when the process is
asked to stop (SIGTERM, SIGUSR1: preemption; SIGINT: Ctrl-C), the model, optimiser,
generator states and history go to ``partial.pt`` once the update in progress is done; a
rerun picks up from there.  A second Ctrl-C stops at once, without saving.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mesaprobe.artifacts import atomic_path
from mesaprobe.envs.base import Environment
from mesaprobe.errors import ArtifactError, UserError
from mesaprobe.train import algorithm_of
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.metrics_log import METRICS_FILE, MetricsLogs
from mesaprobe.train.state import TrainingState


class Preempted(UserError):
    """Training was asked to stop (SIGTERM/SIGUSR1/SIGINT); its state is saved for resuming."""

    exit_code = 3


class TrainingDiverged(UserError):
    """A loss or a weight became NaN or infinite; the last good checkpoint is kept."""


def save_checkpoint(state: TrainingState, path: Path, identity: dict[str, Any]) -> None:
    save_checkpoints(state, [path], [identity])


def save_checkpoints(
    state: TrainingState, paths: Sequence[Path], identities: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each seed's checkpoint to its own path, stamped with its run's identity; returns them."""
    checkpoints = state.member_checkpoints()
    for path, identity, checkpoint in zip(paths, identities, checkpoints, strict=True):
        with atomic_path(path) as temporary:
            torch.save({"identity": identity, **checkpoint}, temporary)
    return checkpoints


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint written for the run ``identity``, without unpickling code."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(path, "checkpoint not found") from None
    except pickle.UnpicklingError:  # torch's refusal of objects other than tensors and plain data
        raise ArtifactError(
            path,
            "holds Python objects other than tensors and plain data, which mesaprobe never loads "
            "(loading them could run code); not a checkpoint mesaprobe wrote: delete it to train again",
        ) from None
    except Exception as error:  # truncated zip, bad magic
        first_line = " ".join(str(error).split("\n", 1)[0].split())[:200]
        raise ArtifactError(
            path, f"unreadable checkpoint ({type(error).__name__}: {first_line}); delete it to train again"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("identity") != identity:
        raise ArtifactError(path, "checkpoint belongs to different run settings; delete it to start over")
    return checkpoint


def update(
    environment: Environment, state: TrainingState, config: TrainingConfig, total_updates: int
) -> dict:
    """One update of the run's algorithm; returns its statistics (tensors or numbers)."""
    with mixed_precision(config, state.model.device):
        return algorithm_of(config).update(environment, state, config, total_updates)


def mixed_precision(config: TrainingConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision: bf16`` (matrix products and attention in bfloat16; torch keeps
    reductions, softmax and losses in float32); otherwise nothing."""
    if config.precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def mean_of_last(history: list[dict[str, float]], count: int = 10) -> dict[str, float]:
    """Each metric of the last ``count`` history entries, averaged (the run's final metrics)."""
    last = history[-count:]
    keys = [key for key in (last[0] if last else {}) if key not in ("update", "env_steps")]
    return {key: sum(entry[key] for entry in last) / len(last) for key in keys}


class StopRequest:
    """Turns SIGTERM/SIGUSR1/SIGINT into a flag checked between updates (checkpoint, then exit).

    After a first SIGINT (Ctrl-C) the next one interrupts at once, as Ctrl-C usually does."""

    SIGNALS = tuple(
        s
        for s in (
            getattr(signal, "SIGTERM", None),
            getattr(signal, "SIGUSR1", None),
            getattr(signal, "SIGINT", None),
        )
        if s
    )

    def __init__(self):
        self.received: int | None = None
        self.previous = {}

    def __enter__(self):
        for number in self.SIGNALS:
            if signal.getsignal(number) == signal.SIG_IGN:
                continue  # e.g. SIGINT of a job started in the background: it stays ignored
            with contextlib.suppress(ValueError):  # not the main thread: no signal handling
                self.previous[number] = signal.signal(number, self.handle)
        return self

    def handle(self, number, frame) -> None:
        self.received = number
        if number == signal.SIGINT:  # a second Ctrl-C: stop now, without the checkpoint
            signal.signal(signal.SIGINT, self.previous.get(number, signal.default_int_handler))

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def train(
    environment: Environment,
    state: TrainingState,
    config: TrainingConfig,
    partial_path: Path | Sequence[Path],
    identity: dict[str, Any] | Sequence[dict[str, Any]],
    progress: bool = True,
    description: str = "train",
) -> TrainingState:
    """Train until ``config.env_steps``, checkpointing to ``partial_path``; returns the final state.

    A state of several seeds takes one ``partial_path`` and ``identity`` per seed, in seed order;
    the progress bar counts the env steps of all of them.  Each update's statistics are appended
    to ``metrics.jsonl`` beside each ``partial_path`` as they come (:mod:`mesaprobe.train.metrics_log`).
    """
    paths = [partial_path] if isinstance(partial_path, Path) else list(partial_path)
    identities = [identity] if isinstance(identity, dict) else list(identity)
    algorithm = algorithm_of(config)
    total_updates = algorithm.updates(config, environment.horizon)
    steps_per_update = algorithm.env_steps_per_update(config, environment.horizon)
    seeds = state.seeds
    state.model.train()
    metrics = MetricsLogs(
        [path.parent / METRICS_FILE for path in paths], state.update, total_updates, config.tensorboard
    )
    bar = tqdm(
        total=total_updates * steps_per_update * seeds,
        initial=state.env_steps * seeds,
        unit="step",
        unit_scale=True,
        desc=description,
        disable=not progress,
        mininterval=2.0,
        smoothing=0.1,
    )
    with StopRequest() as stop, bar, metrics:
        started = time.perf_counter() - state.wall_seconds
        while state.update < total_updates:
            statistics = update(environment, state, config, total_updates)
            # One host sync per update; several seeds: one value per seed.
            values = {
                name: value.tolist() if seeds > 1 else float(value) for name, value in statistics.items()
            }
            numbers = [x for value in values.values() for x in (value if seeds > 1 else [value])]
            if not all(math.isfinite(x) for x in numbers) or not all(
                torch.isfinite(p).all() for p in state.model.parameters()
            ):
                raise TrainingDiverged(
                    f"{paths[0].parent}: training diverged at update {state.update + 1} "
                    f"({values}); the last good checkpoint is {paths[0].name}"
                    + (
                        f" (trained with {seeds - 1} other seeds, whose own are kept too)"
                        if seeds > 1
                        else ""
                    )
                )
            state.update += 1
            state.env_steps += steps_per_update
            state.wall_seconds = time.perf_counter() - started
            state.history.append({"update": state.update, "env_steps": state.env_steps} | values)
            metrics.write(state.update, state.env_steps, state.wall_seconds, values)
            bar.update(steps_per_update * seeds)
            shown = list(values.items())[:2]
            bar.set_postfix(
                {key: f"{sum(value) / seeds if seeds > 1 else value:.3f}" for key, value in shown},
                refresh=False,
            )
            if state.update % config.checkpoint_every == 0 and state.update < total_updates:
                save_checkpoints(state, paths, identities)
            if stop.received is not None:
                save_checkpoints(state, paths, identities)
                raise Preempted(
                    f"{paths[0].parent}: stopped by signal {signal.Signals(stop.received).name} at "
                    f"update {state.update}/{total_updates}; rerun to resume from {paths[0].name}"
                    + (f" (and the {seeds - 1} other seeds' own)" if seeds > 1 else "")
                )
    return state
