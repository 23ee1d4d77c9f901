"""Reptile: the batched inner loop, the meta-step by hand, training with resume, spec checks."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import torch
from torch.func import functional_call, vmap

from mesaprobe import jobs
from mesaprobe.agents import ModelAgent, sample_categorical
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.envs.bernoulli_bandit import BernoulliBanditConfig
from mesaprobe.envs.task_pool import select_tasks
from mesaprobe.errors import SpecError
from mesaprobe.models import build_model
from mesaprobe.models.memoryless import MemorylessConfig
from mesaprobe.models.recurrent import RecurrentConfig
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError
from mesaprobe.study import load_study, make_plan
from mesaprobe.train import loop
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.losses import actor_critic_loss, generalized_advantages, normalized
from mesaprobe.train.meta import adapt, memoryless_forward, reptile_update, task_weights
from mesaprobe.train.rollout import play
from mesaprobe.train.state import TrainingState
from tests.conftest import preempted_during

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def bandit(arms: int = 3, horizon: int = 6, prior: str = "uniform"):
    return ENVIRONMENTS.get("bernoulli_bandit")(
        BernoulliBanditConfig(arms=arms, horizon=horizon, prior=prior)
    )


def memoryless(environment, hidden: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(
        "memoryless",
        MemorylessConfig(hidden=hidden),
        environment.observation_size,
        environment.action_count + 1,
    )


class PerTaskAgent:
    """Each task's episodes acted by its own copy of the model, one task at a time."""

    def __init__(self, copies, episodes_per_task: int, actions: int):
        self.copies, self.episodes_per_task, self.actions = copies, episodes_per_task, actions

    def initial_state(self, batch, horizon, device):
        return None

    def act(self, state, observation, generator):
        rows = self.episodes_per_task
        logits = torch.cat(
            [
                model.step(None, observation[i * rows : (i + 1) * rows])[1]
                for i, model in enumerate(self.copies)
            ]
        )[:, : self.actions]
        return None, sample_categorical(logits, generator)


def per_task_adapt(model, environment, tasks, config, entropy_coef, luck_generator, action_generator):
    """The inner loop written plainly: a copy of the model and a torch.optim.SGD per task."""
    copies = [copy.deepcopy(model) for _ in range(tasks.batch)]
    optimizers = [torch.optim.SGD(one.parameters(), lr=config.inner_lr) for one in copies]
    rows, actions = config.inner_episodes, environment.action_count
    episode_tasks = select_tasks(tasks, torch.arange(tasks.batch).repeat_interleave(rows))
    trajectories = []
    for _ in range(config.inner_steps):
        agent = PerTaskAgent(copies, rows, actions)
        with torch.no_grad():
            trajectory = play(environment, episode_tasks, agent, luck_generator, action_generator)
        for i, (one, optimizer) in enumerate(zip(copies, optimizers, strict=True)):
            mine = slice(i * rows, (i + 1) * rows)
            outputs = one(trajectory.observations[mine])
            advantages, returns = generalized_advantages(
                trajectory.rewards[mine], outputs[..., actions].detach(), config.gamma, config.gae_lambda
            )
            loss = actor_critic_loss(
                outputs,
                trajectory.actions[mine],
                normalized(advantages),
                returns,
                config.value_coef,
                entropy_coef,
            ).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        trajectories.append(trajectory)
    return copies, trajectories


def test_batched_inner_loop_equals_a_per_task_loop_with_sgd(float64):
    environment = bandit()
    model = memoryless(environment)
    config = TrainingConfig(algorithm="reptile", inner_steps=3, inner_episodes=2, inner_lr=0.5)
    tasks = environment.sample_tasks(2, make_generator("tasks"), "cpu")
    adapted, trajectories, statistics = adapt(
        model, environment, tasks, config, 0.01, make_generator("luck"), make_generator("act")
    )
    copies, expected = per_task_adapt(
        model, environment, tasks, config, 0.01, make_generator("luck"), make_generator("act")
    )
    for batched, plain in zip(trajectories, expected, strict=True):
        assert torch.equal(batched.actions, plain.actions)  # same weights, so the same sampled pulls
        assert torch.equal(batched.rewards, plain.rewards)
    for i, one in enumerate(copies):
        for name, parameter in one.named_parameters():
            torch.testing.assert_close(adapted[name][i], parameter, rtol=0, atol=1e-10)
            assert not torch.allclose(parameter, dict(model.named_parameters())[name])  # it did adapt
    assert set(statistics) == {"entropy", "value_loss"}


