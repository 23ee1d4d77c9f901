"""A study's results directory: which study file it belongs to, and one run at a time.

``results/<study>/study.json`` records the study file whose Snakemake run first wrote the
directory (:func:`claim`, when the run starts its jobs).  Two study files that give the same
``study:`` name would otherwise write their tables over each other's; a study whose
directory belongs to another file is refused (:func:`check_owner`: when Snakemake reads the
workflow, dry runs included, and by every ``mesaprobe`` step) before anything is written.
The study file is named by its absolute path: a study file that moved or was renamed is
refused as well, until its ``study.json`` is deleted.

A Snakemake run of a study holds an exclusive lock on ``results/<study>/.lock``
(:func:`lock_results`, ``fcntl.flock``) for as long as its process lives: a second run of
the same study is refused, and since the operating system releases the lock when the process
ends, however it ends (Ctrl-C, SIGKILL, a lost node), nothing stale is left to remove by hand.
This takes the place of Snakemake's own lock files, which outlive a killed Snakemake
(the default profile runs Snakemake with ``nolock``).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import IO

from mesaprobe.artifacts import write_json
from mesaprobe.errors import ArtifactError, SpecError, UserError
from mesaprobe.study.load import Study

OWNER_FILE = "study.json"
LOCK_FILE = ".lock"


def study_directory(study: Study, root: str | Path = "results") -> Path:
    """``root/<study>``, the directory every output of the study goes to (not checked)."""
    return Path(root) / study.name


def study_file(study: Study) -> str:
    """The study file as :data:`OWNER_FILE` names it: its absolute path, links resolved."""
    return str(Path(study.file).resolve())


def check_owner(study: Study, root: str | Path = "results") -> Path:
    """The study's results directory; SpecError if it belongs to another study file."""
    directory = study_directory(study, root)
    owner_path = directory / OWNER_FILE
    if not owner_path.is_file():
        return directory
    try:
        owner = json.loads(owner_path.read_text())
        recorded = owner["spec"]
        if not isinstance(recorded, str):
            raise TypeError(recorded)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ArtifactError(
            owner_path,
            "expected a JSON object naming the study file in 'spec'; delete it to claim the directory",
        ) from None
    if recorded != study_file(study):
        raise SpecError(
            study.file,
            "study",
            f"results directory {directory} belongs to another study file, {recorded} ({owner_path}); "
            f"give this study another name, or delete {owner_path} if that file was moved or renamed",
        )
    return directory


def claim(study: Study, root: str | Path = "results") -> Path:
    """The study's results directory, checked (:func:`check_owner`) and recorded as this study
    file's if no file owns it yet."""
    directory = check_owner(study, root)
    if not (directory / OWNER_FILE).exists():
        write_json(directory / OWNER_FILE, {"study": study.name, "spec": study_file(study)})
    return directory


def lock_results(study: Study, root: str | Path = "results") -> IO[str] | None:
    """Hold the study's lock (see the module docstring) until the returned file is closed or the
    process ends; UserError naming the process that holds it. None where the file system has no
    locks (then nothing stops a second run)."""
    try:
        import fcntl  # POSIX only: imported here so that the module loads everywhere
    except ImportError:
        return None
    directory = claim(study, root)
    path = directory / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 (held open for the process's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = " ".join(handle.read().split()) or "another process"
        handle.close()
        raise UserError(
            f"{directory}: another run of study {study.name!r} is writing here ({holder}); "
            "wait for it to end (its lock goes when its process does)"
        ) from None
    except OSError:  # a file system without locks (some network file systems)
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {platform.node()}\n")
    handle.flush()
    return handle
