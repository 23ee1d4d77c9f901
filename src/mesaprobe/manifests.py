"""The manifests a run writes, as typed records checked when read.

``runs/<run>/train.json`` (:class:`TrainingManifest`) records how a run trained;
``runs/<run>/frozen.json`` (:class:`FrozenManifest`) describes its frozen weights well
enough to rebuild the model without the study file.  Each is a frozen dataclass whose
fields carry their type and a docstring; ``to_json()`` gives the file's content and
``read(path)`` / ``from_json(data, path)`` check a file against the record: a missing
key, an unknown key or a value of the wrong type is an
:class:`~mesaprobe.errors.ArtifactError` of one line naming the file and the key.

Values are checked by :func:`mesaprobe.settings.coerce`, as study settings are.  A field
marked ``INLINE`` keeps its keys at the level of the record that holds it (the
provenance fields, the weights' hashes, a history entry's metrics), so the files stay
flat.  The architecture settings inside ``resolved`` are checked where the model is
rebuilt (:func:`mesaprobe.frozen.load_frozen`), against the family's own ``Config``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from mesaprobe.artifacts import provenance, read_json, write_json
from mesaprobe.errors import ArtifactError, SpecError
from mesaprobe.settings import SettingError, coerce, describe, expected_text, field_types, join, shorten

SHA256 = re.compile(r"[0-9a-f]{64}")
M = TypeVar("M", bound="Manifest")


# Metadata of a field whose keys sit in the record that holds it rather than under the
# field's name: an inline record's keys, or (an inline mapping) every key no other field names.
INLINE = {"inline": True}


def is_inline(field: dataclasses.Field) -> bool:
    return field.metadata.get("inline", False)


def artifact_error(error: SpecError) -> ArtifactError:
    """A settings error found in a file the pipeline wrote, reported as a damaged artefact."""
    return ArtifactError(error.file, f"{error.key}: {error.problem}" if error.key else error.problem)


def check_sha256(record: Any, key: str) -> None:
    """A record's ``key`` must be a sha256 digest (64 lowercase hexadecimal digits)."""
    if not SHA256.fullmatch(getattr(record, key)):
        raise SettingError(key, f"expected 64 hexadecimal digits, got {shorten(repr(getattr(record, key)))}")


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True, kw_only=True)
class Provenance:
    """What every manifest records about the process that wrote it."""

    versions: dict[str, str]
    """Versions of mesaprobe, Python and the main packages (``absent`` if not installed)."""
    host: str
    """Name of the machine."""
    platform: str
    """Operating system and architecture, as ``platform.platform()`` gives them."""
    processor: str | None = None
    """The processor's model name (:func:`mesaprobe.artifacts.processor_model`); null in
    manifests written before it was recorded."""
    instruction_set: str | None = None
    """Architecture and the vector instructions torch's CPU kernels use, e.g. ``x86_64/avx512``
    (:func:`mesaprobe.artifacts.instruction_set`); null in manifests written before it was recorded."""
    device: str | None
    """The torch device the step ran on (``cpu``, ``cuda``, ``cuda:1``)."""
    git_commit: str | None
    """Commit of the working directory's repository (``+dirty`` with uncommitted changes), or null."""

    @classmethod
    def current(cls, device: str | None) -> Provenance:
        """This process's provenance (see :func:`mesaprobe.artifacts.provenance`)."""
        return cls(**provenance(device))