def test_batched_acting_forward_is_the_model_forward(float64):
    environment = bandit()
    model = memoryless(environment, hidden=5)
    weights = {name: w + 0.1 * torch.randn_like(w) for name, w in task_weights(model, 4).items()}
    xs = torch.randn(4, 3, environment.observation_size)  # (N, R, I)
    expected = vmap(lambda one, x: functional_call(model, one, (x,)))(weights, xs)
    torch.testing.assert_close(memoryless_forward(model, weights, xs), expected, rtol=0, atol=1e-12)


def test_one_inner_step_meta_update_by_hand(float64):
    """inner_steps = 1 and SGD(lr = epsilon): theta <- theta + epsilon (mean_i theta_1,i - theta)."""
    environment = bandit()
    model = memoryless(environment)
    theta = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    config = TrainingConfig(
        algorithm="reptile", batch=3, inner_steps=1, inner_episodes=2, inner_lr=0.7, lr=0.4, entropy_coef=0.05
    )
    state = TrainingState(
        model, torch.optim.SGD(model.parameters(), lr=config.lr), make_generator("t"), make_generator("a")
    )
    statistics = reptile_update(environment, state, config, total_updates=10)

    # By hand: the same draws (update 0: learning rate lr, entropy weight entropy_coef), one
    # episode batch played with theta, then each task's own A2C gradient step from theta.
    reference = memoryless(environment)
    reference.load_state_dict(theta)
    task_generator, action_generator = make_generator("t"), make_generator("a")
    tasks = environment.sample_tasks(3, task_generator, "cpu")
    episode_tasks = select_tasks(tasks, torch.tensor([0, 0, 1, 1, 2, 2]))
    with torch.no_grad():
        agent = ModelAgent(reference, environment.action_count)
        trajectory = play(environment, episode_tasks, agent, task_generator, action_generator)
    adapted = []
    for i in range(3):
        rows = slice(2 * i, 2 * i + 2)
        outputs = reference(trajectory.observations[rows])
        advantages, returns = generalized_advantages(
            trajectory.rewards[rows], outputs[..., 3].detach(), config.gamma, config.gae_lambda
        )
        loss = actor_critic_loss(
            outputs, trajectory.actions[rows], normalized(advantages), returns, config.value_coef, 0.05
        ).total
        gradients = torch.autograd.grad(loss, list(reference.parameters()))
        names = [name for name, _ in reference.named_parameters()]
        adapted.append({name: theta[name] - 0.7 * g for name, g in zip(names, gradients, strict=True)})
    for name, parameter in model.named_parameters():
        mean_adapted = sum(one[name] for one in adapted) / 3
        expected = theta[name] + 0.4 * (mean_adapted - theta[name])
        torch.testing.assert_close(parameter.detach(), expected, rtol=0, atol=1e-12)
    reward = trajectory.expected_rewards.mean()
    assert float(statistics["reward_per_step_before_adaptation"]) == pytest.approx(float(reward), abs=1e-12)
    assert float(statistics["reward_per_step_after_adaptation"]) == pytest.approx(float(reward), abs=1e-12)
    assert set(statistics) >= {"reward_per_step", "regret_per_step", "entropy", "value_loss"}


REPTILE_STUDY = """\
study: reptile
seeds: [0]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8, prior: dependent_easy}
architectures:
  memoryless: {family: memoryless, hidden: 8}
training:
  algorithm: reptile
  env_steps: 20000
  batch: 16
  inner_steps: 2
  lr: 0.01
  checkpoint_every: 50
probes:
  adaptation: {kind: adaptation, episodes: 40, batch: 16}
baselines: [random]
"""


def after_adaptation_reward(model, environment, config) -> float:
    """Reward per pull of the last inner step on 2000 held-out tasks (fixed draws)."""
    tasks = environment.sample_tasks(2000, make_generator("heldout-tasks"), "cpu")
    _, trajectories, _ = adapt(
        model, environment, tasks, config, 0.0, make_generator("heldout-luck"), make_generator("heldout-act")
    )
    return float(trajectories[-1].expected_rewards.mean())


