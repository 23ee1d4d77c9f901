"""Frozen models: immutable weights (safetensors) plus a manifest that describes them.

``frozen.safetensors`` holds the weights (no pickle: loading cannot run code);
``frozen.json`` holds what is needed to rebuild the model without the study file
(environment and architecture settings), the spec hash, the sha256 of the weights
file, a hash of the parameters, training metrics and provenance.  Probes load a
model only through :func:`load_frozen`, which checks the file hash, and check the
parameter hash again after they ran.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mesaprobe.artifacts import atomic_path, read_json, sha256_file, write_json
from mesaprobe.errors import ArtifactError, FrozenModelChanged
from mesaprobe.models import ARCHITECTURES, SequenceModel, build_model
from mesaprobe.settings import build


def parameter_hash(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def freeze(
    model: SequenceModel, weights_path: Path, manifest_path: Path, manifest: dict[str, Any]
) -> dict[str, Any]:
    """Write the model's weights and manifest atomically; returns the manifest written."""
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(weights_path) as temporary:
        save_file(state, str(temporary), metadata={"run": str(manifest.get("run", ""))})
    manifest = manifest | {
        "weights_file": weights_path.name,
        "weights_sha256": sha256_file(weights_path),
        "parameter_sha256": parameter_hash(model),
    }
    write_json(manifest_path, manifest)
    return manifest


@dataclass(frozen=True)
class FrozenModel:
    model: SequenceModel
    manifest: dict[str, Any]
    manifest_path: Path

    def check_unchanged(self) -> None:
        """Raise FrozenModelChanged if the weights differ from the ones frozen."""
        if parameter_hash(self.model) != self.manifest["parameter_sha256"]:
            raise FrozenModelChanged(f"{self.manifest_path}: the weights changed while being probed")


def load_frozen(manifest_path: str | Path, device: torch.device | str = "cpu") -> FrozenModel:
    """Rebuild a frozen model from its manifest and weights, checking both hashes."""
    manifest_path = Path(manifest_path)
    manifest = read_json(manifest_path)
    try:
        weights_path = manifest_path.parent / manifest["weights_file"]
        architecture = manifest["resolved"]["architecture"]
        input_size, output_size = manifest["input_size"], manifest["output_size"]
    except (KeyError, TypeError):
        raise ArtifactError(
            manifest_path, "not a frozen-model manifest (missing weights_file/resolved)"
        ) from None
    if not weights_path.exists():
        raise ArtifactError(weights_path, "frozen weights not found")
    if sha256_file(weights_path) != manifest["weights_sha256"]:
        raise ArtifactError(
            weights_path,
            "sha256 differs from the one in frozen.json: the weights are corrupt or were altered",
        )
    family_class = ARCHITECTURES.get(architecture["family"])
    config = build(
        family_class.Config, architecture, key="architecture", file=str(manifest_path), drop=("family",)
    )
    private_size = manifest.get("private_size", 0)
    if not isinstance(private_size, int) or isinstance(private_size, bool) or private_size < 0:
        raise ArtifactError(
            manifest_path, f"private_size must be a non-negative integer, got {private_size!r}"
        )
    model = build_model(architecture["family"], config, input_size, output_size, private_size)
    try:
        state = load_file(str(weights_path))
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as error:
        raise ArtifactError(
            weights_path, f"cannot load weights ({' '.join(str(error).split())[:200]})"
        ) from None
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    frozen = FrozenModel(model, manifest, manifest_path)
    frozen.check_unchanged()
    return frozen
