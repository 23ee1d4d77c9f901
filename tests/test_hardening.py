"""Hardening: ids that cannot collide, frozen weights that cannot be swapped, safe rules, a
resume from the README's command, and hostile studies refused in one line (tests/data/hostile)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mesaprobe import cli, jobs
from mesaprobe.artifacts import sha256_file
from mesaprobe.errors import ArtifactError, SpecError
from mesaprobe.frozen import state_hash
from mesaprobe.settings import SettingError, coerce, expected_text
from mesaprobe.study import load, load_study, make_plan, resources
from mesaprobe.study import plan as plan_module
from mesaprobe.study.plan import COMPONENT_ID_PATTERN, RUN_ID_PATTERN, results_directory
from mesaprobe.study.results import OWNER_FILE, claim, lock_results
from mesaprobe.train import loop
from tests.conftest import REPO, TINY_STUDY

pytestmark = pytest.mark.usefixtures("one_thread")

HOSTILE = REPO / "tests" / "data" / "hostile"


def write(directory: Path, text: str, name: str = "study.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def one_line_error(capsys, *arguments: str) -> str:
    """The message of a command that must fail in one line with exit status 2."""
    code = cli.main(list(arguments))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0].removeprefix("mesaprobe: error: ")


# --------------------------------------------------------------------------- 1: ids


def test_two_learning_rates_that_shared_a_32_bit_hash_are_two_runs(tmp_path):
    # Found by search: the GRU runs of these learning rates share the first 8 hex digits
    # (6ebdcced) of their settings' sha256, which were the whole hash of ids before.
    spec = write(tmp_path, TINY_STUDY + "grid: {training.lr: [0.001007521, 0.001036463]}\n")
    plan = make_plan(load_study(spec))
    gru_runs = [run for run in plan.runs if run.architecture.name == "gru"]
    assert len(gru_runs) == 2 * 2  # two learning rates x two seeds: none dropped
    assert len({run.id for run in plan.runs}) == len(plan.runs)
    assert sorted({run.training.lr for run in gru_runs}) == [0.001007521, 0.001036463]


def test_ids_are_readable_names_a_64_bit_hash_and_the_seed(tmp_path):
    plan = make_plan(load_study(write(tmp_path, TINY_STUDY)))
    run = next(run for run in plan.runs if run.architecture.name == "gru" and run.seed == 1)
    assert re.fullmatch(r"bandit2-gru-[0-9a-f]{16}-s1", run.id)
    assert all(re.fullmatch(RUN_ID_PATTERN, run.id) for run in plan.runs)
    components = (*plan.study.environments, *plan.study.probes, *plan.study.baselines)
    assert all(re.fullmatch(COMPONENT_ID_PATTERN, component.id) for component in components)


def test_the_plan_refuses_two_runs_with_one_id(tmp_path, monkeypatch):
    spec = write(tmp_path, TINY_STUDY + "grid: {architectures.gru.hidden: [8, 16]}\n")
    monkeypatch.setattr(plan_module, "settings_hash", lambda data, length=16: "0" * length)
    with pytest.raises(SpecError) as error:
        make_plan(load_study(spec))
    message = str(error.value)
    assert "gru[hidden=8] and gru[hidden=16]" in message and "one id" in message and "\n" not in message


def test_the_plan_refuses_two_probe_jobs_with_one_output(tmp_path, monkeypatch):
    spec = write(tmp_path, TINY_STUDY + "grid: {probes.adaptation.episodes: [10, 20]}\n")
    monkeypatch.setattr(load, "settings_hash", lambda data, length=16: "0" * length)
    with pytest.raises(SpecError, match=r"probes\.adaptation: .* would write one file"):
        make_plan(load_study(spec))


# --------------------------------------------------------------------------- 2, 3: frozen weights


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run of the tiny study trained and frozen: (spec, plan, run, results of the study)."""
    root = tmp_path_factory.mktemp("hardening")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_STUDY)
    plan = make_plan(load_study(spec))
    run = next(run for run in plan.runs if run.architecture.name == "gru" and run.seed == 0)
    results = root / "results" / plan.study.name
    jobs.train_job(plan, run.id, results, progress=False)
    jobs.freeze_job(plan, run.id, results)
    return spec, plan, run, results


