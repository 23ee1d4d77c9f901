"""Loading a study: YAML -> JSON schema -> typed, frozen settings (one way only).

``load_study(path)`` reads the file with PyYAML's safe loader (no Python objects can
be constructed from a study), checks it against ``study.schema.yaml``, expands the
grid, and builds every block into its typed settings dataclass.  Anything wrong is
one :class:`~mesaprobe.errors.SpecError` naming the file, the key path and what was
expected.

The file is refused before anything is built from it when it nests deeper than
:data:`MAX_NESTING`, when its aliases expand it beyond :data:`MAX_VALUES` values, when a
key is not a string (YAML 1.1 reads ``on``, ``no``, ``yes`` as booleans) or is given
twice in one mapping (YAML would keep the last one silently), and when its grid has
more than :data:`MAX_GRID_POINTS` points or more than :data:`MAX_GRID_SETTINGS` blocks of
settings to check (counted before the grid is expanded), so a hostile file is refused
in a moment rather than hanging.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mesaprobe.baselines import BASELINES
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.envs.task_pool import MAX_TASK_POOL
from mesaprobe.errors import SpecError
from mesaprobe.models import ARCHITECTURES
from mesaprobe.probes import PROBES, Probe
from mesaprobe.registry import UnknownName
from mesaprobe.settings import SettingError, as_dict, build, describe, shorten
from mesaprobe.train import check_training
from mesaprobe.train.config import TrainingConfig


@functools.cache
def study_schema() -> dict[str, Any]:
    """The JSON schema of a study's shape; each block's settings are typed (``mesaprobe list``)."""
    text = resources.files("mesaprobe.study").joinpath("study.schema.yaml").read_text()
    return yaml.safe_load(text)


#: Grid values that apply to one block of a study: (dotted key below the block, value) pairs in
#: the grid's key order, e.g. ``(("hidden", 32),)``; empty without a grid.
Grid = tuple[tuple[str, Any], ...]


def render_grid(*grids: Grid) -> str:
    """Grid values as text for names in tables and charts: ``hidden=32,lr=0.001``."""
    return ",".join(f"{key}={value}" for grid in grids for key, value in grid)


#: Hexadecimal digits of the settings hash in every id (runs, environments, architectures,
#: probes, baselines): 64 bits, so that two different settings of one study sharing an id
#: (and so an output path) is out of reach (about 3e-8 for a million settings); the plan
#: still refuses it should it happen.
HASH_DIGITS = 16


def settings_hash(data: Any, length: int = HASH_DIGITS) -> str:
    """A stable hash of JSON-ready settings (key order does not matter), ``length`` hex digits."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Component:
    """One named, typed block of a study: an environment, architecture, probe or baseline."""

    name: str
    """The name the study gives it (``bandit2``, ``gru``, ``adaptation``)."""
    family: str
    """Its registry name (``bernoulli_bandit``, ``gru``, ``adaptation``)."""
    config: Any
    """Its family's frozen settings dataclass."""
    grid: Grid = ()
    """Grid values that apply to it, e.g. ``(("hidden", 32),)`` (empty without a grid)."""
    task_pool: int | None = None
    """Environments only: training tasks come from a fixed pool of this many tasks (None:
    a fresh task every episode); see :mod:`mesaprobe.envs.task_pool`."""

    @functools.cached_property
    def resolved(self) -> dict[str, Any]:
        settings = as_dict(self.config)
        # Settings added after results were recorded leave ids (and so results) unchanged
        # while they keep their default value.
        defaults = {field.name: field.default for field in dataclasses.fields(self.config)}
        for name in getattr(self.config, "id_neutral_defaults", ()):
            if settings[name] == defaults[name]:
                del settings[name]
        pool = {} if self.task_pool is None else {"task_pool": self.task_pool}
        return {"family": self.family, **settings, **pool}

    @property
    def variant(self) -> str:
        """Its grid values as text, e.g. ``hidden=32`` (empty without a grid)."""
        return render_grid(self.grid)

    @property
    def label(self) -> str:
        """The name shown in tables and charts: the study's name plus its grid values."""
        return f"{self.name}[{self.variant}]" if self.variant else self.name

    @functools.cached_property
    def id(self) -> str:
        """Readable name plus a short hash of the resolved settings (stable across studies)."""
        return f"{self.name}-{settings_hash(self.resolved)}"

    @functools.cached_property
    def prior_id(self) -> str:
        """Environments: the id of the same settings without a task pool (the prior's tasks).

        Fresh held-out tasks are named by it, so every pool size of a sweep is probed on
        the same fresh tasks; equal to :attr:`id` when there is no pool.
        """
        resolved = {key: value for key, value in self.resolved.items() if key != "task_pool"}
        return f"{self.name}-{settings_hash(resolved)}"


