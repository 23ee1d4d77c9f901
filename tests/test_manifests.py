"""The training and frozen manifests: typed records that write exactly today's files, and
refuse a malformed file in one line naming the file and the key."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest

from mesaprobe import cli, jobs
from mesaprobe.errors import ArtifactError, UserError
from mesaprobe.frozen import load_frozen
from mesaprobe.manifests import FrozenManifest, TrainingManifest
from mesaprobe.study import load_study, make_plan
from tests.conftest import TINY_STUDY

pytestmark = pytest.mark.usefixtures("one_thread")

# The keys of the files as the pipeline wrote them before the records existed.
PROVENANCE_KEYS = {"versions", "host", "platform", "processor", "instruction_set", "device", "git_commit"}
#: Recorded since manifests name the processor; absent from older files, which stay readable.
OPTIONAL_PROVENANCE_KEYS = {"processor", "instruction_set"}
TRAIN_KEYS = {
    "run",
    "study",
    "spec_hash",
    "seed",
    "updates",
    "env_steps",
    "wall_seconds",
    "env_steps_per_second",
    "tokens_per_second",
    "seeds_in_job",
    "job_env_steps_per_second",
    "session_seconds",
    "final_metrics",
    "history",
    "checkpoint_sha256",
} | PROVENANCE_KEYS
FROZEN_KEYS = {
    "run",
    "study",
    "spec_hash",
    "seed",
    "agent",
    "environment",
    "variant",
    "resolved",
    "input_size",
    "output_size",
    "private_size",
    "training",
    "weights_file",
    "weights_sha256",
    "parameter_sha256",
    "checkpoint_sha256",
    "parameters",
    "state_floats",
    "flops_per_step",
} | PROVENANCE_KEYS
#: Written by every freeze; absent from manifests written before models stated their costs.
MODEL_COST_KEYS = {"parameters", "state_floats", "flops_per_step"}
A2C_METRICS = {"reward_per_step", "regret_per_step", "entropy", "value_loss"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run trained and frozen (results under ``<root>/tiny``, as the command line puts them)."""
    root = tmp_path_factory.mktemp("manifests")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_STUDY)
    plan = make_plan(load_study(spec))
    run = next(run for run in plan.runs if run.architecture.name == "gru" and run.seed == 0)
    results = root / "results" / plan.study.name
    jobs.train_job(plan, run.id, results, progress=False)
    jobs.freeze_job(plan, run.id, results)
    return spec, plan, run, results / run.directory


def read(path):
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- what is written


@pytest.mark.parametrize(
    ("record", "name"), [(TrainingManifest, jobs.TRAIN_MANIFEST), (FrozenManifest, jobs.FROZEN_MANIFEST)]
)
def test_a_manifest_read_and_written_again_is_the_same_file(trained, tmp_path, record, name):
    original = trained[3] / name
    manifest = record.read(original)
    manifest.write(tmp_path / name)
    assert (tmp_path / name).read_bytes() == original.read_bytes()
    assert record.from_json(manifest.to_json(), original) == manifest


def test_the_training_manifest_holds_todays_keys_and_values(trained):
    _, plan, run, directory = trained
    data = read(directory / jobs.TRAIN_MANIFEST)
    assert set(data) == TRAIN_KEYS
    assert [set(entry) for entry in data["history"]] == [{"update", "env_steps"} | A2C_METRICS] * 2
    manifest = TrainingManifest.read(directory / jobs.TRAIN_MANIFEST)
    assert (manifest.run, manifest.study, manifest.seed) == (run.id, "tiny", 0)
    assert manifest.spec_hash == plan.study.spec_hash
    assert manifest.env_steps == 256 and manifest.updates == 2
    assert [entry.update for entry in manifest.history] == [1, 2]
    assert manifest.env_steps_per_second > 0 and manifest.wall_seconds > 0
    assert manifest.tokens_per_second is None and manifest.seeds_in_job == 1
    assert manifest.job_env_steps_per_second == manifest.env_steps_per_second
    assert manifest.provenance.device == "cpu" and manifest.provenance.versions["mesaprobe"]
    assert set(manifest.final_metrics) == A2C_METRICS
    entropies = [entry.metrics["entropy"] for entry in manifest.history]
    assert manifest.final_metrics["entropy"] == pytest.approx(sum(entropies) / 2)


