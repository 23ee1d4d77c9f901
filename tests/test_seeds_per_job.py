"""Several seeds of a run trained in one process: each seed gets what it gets trained alone."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
import torch

from mesaprobe import jobs
from mesaprobe.errors import UserError
from mesaprobe.manifests import TrainingManifest
from mesaprobe.seeding import SeedGenerators, make_generator, uniform
from mesaprobe.settings import SpecError
from mesaprobe.study import load_study, make_plan
from mesaprobe.train import loop
from tests.conftest import preempted_during
from tests.test_pipeline import snakemake

STUDY = """\
study: seeds
seeds: [0, 1, 2]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8}
  pooled: {family: bernoulli_bandit, arms: 3, horizon: 6, task_pool: 4}
  bandit_ppo:
    family: bernoulli_bandit
    arms: 2
    horizon: 8
    training: {algorithm: ppo, ppo_epochs: 2, ppo_minibatches: 2}
  secret: {family: commitment, bits: 2, function: xor_mask, noise: private}
  markov: {family: markov, horizon: 8, training: {algorithm: predict}}
  regression: {family: linear_regression, dimension: 3, horizon: 6, training: {algorithm: regress}}
architectures:
  gru: {family: gru, hidden: 8}
  lstm: {family: lstm, hidden: 8, layers: 2}
  transformer: {family: transformer, d_model: 8, layers: 2, heads: 2}
  memoryless: {family: memoryless, hidden: 8}
