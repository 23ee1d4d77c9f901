"""The tabular MDP family and its baselines: exact small cases and the RL^2 protocol."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import torch
import yaml

from mesaprobe.baselines import build_baseline
from mesaprobe.baselines.mdp import PSRLBaseline, QLearningBaseline
from mesaprobe.envs.tabular_mdp import (
    INITIAL_STATE,
    MDPState,
    MDPTasks,
    TabularMDP,
    TabularMDPConfig,
    optimal_action_values,
)
from mesaprobe.errors import SpecError
from mesaprobe.kinds import kind_of
from mesaprobe.seeding import make_generator
from mesaprobe.settings import build

pytestmark = pytest.mark.usefixtures("one_thread")

# A 2-state, 2-action MDP small enough to enumerate every policy.
REWARDS = torch.tensor([[[0.0, 1.0], [2.0, -1.0]]], dtype=torch.float64)  # (1, S, A)
TRANSITIONS = torch.tensor(
    [[[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.0, 1.0]]]], dtype=torch.float64
)  # (1, S, A, S)


def policy_return(policy: tuple[tuple[int, int], ...], start: int) -> float:
    """Exact expected return of a non-stationary deterministic policy (policy[t][s]) from ``start``."""
    occupancy = torch.zeros(2, dtype=torch.float64)
    occupancy[start] = 1.0
    total = 0.0
    for decisions in policy:
        actions = torch.tensor(decisions)
        total += float((occupancy * REWARDS[0, torch.arange(2), actions]).sum())
        occupancy = (occupancy[:, None] * TRANSITIONS[0, torch.arange(2), actions]).sum(dim=0)
    return total


def test_value_iteration_matches_brute_force_over_all_policies():
    horizon = 3
    q = optimal_action_values(REWARDS, TRANSITIONS, horizon)  # (1, H, S, A)
    assert q.shape == (1, horizon, 2, 2)
    per_step = list(itertools.product(range(2), repeat=2))  # (action in state 0, action in state 1)
    policies = list(itertools.product(per_step, repeat=horizon))
    assert len(policies) == 64
    for start in range(2):
        best = max(policy_return(policy, start) for policy in policies)
        assert float(q[0, 0, start].max()) == pytest.approx(best, abs=1e-12)
    # The last step is myopic, and one step earlier by hand: Q_1(0, 1) = 1 + 0.2 * 1 + 0.8 * 2.
    assert torch.equal(q[0, 2], REWARDS[0])
    assert float(q[0, 1, 0, 1]) == pytest.approx(1.0 + 0.2 * 1.0 + 0.8 * 2.0)


def small_mdp(**settings) -> TabularMDP:
    return TabularMDP(build(TabularMDPConfig, settings, key="environments.mdp", file="test"))


def test_episodes_start_in_state_zero_and_trials_reset_state_not_task():
    environment = small_mdp(states=3, actions=2, horizon=2, trial_episodes=3)
    assert environment.horizon == 6 and environment.episode_length == 2
    tasks = environment.sample_tasks(4, make_generator("tasks"), "cpu")
    state, observation = environment.reset(tasks)
    assert observation.shape == (4, 3 + 2 + 2)
    assert torch.equal(observation[:, :3], torch.tensor([[1.0, 0.0, 0.0]] * 4))
    assert observation[:, 3:].abs().sum() == 0  # no previous action, reward or boundary
    luck = make_generator("luck")
    done_flags, states_shown = [], []
    for t in range(6):
        action = torch.full((4,), t % 2)
        state, observation, _reward, done = environment.step(state, action, luck)
        assert state.tasks is tasks and done == (t == 5)
        decoded_state, previous, _, has_previous, boundary = environment.decode_observation(observation)
        assert torch.equal(previous, action) and has_previous.all()
        done_flags.append(bool(boundary[0]))
        states_shown.append(decoded_state)
    assert done_flags == [False, True, False, True, False, False]  # the last is never seen
    assert (states_shown[1] == INITIAL_STATE).all() and (states_shown[3] == INITIAL_STATE).all()


def test_rewards_are_the_mean_plus_unit_noise_and_transitions_follow_the_task():
    environment = small_mdp(states=2, actions=2, horizon=1)
    batch = 20000
    tasks = MDPTasks(
        mean_rewards=REWARDS.float().expand(batch, 2, 2),
        transitions=TRANSITIONS.float().expand(batch, 2, 2, 2),
    )
    state = MDPState(tasks=tasks, state=torch.zeros(batch, dtype=torch.long), t=0)
    action = torch.ones(batch, dtype=torch.long)
    environment_one_step = small_mdp(states=2, actions=2, horizon=2)
    _, observation, reward, _ = environment_one_step.step(state, action, make_generator("noise"))
    noise = reward - 1.0
    # Sample mean and variance of 20000 unit normals: within 5 standard errors.
    assert abs(float(noise.mean())) < 5 / batch**0.5
    assert abs(float(noise.var()) - 1.0) < 5 * (2 / batch) ** 0.5
    moved_to_one = float((observation[:, 1] == 1).float().mean())  # P(1 | 0, 1) = 0.8
    assert abs(moved_to_one - 0.8) < 5 * (0.8 * 0.2 / batch) ** 0.5
    assert float(environment.expected_reward(state, action)[0]) == 1.0


def test_prior_draws_have_the_configured_moments():
    environment = small_mdp(reward_prior_mean=2.0, reward_prior_std=0.5, transition_concentration=1.0)
    tasks = environment.sample_tasks(2000, make_generator("prior"), "cpu")
    rewards = tasks.mean_rewards.reshape(-1)  # 100000 draws
    assert abs(float(rewards.mean()) - 2.0) < 5 * 0.5 / rewards.numel() ** 0.5
    assert abs(float(rewards.std()) - 0.5) < 0.01
    assert torch.allclose(tasks.transitions.sum(dim=-1), torch.ones(()), atol=1e-5)
    # A flat Dirichlet over 10 states: each probability has mean 1/10.
    assert abs(float(tasks.transitions.mean()) - 0.1) < 1e-6


def play_mdp(name: str, environment: TabularMDP, episodes: int = 400) -> dict[str, torch.Tensor]:
    tasks = environment.sample_tasks(episodes, make_generator("heldout-tasks", "mdp-test"), "cpu")
    agent = build_baseline(name, None, environment)
    return kind_of(environment).step_metrics(
        agent, environment, tasks, make_generator("heldout-luck", "mdp-test"), make_generator("actions", name)
    )


def test_oracle_has_zero_value_regret_and_value_regret_sums_to_the_return_gap():
    environment = small_mdp(horizon=5, trial_episodes=2)
    oracle = play_mdp("oracle", environment)
    assert oracle["value_regret"].shape == (400, 10)
    assert torch.equal(oracle["value_regret"], torch.zeros_like(oracle["value_regret"]))
    # Performance difference: per episode, E[sum of value regret] = V*_0(s_0) - E[return];
    # with the oracle's own mean reward as V*_0's estimate, the random agent's totals agree
    # within sampling error (different agents, same tasks).
    random = play_mdp("random", environment)
    regret_gap = random["value_regret"].sum(dim=1)
    return_gap = oracle["mean_reward"].sum(dim=1) - random["mean_reward"].sum(dim=1)
    difference = regret_gap - return_gap
    assert float(regret_gap.mean()) > 1.0  # random play is far from optimal
    assert abs(float(difference.mean())) < 5 * float(difference.std()) / 400**0.5
    assert (random["value_regret"] >= -1e-5).all()


def test_learners_beat_random_play_in_later_episodes_of_a_trial():
    environment = small_mdp(states=5, actions=3, horizon=5, trial_episodes=10)
    last_episodes = {}
    for name in ("random", "psrl", "q_learning"):
        regret = play_mdp(name, environment, episodes=200)["value_regret"]
        last_episodes[name] = regret[:, -10:].sum(dim=1)  # the last two episodes of each trial
    for learner in ("psrl", "q_learning"):
        difference = last_episodes["random"] - last_episodes[learner]
        # Paired over the same tasks: the learner's mean advantage is more than 5 standard errors.
        assert float(difference.mean()) > 5 * float(difference.std()) / 200**0.5, learner


def observation_of(environment: TabularMDP, state: int, action: int | None, reward: float, done: bool):
    observation = torch.zeros(1, environment.observation_size)
    observation[0, state] = 1.0
    if action is not None:
        observation[0, environment.states + action] = 1.0
        observation[0, environment.states + environment.action_count] = reward
    observation[0, -1] = float(done)
    return observation


def test_psrl_posterior_updates_by_hand():
    environment = small_mdp(
        states=3, actions=2, horizon=2, trial_episodes=2, reward_prior_mean=1.0, reward_prior_std=2.0
    )
    psrl = PSRLBaseline(PSRLBaseline.Config(), environment)
    generator = make_generator("psrl")
    state = psrl.initial_state(1, environment.horizon, "cpu")
    state, first = psrl.act(state, observation_of(environment, 0, None, 0.0, False), generator)
    # From state 0, took `first`, got reward 3.0 and moved to state 2.
    state, second = psrl.act(state, observation_of(environment, 2, int(first), 3.0, False), generator)
    # Episode over: reward 0.5 observed, the next state is not (state 0 shown with the done flag).
    state, _ = psrl.act(state, observation_of(environment, 0, int(second), 0.5, True), generator)
    assert float(state.visits.sum()) == 2 and float(state.transition_counts.sum()) == 1
    assert float(state.transition_counts[0, 0, int(first), 2]) == 1
    mean, std = psrl.reward_posterior(state)
    # Prior N(1, 4), one observation 3 with unit noise: precision 1/4 + 1, mean (1/4 + 3) / (5/4).
    assert float(mean[0, 0, int(first)]) == pytest.approx((0.25 + 3.0) / 1.25)
    assert float(std[0, 0, int(first)]) == pytest.approx(1.25**-0.5)
    assert float(mean[0, 1, 0] if int(first) else mean[0, 1, 1]) == pytest.approx(1.0)  # untouched: prior
    alpha = psrl.transition_posterior(state)
    assert torch.equal(alpha[0, 0, int(first)], torch.tensor([1.0, 1.0, 2.0]))


def test_q_learning_update_by_hand():
    environment = small_mdp(states=2, actions=2, horizon=2)
    learner = QLearningBaseline(QLearningBaseline.Config(optimistic_reward=3.0), environment)
    generator = make_generator("q")
    state = learner.initial_state(1, environment.horizon, "cpu")
    assert state.values[0, :, 0, 0].tolist() == [6.0, 3.0]  # (H - h) x 3
    state, first = learner.act(state, observation_of(environment, 0, None, 0.0, False), generator)
    state, _ = learner.act(state, observation_of(environment, 1, int(first), -1.0, False), generator)
    # First update of Q_0(0, a): rate (H + 1) / (H + 1) = 1, target -1 + max_a Q_1(1, a) = -1 + 3.
    assert float(state.values[0, 0, 0, int(first)]) == pytest.approx(2.0)
    assert float(state.updates[0, 0, 0, int(first)]) == 1.0


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("states", 1, "expected at least 2 states, got 1"),
        ("actions", 0, "expected at least 2 actions, got 0"),
        ("horizon", 0, "expected a positive episode length, got 0"),
        ("trial_episodes", 0, "expected a positive number of episodes per trial, got 0"),
        ("trial_episodes", -3, "expected a positive number of episodes per trial, got -3"),
        ("transition_concentration", 0.0, "expected a positive Dirichlet parameter, got 0.0"),
        ("reward_prior_std", -1.0, "expected a positive standard deviation, got -1.0"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(key, value, message):
    with pytest.raises(SpecError, match=f"environments.mdp.{key}: {message}"):
        build(TabularMDPConfig, {key: value}, key="environments.mdp", file="test")


def test_validate_refuses_a_bad_spec_in_one_line(tmp_path):
    spec = {
        "study": "bad_mdp",
        "seeds": [0],
        "environments": {"mdp": {"family": "tabular_mdp", "trial_episodes": 0}},
        "architectures": {"gru": {"family": "gru", "hidden": 8}},
        "training": {"algorithm": "a2c", "env_steps": 1000, "batch": 4},
        "probes": {"adaptation": {"kind": "adaptation", "episodes": 4}},
        "baselines": ["psrl"],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [sys.executable, "-m", "mesaprobe", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"mesaprobe: error: {path}: environments.mdp.trial_episodes: "
        "expected a positive number of episodes per trial, got 0"
    )