def test_freeze_records_hashes_and_settings(trained):
    _, plan, run, directory = trained
    assert set(read(directory / jobs.FROZEN_MANIFEST)) == FROZEN_KEYS
    frozen = load_frozen(directory / jobs.FROZEN_MANIFEST)
    manifest = frozen.manifest
    assert manifest.run == run.id and dataclasses.asdict(manifest.resolved) == run.resolved
    assert (manifest.agent, manifest.environment, manifest.variant) == ("gru", "bandit2", "")
    assert (manifest.input_size, manifest.output_size, manifest.private_size) == (4, 3, 0)
    assert manifest.training.env_steps == 256 and manifest.training.updates == 2
    assert set(manifest.training.final_metrics) == A2C_METRICS
    assert manifest.weights.weights_file == jobs.FROZEN_WEIGHTS
    assert len(manifest.weights.weights_sha256) == 64 and len(manifest.spec_hash) == 16
    assert manifest.spec_hash == plan.study.spec_hash and manifest.provenance.device == "cpu"
    assert not any(parameter.requires_grad for parameter in frozen.model.parameters())
    # The GRU (hidden 8) on 2-armed bandits: 4 inputs, 3 outputs.
    assert manifest.parameters == 3 * (4 * 8 + 8 * 8 + 2 * 8) + 8 * 3 + 3
    assert (manifest.state_floats, manifest.flops_per_step) == (8, 2 * (3 * 8 * (4 + 8) + 8 * 3))


# --------------------------------------------------------------------------- what is refused


def damaged(trained, tmp_path, change) -> Path:
    """A copy of the run's directory whose ``frozen.json`` went through ``change(data)``."""
    directory = tmp_path / "results" / "tiny" / trained[2].directory
    shutil.copytree(trained[3], directory)
    path = directory / jobs.FROZEN_MANIFEST
    data = read(path)
    change(data)
    path.write_text(json.dumps(data))
    return path


def refusal(path) -> str:
    """The one-line message with which loading the frozen model at ``path`` fails."""
    with pytest.raises(UserError) as error:
        load_frozen(path)
    message = str(error.value)
    assert isinstance(error.value, ArtifactError), message
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


def at(data: dict, key: str) -> tuple[dict, str]:
    """The mapping holding dotted ``key``, and its last part."""
    *parents, last = key.split(".")
    for part in parents:
        data = data[part]
    return data, last


REQUIRED = [
    *sorted(FROZEN_KEYS - {"private_size"} - OPTIONAL_PROVENANCE_KEYS - MODEL_COST_KEYS),
    "training.updates",
    "training.env_steps",
    "training.wall_seconds",
    "training.final_metrics",
    "resolved.environment",
    "resolved.architecture",
    "resolved.training",
    "resolved.architecture.family",
]


@pytest.mark.parametrize("key", REQUIRED)
def test_a_missing_key_is_named(trained, tmp_path, key):
    def remove(data):
        parent, last = at(data, key)
        del parent[last]

    assert refusal(damaged(trained, tmp_path, remove)) == f"{key}: required key is missing"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("input_size", "4", "expected an integer, got the string '4'"),
        ("seed", 0.5, "expected an integer, got 0.5"),
        ("run", 7, "expected a string, got 7"),
        ("git_commit", 7, "expected a string or null, got 7"),
        ("versions", ["torch"], "expected a JSON object, got a list ['torch']"),
        ("versions.torch", 2, "expected a string, got 2"),
        ("resolved", [], "expected a JSON object, got a list []"),
        ("resolved.architecture", "gru", "expected a JSON object, got the string 'gru'"),
        ("resolved.architecture.family", 3, "expected an architecture family, got 3"),
        ("training", None, "expected a JSON object, got nothing (null)"),
        ("training.wall_seconds", "slow", "expected a number, got the string 'slow'"),
        ("training.final_metrics.entropy", True, "expected a number, got the boolean True"),
        ("weights_sha256", "abc", "expected 64 hexadecimal digits, got 'abc'"),
        ("weights_file", "../frozen.safetensors", "expected a file name in the manifest's directory"),
        ("output_size", 0, "expected a positive size, got 0"),
        ("private_size", -1, "expected 0 to input_size (4), got -1"),
        ("private_size", 5, "expected 0 to input_size (4), got 5"),
    ],
)
def test_a_value_of_the_wrong_type_is_named(trained, tmp_path, key, value, expected):
    def replace(data):
        parent, last = at(data, key)
        parent[last] = value

    assert refusal(damaged(trained, tmp_path, replace)).startswith(f"{key}: {expected}")


