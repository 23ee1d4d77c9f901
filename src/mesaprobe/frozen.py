"""Frozen models: immutable weights (safetensors) plus a manifest that describes them.

``frozen.safetensors`` holds the weights (no pickle: loading cannot run code);
``frozen.json`` (a :class:`~mesaprobe.manifests.FrozenManifest`) holds what is needed to
rebuild the model without the study file (environment and architecture settings), the
spec hash, the sha256 of the weights file, a hash of the parameters, the sha256 of the
checkpoint the weights were cut from, training metrics and provenance.  Probes load a
model only through :func:`load_frozen`, which checks, before anything is built, that the
manifest is the one the plan expects for the run (:class:`Expected`: run, study, seed,
resolved settings and sizes; an edited settings block is refused, whatever its hashes say)
and that every file it reads lies inside the study's results directory; then the file
hash, that the settings describe the weights in the file, and that every weight is
finite.  Probes check the parameter hash again after they ran, and that the weights are
the checkpoint's (:func:`check_cut_from`).

The spec hash is recorded but not compared: a study file edited in a way that leaves a
run's settings alone (a probe added, a comment) keeps the run, since run ids name
everything that changes a result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mesaprobe.artifacts import atomic_path, sha256_file
from mesaprobe.errors import ArtifactError, FrozenModelChanged, SpecError
from mesaprobe.manifests import FrozenManifest, FrozenWeights, artifact_error, plain
from mesaprobe.models import ARCHITECTURES, SequenceModel, build_model
from mesaprobe.registry import UnknownName
from mesaprobe.settings import build, shorten

ARCHITECTURE_KEY = "resolved.architecture"


def parameter_hash(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    return state_hash(model.state_dict())


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """:func:`parameter_hash` of a state dict (a checkpoint's ``model``)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first tensor holding NaN or an infinity, or None."""
    for name, tensor in sorted(state.items()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


@dataclass(frozen=True)
class Expected:
    """What the plan expects of a run's frozen manifest (see the module docstring)."""

    run: str
    study: str
    seed: int
    resolved: dict[str, Any]
    input_size: int
    output_size: int
    private_size: int

    def check(self, manifest: FrozenManifest, manifest_path: Path) -> None:
        """ArtifactError naming the first key of ``manifest`` that differs from the plan's."""
        found = {
            "run": manifest.run,
            "study": manifest.study,
            "seed": manifest.seed,
            "resolved": plain(manifest.resolved),
            "input_size": manifest.input_size,
            "output_size": manifest.output_size,
            "private_size": manifest.private_size,
        }
        key, here, planned = first_difference(found, json.loads(json.dumps(dataclasses.asdict(self))))
        if key is not None:
            raise ArtifactError(
                manifest_path,
                f"{key}: {shorten(here)} here, {shorten(planned)} in the study's plan of run {self.run}; "
                "these weights are not that run's (delete the run's directory to train it again)",
            )


def first_difference(found: Any, planned: Any, key: str = "") -> tuple[str | None, str, str]:
    """(dotted key, found as JSON, planned as JSON) of the first difference, or (None, "", "")."""
    if isinstance(found, dict) and isinstance(planned, dict):
        for name in sorted(found.keys() | planned.keys()):
            child = f"{key}.{name}" if key else name
            if name not in found or name not in planned:
                return child, json.dumps(found.get(name, "absent")), json.dumps(planned.get(name, "absent"))
            difference = first_difference(found[name], planned[name], child)
            if difference[0] is not None:
                return difference
        return None, "", ""
    if json.dumps(found, sort_keys=True) != json.dumps(planned, sort_keys=True) or type(found) is not type(
        planned
    ):
        return key, json.dumps(found), json.dumps(planned)
    return None, "", ""


def inside(path: Path, directory: Path) -> Path:
    """``path`` resolved (links followed); ArtifactError unless it lies inside ``directory``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(directory.resolve()):
        raise ArtifactError(path, f"lies outside the study's results directory {directory} ({resolved})")
    return resolved


def check_cut_from(frozen: FrozenModel, checkpoint_path: Path, checkpoint: Mapping[str, Any]) -> None:
    """The frozen weights must be the parameters of the checkpoint they were cut from:
    ``checkpoint_path`` unchanged since (its sha256) and its model's parameters hashing to the
    manifest's ``parameter_sha256``. ``checkpoint`` is that file, loaded."""
    if sha256_file(checkpoint_path) != frozen.manifest.checkpoint_sha256:
        raise ArtifactError(
            checkpoint_path,
            "differs from the checkpoint the frozen weights were cut from (checkpoint_sha256 in "
            f"{frozen.manifest_path.name}); delete {frozen.manifest_path.name} to freeze it again",
        )
    if state_hash(checkpoint["model"]) != frozen.manifest.weights.parameter_sha256:
        raise ArtifactError(
            frozen.manifest_path,
            f"parameter_sha256: the frozen weights are not the parameters of {checkpoint_path.name}; "
            f"delete {frozen.manifest_path.name} to freeze it again",
        )


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


#: Most parameter and buffer tensors a model built from settings may have (a Transformer block
#: has about a dozen, a GRU layer four): settings beyond it (``layers: 1e9``) are refused in a
#: moment instead of building millions of layers.
MAX_MODEL_TENSORS = 4096
#: Largest integer setting of a model built from settings: a constructor may make a Python
#: list as long as a setting (one entry per layer), so a larger value is refused before
#: anything is built.
MAX_BUILT_SETTING = 2**24


class TooManyTensors(ValueError):
    """Settings that describe a model of more than the allowed number of tensors."""


@contextlib.contextmanager
def tensor_budget(limit: int) -> Iterator[None]:
    """Raise :class:`TooManyTensors` as soon as modules built inside register more than
    ``limit`` parameters and buffers together (torch's global registration hooks)."""
    registered = 0

    def count(*_) -> None:
        nonlocal registered
        registered += 1
        if registered > limit:
            raise TooManyTensors(f"more than {limit} tensors")

    handles = [
        torch.nn.modules.module.register_module_parameter_registration_hook(count),
        torch.nn.modules.module.register_module_buffer_registration_hook(count),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def oversized_setting(config) -> tuple[str, int] | None:
    """(name, value) of the first integer setting above :data:`MAX_BUILT_SETTING`, or None."""
    for name, value in dataclasses.asdict(config).items():
        if type(value) is int and value > MAX_BUILT_SETTING:
            return name, value
    return None


def build_skeleton(
    family: str, config, input_size: int, output_size: int, private_size: int, max_tensors: int
) -> SequenceModel:
    """The model these settings describe, on the meta device (shapes without memory or time),
    stopping with :class:`TooManyTensors` once it has more than ``max_tensors`` tensors.
    Settings above :data:`MAX_BUILT_SETTING` must be refused before (:func:`oversized_setting`)."""
    assert oversized_setting(config) is None, "refuse oversized settings before building"
    with torch.device("meta"), tensor_budget(max_tensors):
        return build_model(family, config, input_size, output_size, private_size)


def check_shapes(manifest: FrozenManifest, config, manifest_path: Path, weights_path: Path) -> None:
    """Check that the settings describe the tensors in the weights file before building the model.

    The model is built on the meta device (shapes without memory), so settings that were
    edited by hand (``hidden: 1e9``) fail here in one line rather than allocating.
    """
    settings = f"{ARCHITECTURE_KEY}, input_size, output_size, private_size"
    family = manifest.resolved.architecture["family"]
    try:
        with safe_open(str(weights_path), framework="pt") as stored:
            found = {name: tuple(stored.get_slice(name).get_shape()) for name in stored.keys()}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError) as error:
        raise ArtifactError(
            weights_path, f"cannot read weights ({' '.join(str(error).split())[:200]})"
        ) from None
    oversized = oversized_setting(config)
    if oversized is not None:
        name, value = oversized
        raise ArtifactError(
            manifest_path, f"{ARCHITECTURE_KEY}.{name}: expected at most {MAX_BUILT_SETTING:,}, got {value:,}"
        )
    try:
        # The skeleton must hold the file's tensors; far more (allowing for buffers outside
        # the state dict) and the settings cannot describe the file, so stop building.
        skeleton = build_skeleton(
            family,
            config,
            manifest.input_size,
            manifest.output_size,
            manifest.private_size,
            max_tensors=2 * len(found) + 64,
        )
    except TooManyTensors:
        raise ArtifactError(
            manifest_path,
            f"{settings}: describe far more tensors than the {len(found)} in {weights_path.name}",
        ) from None
    except (RuntimeError, ValueError, OverflowError, MemoryError) as error:
        problem = " ".join(str(error).split())[:200]
        raise ArtifactError(manifest_path, f"{settings}: describe no model ({problem})") from None
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
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


def load_frozen(
    manifest_path: str | Path,
    device: torch.device | str = "cpu",
    expected: Expected | None = None,
    within: str | Path | None = None,
) -> FrozenModel:
    """Rebuild a frozen model from its manifest and weights, checking the manifest and both hashes.

    With ``expected`` (a probe's: what the plan says of the run) the manifest must match it
    before anything is built; with ``within`` every file read must lie inside that directory.
    """
    manifest_path = Path(manifest_path)
    if within is not None:
        inside(manifest_path, Path(within))
    manifest = FrozenManifest.read(manifest_path)
    if expected is not None:
        expected.check(manifest, manifest_path)
    weights_path = manifest_path.parent / manifest.weights.weights_file
    if within is not None:
        inside(weights_path, Path(within))
    if not weights_path.is_file():
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
    bad = non_finite(state)
    if bad is not None:
        raise ArtifactError(weights_path, f"{bad}: holds NaN or infinite weights; the model cannot be probed")
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    frozen = FrozenModel(model, manifest, manifest_path)
    frozen.check_unchanged()
    return frozen