@dataclasses.dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    """One training update's statistics."""

    update: int
    """Updates taken so far, this one included (1 for the first)."""
    env_steps: int
    """Environment steps (tokens, for prediction) of this run so far."""
    metrics: dict[str, float] = dataclasses.field(metadata=INLINE)
    """The update's training statistics, by the algorithm's names (``reward_per_step``, ``entropy``, ...)."""

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> HistoryEntry:
        """An entry of a checkpoint's ``history`` (a flat mapping) as a record."""
        metrics = {key: value for key, value in entry.items() if key not in ("update", "env_steps")}
        return cls(update=entry["update"], env_steps=entry["env_steps"], metrics=metrics)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest:
    """A manifest file: read and checked, or written, as a whole."""

    def to_json(self) -> dict[str, Any]:
        """The file's content: plain JSON data, inline fields merged into their record."""
        return plain(self)

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls: type[M], data: Any, path: str | Path) -> M:
        """Check ``data`` (the content of the file at ``path``) against the record."""
        try:
            return parse_record(cls, data, "", str(path))
        except SpecError as error:
            raise artifact_error(error) from None

    @classmethod
    def read(cls: type[M], path: str | Path) -> M:
        """Read and check the file at ``path``; ArtifactError if it is missing or malformed."""
        return cls.from_json(read_json(path), path)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingManifest(Manifest):
    """``runs/<run>/train.json``: how a run trained (written once it finished)."""

    run: str
    """The run's id."""
    study: str
    """The study's name."""
    spec_hash: str
    """Hash of the study file the run was trained from."""
    seed: int
    """The run's seed."""
    updates: int
    """Updates taken."""
    env_steps: int
    """Environment steps taken (tokens, for prediction)."""
    wall_seconds: float
    """Seconds spent training, over every session that resumed the run."""
    env_steps_per_second: float
    """``env_steps / wall_seconds``: this run's training speed."""
    tokens_per_second: float | None
    """The same speed in tokens, for prediction environments (an env step is one token); else null."""
    seeds_in_job: int
    """Seeds trained together in the job that finished the run (``training.seeds_per_job``)."""
    job_env_steps_per_second: float
    """The job's speed: ``env_steps_per_second`` times ``seeds_in_job``."""
    session_seconds: float
    """Seconds of the last training session alone (the one that finished the run)."""
    final_metrics: dict[str, float]
    """Each training statistic averaged over the last ten updates."""
    history: tuple[HistoryEntry, ...]
    """Every update's statistics, in order."""
    checkpoint_sha256: str
    """sha256 of ``checkpoint.pt`` as training wrote it: freezing refuses a checkpoint that
    differs (replaced or altered since)."""

    def validate(self) -> None:
        check_sha256(self, "checkpoint_sha256")

    provenance: Provenance = dataclasses.field(metadata=INLINE)
    """Versions, host, device and commit of the training process."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResolvedSettings:
    """A run's settings with every default filled in (what its id hashes)."""

    environment: dict[str, Any]
    """The environment's settings, ``family`` included."""
    architecture: dict[str, Any]
    """The architecture's settings, ``family`` included; checked against the family's
    ``Config`` when the model is rebuilt."""
    training: dict[str, Any]
    """The training settings that name the run (operational ones such as ``device`` left out)."""

    def validate(self) -> None:
        if "family" not in self.architecture:
            raise SettingError("architecture.family", "required key is missing")
        if not isinstance(self.architecture["family"], str):
            family = describe(self.architecture["family"])
            raise SettingError("architecture.family", f"expected an architecture family, got {family}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingSummary:
    """What a frozen model records of its training (the rest is in ``train.json``)."""

    updates: int
    """Updates taken."""
    env_steps: int
    """Environment steps taken (tokens, for prediction)."""
    wall_seconds: float
    """Seconds spent training."""
    final_metrics: dict[str, float]
    """Each training statistic averaged over the last ten updates."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrozenWeights:
    """The weights file beside a frozen manifest, and the hashes that pin it."""

    weights_file: str
    """Name of the weights file, in the manifest's directory (``frozen.safetensors``)."""
    weights_sha256: str
    """sha256 of the weights file: a model whose file differs is refused."""
    parameter_sha256: str
    """sha256 over the model's parameters and buffers (:func:`mesaprobe.frozen.parameter_hash`);
    probes check it again after they ran."""

    def validate(self) -> None:
        name = self.weights_file
        if not name or Path(name).name != name or name in (".", "..") or "/" in name or "\\" in name:
            raise SettingError(
                "weights_file", f"expected a file name in the manifest's directory, got {name!r}"
            )
        for key in ("weights_sha256", "parameter_sha256"):
            check_sha256(self, key)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrozenManifest(Manifest):
    """``runs/<run>/frozen.json``: what a frozen model is and how to rebuild it."""

    run: str
    """The run's id."""
    study: str
    """The study's name."""
    spec_hash: str
    """Hash of the study file the run was trained from."""
    seed: int
    """The run's seed."""
    agent: str
    """The run's name in tables: architecture name plus its grid values."""
    environment: str
    """The environment's label in tables."""
    variant: str
    """The run's grid values as text (empty without a grid)."""
    resolved: ResolvedSettings
    """The run's settings, from which the model is rebuilt."""
    input_size: int
    """Inputs per step (the environment's observation size)."""
    output_size: int
    """Outputs per step (policy logits and a value, next-token logits, or the prediction)."""
    private_size: int = 0
    """How many of the last inputs are private (reach a Transformer's head only); absent from
    manifests written before private inputs existed, which had none."""
    training: TrainingSummary
    """Updates, steps, time and final training statistics."""
    weights: FrozenWeights = dataclasses.field(metadata=INLINE)
    """The weights file and its hashes."""
    checkpoint_sha256: str
    """sha256 of the ``checkpoint.pt`` the weights were cut from: probes refuse weights whose
    checkpoint changed since, or whose parameters differ from the checkpoint's."""
    provenance: Provenance = dataclasses.field(metadata=INLINE)
    """Versions, host, device and commit of the freezing process."""
    parameters: int | None = None
    """Trained numbers of the model (every parameter's entries); null in manifests written
    before models stated their costs."""
    state_floats: int | None = None
    """Numbers one episode carries from one step to the next at the last step of an episode of
    the training environment's horizon (hidden state, SSM state, fast weights, key/value cache:
    :meth:`mesaprobe.models.SequenceModel.state_floats`); null in older manifests."""
    flops_per_step: int | None = None
    """2 x the multiply-adds of one step at that last step
    (:meth:`mesaprobe.models.SequenceModel.flops_per_step`); null in older manifests."""

    def validate(self) -> None:
        check_sha256(self, "checkpoint_sha256")
        for key in ("input_size", "output_size"):
            if getattr(self, key) < 1:
                raise SettingError(key, f"expected a positive size, got {getattr(self, key)}")
        if not 0 <= self.private_size <= self.input_size:
            raise SettingError(
                "private_size", f"expected 0 to input_size ({self.input_size}), got {self.private_size}"
            )
        for key in ("parameters", "state_floats", "flops_per_step"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise SettingError(key, f"expected a count of 0 or more, got {getattr(self, key)}")


# --------------------------------------------------------------------------- to and from JSON


def plain(value: Any) -> Any:
    """A record (or a value inside one) as plain JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data: dict[str, Any] = {}
        for field in dataclasses.fields(value):
            item = plain(getattr(value, field.name))
            if is_inline(field):
                data |= item
            else:
                data[field.name] = item
        return data
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    return value


def json_keys(cls: type) -> list[str]:
    """The keys a record's JSON object may hold (None in the list: any other key too)."""
    keys: list[Any] = []
    hints = field_types(cls)
    for field in dataclasses.fields(cls):
        if not is_inline(field):
            keys.append(field.name)
        elif dataclasses.is_dataclass(hints[field.name]):
            keys += json_keys(hints[field.name])
        else:
            keys.append(None)
    return keys


def is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def parse_record(cls: type, data: Any, key: str, file: str) -> Any:
    """Build record ``cls`` from the JSON object ``data`` at ``key`` of ``file``; SpecError if it
    does not fit (the first unknown key, then the first missing one, then the first wrong value)."""
    if not isinstance(data, Mapping):
        raise SpecError(file, key, f"expected a JSON object, got {describe(data)}")
    keys = json_keys(cls)
    if None not in keys:
        for name in data:
            if name not in keys:
                valid = ", ".join(sorted(keys))
                raise SpecError(file, join(key, str(name)), f"unknown key; expected one of: {valid}")
    hints = field_types(cls)
    values: dict[str, Any] = {}
    rest = dict(data)  # what no field has claimed yet
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        if is_inline(field) and dataclasses.is_dataclass(annotation):
            own = {name: rest.pop(name) for name in json_keys(annotation) if name in rest}
            values[field.name] = parse_record(annotation, own, key, file)
        elif is_inline(field):
            continue  # the keys left once every other field took its own
        elif field.name in rest:
            values[field.name] = parse_value(rest.pop(field.name), annotation, join(key, field.name), file)
        elif is_required(field):
            raise SpecError(file, join(key, field.name), "required key is missing")
    for field in dataclasses.fields(cls):
        if is_inline(field) and not dataclasses.is_dataclass(hints[field.name]):
            values[field.name] = parse_value(rest, hints[field.name], key, file)
    record = cls(**values)
    validate = getattr(record, "validate", None)
    if validate is not None:
        try:
            validate()
        except SettingError as error:
            raise SpecError(file, join(key, error.key), error.problem) from None
    return record


def parse_value(value: Any, annotation: Any, key: str, file: str) -> Any:
    """Check one value against its field's type: records and mappings key by key, lists item
    by item, everything else by :func:`mesaprobe.settings.coerce`."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return parse_record(annotation, value, key, file)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SpecError(file, key, f"expected a JSON object, got {describe(value)}")
        return {name: parse_value(item, arguments[1], join(key, name), file) for name, item in value.items()}
    if origin is tuple:
        if not isinstance(value, list):
            raise SpecError(file, key, f"expected a list, got {describe(value)}")
        return tuple(parse_value(item, arguments[0], f"{key}[{i}]", file) for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType) and type(None) in arguments:
        if value is None:
            return None
        (inner,) = (argument for argument in arguments if argument is not type(None))
        try:
            return coerce(value, inner, key, file)
        except SpecError:
            raise SpecError(
                file, key, f"expected {expected_text(inner)} or null, got {describe(value)}"
            ) from None
    return coerce(value, annotation, key, file)
