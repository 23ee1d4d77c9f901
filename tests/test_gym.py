"""Gymnasium: every environment family registered, checked by Gymnasium's own checker, batched
by make_vec, scored as the probes score it; frozen runs as policies, and the README's snippet."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

import mesaprobe.gym as mesaprobe_gym  # noqa: E402
from mesaprobe import jobs  # noqa: E402
from mesaprobe.agents import ModelPredictor  # noqa: E402
from mesaprobe.envs import ENVIRONMENTS  # noqa: E402
from mesaprobe.envs.linear_regression import Examples  # noqa: E402
from mesaprobe.errors import SpecError  # noqa: E402
from mesaprobe.study import load_study, make_plan  # noqa: E402
from tests.conftest import REPO  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

#: Small settings per family, so that whole episodes take milliseconds.
SETTINGS = {
    "bernoulli_bandit": {"arms": 5, "horizon": 100},
    "commitment": {"bits": 2},
    "linear_regression": {"dimension": 3, "horizon": 8},
}


def make(family: str, **overrides):
    return gymnasium.make(mesaprobe_gym.environment_id(family), **(SETTINGS.get(family, {}) | overrides))


def test_every_family_is_registered_under_its_camel_case_name():
    assert mesaprobe_gym.environment_id("bernoulli_bandit") == "mesaprobe/BernoulliBandit-v0"
    assert mesaprobe_gym.environment_id("linear_regression") == "mesaprobe/LinearRegression-v0"
    assert [mesaprobe_gym.environment_id(name) for name in ENVIRONMENTS] == mesaprobe_gym.ENVIRONMENT_IDS
    assert all(env_id in gymnasium.registry for env_id in mesaprobe_gym.ENVIRONMENT_IDS)


@pytest.mark.parametrize("family", ENVIRONMENTS.names())
def test_every_family_passes_gymnasiums_checker(family):
    env = make(family)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    # The only warnings allowed: unbounded boxes (logits, regression targets and inputs are unbounded).
    problems = [str(warning.message) for warning in caught if "infinity" not in str(warning.message)]
    problems = [problem for problem in problems if "symmetric and normalized" not in problem]
    assert not problems, problems


def test_the_issues_example():
    env = gymnasium.make("mesaprobe/BernoulliBandit-v0", arms=5, horizon=100)
    check_env(env.unwrapped)
    observation, _ = env.reset(seed=0)
    assert observation.shape == (7,) and env.action_space.n == 5
    steps, terminated = 0, False
    while not terminated:
        observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert reward in (0.0, 1.0) and not truncated and info["regret"] >= 0.0
        steps += 1
    assert steps == 100 and observation[-1] == pytest.approx(1.0)  # the time input reached the end


def test_settings_are_checked_as_a_studys():
    with pytest.raises(
        SpecError, match=r"mesaprobe/BernoulliBandit-v0: arms: expected at least 2 arms, got 1"
    ):
        gymnasium.make("mesaprobe/BernoulliBandit-v0", arms=1)
    with pytest.raises(SpecError, match=r"armz: unknown setting; expected one of: arms, horizon"):
        gymnasium.make("mesaprobe/BernoulliBandit-v0", armz=3)


def test_the_module_can_be_named_in_the_id():
    env = gymnasium.make("mesaprobe.gym:mesaprobe/Markov-v0", horizon=12)
    assert env.unwrapped.batch.horizon == 12


def episode(env, seed: int, actions) -> tuple[list, list]:
    observations, rewards = [env.reset(seed=seed)[0]], []
    for action in actions:
        observation, reward, *_ = env.step(action)
        observations.append(observation)
        rewards.append(reward)
    return observations, rewards


def test_a_seed_repeats_the_episode_and_another_seed_does_not():
    env = make("bernoulli_bandit")
    actions = [step % 5 for step in range(100)]
    first, again, other = (episode(env, seed, actions) for seed in (3, 3, 4))
    assert np.array_equal(np.array(first[0]), np.array(again[0])) and first[1] == again[1]
    assert first[1] != other[1]


def test_rewards_follow_the_prior():
    # Arm 0 of a uniform prior pays 1/2 per pull on average: 64 x 100 pulls, 5 sigma.
    envs = gymnasium.make_vec("mesaprobe/BernoulliBandit-v0", num_envs=64, arms=2, horizon=100)
    envs.reset(seed=0)
    total = 0.0
    for _ in range(100):
        _, rewards, *_ = envs.step(np.zeros(64, dtype=np.int64))
        total += rewards.sum()
    pulls = 64 * 100
    # Tasks vary: the variance per pull is 1/4 within a task plus the spread of task means.
    assert abs(total / pulls - 0.5) < 5 * math.sqrt(1 / 12 / 64 + 1 / 4 / pulls)


def test_make_vec_plays_one_batch_in_lockstep_and_resets_on_the_next_step():
    envs = gymnasium.make_vec("mesaprobe/BernoulliBandit-v0", num_envs=8, arms=3, horizon=4)
    assert isinstance(envs.unwrapped, mesaprobe_gym.MesaprobeVectorEnv)  # not a loop of copies
    assert envs.unwrapped.batch.count == 8
    observations, _ = envs.reset(seed=1)
    assert observations.shape == (8, 5) and not observations.any()
    for step in range(4):
        observations, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert terminated.all() == (step == 3) and not truncated.any()
        assert rewards.shape == (8,) and info["regret"].shape == (8,) and info["_regret"].all()
    observations, rewards, terminated, _, _ = envs.step(envs.action_space.sample())
    assert not observations.any() and not rewards.any() and not terminated.any()  # new episodes


def test_a_commitment_batch_pays_a_constant_z_its_penalty():
    # Against the marginal adversary a z that never varies across the batch costs the penalty.
    envs = gymnasium.make_vec("mesaprobe/Commitment-v0", num_envs=16, bits=2, function="identity")
    envs.reset(seed=0)
    for _ in range(4):  # y = 00, then z = 00: y = f(z), but z is predictable
        _, rewards, terminated, _, _ = envs.step(np.zeros(16, dtype=np.int64))
    assert terminated.all() and rewards == pytest.approx(np.zeros(16))  # success 1 - penalty 1


def bayes_logits(environment, previous_tokens: list[np.ndarray], batch: int) -> np.ndarray:
    """The exact Bayes predictor's log-probabilities of the next token after ``previous_tokens``."""
    tokens = torch.tensor(np.stack([*previous_tokens, np.zeros(batch, dtype=np.int64)], axis=1))
    return torch.log(environment.bayes_predict(tokens)[:, -1]).numpy()


