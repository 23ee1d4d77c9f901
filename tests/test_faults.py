"""Faults and bad input: divergence, mutated and known-invalid studies (property-based, and
through Snakemake's dry run), determinism of tables."""

from __future__ import annotations

import copy
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from mesaprobe import cli, jobs
from mesaprobe.study import load_study, make_plan
from mesaprobe.study.load import MAX_GRID_POINTS
from mesaprobe.study.plan import RUN_ID_PATTERN
from mesaprobe.train import loop
from tests.conftest import REPO, TINY_STUDY, run_all_jobs


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


def files_in(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


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
        # Valid as mutated: what it says it would run is a plan whose every job has its own id.
        plan = make_plan(load_study(spec))
        runs, probes, baselines = (
            int(n) for n in re.findall(r"(\d+) (?:runs|probe jobs|baseline jobs)", captured.out)
        )
        assert (runs, probes, baselines) == (len(plan.runs), len(plan.probe_jobs), len(plan.baseline_jobs))
        assert probes + baselines > 0
        assert len({run.id for run in plan.runs}) == runs
        assert all(re.fullmatch(RUN_ID_PATTERN, run.id) for run in plan.runs)
        outputs = [job.output for job in (*plan.probe_jobs, *plan.baseline_jobs)]
        assert len(set(outputs)) == len(outputs)
    else:
        assert code == 2, captured.err
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
        assert lines[0].startswith(f"mesaprobe: error: {spec}: "), lines[0]
    # Commands that write results, given an invalid study or a job it does not have, refuse
    # before they write anything.
    for command in (["train", str(spec), "--run", "no-such-run"], ["collect", str(spec)]):
        assert cli.main([*command, "--results-root", "results"]) == 2
        assert "Traceback" not in capsys.readouterr().err
    assert files_in(directory) == ["study.yaml"]


# --------------------------------------------------------------------------- known-invalid studies
#
# Each generator breaks the tiny study in one known way, choosing the details with ``pick``
# (a Hypothesis draw, or a seeded random choice for the dry runs), and returns the study's text
# and the key its refusal must name.


def non_string_key(pick) -> tuple[str, str]:
    """A name that YAML 1.1 reads as a boolean, a number or null."""
    word = pick(["on", "off", "yes", "no", "true", "False", "null", "~", "7", "1.5", "0x1f", "-3"])
    block = pick(["environments", "architectures", "probes", "training"])
    entry = {
        "environments": f"  {word}: {{family: bernoulli_bandit, arms: 2, horizon: 8}}\n",
        "architectures": f"  {word}: {{family: gru, hidden: 8}}\n",
        "probes": f"  {word}: {{kind: adaptation, episodes: 10}}\n",
    }
    if block == "training":
        return TINY_STUDY.replace("\ntraining: {", f"\ntraining: {{{word}: 1, "), f"training.{word}"
    return TINY_STUDY.replace(f"{block}:\n", f"{block}:\n{entry[block]}"), f"{block}.{word}"


def duplicate_key(pick) -> tuple[str, str]:
    """A key given twice in one mapping (YAML would keep the last silently)."""
    where = pick(["study", "environment", "architecture", "setting", "training"])
    if where == "study":
        return "study: other\n" + TINY_STUDY, "study"
    if where == "environment":
        again = "  bandit2: {family: bernoulli_bandit, arms: 3, horizon: 8}\n"
        return TINY_STUDY.replace("architectures:\n", again + "architectures:\n"), "environments.bandit2"
    if where == "architecture":
        again = f"  gru: {{family: {pick(['lstm', 'gru', 'memoryless'])}, hidden: 8}}\n"
        return TINY_STUDY.replace("  transformer:", again + "  transformer:"), "architectures.gru"
    if where == "setting":
        return TINY_STUDY.replace("horizon: 8,", "horizon: 8, horizon: 16,"), "environments.bandit2.horizon"
    return TINY_STUDY + "training: {lr: 0.1}\n", "training"


def huge_grid(pick) -> tuple[str, str]:
    """A grid of more points than a study may expand to, written as k keys of n values."""
    keys = ("gamma", "gae_lambda", "value_coef", "entropy_coef", "max_grad_norm", "lr_final_fraction")
    count = pick([2, 3, 4, 5, 6])
    values = math.ceil((MAX_GRID_POINTS + 1) ** (1 / count)) + pick([0, 1, 7])
    rows = "".join(
        f"  training.{key}: [{', '.join(f'{i / (values + 1):.6f}' for i in range(1, values + 1))}]\n"
        for key in keys[:count]
    )
    return TINY_STUDY + "grid:\n" + rows, "grid"


#: Sizes whose jobs cannot fit a machine: (setting, its text in the tiny study, the key named,
#: the smallest power of ten that is refused).
HUGE_SIZES = [
    ("environments.bandit2.horizon", "horizon: 8,", "environments.bandit2.horizon", 8),
    ("environments.bandit2.arms", "arms: 2,", "environments.bandit2", 8),
    ("architectures.gru.hidden", "hidden: 8}", "architectures.gru.hidden", 6),
    ("training.batch", "batch: 16,", "training.batch", 9),
    ("training.env_steps", "env_steps: 256,", "training.env_steps", 11),
    ("probes.adaptation.episodes", "episodes: 40,", "probes.adaptation.episodes", 8),
    ("probes.adaptation.horizon_factor", "batch: 16}", "probes.adaptation.horizon_factor", 7),
]


def huge_size(pick) -> tuple[str, str]:
    """One size of the study raised to 10^e, far beyond any machine's memory."""
    setting, text, key, smallest = pick(HUGE_SIZES)
    value = 10 ** pick(list(range(smallest, 16)))
    name = setting.rsplit(".", 1)[1]
    if name == "horizon_factor":
        return TINY_STUDY.replace(text, f"batch: 16, horizon_factor: {value}}}", 1), key
    return TINY_STUDY.replace(text, f"{name}: {value}{text[-1]}", 1), key


KNOWN_INVALID = {
    "non_string_key": non_string_key,
    "duplicate_key": duplicate_key,
    "huge_grid": huge_grid,
    "huge_size": huge_size,
}


@st.composite
def known_invalid_studies(draw) -> tuple[str, str, str]:
    kind = draw(st.sampled_from(sorted(KNOWN_INVALID)))
    text, key = KNOWN_INVALID[kind](lambda options: draw(st.sampled_from(options)))
    return kind, text, key


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(study=known_invalid_studies())
def test_known_invalid_studies_are_refused_naming_their_key(tmp_path_factory, study, capsys):
    kind, text, key = study
    spec = tmp_path_factory.mktemp(kind) / "study.yaml"
    spec.write_text(text)
    code = cli.main(["validate", str(spec)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (kind, err)
    assert lines[0].startswith(f"mesaprobe: error: {spec}: {key}: "), (kind, lines[0])


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KNOWN_INVALID))
def test_known_invalid_studies_are_refused_by_snakemakes_dry_run(tmp_path, kind):
    text, key = KNOWN_INVALID[kind](random.Random(kind).choice)
    spec = tmp_path / "study.yaml"
    spec.write_text(text)
    executable = Path(sys.executable).with_name("snakemake")
    result = subprocess.run(
        [str(executable), "-s", str(REPO / "Snakefile"), "-n", "--config", f"spec={spec}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("mesaprobe: error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert errors == [errors[0]] and errors[0].startswith(f"mesaprobe: error: {spec}: {key}: "), errors
    assert not (tmp_path / "results").exists()


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