@dataclass(frozen=True)
class Study:
    """A validated study, grid expanded; see :func:`mesaprobe.study.plan.make_plan` for its jobs."""

    name: str
    file: str
    spec_hash: str
    seeds: tuple[int, ...]
    environments: tuple[Component, ...]
    architectures: tuple[Component, ...]
    trainings: tuple[tuple[TrainingConfig, Grid], ...]
    """Each training setting with its grid label (one entry without a training grid)."""
    training_overrides: dict[str, dict[str, Any]]
    """Architecture label -> training settings it overrides (``architectures.<name>.training``)."""
    environment_training_overrides: dict[str, dict[str, Any]]
    """Environment label -> training settings it overrides (``environments.<name>.training``),
    e.g. ``algorithm: predict`` for the prediction environments of a study that also has bandits."""
    probes: tuple[Component, ...]
    baselines: tuple[Component, ...]
    architecture_environments: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Architecture label -> the environments (names) it is trained on and probed on
    (``architectures.<name>.environments``); an architecture not listed plays every environment."""
    question: str = ""
    """The question the study answers (``question``), which opens the report's front page."""
    ladder_charts: bool = False
    """Draw the architecture-ladder charts (``ladder_charts``; see
    :func:`mesaprobe.study.outputs.ladder_charts`)."""


#: Deepest nesting of mappings and lists a study may have (a study needs about six levels).
MAX_NESTING = 32
#: Most values (scalars, lists and mappings) a study may hold once its aliases are expanded.
MAX_VALUES = 100_000
#: Most points a grid may expand to (the product of its value counts).
MAX_GRID_POINTS = 10_000
#: Most blocks of settings a grid may make the loader check: points x (environments +
#: architectures + probes + baselines + 1 for training); about 40 microseconds each.
MAX_GRID_SETTINGS = 100_000

#: JSON-schema type names as messages say them.
JSON_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
#: What YAML reads a plain key as, for the message refusing it (``on`` is a boolean).
YAML_KEY_TYPES = {"bool": "a boolean", "int": "an integer", "float": "a number", "null": "null"}
YAML_STRING = "tag:yaml.org,2002:str"
YAML_MERGE = "tag:yaml.org,2002:merge"


class StudyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only: no Python object can be built from a study),
    refusing a file that nests deeper than :data:`MAX_NESTING` levels while it is composed
    (PyYAML composes recursively, so deeper files would exhaust Python's stack)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_NESTING} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def node_text(node: yaml.Node) -> str:
    """A key's node as the file writes it (for error messages)."""
    return str(node.value) if isinstance(node, yaml.ScalarNode) else f"a {node.id}"


def check_nodes(root: yaml.Node, path: Path) -> None:
    """Refuse keys that are not strings or appear twice in one mapping, recursive aliases, and
    aliases that expand the file beyond :data:`MAX_VALUES` values (counted on the node graph,
    where each alias is one shared node, so a bomb of aliases is counted without expanding it)."""
    sizes: dict[int, int] = {}  # node id -> values once expanded
    open_nodes: set[int] = set()

    def line(node: yaml.Node) -> str:
        return f"line {node.start_mark.line + 1}"

    def place(node: yaml.Node) -> str:
        return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"

    def size(node: yaml.Node, key: str) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise SpecError(path, key, f"an alias refers to a value that contains it ({line(node)})")
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                if key_node.tag == YAML_MERGE:
                    total += size(value_node, key)
                    continue
                text = node_text(key_node)
                child = f"{key}.{text}" if key else text
                if key_node.tag != YAML_STRING:
                    tag = key_node.tag.rsplit(":", 1)[-1]
                    problem = (
                        f"expected a name, got {text!r}, which YAML reads as "
                        f"{YAML_KEY_TYPES.get(tag, tag)} ({line(key_node)}); quote it"
                    )
                    raise SpecError(path, child, problem)
                if text in seen:
                    raise SpecError(
                        path,
                        child,
                        f"given twice in one mapping ({place(seen[text])} and {place(key_node)}); "
                        "YAML would keep the last one",
                    )
                seen[text] = key_node
                total += size(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, f"{key}[{index}]") for index, item in enumerate(node.value))
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        if total > MAX_VALUES:
            raise SpecError(path, key, f"holds more than {MAX_VALUES:,} values once its aliases are expanded")
        return total

    size(root, "")


