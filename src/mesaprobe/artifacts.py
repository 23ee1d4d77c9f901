"""Writing and reading files safely, and what every output records about itself.

Outputs are written to a temporary file beside the target and renamed into place,
so an interrupted job never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from mesaprobe import __version__
from mesaprobe.errors import ArtifactError

PACKAGES = ("torch", "numpy", "polars", "altair", "safetensors", "snakemake")


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp creates owner-only files; give outputs the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary_path, 0o666 & ~umask)
        os.replace(temporary_path, target)
    finally:
        temporary_path.unlink(missing_ok=True)


def write_json(target: str | Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(path, f"not valid JSON ({error})") from None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"mesaprobe": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_commit(directory: str | Path = ".") -> str | None:
    """The commit of the repository holding ``directory`` (with ``+dirty``), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: str | None = None) -> dict[str, Any]:
    """What every manifest records: package versions, host, device, git commit."""
    return {
        "versions": package_versions(),
        "host": platform.node(),
        "platform": platform.platform(),
        "device": device,
        "git_commit": git_commit(),
    }
