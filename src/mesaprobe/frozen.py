"""Frozen models: immutable weights (safetensors) plus a manifest that describes them.

``frozen.safetensors`` holds the weights (no pickle: loading cannot run code);
``frozen.json`` (a :class:`~mesaprobe.manifests.FrozenManifest`) holds what is needed to
rebuild the model without the study file (environment and architecture settings), the
spec hash, the sha256 of the weights file, a hash of the parameters, training metrics
and provenance.  Probes load a model only through :func:`load_frozen`, which checks the
manifest, the file hash and that the settings describe the weights in the file, and
check the parameter hash again after they ran.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mesaprobe.artifacts import atomic_path, sha256_file
from mesaprobe.errors import ArtifactError, FrozenModelChanged, SpecError
from mesaprobe.manifests import FrozenManifest, FrozenWeights, artifact_error
from mesaprobe.models import ARCHITECTURES, SequenceModel, build_model
from mesaprobe.registry import UnknownName
from mesaprobe.settings import build

ARCHITECTURE_KEY = "resolved.architecture"


def parameter_hash(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def freeze(model: SequenceModel, weights_path: Path, run: str) -> FrozenWeights:
    """Write the model's weights atomically; returns what its manifest records of them."""
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(weights_path) as temporary:
        save_file(state, str(temporary), metadata={"run": run})
    return FrozenWeights(
        weights_file=weights_path.name,
        weights_sha256=sha256_file(weights_path),
        parameter_sha256=parameter_hash(model),
    )


@dataclass(frozen=True)
class FrozenModel:
    model: SequenceModel
    manifest: FrozenManifest
    manifest_path: Path

    def check_unchanged(self) -> None:
        """Raise FrozenModelChanged if the weights differ from the ones frozen."""
        if parameter_hash(self.model) != self.manifest.weights.parameter_sha256:
            raise FrozenModelChanged(f"{self.manifest_path}: the weights changed while being probed")


def architecture_config(manifest: FrozenManifest, manifest_path: Path):
    """The family's ``Config`` built from ``resolved.architecture``; ArtifactError naming the key."""
    architecture = manifest.resolved.architecture
    try:
        family = ARCHITECTURES.get(architecture["family"])
        return build(
            family.Config, architecture, key=ARCHITECTURE_KEY, file=str(manifest_path), drop=("family",)
        )
    except UnknownName as error:
        raise ArtifactError(manifest_path, f"{ARCHITECTURE_KEY}.family: {error}") from None
    except SpecError as error:
        raise artifact_error(error) from None


def check_shapes(manifest: FrozenManifest, config, manifest_path: Path, weights_path: Path) -> None:
    """Check that the settings describe the tensors in the weights file before building the model.

    The model is built on the meta device (shapes without memory), so settings that were
    edited by hand (``hidden: 1e9``) fail here in one line rather than allocating.
    """
    settings = f"{ARCHITECTURE_KEY}, input_size, output_size, private_size"
    family = manifest.resolved.architecture["family"]
    try:
        with torch.device("meta"):
            skeleton = build_model(
                family, config, manifest.input_size, manifest.output_size, manifest.private_size
            )
    except (RuntimeError, ValueError, OverflowError, MemoryError) as error:
        problem = " ".join(str(error).split())[:200]
        raise ArtifactError(manifest_path, f"{settings}: describe no model ({problem})") from None
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    try:
        with safe_open(str(weights_path), framework="pt") as stored:
            found = {name: tuple(stored.get_slice(name).get_shape()) for name in stored.keys()}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError) as error:
        raise ArtifactError(
            weights_path, f"cannot read weights ({' '.join(str(error).split())[:200]})"
        ) from None
    for name in sorted(expected.keys() | found.keys()):
        if expected.get(name) != found.get(name):
            here, there = (
                "absent" if shape is None else str(shape) for shape in (expected.get(name), found.get(name))
            )
            raise ArtifactError(
                manifest_path,
                f"{settings}: do not describe the weights in {weights_path.name} "
                f"({name}: {here} by these settings, {there} in the file)",
            )


def load_frozen(manifest_path: str | Path, device: torch.device | str = "cpu") -> FrozenModel:
    """Rebuild a frozen model from its manifest and weights, checking the manifest and both hashes."""
    manifest_path = Path(manifest_path)
    manifest = FrozenManifest.read(manifest_path)
    weights_path = manifest_path.parent / manifest.weights.weights_file
    if not weights_path.exists():
        raise ArtifactError(weights_path, "frozen weights not found")
    if sha256_file(weights_path) != manifest.weights.weights_sha256:
        raise ArtifactError(
            weights_path,
            "sha256 differs from the one in frozen.json: the weights are corrupt or were altered",
        )
    config = architecture_config(manifest, manifest_path)
    check_shapes(manifest, config, manifest_path, weights_path)
    model = build_model(
        manifest.resolved.architecture["family"],
        config,
        manifest.input_size,
        manifest.output_size,
        manifest.private_size,
    )
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