@pytest.mark.parametrize("parent", ["", "training", "resolved"])
def test_an_unknown_key_is_named(trained, tmp_path, parent):
    def add(data):
        (data[parent] if parent else data)["bogus"] = 1

    key = f"{parent}.bogus" if parent else "bogus"
    assert refusal(damaged(trained, tmp_path, add)).startswith(f"{key}: unknown key; expected one of: ")


def test_an_unknown_architecture_family_is_named(trained, tmp_path):
    path = damaged(trained, tmp_path, lambda data: data["resolved"]["architecture"].update(family="s4"))
    assert refusal(path) == (
        "resolved.architecture.family: unknown architecture family 's4'; "
        "expected one of: gru, linear_attention, lru, lstm, mamba, memoryless, transformer"
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"hidden": 1e9}, "resolved.architecture.hidden: expected at most 16,777,216, got 1,000,000,000"),
        ({"hidden": 16}, "resolved.architecture, input_size, output_size, private_size: do not describe"),
        ({"layers": 2}, "resolved.architecture, input_size, output_size, private_size: do not describe"),
        ({"hidden": "big"}, "resolved.architecture.hidden: expected an integer, got the string 'big'"),
        ({"hidden": 0}, "resolved.architecture.hidden: expected a positive size, got 0"),
        ({"width": 8}, "resolved.architecture.width: unknown setting; expected one of: "),
    ],
)
def test_architecture_settings_that_do_not_fit_the_weights_are_named(trained, tmp_path, settings, expected):
    path = damaged(trained, tmp_path, lambda data: data["resolved"]["architecture"].update(settings))
    started = time.perf_counter()
    assert refusal(path).startswith(expected)
    assert time.perf_counter() - started < 10  # nothing of the edited size was allocated


def test_sizes_that_do_not_fit_the_weights_are_named(trained, tmp_path):
    path = damaged(trained, tmp_path, lambda data: data.update(input_size=5))
    assert refusal(path).startswith(
        "resolved.architecture, input_size, output_size, private_size: do not describe the weights "
        "in frozen.safetensors (rnns.0.weight_ih_l0: (24, 5) by these settings, (24, 4) in the file)"
    )


def test_a_manifest_from_before_private_inputs_loads_without_them(trained, tmp_path):
    path = damaged(trained, tmp_path, lambda data: data.pop("private_size"))
    assert load_frozen(path).manifest.private_size == 0


def test_a_manifest_that_is_no_object_is_refused(trained, tmp_path):
    path = damaged(trained, tmp_path, lambda data: None)
    path.write_text("[1, 2]")
    assert refusal(path) == "expected a JSON object, got a list [1, 2]"


@pytest.mark.parametrize("key", sorted(TRAIN_KEYS - OPTIONAL_PROVENANCE_KEYS))
def test_a_training_manifest_without_a_key_is_refused(trained, tmp_path, key):
    data = read(trained[3] / jobs.TRAIN_MANIFEST)
    del data[key]
    path = tmp_path / jobs.TRAIN_MANIFEST
    with pytest.raises(ArtifactError) as error:
        TrainingManifest.from_json(data, path)
    assert str(error.value) == f"{path}: {key}: required key is missing"


def test_a_training_manifest_with_a_bad_history_is_refused(trained, tmp_path):
    data = read(trained[3] / jobs.TRAIN_MANIFEST)
    path = tmp_path / jobs.TRAIN_MANIFEST
    for change, expected in [
        (lambda history: history[1].update(update="2"), "history[1].update: expected an integer"),
        (lambda history: history[0].pop("env_steps"), "history[0].env_steps: required key is missing"),
        (lambda history: history[0].update(entropy=None), "history[0].entropy: expected a number"),
    ]:
        broken = copy.deepcopy(data)
        change(broken["history"])
        with pytest.raises(ArtifactError) as error:
            TrainingManifest.from_json(broken, path)
        assert str(error.value).startswith(f"{path}: {expected}")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda data: data.pop("weights_sha256"), "weights_sha256: required key is missing"),
        (
            lambda data: data["resolved"]["architecture"].update(hidden=1e9),
            "resolved.architecture.hidden: 1000000000.0 here, 8 in the study's plan of run",
        ),
    ],
)
def test_probe_reports_a_damaged_manifest_in_one_line(trained, tmp_path, capsys, change, expected):
    spec, _, run, _ = trained
    path = damaged(trained, tmp_path, change)
    arguments = ["probe", str(spec), "--run", run.id, "--probe", "adaptation", "--device", "cpu"]
    code = cli.main([*arguments, "--results-root", str(tmp_path / "results")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"mesaprobe: error: {path}: {expected}"), lines[0]