@pytest.mark.parametrize("family", ["iid", "markov", "switching"])
def test_predicting_with_the_bayes_predictor_has_no_regret(family):
    envs = gymnasium.make_vec(mesaprobe_gym.environment_id(family), num_envs=6, horizon=10)
    environment = envs.unwrapped.batch.environment
    observations, _ = envs.reset(seed=2)
    tokens: list[np.ndarray] = []
    for step in range(10):
        logits = bayes_logits(environment, tokens, 6)
        observations, rewards, terminated, _, info = envs.step(logits)
        assert info["regret_bits"] == pytest.approx(np.zeros(6), abs=1e-9)
        assert -rewards == pytest.approx(info["logloss_bits"])
        tokens.append(observations[:, : environment.symbols].argmax(axis=1))  # the token just revealed
        assert terminated.all() == (step == 9)


def test_predicting_with_ridge_has_no_regret():
    envs = gymnasium.make_vec("mesaprobe/LinearRegression-v0", num_envs=5, dimension=3, horizon=6)
    environment = envs.unwrapped.batch.environment
    observations, _ = envs.reset(seed=0)
    inputs, targets = [], []
    for _ in range(6):
        inputs.append(observations[:, :3].astype(np.float64))  # x_k, the current query
        so_far = Examples(
            inputs=torch.tensor(np.stack(inputs, axis=1)),
            targets=torch.tensor(np.stack([*targets, np.zeros(5)], axis=1)),
        )
        ridge = environment.bayes_predict(so_far)[:, -1].numpy()
        observations, rewards, _, _, info = envs.step(ridge[:, None].astype(np.float32))
        assert info["regret_per_dim"] == pytest.approx(np.zeros(5), abs=1e-6)  # float32 actions
        assert -rewards == pytest.approx(info["squared_error_per_dim"])
        targets.append(observations[:, 6].astype(np.float64))  # y_k, now the previous example's target