def test_reptile_trains_resumes_and_improves_the_adapted_reward(tmp_path, monkeypatch):
    spec = tmp_path / "reptile.yaml"
    spec.write_text(textwrap.dedent(REPTILE_STUDY))
    plan = make_plan(load_study(spec))
    (run,) = plan.runs
    whole = torch.load(jobs.train_job(plan, run.id, tmp_path / "whole", progress=False), weights_only=True)
    per_update = 16 * 2 * 8  # tasks x inner steps x pulls: every pull counts
    assert whole["update"] == 79 and whole["env_steps"] == 79 * per_update >= 20000
    history = whole["history"][-1]
    assert {"reward_per_step_before_adaptation", "reward_per_step_after_adaptation"} <= set(history)

    with preempted_during(monkeypatch, 0), pytest.raises(loop.Preempted):
        jobs.train_job(plan, run.id, tmp_path / "split", progress=False)
    resumed = torch.load(jobs.train_job(plan, run.id, tmp_path / "split", progress=False), weights_only=True)
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert resumed["history"] == whole["history"]

    # Meta-training raises the reward after adaptation: measured 0.55-0.58 at initialisation
    # and 0.65-0.76 after these 20k steps for study seeds 0-4 (gains 0.09-0.18).  On the same
    # 2000 held-out tasks and draws, the standard error of either mean is at most
    # 0.4 / sqrt(2000) = 0.009 (a task's mean reward lies in [0.1, 0.9]), so a required gain
    # of 0.03 is over three standard errors and a third of the smallest gain seen.
    environment = jobs.make_environment(run.environment, run.seed)
    initial = jobs.new_model(run, environment)
    trained = jobs.new_model(run, environment)
    trained.load_state_dict(whole["model"])
    assert after_adaptation_reward(trained, environment, run.training) > (
        after_adaptation_reward(initial, environment, run.training) + 0.03
    )


ENVIRONMENT_LINE = "bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8, prior: dependent_easy}"
ARCHITECTURE_LINE = "memoryless: {family: memoryless, hidden: 8}"


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        (
            lambda study: study.replace(ARCHITECTURE_LINE, "gru: {family: gru, hidden: 8}"),
            "training.algorithm",
            "reptile trains only the memoryless architecture; architecture 'gru' is gru",
        ),
        (
            lambda study: study.replace("algorithm: reptile", "algorithm: a2c").replace(
                ARCHITECTURE_LINE,
                f"{ARCHITECTURE_LINE}\n  gru: {{family: gru, training: {{algorithm: reptile}}}}",
            ),
            "architectures.gru.training.algorithm",
            "reptile trains only the memoryless architecture; architecture 'gru' is gru",
        ),
        (
            lambda study: study.replace(ENVIRONMENT_LINE, "markov: {family: markov, horizon: 8}"),
            "training.algorithm",
            "environment 'markov' (prediction) is trained with one of: predict; got 'reptile'",
        ),
        (
            lambda study: study.replace("inner_steps: 2", "inner_steps: 0"),
            "training.inner_steps",
            "expected at least 1, got 0",
        ),
        (
            lambda study: study.replace("inner_steps: 2", "inner_lr: -1"),
            "training.inner_lr",
            "expected more than 0, got -1",
        ),
    ],
)
def test_reptile_spec_errors_name_the_key(tmp_path, change, key, expected):
    spec = tmp_path / "reptile.yaml"
    study = change(textwrap.dedent(REPTILE_STUDY)).replace("baselines: [random]", "baselines: []")
    assert study != textwrap.dedent(REPTILE_STUDY).replace("baselines: [random]", "baselines: []")
    spec.write_text(study)
    with pytest.raises(SpecError) as raised:
        make_plan(load_study(spec))
    message = str(raised.value)
    assert f": {key}: " in message and expected in message and "\n" not in message


def test_reptile_update_refuses_other_architectures_and_environments():
    environment = bandit()
    gru = build_model(
        "gru", RecurrentConfig(hidden=4), environment.observation_size, environment.action_count + 1
    )
    config = TrainingConfig(algorithm="reptile", batch=2)
    state = TrainingState(
        gru, torch.optim.SGD(gru.parameters(), lr=0.1), make_generator("t"), make_generator("a")
    )
    with pytest.raises(SettingError, match="algorithm: reptile adapts the weights of a memoryless"):
        reptile_update(environment, state, config, 1)


def test_reptile_settings_leave_existing_run_ids_unchanged(tmp_path):
    # The quickstart's runs as main computed them before the reptile settings existed (their
    # hashes since grown from 8 to 16 digits of the same sha256).
    plan = make_plan(load_study(REPO / "specs" / "quickstart.yaml"))
    ids = [run.id for run in plan.runs]
    assert ids[0] == "bandit2-gru-626bd16842f9e4e3-s0" and "bandit2-memoryless-4f000bce022e035f-s0" in ids
    # A reptile setting away from its default is part of the id again.
    changed = (
        (REPO / "specs" / "quickstart.yaml")
        .read_text()
        .replace("  batch: 64", "  batch: 64\n  inner_lr: 0.5")
    )
    (tmp_path / "changed.yaml").write_text(changed)
    assert make_plan(load_study(tmp_path / "changed.yaml")).runs[0].id != ids[0]