@pytest.fixture
def copy(trained, tmp_path):
    """A fresh copy of the trained study's results: (plan, run, results, run directory)."""
    _, plan, run, results = trained
    copied = tmp_path / "results" / plan.study.name
    shutil.copytree(results, copied)
    return plan, run, copied, copied / run.directory


def probe(plan, run, results):
    return jobs.probe_job(plan, run.id, "adaptation", results, "cpu")


def refusal(plan, run, results) -> str:
    """The one-line message with which probing the run fails."""
    with pytest.raises(ArtifactError) as error:
        probe(plan, run, results)
    assert "\n" not in str(error.value)
    return str(error.value)


def rewrite_manifest(directory: Path, change) -> None:
    path = directory / jobs.FROZEN_MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def forge_weights(directory: Path, change) -> None:
    """Change the frozen weights with ``change(state)`` and rewrite both of frozen.json's hashes,
    as someone covering their tracks would."""
    path = directory / jobs.FROZEN_WEIGHTS
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))
    sha = sha256_file(path)
    rewrite_manifest(
        directory, lambda data: data.update(weights_sha256=sha, parameter_sha256=state_hash(state))
    )


def test_an_untouched_frozen_run_is_probed(copy):
    plan, run, results, _ = copy
    assert probe(plan, run, results).exists()


def test_a_changed_weight_with_both_hashes_rewritten_is_refused(copy):
    plan, run, results, directory = copy

    def nudge(state):
        name = sorted(state)[0]
        state[name] = state[name] + 0.01

    forge_weights(directory, nudge)
    with pytest.raises(ArtifactError, match="parameter_sha256: the frozen weights are not the parameters of"):
        probe(plan, run, results)


def test_non_finite_weights_with_matching_hashes_are_refused(copy):
    plan, run, results, directory = copy

    def poison(state):
        name = sorted(state)[0]
        state[name] = torch.full_like(state[name], math.nan)

    forge_weights(directory, poison)
    with pytest.raises(ArtifactError, match="holds NaN or infinite weights"):
        probe(plan, run, results)


@pytest.mark.parametrize("weights_file", ["/etc/passwd", "..", "../frozen.safetensors", "."])
def test_a_weights_file_outside_the_run_directory_is_refused(copy, capsys, weights_file):
    plan, run, results, directory = copy
    rewrite_manifest(directory, lambda data: data.update(weights_file=weights_file))
    message = refusal(plan, run, results)
    assert "weights_file: expected a file name in the manifest's directory" in message


def test_a_weights_file_linked_from_outside_the_results_is_refused(copy, tmp_path):
    plan, run, results, directory = copy
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(directory / jobs.FROZEN_WEIGHTS, outside)
    (directory / jobs.FROZEN_WEIGHTS).unlink()
    (directory / jobs.FROZEN_WEIGHTS).symlink_to(outside)
    with pytest.raises(ArtifactError, match="lies outside the study's results directory"):
        probe(plan, run, results)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda data: data["resolved"]["training"].update(lr=0.5), "resolved.training.lr"),
        (lambda data: data["resolved"]["architecture"].update(hidden=16), "resolved.architecture.hidden"),
        (lambda data: data.update(seed=1), "seed"),
        (lambda data: data.update(run="bandit2-gru-0000000000000000-s0"), "run"),
        (lambda data: data.update(study="other"), "study"),
        (lambda data: data.update(input_size=5), "input_size"),
    ],
)
def test_a_frozen_record_that_differs_from_the_plan_is_refused(copy, change, key):
    plan, run, results, directory = copy
    rewrite_manifest(directory, change)
    message = refusal(plan, run, results)
    assert f"frozen.json: {key}: " in message and f"in the study's plan of run {run.id}" in message
    assert "\n" not in message


def test_an_edited_spec_hash_alone_is_accepted(copy):
    """Run ids name every setting that changes a result: a study file edited elsewhere (a probe
    added, a comment) keeps its frozen runs."""
    plan, run, results, directory = copy
    rewrite_manifest(directory, lambda data: data.update(spec_hash="0" * 16))
    assert probe(plan, run, results).exists()