training: {env_steps: 512, batch: 16, checkpoint_every: 1, seeds_per_job: 3}
"""

#: (environment, architecture) pairs trained both ways: every algorithm and family, a task pool
#: (one per seed), private inputs (the Transformer's output head) and a two-layer LSTM.
CASES = [
    ("bandit2", "gru"),
    ("bandit2", "transformer"),
    ("pooled", "memoryless"),
    ("bandit_ppo", "lstm"),
    ("secret", "transformer"),
    ("markov", "lstm"),
    ("regression", "transformer"),
]


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "specs" / "seeds.yaml"
    path.parent.mkdir()
    path.write_text(STUDY)
    return make_plan(load_study(path))


def seeds_of(plan, environment: str, architecture: str) -> list:
    return sorted(
        (r for r in plan.runs if r.environment.name == environment and r.architecture.name == architecture),
        key=lambda run: run.seed,
    )


def test_seed_generators_draw_each_seeds_own_numbers():
    generators = SeedGenerators(make_generator("test", seed) for seed in range(3))
    together = uniform((6, 2), generators, "cpu")
    for index, seed in enumerate(range(3)):
        alone = torch.rand((2, 2), generator=make_generator("test", seed))
        assert torch.equal(together[2 * index : 2 * index + 2], alone)
    with pytest.raises(ValueError, match="do not split"):
        uniform((4,), generators, "cpu")


@pytest.mark.parametrize(("environment", "architecture"), CASES)
def test_seeds_trained_together_match_seeds_trained_alone(tmp_path, plan, environment, architecture):
    runs = seeds_of(plan, environment, architecture)
    assert [group for group in plan.seed_groups if group[0] in runs] == [tuple(runs)]
    together = jobs.train_seeds_job(plan, [run.id for run in runs], tmp_path / "together", progress=False)
    for run, path in zip(runs, together, strict=True):
        alone = torch.load(
            jobs.train_job(plan, run.id, tmp_path / "alone", progress=False), weights_only=True
        )
        stacked = torch.load(path, weights_only=True)
        assert stacked["identity"] == alone["identity"] and stacked["update"] == alone["update"] >= 4
        # Every seed drew exactly its own random numbers: the generators end in the same state.
        assert torch.equal(stacked["task_generator"], alone["task_generator"])
        assert torch.equal(stacked["action_generator"], alone["action_generator"])
        # The arithmetic differs only in the order of floating-point reductions.
        assert list(stacked["model"]) == list(alone["model"])
        for name, tensor in alone["model"].items():
            torch.testing.assert_close(stacked["model"][name], tensor, atol=1e-5, rtol=1e-4, msg=name)
        for key, state in alone["optimizer"]["state"].items():
            for name, value in state.items():
                torch.testing.assert_close(
                    stacked["optimizer"]["state"][key][name], value, atol=1e-6, rtol=1e-3
                )
        for mine, theirs in zip(stacked["history"], alone["history"], strict=True):
            assert mine.keys() == theirs.keys()
            for key, value in theirs.items():
                assert mine[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
        manifest = TrainingManifest.read(tmp_path / "together" / run.directory / jobs.TRAIN_MANIFEST)
        assert manifest.seeds_in_job == 3
        assert manifest.job_env_steps_per_second == pytest.approx(3 * manifest.env_steps_per_second)
    # The seeds are different models, not copies.
    first, second = (torch.load(path, weights_only=True)["model"] for path in together[:2])
    assert not all(torch.equal(first[name], second[name]) for name in first)


def test_a_preempted_group_resumes_to_the_same_weights(tmp_path, plan, monkeypatch):
    runs = seeds_of(plan, "bandit2", "gru")
    ids = [run.id for run in runs]
    whole = [
        torch.load(p, weights_only=True)
        for p in jobs.train_seeds_job(plan, ids, tmp_path / "whole", progress=False)
    ]
    with preempted_during(monkeypatch, 1):
        with pytest.raises(loop.Preempted, match="other seeds"):
            jobs.train_seeds_job(plan, ids, tmp_path / "split", progress=False)
        partials = [tmp_path / "split" / run.directory / jobs.PARTIAL for run in runs]
        assert [torch.load(p, weights_only=True)["update"] for p in partials] == [2, 2, 2]
    resumed = [
        torch.load(p, weights_only=True)
        for p in jobs.train_seeds_job(plan, ids, tmp_path / "split", progress=False)
    ]
    for before, after in zip(whole, resumed, strict=True):
        for name, tensor in before["model"].items():
            assert torch.equal(tensor, after["model"][name]), name
        assert before["history"] == after["history"]
    assert not any(partial.exists() for partial in partials)


def test_seeds_stopped_at_different_updates_resume_alone(tmp_path, plan, monkeypatch):
    runs = seeds_of(plan, "bandit2", "memoryless")
    with preempted_during(monkeypatch, 0), pytest.raises(loop.Preempted):
        jobs.train_job(plan, runs[0].id, tmp_path, progress=False)  # seed 0 alone, stopped at update 1
    alone = torch.load(
        jobs.train_job(plan, runs[0].id, tmp_path / "alone", progress=False), weights_only=True
    )
    paths = jobs.train_seeds_job(plan, [run.id for run in runs], tmp_path, progress=False)
    resumed = torch.load(paths[0], weights_only=True)
    for name, tensor in alone["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name


def test_runs_of_different_settings_are_not_trained_together(plan, tmp_path):
    gru, lstm = seeds_of(plan, "bandit2", "gru")[0], seeds_of(plan, "bandit2", "lstm")[1]
    with pytest.raises(UserError, match="differ by more than their seed"):
        jobs.train_seeds_job(plan, [gru.id, lstm.id], tmp_path, progress=False)
    with pytest.raises(UserError, match="named twice"):
        jobs.train_seeds_job(plan, [gru.id, gru.id], tmp_path, progress=False)


def test_seeds_per_job_groups_seeds_and_leaves_ids_alone(tmp_path, plan):
    alone = make_plan(
        load_study(write(tmp_path / "alone.yaml", STUDY.replace("seeds_per_job: 3", "seeds_per_job: 1")))
    )
    pairs = make_plan(
        load_study(write(tmp_path / "pairs.yaml", STUDY.replace("seeds_per_job: 3", "seeds_per_job: 2")))
    )
    assert [run.id for run in alone.runs] == [run.id for run in plan.runs] == [run.id for run in pairs.runs]
    assert {len(group) for group in alone.seed_groups} == {1}
    assert sorted(len(group) for group in pairs.seed_groups)[:3] == [1, 1, 1]
    for group in pairs.seed_groups:
        assert [run.seed for run in group] in ([0, 1], [2])
    auto = make_plan(
        load_study(write(tmp_path / "auto.yaml", STUDY.replace("seeds_per_job: 3", "device: cpu")))
    )
    assert {len(group) for group in auto.seed_groups} == {1}  # auto on a CPU: one seed per job
    default = make_plan(
        load_study(write(tmp_path / "default.yaml", STUDY.replace("seeds_per_job: 3", "device: auto")))
    )
    assert {len(group) for group in default.seed_groups} == {1}  # whatever GPUs this machine has
    gpu = make_plan(
        load_study(write(tmp_path / "gpu.yaml", STUDY.replace("seeds_per_job: 3", "device: cuda")))
    )
    assert {len(group) for group in gpu.seed_groups} == {3}  # auto on a GPU: up to 8


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("seeds_per_job: 0", "training.seeds_per_job: expected at least 1, got 0"),
        ("seeds_per_job: many", "training.seeds_per_job"),
    ],
)
def test_bad_seeds_per_job_is_one_clear_error(tmp_path, setting, message):
    path = write(tmp_path / "bad.yaml", STUDY.replace("seeds_per_job: 3", setting))
    with pytest.raises(SpecError, match=message):
        make_plan(load_study(path))


def test_reptile_trains_one_seed_per_job(tmp_path):
    study = textwrap.dedent("""\
        study: meta
        environments:
          bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8}
        architectures:
          memoryless: {family: memoryless, hidden: 8}
        training: {algorithm: reptile, seeds_per_job: 2}
        """)
    with pytest.raises(SpecError, match="reptile trains one seed per job"):
        make_plan(load_study(write(tmp_path / "meta.yaml", study)))


def test_the_command_line_trains_seeds_together_and_the_plan_shows_them(tmp_path):
    spec = write(tmp_path / "seeds.yaml", STUDY)
    plan = make_plan(load_study(spec))
    runs = seeds_of(plan, "bandit2", "memoryless")

    def mesaprobe(*arguments):
        return subprocess.run(
            [sys.executable, "-m", "mesaprobe", *arguments], capture_output=True, text=True, timeout=300
        )

    listed = mesaprobe("plan", str(spec))
    assert listed.returncode == 0, listed.stderr
    assert f"train {' '.join(run.id for run in runs)}  (seeds trained in one job)" in listed.stdout
    trained = mesaprobe(
        "train", str(spec), *(f"--run={run.id}" for run in runs), "--quiet", "--results-root", str(tmp_path)
    )
    assert trained.returncode == 0, trained.stderr
    printed = trained.stdout.split()
    assert printed == [str(tmp_path / "seeds" / run.directory / jobs.CHECKPOINT) for run in runs]
    assert all(Path(path).exists() for path in printed)
    other = seeds_of(plan, "bandit2", "gru")[0]
    mixed = mesaprobe(
        "train", str(spec), f"--run={runs[0].id}", f"--run={other.id}", "--results-root", str(tmp_path)
    )
    assert mixed.returncode == 2 and "differ by more than their seed" in mixed.stderr
    assert len(mixed.stderr.strip().splitlines()) == 1


def test_a_study_with_seeds_per_job_runs_through_snakemake(tmp_path):
    spec = write(
        tmp_path / "pair.yaml",
        textwrap.dedent("""\
            study: pair
            seeds: [0, 1, 2]
            environments:
              bandit2: {family: bernoulli_bandit, arms: 2, horizon: 6}
            architectures:
              gru: {family: gru, hidden: 8}
            training: {env_steps: 192, batch: 16, seeds_per_job: 2}
            probes:
              adaptation: {kind: adaptation, episodes: 30}
            baselines: [random]
            """),
    )
    result = snakemake("--cores", "2", "--config", f"spec={spec}", "results_root=results", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Seeds 0 and 1 in one training job, seed 2 alone.
    log = result.stdout + result.stderr
    assert re.search(r"^train_seeds_0\s+1$", log, re.MULTILINE) and re.search(
        r"^train\s+1$", log, re.MULTILINE
    )
    summary = pl.read_csv(tmp_path / "results" / "pair" / "tables" / "summary.csv")
    assert set(summary.filter(pl.col("agent") == "gru")["seeds"]) == {3}


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@contextlib.contextmanager
def no_values_read_back():
    """Every way Python code reads a tensor's value into the host (``.item()``, ``bool()``,
    ``float()``, ``.tolist()``, ``.cpu()``, ...) raises inside the block: on a GPU each would
    wait for the device."""
    names = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")
    saved = {name: getattr(torch.Tensor, name) for name in names}

    def refuse(name):
        def method(self, *arguments, **keywords):
            raise AssertionError(f"Tensor.{name} called")

        return method

    for name in names:
        setattr(torch.Tensor, name, refuse(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


ACTING = [
    ("bernoulli_bandit", {"arms": 3, "horizon": 10}),
    ("commitment", {"bits": 2, "function": "xor_mask", "noise": "private"}),
]


def acting_setup(family: str, environment: str, settings: dict, seeds: int, device: str):
    """An environment (several seeds: theirs together), a model (stacked), 4 tasks per seed and
    the generators of ``play``."""
    from mesaprobe.envs import ENVIRONMENTS
    from mesaprobe.models import ARCHITECTURES, build_model
    from mesaprobe.models.stacked import stack_models
    from mesaprobe.train.stacked import SeedEnvironments

    family_of = ENVIRONMENTS.get(environment)
    alone = family_of(family_of.Config(**settings))
    config = ARCHITECTURES.get(family).Config()
    models = [
        build_model(family, config, alone.observation_size, jobs.output_size(alone), alone.private_size)
        for _ in range(seeds)
    ]
    tasks_generators = SeedGenerators(make_generator("tasks", seed, device=device) for seed in range(seeds))
    action_generators = SeedGenerators(
        make_generator("actions", seed, device=device) for seed in range(seeds)
    )
    if seeds == 1:
        played, model = alone, models[0]
        tasks_generator, action_generator = tasks_generators[0], action_generators[0]
    else:
        played, model = SeedEnvironments([alone] * seeds), stack_models(models)
        tasks_generator, action_generator = tasks_generators, action_generators
    tasks = played.sample_tasks(4, tasks_generator, device)
    return played, model.to(device), tasks, tasks_generator, action_generator


@pytest.mark.parametrize("family", ["gru", "lstm", "transformer", "memoryless"])
@pytest.mark.parametrize(("environment", "settings"), ACTING)
@pytest.mark.parametrize("seeds", [1, 3])
def test_acting_never_reads_a_value_back_to_python(family, environment, settings, seeds):
    """The step loop keeps every value on the device (what the CUDA test below checks with torch's
    sync debug mode, checked here on the CPU at the Python level)."""
    from mesaprobe.agents import ModelAgent
    from mesaprobe.train.rollout import play

    played, model, tasks, tasks_generator, action_generator = acting_setup(
        family, environment, settings, seeds, "cpu"
    )
    with torch.no_grad(), no_values_read_back():
        trajectory = play(
            played, tasks, ModelAgent(model, played.action_count), tasks_generator, action_generator
        )
    assert trajectory.actions.shape == (4 * seeds, played.horizon)
    with no_values_read_back(), pytest.raises(AssertionError, match=r"Tensor\.item called"):
        trajectory.rewards.sum().item()  # the check itself works


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("family", ["gru", "lstm", "transformer", "memoryless"])
@pytest.mark.parametrize(("environment", "settings"), ACTING)
@pytest.mark.parametrize("seeds", [1, 4])
def test_acting_never_waits_for_the_gpu(family, environment, settings, seeds):
    """No host-device synchronisation inside the step loop (torch's sync debug mode raises on one)."""
    from mesaprobe.agents import ModelAgent
    from mesaprobe.train.rollout import play

    played, model, tasks, tasks_generator, action_generator = acting_setup(
        family, environment, settings, seeds, "cuda"
    )
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            play(played, tasks, ModelAgent(model, played.action_count), tasks_generator, action_generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_cuda
def test_seeds_trained_together_on_a_gpu_match_seeds_trained_alone_there(tmp_path):
    cuda = make_plan(
        load_study(write(tmp_path / "cuda.yaml", STUDY.replace("seeds_per_job: 3", "device: cuda")))
    )
    runs = seeds_of(cuda, "bandit2", "transformer")
    together = jobs.train_seeds_job(cuda, [run.id for run in runs], tmp_path / "together", progress=False)
    for run, path in zip(runs, together, strict=True):
        alone = torch.load(
            jobs.train_job(cuda, run.id, tmp_path / "alone", progress=False), weights_only=True
        )
        stacked = torch.load(path, weights_only=True)
        assert torch.equal(stacked["action_generator"], alone["action_generator"])
        for name, tensor in alone["model"].items():
            torch.testing.assert_close(stacked["model"][name], tensor, atol=1e-4, rtol=1e-3, msg=name)