def parse_yaml(text: str, path: Path) -> Any:
    """The data of a study file, checked by :func:`check_nodes` before it is built."""
    loader = StudyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_nodes(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path) -> Any:
    """Parse a YAML file safely; every failure is a SpecError naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(path, "", "file not found") from None
    except IsADirectoryError:
        raise SpecError(path, "", "expected a YAML file, got a directory") from None
    except OSError as error:
        raise SpecError(path, "", f"cannot be read ({error.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(
            path, "", f"expected UTF-8 text, found byte 0x{raw[error.start]:02x} at offset {error.start}"
        ) from None
    try:
        return parse_yaml(text, path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError(path, "", f"not valid YAML{where}: {' '.join(str(problem).split())}") from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise SpecError(path, "", f"not valid YAML: {' '.join(str(error).split())[:200]}") from None


def task_pool_setting(block: dict, key: str, path: Path) -> int | None:
    """The ``task_pool`` of an environment block (``key`` is the block's path): 1 .. 2**20 or None."""
    value = block.get("task_pool")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is None or (type(value) is int and 1 <= value <= MAX_TASK_POOL):
        return value
    raise SpecError(path, f"{key}.task_pool", task_pool_problem(block.get("task_pool")))


def task_pool_problem(value: Any) -> str:
    return f"expected an integer from 1 to {MAX_TASK_POOL} or null, got {describe(value)}"


def dotted_key(parts: list) -> str:
    """A key path as messages show it: ``environments.bandit2.horizon``, ``seeds[0]``."""
    key = ""
    for part in parts:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def schema_error(path: Path, data: Any) -> SpecError | None:
    """The most relevant JSON-schema violation of ``data``, as one SpecError."""
    validator = jsonschema.Draft202012Validator(study_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = list(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path:  # a name that is not allowed: part of the key
        where.append(shorten(str(error.instance), 50))
    key = dotted_key(where)
    if len(where) == 3 and where[0] == "environments" and where[2] == "task_pool":
        return SpecError(path, key, task_pool_problem(error.instance))  # as for grid values
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = dotted_key([*where, shorten(str(extra[0]), 50)]) if extra else key
        return SpecError(path, key, f"unknown key; expected one of: {', '.join(allowed)}")
    if error.validator == "pattern" and "grid" in error.absolute_schema_path:
        return SpecError(
            path,
            key,
            "expected a dotted key below training, environments.<name>, architectures.<name> or "
            f"probes.<name> (e.g. training.lr), got {describe(error.instance)}",
        )
    if error.validator == "pattern" and "[a-z][a-z0-9_]" in str(error.validator_value):
        return SpecError(
            path,
            key,
            "expected a name: lowercase letters, digits and underscores, starting with a letter, "
            f"at most 40 characters; got {describe(error.instance)}",
        )
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return SpecError(path, ".".join(filter(None, [key, missing])), "required key is missing")
    if error.validator == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        expected = " or ".join(JSON_TYPES.get(name, name) for name in types)
        return SpecError(path, key, f"expected {expected}, got {describe(error.instance)}")
    if error.validator == "minProperties":
        return SpecError(path, key, f"expected at least {error.validator_value} entry, got none")
    if error.validator == "oneOf" and key == "baselines":
        return SpecError(path, key, "expected a list of baseline names or a mapping name -> {family: ...}")
    bounds = {
        "minimum": "at least",
        "maximum": "at most",
        "exclusiveMinimum": "more than",
        "exclusiveMaximum": "less than",
        "minItems": "a list of at least",
        "maxItems": "a list of at most",
    }
    if error.validator in bounds:
        unit = (
            (" value" if error.validator_value == 1 else " values")
            if error.validator.endswith("Items")
            else ""
        )
        expected = f"{bounds[error.validator]} {error.validator_value}{unit}"
        return SpecError(path, key, f"expected {expected}, got {describe(error.instance)}")
    if error.validator == "const":
        return SpecError(path, key, f"expected {error.validator_value}, got {describe(error.instance)}")
    if error.validator == "uniqueItems":
        return SpecError(path, key, f"expected each value once, got {describe(error.instance)}")
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    hint = f" ({description})" if description and error.validator in ("enum", "pattern") else ""
    if error.validator == "enum":
        choices = ", ".join(str(choice) for choice in error.validator_value)
        return SpecError(path, key, f"expected one of: {choices}; got {describe(error.instance)}{hint}")
    if error.validator == "pattern":
        return SpecError(
            path, key, f"expected text matching {error.validator_value}, got {describe(error.instance)}{hint}"
        )
    return SpecError(path, key, shorten(error.message, 300) + hint)


def set_dotted(data: dict, dotted: str, value: Any, path: Path) -> None:
    """Set ``a.b.c`` in nested ``data``; the parent mapping must already exist.

    The mappings on the way are copied, not changed: a grid point shares every other block
    with the study (and YAML aliases may share blocks between keys)."""
    *parents, leaf = dotted.split(".")
    node: Any = data
    walked = []
    for part in parents:
        walked.append(part)
        if part not in node and parents[0] == "training":
            node[part] = {}
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise SpecError(path, f"grid.{dotted}", f"{'.'.join(walked)} is not a block of this study")
        node[part] = dict(node[part])
        node = node[part]
    node[leaf] = value


def check_grid_size(data: dict, path: Path) -> None:
    """Refuse a grid too large to expand, counting its points before expanding it."""
    grid = data.get("grid") or {}
    counts = [len(values) for values in grid.values()]
    points = math.prod(counts)
    if points > MAX_GRID_POINTS:
        product = " x ".join(str(count) for count in counts)
        raise SpecError(
            path, "grid", f"expands to {points:,} points ({product}); at most {MAX_GRID_POINTS:,}"
        )
    blocks = 1 + sum(
        len(data.get(axis) or {}) for axis in ("environments", "architectures", "probes", "baselines")
    )
    if points * blocks > MAX_GRID_SETTINGS:
        raise SpecError(
            path,
            "grid",
            f"expands to {points:,} points of {blocks} blocks of settings each ({points * blocks:,} "
            f"to check); at most {MAX_GRID_SETTINGS:,}: sweep fewer values or split the study",
        )


def grid_points(data: dict, path: Path) -> list[tuple[dict, dict[str, Any]]]:
    """Every product point of the grid: (study data with the values set, {dotted key: value})."""
    grid = data.get("grid") or {}
    if not grid:
        return [(data, {})]
    check_grid_size(data, path)
    keys = sorted(grid)
    points = []
    for values in itertools.product(*(grid[key] for key in keys)):
        point = dict(zip(keys, values, strict=True))
        expanded = dict(data)
        if "training" not in expanded:
            expanded["training"] = {}
        for key, value in point.items():
            set_dotted(expanded, key, value, path)
        points.append((expanded, point))
    return points


def load_study(path: str | Path) -> Study:
    """Read, validate and expand the study at ``path``; SpecError on any problem."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(path, "", f"expected a mapping of study keys, got {describe(data)}")
    error = schema_error(path, data)
    if error is not None:
        raise error

    environments: dict[str, Component] = {}
    architectures: dict[str, Component] = {}
    probes: dict[str, Component] = {}
    trainings: dict[Grid, tuple[TrainingConfig, Grid]] = {}
    overrides: dict[str, dict[str, Any]] = {}
    environment_overrides: dict[str, dict[str, Any]] = {}
    architecture_environments: dict[str, tuple[str, ...]] = {}
    baselines: dict[str, Component] = {}
    for expanded, point in grid_points(data, path):

        def variant(prefix: str, point=point) -> Grid:
            return tuple(
                (key.removeprefix(prefix), value) for key, value in point.items() if key.startswith(prefix)
            )

        for name, block in expanded["environments"].items():
            component = make_component(
                ENVIRONMENTS,
                "family",
                block,
                f"environments.{name}",
                name,
                path,
                variant(f"environments.{name}."),
            )
            environments.setdefault(component.label, component)
            override = block.get("training") or {}
            build_training(override, f"environments.{name}.training", path)
            environment_overrides.setdefault(component.label, dict(override))
        for name, block in (expanded.get("architectures") or {}).items():
            key = f"architectures.{name}"
            component = make_component(ARCHITECTURES, "family", block, key, name, path, variant(f"{key}."))
            architectures.setdefault(component.label, component)
            override = block.get("training") or {}
            build_training(override, f"{key}.training", path)  # types, unknown keys
            overrides.setdefault(component.label, dict(override))
            if "environments" in block:
                names = block["environments"]
                known = list(expanded["environments"])
                if not isinstance(names, list) or not names or any(name not in known for name in names):
                    raise SpecError(
                        path,
                        f"{key}.environments",
                        f"expected a non-empty list of this study's environment names ({', '.join(known)}), "
                        f"got {names!r}",
                    )
                architecture_environments.setdefault(component.label, tuple(names))
        for name, block in (expanded.get("probes") or {"adaptation": {"kind": "adaptation"}}).items():
            component = make_component(
                PROBES, "kind", block, f"probes.{name}", name, path, variant(f"probes.{name}.")
            )
            for one in expand_probe(component, PROBES.get(component.family)):
                probes.setdefault(one.label, one)
        training = build_training(expanded.get("training"), "training", path)
        trainings.setdefault(variant("training."), (training, variant("training.")))
        raw_baselines = expanded.get("baselines") or []
        if isinstance(raw_baselines, list):
            raw_baselines = {name: {"family": name} for name in raw_baselines}
        for name, block in raw_baselines.items():
            component = make_component(BASELINES, "family", block, f"baselines.{name}", name, path, "")
            baselines.setdefault(component.label, component)

    check_pool_probes(tuple(probes.values()), tuple(environments.values()), path)
    return Study(
        name=data["study"],
        question=data.get("question", ""),
        file=str(path),
        spec_hash=settings_hash(data, length=16),
        seeds=tuple(data.get("seeds", [0])),
        environments=tuple(environments.values()),
        architectures=tuple(architectures.values()),
        trainings=tuple(trainings.values()),
        training_overrides=overrides,
        environment_training_overrides=environment_overrides,
        probes=tuple(probes.values()),
        baselines=tuple(baselines.values()),
        architecture_environments=architecture_environments,
        ladder_charts=bool(data.get("ladder_charts", False)),
    )


def check_pool_probes(probes: tuple[Component, ...], environments: tuple[Component, ...], path: Path) -> None:
    """Refuse a probe that plays the training pool (``tasks: pool``) where no environment it
    plays has a ``task_pool`` in any grid point: its tasks would be fresh draws, a second
    copy of the fresh-task probe under another name. (A grid that sweeps ``task_pool`` up to
    null is fine: there the no-pool point is the sweep's unlimited end.)"""
    for probe in probes:
        kind = PROBES.get(probe.family)
        if not kind(probe.config).plays_pool:
            continue
        played = [
            environment
            for environment in environments
            if ENVIRONMENTS.get(environment.family).kind in kind.serves
        ]
        if played and all(environment.task_pool is None for environment in played):
            names = ", ".join(sorted({environment.name for environment in played}))
            raise SpecError(
                path,
                f"probes.{probe.name}.tasks",
                f"pool plays the tasks a run was trained on, but no environment it plays ({names}) "
                "has a task_pool; set environments.<name>.task_pool or use tasks: fresh",
            )


def build_training(mapping: Any, key: str, path: Path) -> TrainingConfig:
    """A training block's typed settings, checked against the algorithm it names."""
    training = build(TrainingConfig, mapping, key=key, file=str(path))
    try:
        check_training(training)
    except SettingError as error:
        raise SpecError(path, f"{key}.{error.key}", error.problem) from None
    return training


def make_component(
    registry, selector: str, block: dict, key: str, name: str, path: Path, grid: Grid
) -> Component:
    """Look up ``block[selector]`` in ``registry`` and build its typed settings."""
    try:
        family_class = registry.get(block[selector])
    except UnknownName as error:
        raise SpecError(path, f"{key}.{selector}", str(error)) from None
    drop = {
        "architecture family": (selector, "training", "environments"),
        "environment family": (selector, "task_pool", "training"),
    }.get(registry.axis, (selector,))
    config = build(family_class.Config, block, key=key, file=str(path), drop=drop)
    task_pool = task_pool_setting(block, key, path) if registry.axis == "environment family" else None
    return Component(name=name, family=block[selector], config=config, grid=grid, task_pool=task_pool)


def expand_probe(component: Component, kind: type[Probe]) -> list[Component]:
    """A probe, or one probe per value of a list setting its kind expands (``window``: one per w).

    ``kind.expand(config)`` returns (grid values, settings) pairs, e.g. ``((("w", 4),), ...)``;
    the values join the probe's own grid values, so tables and charts tell the parts apart.
    """
    return [
        dataclasses.replace(component, config=config, grid=component.grid + values)
        for values, config in kind.expand(component.config)
    ]


def select(study: Study, **names: str | list[str] | None) -> Study:
    """The study restricted to some of its environments, architectures or probes.

    Each keyword (``environments``, ``architectures``, ``probes``) takes names as a
    comma-separated string or a list; None or empty keeps them all.
    """
    for axis, wanted in names.items():
        if not wanted:
            continue
        wanted = wanted.split(",") if isinstance(wanted, str) else list(wanted)
        components = getattr(study, axis)
        known = {component.name for component in components}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise SpecError(
                study.file,
                f"{axis}.{unknown[0]}",
                f"not in this study; expected one of: {', '.join(sorted(known))}",
            )
        kept = tuple(component for component in components if component.name in wanted)
        study = dataclasses.replace(study, **{axis: kept})
    return study
