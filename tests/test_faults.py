"""Faults and bad input: divergence, mutated studies (property-based), determinism of tables."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from mesaprobe import cli, jobs
from mesaprobe.study import load_study, make_plan
from mesaprobe.train import loop
from tests.conftest import TINY_STUDY, run_all_jobs


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, tiny_spec, monkeypatch):
    plan = make_plan(load_study(tiny_spec))
    run = next(run for run in plan.runs if run.architecture.name == "gru" and run.seed == 0)
    real_update = loop.update

    def diverge_on_second_update(environment, state, config, total_updates):
        statistics = real_update(environment, state, config, total_updates)
        return statistics | ({"reward_per_step": math.nan} if state.update == 1 else {})

    monkeypatch.setattr(loop, "update", diverge_on_second_update)
    with pytest.raises(loop.TrainingDiverged, match="diverged at update 2") as error:
        jobs.train_job(plan, run.id, tmp_path, progress=False)
    assert "\n" not in str(error.value)
    partial = tmp_path / run.directory / jobs.PARTIAL
    assert loop.load_checkpoint(partial, jobs.identity(plan, run))["update"] == 1  # checkpoint_every: 1
    assert not (tmp_path / run.directory / jobs.CHECKPOINT).exists()


# --------------------------------------------------------------------------- mutated studies

VALID = yaml.safe_load(TINY_STUDY)

odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
    st.dictionaries(st.sampled_from(["family", "kind", "x", "horizon"]), st.integers(-2, 2), max_size=2),
)


def key_paths(data, prefix=()):
    """Every path to a value in nested dicts/lists."""
    paths = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            paths += key_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            paths += key_paths(value, (*prefix, index))
    return paths


PATHS = key_paths(VALID)


@st.composite
def mutated_studies(draw) -> bytes:
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(odd_values)
            elif action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(odd_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    text = yaml.safe_dump(data, sort_keys=False).encode()
    extra = draw(
        st.sampled_from(
            [
                b"",
                b"\nanchor: &a [1, 2]\nalias: *a\n",
                b"\nx: !!python/object/apply:os.system ['true']\n",
                b"\n\xff\xfe broken bytes\n",
                b"\nstudy: !!binary aGVsbG8=\n",
                b"\n  bad indentation: [\n",
            ]
        )
    )
    return text + extra


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=mutated_studies())
def test_mutated_studies_fail_cleanly_or_validate(tmp_path_factory, content, capsys, monkeypatch):
    directory = tmp_path_factory.mktemp("mutated")
    monkeypatch.chdir(directory)
    spec = Path("study.yaml")
    spec.write_bytes(content)
    code = cli.main(["validate", str(spec)])
    captured = capsys.readouterr()
    if code == 0:
        assert "is valid" in captured.out
        return
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"mesaprobe: error: {spec}: "), lines[0]
    assert not (directory / "results").exists()


def test_yaml_cannot_construct_python_objects(tmp_path):
    marker = tmp_path / "owned"
    spec = tmp_path / "study.yaml"
    spec.write_text(f"study: !!python/object/apply:os.system ['touch {marker}']\n")
    assert cli.main(["validate", str(spec)]) == 2
    assert not marker.exists()


# --------------------------------------------------------------------------- determinism


def run_study(spec: Path, results: Path) -> dict[str, Path]:
    return run_all_jobs(make_plan(load_study(spec)), results, resamples=200)


def test_same_study_and_seed_give_bit_identical_tables(tmp_path, tiny_spec):
    first = run_study(tiny_spec, tmp_path / "first")
    second = run_study(tiny_spec, tmp_path / "second")
    for key in ("curves", "curve_bands", "summary"):
        assert pl.read_parquet(first[key]).equals(pl.read_parquet(second[key])), key
    assert first["summary_csv"].read_bytes() == second["summary_csv"].read_bytes()
