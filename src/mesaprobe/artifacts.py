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


def processor_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The processor's model name, e.g. ``Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz``.

    Read from ``/proc/cpuinfo`` on Linux (``model name`` on x86, ``Model`` or the implementer
    and part codes on ARM); elsewhere ``platform.processor()``, else the machine type.
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and value.strip():
            fields.setdefault(key.strip(), " ".join(value.split()))
    if "model name" in fields:
        return fields["model name"]
    if "Model" in fields:
        return fields["Model"]
    if "CPU implementer" in fields:
        return f"implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return platform.processor() or platform.machine() or "unknown"


def instruction_set() -> str:
    """The machine architecture and the vector instructions torch's CPU kernels use, e.g.
    ``x86_64/avx512`` or ``aarch64/sve256`` (:func:`torch.backends.cpu.get_cpu_capability`).

    Two machines agree on both before CPU results can agree bit for bit: the kernels of
    another vector width sum floating-point numbers in another order.
    """
    import torch  # here, not at the top: table writers import this module and need no torch

    return f"{platform.machine() or 'unknown'}/{torch.backends.cpu.get_cpu_capability().lower()}"


def provenance(device: str | None = None) -> dict[str, Any]:
    """What every manifest records: package versions, host, processor, device, git commit."""
    return {
        "versions": package_versions(),
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": processor_model(),
        "instruction_set": instruction_set(),
        "device": device,
        "git_commit": git_commit(),
    }
