"""Training statistics as they happen: ``runs/<run>/metrics.jsonl``, TensorBoard, a status line.

``train.json`` records a run's whole history once it finished; while it trains, the loop
(:func:`mesaprobe.train.loop.train`) appends one JSON object per update to the run's
``metrics.jsonl`` and flushes it, so ``tail -f results/<study>/runs/<run>/metrics.jsonl``
follows a run live.  Each line holds::

    update                 updates taken so far (1 for the first)
    total_updates          updates the run takes in all
    env_steps              environment steps (tokens, examples) of this run so far
    wall_seconds           seconds spent training, over every session that resumed the run
    env_steps_per_second   env_steps / wall_seconds
    ...                    the algorithm's statistics of this update (reward_per_step, entropy, ...)

A run resumed from ``partial.pt`` continues its file: lines written after that checkpoint
(by the session that stopped) are dropped first, so every update appears once.  Seeds
trained together write one file each, with their own statistics.

With ``training.tensorboard: true`` the same statistics go to ``runs/<run>/tensorboard/``
(``torch.utils.tensorboard``, which needs the ``tensorboard`` package: ``pip install
'mesaprobe[tensorboard]'``); a resumed run purges the events after its checkpoint.

:class:`StatusReporter` reads these files from a thread and prints one compact line per
interval (``mesaprobe train --status-every SECONDS``, which the workflow's training rules
use): steps done, env-steps/s and the time left.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mesaprobe.artifacts import atomic_path
from mesaprobe.errors import UserError

#: The live metrics file of a run, in its directory.
METRICS_FILE = "metrics.jsonl"
#: TensorBoard's event files of a run, in its directory.
TENSORBOARD_DIRECTORY = "tensorboard"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The complete lines of a metrics file, in order (a line cut short by a crash is left out)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("update"), int):
            entries.append(entry)
    return entries


def last_metrics(path: str | Path, tail_bytes: int = 65536) -> dict[str, Any] | None:
    """The last complete line of a metrics file (read from its end), or None."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            size = stream.tell()
            stream.seek(max(0, size - tail_bytes))
            tail = stream.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("update"), int):
            return entry
    return None


class MetricsLog:
    """One run's ``metrics.jsonl`` (and TensorBoard events), continued from update ``resume_update``."""

    def __init__(self, path: Path, resume_update: int, total_updates: int, tensorboard: bool = False):
        self.path = path
        self.total_updates = total_updates
        self.writer = (
            open_tensorboard(path.parent / TENSORBOARD_DIRECTORY, resume_update) if tensorboard else None
        )
        kept = (
            [entry for entry in read_metrics(path) if entry["update"] <= resume_update]
            if resume_update
            else []
        )
        with atomic_path(path) as temporary:
            temporary.write_text("".join(json.dumps(entry) + "\n" for entry in kept))
        self.stream = open(path, "a")  # noqa: SIM115 (held for the whole run; close() closes it)

    def write(self, update: int, env_steps: int, wall_seconds: float, statistics: dict[str, float]) -> None:
        """Append update ``update``'s line and flush it (and its TensorBoard scalars)."""
        entry = {
            "update": update,
            "total_updates": self.total_updates,
            "env_steps": env_steps,
            "wall_seconds": round(wall_seconds, 6),
            "env_steps_per_second": round(env_steps / wall_seconds, 1) if wall_seconds > 0 else None,
            **statistics,
        }
        self.stream.write(json.dumps(entry) + "\n")
        self.stream.flush()
        if self.writer is not None:
            for name, value in statistics.items():
                self.writer.add_scalar(f"train/{name}", value, update)
            if entry["env_steps_per_second"] is not None:
                self.writer.add_scalar("train/env_steps_per_second", entry["env_steps_per_second"], update)
            self.writer.add_scalar("train/env_steps", env_steps, update)

    def close(self) -> None:
        self.stream.close()
        if self.writer is not None:
            self.writer.close()


