"""Training, freezing and probing a run: exact losses, resume, hashes, determinism."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from mesaprobe import jobs
from mesaprobe.errors import ArtifactError, FrozenModelChanged
from mesaprobe.frozen import load_frozen
from mesaprobe.manifests import TrainingManifest
from mesaprobe.study import load_study, make_plan
from mesaprobe.train import loop
from mesaprobe.train.losses import actor_critic_loss, generalized_advantages
from tests.conftest import preempted_during


def test_generalized_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 0.75]])
    gamma, lam = 0.9, 0.5
    # TD errors: d2 = 1 - 0.75 = 0.25 (episode ends); d1 = 0 + 0.9*0.75 - 0.25 = 0.425;
    # d0 = 1 + 0.9*0.25 - 0.5 = 0.725.  A2 = d2, A1 = d1 + 0.45*A2, A0 = d0 + 0.45*A1.
    a2 = 0.25
    a1 = 0.425 + 0.45 * a2
    a0 = 0.725 + 0.45 * a1
    advantages, returns = generalized_advantages(rewards, values, gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor([[a0, a1, a2]]))
    torch.testing.assert_close(returns, advantages + values)


def test_monte_carlo_limit_is_discounted_return():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    _, returns = generalized_advantages(rewards, torch.zeros(1, 3), gamma=0.5, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([[1 + 1 + 0.75, 2 + 1.5, 3.0]]))


def test_actor_critic_loss_parts():
    logits = torch.log(torch.tensor([[[0.25, 0.75, 0.0]]]).clamp_min(1e-30))
    outputs = torch.cat([logits[..., :2], torch.tensor([[[2.0]]])], dim=-1)  # value 2
    parts = actor_critic_loss(
        outputs, torch.tensor([[1]]), torch.tensor([[4.0]]), torch.tensor([[3.0]]), 0.5, 0.1
    )
    entropy = -(0.25 * torch.log(torch.tensor(0.25)) + 0.75 * torch.log(torch.tensor(0.75)))
    torch.testing.assert_close(parts.policy, -4.0 * torch.log(torch.tensor(0.75)))
    torch.testing.assert_close(parts.value, torch.tensor(0.5))
    torch.testing.assert_close(parts.entropy, entropy)
    torch.testing.assert_close(parts.total, parts.policy + 0.5 * parts.value - 0.1 * entropy)


@pytest.fixture
def tiny_plan(tiny_spec):
    return make_plan(load_study(tiny_spec))


def run_of(plan, name: str, seed: int = 0):
    return next(run for run in plan.runs if run.architecture.name == name and run.seed == seed)


def state_of(checkpoint_path):
    return torch.load(checkpoint_path, weights_only=True)


@pytest.mark.parametrize("architecture", ["gru", "transformer", "memoryless"])
def test_train_writes_checkpoint_and_manifest(tmp_path, tiny_plan, architecture):
    run = run_of(tiny_plan, architecture)
    checkpoint = jobs.train_job(tiny_plan, run.id, tmp_path, progress=False)
    manifest = TrainingManifest.read(tmp_path / run.directory / jobs.TRAIN_MANIFEST)
    assert checkpoint.exists() and not (tmp_path / run.directory / jobs.PARTIAL).exists()
    assert manifest.env_steps == 256 and manifest.updates == 2
    assert manifest.env_steps_per_second > 0 and manifest.wall_seconds > 0
    assert manifest.provenance.device == "cpu" and manifest.provenance.versions["mesaprobe"]
    assert set(manifest.final_metrics) == {"reward_per_step", "regret_per_step", "entropy", "value_loss"}


def test_training_is_deterministic_and_seeds_differ(tmp_path, tiny_plan):
    run = run_of(tiny_plan, "gru")
    first = state_of(jobs.train_job(tiny_plan, run.id, tmp_path / "a", progress=False))
    second = state_of(jobs.train_job(tiny_plan, run.id, tmp_path / "b", progress=False))
    other_seed = state_of(
        jobs.train_job(tiny_plan, run_of(tiny_plan, "gru", 1).id, tmp_path / "c", progress=False)
    )
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name])
    assert not all(torch.equal(t, other_seed["model"][n]) for n, t in first["model"].items())


def test_preempted_training_resumes_to_the_same_weights(tmp_path, tiny_plan, monkeypatch):
    run = run_of(tiny_plan, "gru")
    uninterrupted = state_of(jobs.train_job(tiny_plan, run.id, tmp_path / "whole", progress=False))

    with preempted_during(monkeypatch, 0):
        with pytest.raises(loop.Preempted, match="rerun to resume"):
            jobs.train_job(tiny_plan, run.id, tmp_path / "split", progress=False)
        partial = tmp_path / "split" / run.directory / jobs.PARTIAL
        assert partial.exists() and not (tmp_path / "split" / run.directory / jobs.CHECKPOINT).exists()
        assert state_of(partial)["update"] == 1
    resumed = state_of(jobs.train_job(tiny_plan, run.id, tmp_path / "split", progress=False))
    assert resumed["update"] == 2 and resumed["env_steps"] == uninterrupted["env_steps"]
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert [h["reward_per_step"] for h in resumed["history"]] == [
        h["reward_per_step"] for h in uninterrupted["history"]
    ]


def test_checkpoint_of_other_settings_or_truncated_is_refused(tmp_path, tiny_plan):
    gru, memoryless = run_of(tiny_plan, "gru"), run_of(tiny_plan, "memoryless")
    jobs.train_job(tiny_plan, memoryless.id, tmp_path, progress=False)
    foreign = tmp_path / memoryless.directory / jobs.CHECKPOINT
    with pytest.raises(ArtifactError, match="different run settings"):
        loop.load_checkpoint(foreign, jobs.identity(tiny_plan, gru))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(foreign.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="unreadable checkpoint"):
        loop.load_checkpoint(truncated, jobs.identity(tiny_plan, memoryless))


@pytest.fixture
def frozen_run(tmp_path, tiny_plan):
    run = run_of(tiny_plan, "gru")
    jobs.train_job(tiny_plan, run.id, tmp_path, progress=False)
    manifest = jobs.freeze_job(tiny_plan, run.id, tmp_path)
    return run, manifest


def test_altered_weights_are_detected(frozen_run):
    _, manifest_path = frozen_run
    weights = manifest_path.parent / "frozen.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 differs"):
        load_frozen(manifest_path)


def test_probe_that_changes_weights_is_caught(frozen_run):
    _, manifest_path = frozen_run
    frozen = load_frozen(manifest_path)
    with torch.no_grad():
        next(frozen.model.parameters()).add_(1e-3)
    with pytest.raises(FrozenModelChanged):
        frozen.check_unchanged()


def test_probe_and_baselines_share_held_out_tasks(frozen_run, tmp_path, tiny_plan):
    run, _ = frozen_run
    first = pl.read_parquet(jobs.probe_job(tiny_plan, run.id, "adaptation", tmp_path, "cpu"))
    again = pl.read_parquet(jobs.probe_job(tiny_plan, run.id, "adaptation", tmp_path, "cpu"))
    assert first.equals(again)
    assert first.height == 40 * 8 * 3 and set(first["metric"]) == {
        "expected_reward",
        "regret",
        "cumulative_regret",
    }
    regret = first.filter(pl.col("metric") == "regret")["value"]
    assert regret.min() >= 0 and regret.max() <= 1
    # The best arm's value is task-specific: equal expected_reward + regret across agents
    # on every (episode, step) shows that the baseline faced the very same tasks.
    baseline = pl.read_parquet(jobs.baseline_job(tiny_plan, "bandit2", "adaptation", "random", 0, tmp_path))

    def best(frame):
        wide = frame.pivot(on="metric", index=["episode", "step"], values="value").sort("episode", "step")
        return (wide["expected_reward"] + wide["regret"]).to_list()

    assert best(first) == pytest.approx(best(baseline), abs=1e-12)


def test_ppo_surrogate_has_the_a2c_gradient_at_ratio_one():
    torch.manual_seed(0)
    outputs = torch.randn(3, 4, 3, requires_grad=True)
    actions = torch.randint(0, 2, (3, 4))
    advantages, returns = torch.randn(3, 4), torch.randn(3, 4)
    a2c_loss = actor_critic_loss(outputs, actions, advantages, returns, 0.5, 0.01).total
    (a2c_gradient,) = torch.autograd.grad(a2c_loss, outputs)
    with torch.no_grad():
        old = torch.log_softmax(outputs[..., :2], -1).gather(-1, actions[..., None]).squeeze(-1)
    ppo_loss = actor_critic_loss(outputs, actions, advantages, returns, 0.5, 0.01, old_log_probs=old).total
    (ppo_gradient,) = torch.autograd.grad(ppo_loss, outputs)
    torch.testing.assert_close(ppo_gradient, a2c_gradient)


def test_ppo_trains_and_resumes_like_a2c(tmp_path, tiny_spec):
    text = tiny_spec.read_text().replace("training: {", "training: {algorithm: ppo, ppo_epochs: 2, ")
    tiny_spec.write_text(text)
    plan = make_plan(load_study(tiny_spec))
    run = run_of(plan, "gru")
    assert run.training.algorithm == "ppo"
    first = state_of(jobs.train_job(plan, run.id, tmp_path / "a", progress=False))
    second = state_of(jobs.train_job(plan, run.id, tmp_path / "b", progress=False))
    assert first["update"] == 2 and all(torch.equal(t, second["model"][n]) for n, t in first["model"].items())