def test_weights_whose_checkpoint_changed_since_freezing_are_refused(copy):
    plan, run, results, directory = copy
    checkpoint = torch.load(directory / jobs.CHECKPOINT, weights_only=True)
    checkpoint["wall_seconds"] += 1.0
    torch.save(checkpoint, directory / jobs.CHECKPOINT)
    with pytest.raises(ArtifactError, match="differs from the checkpoint the frozen weights were cut from"):
        probe(plan, run, results)


def test_freezing_refuses_a_tampered_checkpoint(copy):
    plan, run, results, directory = copy
    checkpoint = torch.load(directory / jobs.CHECKPOINT, weights_only=True)
    name = sorted(checkpoint["model"])[0]
    checkpoint["model"][name] += 0.01  # its identity (run, settings, seed) left as it was
    torch.save(checkpoint, directory / jobs.CHECKPOINT)
    with pytest.raises(ArtifactError, match="differs from the checkpoint training wrote"):
        jobs.freeze_job(plan, run.id, results)


def test_freezing_refuses_a_partial_checkpoint_put_in_place_of_the_finished_one(copy):
    plan, run, results, directory = copy

    def one_update_less(checkpoint):
        checkpoint["update"] -= 1
        checkpoint["history"] = checkpoint["history"][:-1]

    refreeze_after(directory, one_update_less)  # its hash made to agree
    with pytest.raises(ArtifactError, match=r"update: holds 1 updates .* of the 2 the run's settings make"):
        jobs.freeze_job(plan, run.id, results)


def refreeze_after(directory: Path, change) -> None:
    """Change the checkpoint with ``change(checkpoint)`` and make train.json's hash agree."""
    checkpoint = torch.load(directory / jobs.CHECKPOINT, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, directory / jobs.CHECKPOINT)
    manifest = directory / jobs.TRAIN_MANIFEST
    data = json.loads(manifest.read_text())
    data["checkpoint_sha256"] = sha256_file(directory / jobs.CHECKPOINT)
    manifest.write_text(json.dumps(data))


def test_freezing_refuses_non_finite_weights(copy):
    plan, run, results, directory = copy

    def poison(checkpoint):
        name = sorted(checkpoint["model"])[0]
        checkpoint["model"][name] = torch.full_like(checkpoint["model"][name], math.inf)

    refreeze_after(directory, poison)
    with pytest.raises(ArtifactError, match=r"model\..*: holds NaN or infinite weights"):
        jobs.freeze_job(plan, run.id, results)


def test_freezing_refuses_a_run_whose_training_did_not_finish(copy):
    plan, run, results, directory = copy
    (directory / jobs.TRAIN_MANIFEST).unlink()
    with pytest.raises(ArtifactError, match=r"train\.json: not found: the run's training did not finish"):
        jobs.freeze_job(plan, run.id, results)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"layers": 10**9}, "resolved.architecture.layers: expected at most 16,777,216, got 1,000,000,000"),
        ({"layers": 100_000}, "describe far more tensors than the"),
    ],
)
def test_absurd_sizes_in_a_frozen_record_are_refused_at_once(copy, capsys, settings, expected):
    """Loaded alone, and probed: refused in one line, without building the described model."""
    plan, run, results, directory = copy
    rewrite_manifest(directory, lambda data: data["resolved"]["architecture"].update(settings))
    from mesaprobe.frozen import load_frozen

    with pytest.raises(ArtifactError, match=re.escape(expected)):
        load_frozen(directory / jobs.FROZEN_MANIFEST)
    message = refusal(plan, run, results)
    assert "resolved.architecture.layers: " in message and "in the study's plan of run" in message


# --------------------------------------------------------------------------- 4: rules


def test_every_wildcard_in_a_shell_command_is_quoted():
    for rules in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for wildcard in re.findall(r"\{wildcards\.[a-z_]+(?::q)?\}", rules.read_text()):
            assert wildcard.endswith(":q}"), f"{rules.name}: {wildcard}"