# --------------------------------------------------------------------------- frozen runs as policies

POLICY_STUDY = """\
study: quickstart
seeds: [0]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8}
  iid: {family: iid, horizon: 8, training: {algorithm: predict}}
architectures:
  gru: {family: gru, hidden: 8}
training: {env_steps: 256, batch: 16}
probes:
  adaptation: {kind: adaptation, episodes: 8, batch: 8}
baselines: [random]
"""


@pytest.fixture(scope="module")
def frozen_runs(tmp_path_factory):
    """A tiny study named quickstart, its runs trained and frozen under <root>/results/quickstart."""
    root = tmp_path_factory.mktemp("policies")
    spec = root / "quickstart.yaml"
    spec.write_text(POLICY_STUDY)
    plan = make_plan(load_study(spec))
    results = root / "results" / "quickstart"
    manifests = {}
    for run in plan.runs:
        jobs.train_job(plan, run.id, results, progress=False)
        manifests[run.environment.name] = jobs.freeze_job(plan, run.id, results)
    return root, manifests


def test_a_frozen_bandit_run_plays_its_environment(frozen_runs):
    _, manifests = frozen_runs
    policy = mesaprobe_gym.load_policy(manifests["bandit2"], greedy=True)
    assert policy.environment_id == "mesaprobe/BernoulliBandit-v0"
    assert policy.environment_settings == {
        "arms": 2,
        "horizon": 8,
        "prior": "uniform",
        "prior_alpha": 1.0,
        "prior_beta": 1.0,
    }
    envs = gymnasium.make_vec(policy.environment_id, num_envs=4, **policy.environment_settings)
    observations, _ = envs.reset(seed=0)
    policy.reset(batch=4)
    for _ in range(8):
        actions = policy(observations)
        assert actions.shape == (4,) and set(actions.tolist()) <= {0, 1}
        observations, *_ = envs.step(actions)
    with pytest.raises(ValueError, match=r"reset\(batch=1\) first"):
        policy(observations[0])


def test_a_frozen_predictor_predicts_in_gymnasium_what_it_predicts_in_probes(frozen_runs):
    _, manifests = frozen_runs
    policy = mesaprobe_gym.load_policy(manifests["iid"])
    env = gymnasium.make(policy.environment_id, **policy.environment_settings)
    observation, _ = env.reset(seed=5)
    policy.reset()
    tokens, probabilities = [], []
    for _ in range(8):
        logits = policy(observation)
        assert logits.shape == (2,) and logits.dtype == np.float32
        probabilities.append(torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=-1))
        observation, *_ = env.step(logits)
        tokens.append(int(observation[:2].argmax()))
    environment = env.unwrapped.batch.environment
    whole = ModelPredictor(policy.model).predict(environment, None, torch.tensor([tokens]))  # (1, T, K)
    torch.testing.assert_close(torch.stack(probabilities), whole[0], atol=1e-5, rtol=0)


def readme_snippets() -> list[str]:
    """The Python blocks of the README's Gymnasium section, in order."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Gymnasium") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readmes_snippets_run(frozen_runs, monkeypatch, capsys):
    root, _ = frozen_runs
    monkeypatch.chdir(root)
    snippets = readme_snippets()
    assert len(snippets) == 2 and "load_policy" in snippets[1]
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    total = float(re.search(r"total reward (\d+) in one episode", printed).group(1))
    assert printed.startswith("bandit2-gru-") and 0 <= total <= 8