class MetricsLogs:
    """The metrics files of the seeds a training process trains together, one per seed."""

    def __init__(
        self, paths: Sequence[Path], resume_update: int, total_updates: int, tensorboard: bool = False
    ):
        self.logs: list[MetricsLog] = []
        try:
            for path in paths:
                self.logs.append(MetricsLog(path, resume_update, total_updates, tensorboard))
        except BaseException:
            self.close()
            raise

    def write(self, update: int, env_steps: int, wall_seconds: float, values: dict[str, Any]) -> None:
        """``values`` as the loop holds them: one number per statistic, or one list of a number
        per seed when several seeds train together."""
        for seed, log in enumerate(self.logs):
            own = {name: value[seed] if isinstance(value, list) else value for name, value in values.items()}
            log.write(update, env_steps, wall_seconds, own)

    def close(self) -> None:
        for log in self.logs:
            log.close()

    def __enter__(self) -> MetricsLogs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_tensorboard(directory: Path, resume_update: int):
    """A TensorBoard writer into ``directory``; events after ``resume_update`` (from a session that
    stopped after its checkpoint) are purged.  UserError if TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: only when a study asks for it
    except ImportError:
        raise UserError(
            "training.tensorboard: true needs the tensorboard package "
            "(pip install 'mesaprobe[tensorboard]'), which is not installed"
        ) from None
    return SummaryWriter(str(directory), purge_step=resume_update + 1 if resume_update else None)


# --------------------------------------------------------------------------- status line


def duration_text(seconds: float) -> str:
    """``45s``, ``3m05s`` or ``2h14m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def count_text(count: float) -> str:
    """``950``, ``12.3k``, ``4.00M``."""
    if count < 1000:
        return f"{count:.0f}"
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.2f}M"


def status_line(label: str, entry: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """One compact progress line of a run from its latest metrics ``entry``: env steps done of
    its total, the speed since the ``previous`` line read (else over the whole run) and the time
    left at that speed."""
    update, total_updates = entry["update"], entry["total_updates"]
    total_steps = entry["env_steps"] / update * total_updates
    speed = entry.get("env_steps_per_second") or 0.0
    if previous is not None and entry["wall_seconds"] > previous["wall_seconds"]:
        speed = (entry["env_steps"] - previous["env_steps"]) / (
            entry["wall_seconds"] - previous["wall_seconds"]
        )
    if update >= total_updates:
        return (
            f"{label}: trained, {count_text(entry['env_steps'])} env steps "
            f"in {duration_text(entry['wall_seconds'])}"
        )
    left = (total_steps - entry["env_steps"]) / speed if speed > 0 else math.inf
    eta = duration_text(left) if math.isfinite(left) else "?"
    return (
        f"{label}: {count_text(entry['env_steps'])}/{count_text(total_steps)} env steps "
        f"({update / total_updates:.0%}), {count_text(speed)} steps/s, ETA {eta}"
    )


class StatusReporter:
    """Prints a :func:`status_line` of a run every ``every_seconds`` while training runs (from a
    thread that reads the run's metrics file), and one when it ends.  Nothing if ``every_seconds`` is 0."""

    def __init__(self, path: Path, label: str, every_seconds: float, stream: TextIO | None = None):
        self.path = path
        self.label = label
        self.every_seconds = every_seconds
        self.stream = stream if stream is not None else sys.stdout
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="training status", daemon=True)
        self.previous: dict[str, Any] | None = None

    def __enter__(self) -> StatusReporter:
        if self.every_seconds > 0:
            self.print(f"{self.label}: training (live metrics: {self.path})")
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.every_seconds > 0:
            self.stopped.set()
            self.thread.join()
            entry = last_metrics(self.path)
            if entry is not None and entry["update"] >= entry.get("total_updates", math.inf):
                self.print(status_line(self.label, entry))

    def run(self) -> None:
        started = time.monotonic()
        while not self.stopped.wait(self.every_seconds):
            entry = last_metrics(self.path)
            if entry is None or not isinstance(entry.get("total_updates"), int):
                self.print(f"{self.label}: preparing ({duration_text(time.monotonic() - started)})")
                continue
            if entry["update"] < entry["total_updates"]:
                self.print(status_line(self.label, entry, self.previous))
            self.previous = entry

    def print(self, line: str) -> None:
        try:
            print(line, file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):  # the reader went away (a closed pipe or stream)
            self.stopped.set()