def snakemake(*arguments: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("snakemake")
    command = str(executable) if executable.exists() else shutil.which("snakemake") or "snakemake"
    return subprocess.run(
        [command, "-s", str(REPO / "Snakefile"), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.mark.slow
def test_a_crafted_target_runs_no_command(tmp_path):
    spec = write(tmp_path, TINY_STUDY)
    target = "results/tiny/baselines/e$(touch${IFS}OWNED)/p/b-s0.parquet"
    result = snakemake("--cores", "1", "--config", f"spec={spec}", "--", target, cwd=tmp_path)
    assert result.returncode != 0
    assert not (tmp_path / "OWNED").exists()
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- 5: resuming


RESUMED_STUDY = """\
study: resumed
seeds: [0]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 6}
architectures:
  gru: {family: gru, hidden: 8}
training: {env_steps: 120000, batch: 16, checkpoint_every: 10}
probes:
  adaptation: {kind: adaptation, episodes: 30}
baselines: [random, ucb1]
"""


def start(spec: Path, cwd: Path, output: Path) -> subprocess.Popen:
    """The README's command for a study, in a session of its own (a terminal's process group),
    its output to ``output``."""
    executable = Path(sys.executable).with_name("snakemake")
    with output.open("w") as stream:
        return subprocess.Popen(
            [str(executable), "-s", str(REPO / "Snakefile"), "--cores", "2", "--config", f"spec={spec}"],
            cwd=cwd,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(condition, process: subprocess.Popen, output: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, output.read_text()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_the_readme_command_resumes_after_snakemake_is_killed_or_interrupted(tmp_path):
    spec = write(tmp_path, RESUMED_STUDY)
    out = tmp_path / "results" / "resumed"
    outputs = [tmp_path / f"run{index}.txt" for index in range(3)]
    baselines = lambda: list(out.glob("baselines/*/*/*.parquet"))  # noqa: E731

    def partial_update() -> int | None:
        partials = list(out.glob("runs/*/partial.pt"))
        return torch.load(partials[0], weights_only=True)["update"] if partials else None

    # Killed with SIGKILL while training, with everything it started (as by the OOM killer or
    # a lost machine): nothing is cleaned up, Snakemake's lock files would stay behind.
    first = start(spec, tmp_path, outputs[0])
    baselines_done = lambda: outputs[0].read_text().count("(Rule: baseline)") == 2  # noqa: E731
    wait_for(lambda: baselines_done() and partial_update() is not None, first, outputs[0])
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    killed_at = partial_update()
    finished = {path: path.stat().st_mtime_ns for path in baselines()}

    # The same command again: it resumes training; then Ctrl-C (SIGINT to its process group).
    second = start(spec, tmp_path, outputs[1])
    wait_for(lambda: (partial_update() or 0) > killed_at, second, outputs[1])
    os.killpg(second.pid, signal.SIGINT)
    second.wait(timeout=120)
    text = outputs[1].read_text()
    assert "IncompleteFilesException" not in text and "LockException" not in text, text[-3000:]
    assert f"resuming from partial.pt at update {killed_at}" in text, text[-3000:]
    log = next(out.glob("logs/train/*.log")).read_text(errors="replace")
    assert "stopped by signal SIGINT" in log, log[-2000:]
    stopped_at = partial_update()
    assert stopped_at > killed_at

    # And once more: it finishes, resuming training again, and keeps every job that had finished.
    third = start(spec, tmp_path, outputs[2])
    assert third.wait(timeout=300) == 0, outputs[2].read_text()[-3000:]
    assert f"resuming from partial.pt at update {stopped_at}" in outputs[2].read_text()
    assert {path: path.stat().st_mtime_ns for path in baselines()} == finished
    assert (out / "tables" / "summary.csv").exists() and partial_update() is None


def test_a_second_run_of_one_study_is_refused_while_the_first_holds_its_lock(tmp_path):
    study = load_study(write(tmp_path, TINY_STUDY))
    held = lock_results(study, tmp_path / "results")
    assert held is not None
    code = (
        "import sys; from mesaprobe.study import load_study; from mesaprobe.study.results import lock_results\n"
        f"lock_results(load_study({str(study.file)!r}), {str(tmp_path / 'results')!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and f"pid {os.getpid()}" in result.stderr
    assert "another run of study 'tiny' is writing here" in result.stderr
    held.close()  # what the end of the process does, however it ends
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- 6: settings, memory


def test_null_for_an_optional_setting_is_accepted_and_a_wrong_value_is_named():
    assert coerce(None, float | None, "probes.p.switch_at", "study.yaml") is None
    assert expected_text(float | None) == "a number or null"
    with pytest.raises(
        SpecError, match=r"probes\.p\.switch_at: expected a number or null, got the string 'x'"
    ):
        coerce("x", float | None, "probes.p.switch_at", "study.yaml")


def test_a_probe_or_baseline_that_plays_no_environment_is_noted_and_a_study_with_no_probe_refused(tmp_path):
    spec = write(
        tmp_path,
        TINY_STUDY.replace(
            "  adaptation: {kind: adaptation, episodes: 40, batch: 16}",
            "  adaptation: {kind: adaptation, episodes: 40, batch: 16}\n  game: {kind: commitment}",
        ).replace("baselines: [random, thompson]", "baselines: [random, thompson, ridge]"),
    )
    notes = [str(note) for note in make_plan(load_study(spec)).skipped]
    assert (
        "probe game plays no environment of this study: it plays commitment environments; "
        "this study has bandit environments" in notes
    )
    assert (
        "baseline ridge plays no environment of this study: it plays regression environments; "
        "this study has bandit environments" in notes
    )
    alone = write(
        tmp_path, TINY_STUDY.replace("{kind: adaptation, episodes: 40, batch: 16}", "{kind: commitment}")
    )
    with pytest.raises(SpecError, match=r": probes: no probe plays an environment of this study"):
        make_plan(load_study(alone))


def test_the_memory_estimate_is_the_documented_product(tmp_path):
    plan = make_plan(load_study(write(tmp_path, TINY_STUDY)))
    run = next(run for run in plan.runs if run.architecture.name == "gru")
    environment = jobs.make_environment(run.environment)
    terms = resources.training_terms(
        "bandit2",
        environment,
        "gru",
        "gru",
        run.architecture.config,
        batch=resources.Factor(16, "training.batch", "batch"),
        updates=resources.Factor(2, "training.env_steps", "updates"),
        seeds=resources.Factor(1, "training.seeds_per_job", "seeds"),
    )
    activations = next(term for term in terms if term.what == "activations")
    assert (
        activations.bytes == 16 * 8 * 8 * 1 * 4 * resources.ACTIVATION_FACTOR
    )  # batch x horizon x width x layers
    parameters = resources.parameter_term(
        "bandit2", environment, "gru", "gru", run.architecture.config, resources.Factor(1, "k", "seeds"), "f"
    )
    model = jobs.new_model(run, environment)
    assert parameters.bytes == sum(p.numel() for p in model.parameters()) * 4 * resources.PARAMETER_COPIES


@pytest.mark.parametrize("spec", sorted((REPO / "specs").glob("*.yaml")), ids=lambda path: path.stem)
def test_the_shipped_studies_are_far_from_the_memory_bound(spec, monkeypatch):
    """Every job of the shipped studies is estimated below a tenth of the bound."""
    monkeypatch.setattr(resources, "MAX_JOB_MEMORY_BYTES", resources.MAX_JOB_MEMORY_BYTES // 10)
    assert make_plan(load_study(spec)).runs


def test_a_cuda_device_without_a_number_is_refused_on_the_command_line(capsys, trained):
    spec, _, run, _ = trained
    message = one_line_error(
        capsys, "probe", str(spec), "--run", run.id, "--probe", "adaptation", "--device", "cuda:abc"
    )
    assert message == "device 'cuda:abc': expected auto, cpu, cuda or cuda:N"


# --------------------------------------------------------------------------- 7: hangs


def test_a_huge_grid_is_refused_before_a_single_point_is_expanded(tmp_path, monkeypatch):
    values = "[" + ", ".join(f"{index / 100:.2f}" for index in range(1, 11)) + "]"
    keys = ("gamma", "gae_lambda", "value_coef", "entropy_coef", "max_grad_norm", "lr_final_fraction")
    spec = write(tmp_path, TINY_STUDY + "grid:\n" + "".join(f"  training.{key}: {values}\n" for key in keys))
    expanded = []
    monkeypatch.setattr(load, "set_dotted", lambda *arguments: expanded.append(arguments))
    with pytest.raises(
        SpecError, match=r": grid: expands to 1,000,000 points \(10 x 10 x 10 x 10 x 10 x 10\)"
    ):
        load_study(spec)
    assert not expanded


def test_aliases_are_counted_without_being_expanded(tmp_path):
    levels = "".join(f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 30))
    spec = write(tmp_path, TINY_STUDY + "grid:\n  training.lr:\n  - &l0 [0.001]\n" + levels)  # 10^29 values
    with pytest.raises(SpecError, match=r"holds more than 100,000 values once its aliases are expanded"):
        load_study(spec)


# --------------------------------------------------------------------------- 8: one study file per results


def test_a_results_directory_of_another_study_file_is_refused(tmp_path, capsys):
    first = write(tmp_path, TINY_STUDY, "first.yaml")
    second = write(tmp_path, TINY_STUDY.replace("seeds: [0, 1]", "seeds: [5]"), "second.yaml")
    root = tmp_path / "results"
    claim(load_study(first), root)
    assert json.loads((root / "tiny" / OWNER_FILE).read_text())["spec"] == str(first.resolve())
    assert results_directory(load_study(first), root) == root / "tiny"  # its own: fine
    message = one_line_error(capsys, "collect", str(second), "--results-root", str(root))
    assert message.startswith(
        f"{second}: study: results directory {root / 'tiny'} belongs to another study file"
    )


@pytest.mark.slow
def test_snakemake_refuses_a_study_whose_results_belong_to_another_file(tmp_path):
    first = write(tmp_path, TINY_STUDY, "first.yaml")
    second = write(tmp_path, TINY_STUDY.replace("seeds: [0, 1]", "seeds: [5]"), "second.yaml")
    claim(load_study(first), tmp_path / "results")
    result = snakemake("-n", "--config", f"spec={second}", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("mesaprobe: error:")]
    assert result.returncode == 2 and len(errors) == 1 and "belongs to another study file" in errors[0]


# --------------------------------------------------------------------------- 9: the Gittins cache


def test_a_tampered_gittins_cache_is_recomputed(tmp_path, monkeypatch, capsys):
    from mesaprobe.baselines import gittins

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compute = gittins.gittins_table.__wrapped__  # bypass the in-process cache
    honest = compute(1.0, 1.0, 0.9, 15, 20, 64)
    path = gittins.cache_file(1.0, 1.0, 0.9, 15, 20, 64)
    with np.load(path) as stored:
        content = dict(stored)
    content["table"] = np.where(np.isnan(content["table"]), np.nan, 0.5)  # every arm alike
    np.savez(path, **content)
    capsys.readouterr()
    assert np.array_equal(compute(1.0, 1.0, 0.9, 15, 20, 64), honest, equal_nan=True)
    assert "Gittins index cache does not verify; recomputing it" in capsys.readouterr().err
    assert np.array_equal(compute(1.0, 1.0, 0.9, 15, 20, 64), honest, equal_nan=True)  # rewritten


# --------------------------------------------------------------------------- 10: messages


def test_ctrl_c_during_training_saves_the_update_in_progress(tmp_path, monkeypatch):
    spec = write(tmp_path, TINY_STUDY.replace("checkpoint_every: 1", "checkpoint_every: 1000"))
    plan = make_plan(load_study(spec))
    run = next(run for run in plan.runs if run.architecture.name == "gru" and run.seed == 0)
    real_update = loop.update

    def interrupted_during_first(environment, state, config, total_updates):
        statistics = real_update(environment, state, config, total_updates)
        if state.update == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return statistics

    monkeypatch.setattr(loop, "update", interrupted_during_first)
    with pytest.raises(loop.Preempted, match="stopped by signal SIGINT at update 1/2"):
        jobs.train_job(plan, run.id, tmp_path, progress=False)
    partial = tmp_path / run.directory / jobs.PARTIAL
    assert loop.load_checkpoint(partial, jobs.identity(plan, run))["update"] == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_damaged_probe_table_says_to_delete_it(tmp_path):
    from mesaprobe.analysis.tables import read_probe_table

    table = tmp_path / "adaptation.parquet"
    table.write_bytes(b"PAR1 not really a table PAR1")
    with pytest.raises(ArtifactError) as error:
        read_probe_table(table)
    message = str(error.value)
    assert "\n" not in message and message.endswith("delete it and run snakemake again to make it anew")


def test_a_pickled_checkpoint_is_refused_in_one_line(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"identity": {}, "model": SettingError("x", "y")}, path)  # an object, not data
    with pytest.raises(ArtifactError) as error:
        loop.load_checkpoint(path, {})
    message = str(error.value)
    assert "\n" not in message and "weights_only" not in message
    assert "holds Python objects other than tensors and plain data, which mesaprobe never loads" in message


# --------------------------------------------------------------------------- hostile studies

HOSTILE_STUDIES = sorted(HOSTILE.glob("*.yaml"))


def refused_key(path: Path) -> str:
    """The key a hostile study's second line says it is refused at (empty: the file as a whole)."""
    key = path.read_bytes().split(b"\n", 2)[1].decode().removeprefix("# refused: ")
    return "" if key == "(the file)" else key


def test_there_are_over_a_hundred_hostile_studies():
    assert len(HOSTILE_STUDIES) >= 100


def test_every_hostile_study_is_refused_in_one_line_naming_file_and_key(tmp_path):
    """All of tests/data/hostile through `mesaprobe validate`, in one process that loops."""
    script = textwrap.dedent(
        """\
        import contextlib, io, json, sys
        from mesaprobe import cli
        for path in sys.argv[1:]:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(["validate", path])
            print(json.dumps([path, code, err.getvalue()]), flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, HOSTILE_STUDIES)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = {Path(path): (code, err) for path, code, err in map(json.loads, result.stdout.splitlines())}
    assert set(answers) == set(HOSTILE_STUDIES)
    for path, (code, err) in answers.items():
        lines = err.strip().splitlines()
        key = refused_key(path)
        where = f"mesaprobe: error: {path}: {key}: " if key else f"mesaprobe: error: {path}: "
        assert code == 2 and len(lines) == 1 and lines[0].startswith(where), (path.name, err)
    assert list(tmp_path.iterdir()) == []  # nothing written


#: One hostile study of each class of mistake, for Snakemake's dry run.
DRY_RUN_SAMPLE = [
    "yaml_alias_bomb",
    "yaml_deep_brackets",
    "key_on_boolean",
    "key_duplicate_architecture",
    "grid_million_points",
    "shape_study_long",
    "training_device_cuda_abc",
    "environment_horizon_huge",
    "architecture_layers_huge",
    "probe_fits_no_environment",
    "probe_tasks_pool_without_pool",
]


#: MESAPROBE_ALL_HOSTILE=1 sends every hostile study through the dry run (about 5 s each:
#: Snakemake's own start-up; 143 studies took 12 minutes on 2 cores), not one of each kind.
DRY_RUN_STUDIES = (
    [path.stem for path in HOSTILE_STUDIES]
    if os.environ.get("MESAPROBE_ALL_HOSTILE") == "1"
    else DRY_RUN_SAMPLE
)


@pytest.mark.slow
@pytest.mark.parametrize("name", DRY_RUN_STUDIES)
def test_a_hostile_study_is_refused_by_snakemakes_dry_run(tmp_path, name):
    path = HOSTILE / f"{name}.yaml"
    result = snakemake("-n", "--config", f"spec={path}", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("mesaprobe: error:")]
    key = refused_key(path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith(f"mesaprobe: error: {path}: {key}"), errors
    assert [entry.name for entry in tmp_path.iterdir()] in ([], [".snakemake"])
