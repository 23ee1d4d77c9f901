"""`mesaprobe list`: the study format, generated from the typed settings; the schema agrees with them."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal

import pytest

from mesaprobe import cli
from mesaprobe.settings import field_docs
from mesaprobe.study import study_schema
from mesaprobe.study.reference import (
    axes,
    find_axis,
    plain,
    plain_text,
    reference,
    type_text,
    yaml_text,
)
from mesaprobe.train.config import TrainingConfig

#: Every registered name of every axis: a name registered later is covered with no edit here.
NAMES = [(axis.name, name) for axis in axes() for name in axis.registry]


def list_command(capsys, *arguments: str) -> tuple[int, str, str]:
    code = cli.main(["list", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def settings_of(axis_name: str, name: str) -> type | None:
    return getattr(find_axis(axis_name).registry.get(name), "Config", None)


def default_of(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


@pytest.mark.parametrize("axis_name,name", NAMES)
def test_list_shows_every_axis_and_name(capsys, axis_name, name):
    code, out, err = list_command(capsys)
    assert code == 0 and not err
    sections = {section.split("  (")[0]: section for section in out.split("\n\n")}
    assert f"\n  {name}  " in sections[axis_name]


@pytest.mark.parametrize("axis_name,name", NAMES)
def test_list_axis_shows_each_name_with_its_settings_and_defaults(capsys, axis_name, name):
    code, out, _ = list_command(capsys, axis_name)
    assert code == 0
    axis = find_axis(axis_name)
    block = out.split(f"\n{name}: ", 1)[1].split("\n\n")[0]
    assert f"\n  {axis.selector}: {name}" in block
    config = settings_of(axis_name, name)
    for field in dataclasses.fields(config) if config is not None else ():
        assert f"\n  {field.name}: {yaml_text(plain(default_of(field)))}  # " in block


@pytest.mark.parametrize("axis_name,name", NAMES)
def test_list_name_shows_each_field_in_full(capsys, axis_name, name):
    code, out, _ = list_command(capsys, axis_name, name)
    assert code == 0
    config = settings_of(axis_name, name)
    if config is None:
        return
    hints, docs = typing.get_type_hints(config), field_docs(config)
    flat = " ".join(out.split())
    for field in dataclasses.fields(config):
        line = f"{field.name}: {yaml_text(plain(default_of(field)))} # {type_text(hints[field.name])}"
        assert line in flat
        assert plain_text(docs[field.name]) in flat


@pytest.mark.parametrize("axis_name,name", NAMES)
def test_shared_settings_are_named(axis_name, name):
    config = settings_of(axis_name, name)
    sharing = [
        other
        for other in find_axis(axis_name).registry
        if other != name and config is not None and settings_of(axis_name, other) is config
    ]
    assert reference(axis_name, name).get("settings_shared_with", []) == sharing


def test_training_lists_training_config(capsys):
    code, out, _ = list_command(capsys, "training")
    assert code == 0
    assert "TrainingConfig" in out
    for field in dataclasses.fields(TrainingConfig):
        assert f"\n  {field.name}: {yaml_text(plain(default_of(field)))}  # " in out


@pytest.mark.parametrize("axis", list(axes()), ids=lambda axis: axis.name)
def test_singular_axis_names_are_accepted(capsys, axis):
    plural = list_command(capsys, axis.name)
    singular = list_command(capsys, axis.singular)
    assert plural == singular and plural[0] == 0


@pytest.mark.parametrize(
    "arguments,expected",
    [
        (["casinos"], "environments, architectures, probes, baselines, training"),
        (["architectures", "rnn9000"], "gru"),
        (["probe", "xray"], "adaptation"),
        (["baselines", "oracle_of_delphi"], "thompson"),
        (["training", "sgd"], "training"),
    ],
)
def test_unknown_axis_or_name_is_one_line_and_exit_2(capsys, arguments, expected):
    code, out, err = list_command(capsys, *arguments)
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("mesaprobe: error: ")
    assert expected in err


@pytest.mark.parametrize("arguments", [[], ["environments"], ["probe", "window"], ["training"]])
def test_json_parses_and_says_the_same(capsys, arguments):
    code, out, _ = list_command(capsys, *arguments, "--json")
    assert code == 0
    assert json.loads(out) == reference(*arguments)


@pytest.mark.parametrize(
    "axis", [axis for axis in axes() if axis.name != "training"], ids=lambda axis: axis.name
)
def test_selector_is_the_key_the_schema_requires(axis):
    block = study_schema()["properties"][axis.name]
    mappings = [branch for branch in block.get("oneOf", [block]) if branch.get("type") == "object"]
    assert [mapping["additionalProperties"]["required"] for mapping in mappings] == [[axis.selector]]


# The schema's training block against TrainingConfig: same keys, same allowed values, same types.

TRAINING_SCHEMA = study_schema()["properties"]["training"]["properties"]
JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", type(None): "null"}


def annotation_parts(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def schema_values(node: Any, key: str) -> set[Any]:
    """Every ``enum``/``const`` (key ``"values"``) or ``type`` below a schema node, ``if`` conditions left out."""
    if isinstance(node, list):
        return set().union(*(schema_values(item, key) for item in node))
    if not isinstance(node, dict):
        return set()
    found: set[Any] = set()
    if key == "values":
        found |= set(node.get("enum", ())) | ({node["const"]} if "const" in node else set())
    elif "type" in node:
        found |= {node["type"]} if isinstance(node["type"], str) else set(node["type"])
    for name, child in node.items():
        if name != "if":
            found |= schema_values(child, key)
    return found


def test_schema_training_keys_are_the_fields():
    fields = [field.name for field in dataclasses.fields(TrainingConfig)]
    assert not set(fields) - set(TRAINING_SCHEMA), "fields missing from the schema's training block"
    assert not set(TRAINING_SCHEMA) - set(fields), "schema keys that are not TrainingConfig fields"


@pytest.mark.parametrize("field", dataclasses.fields(TrainingConfig), ids=lambda field: field.name)
def test_schema_training_values_and_types_match_the_field(field):
    training = find_axis("training")
    parts = annotation_parts(typing.get_type_hints(TrainingConfig)[field.name])
    values = {
        value for part in parts if typing.get_origin(part) is Literal for value in typing.get_args(part)
    }
    kinds = {JSON_TYPES[part] for part in parts if typing.get_origin(part) is not Literal}
    if field.name == training.selector:
        values, kinds = set(training.registry.names()), set()  # a name of the algorithm registry
    node = TRAINING_SCHEMA[field.name]
    assert schema_values(node, "values") == values
    assert schema_values(node, "type") == kinds
