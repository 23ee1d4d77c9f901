"""Bandit baselines: the agent contract for every registered name, and science checks.

Statistical tests compare a sample mean with an exact value and allow 4 standard
errors (two-sided, about 6e-5 false alarms per test if the baseline were correct);
seeds are fixed, so the tests are deterministic.  Orderings are only asserted where
the measured gap is tens of standard errors, far beyond 4.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mesaprobe.baselines import BASELINES, ArmCounts, build_baseline
from mesaprobe.baselines.bandit import argmax_breaking_ties
from mesaprobe.envs.bernoulli_bandit import BernoulliBandit, BernoulliBanditConfig
from mesaprobe.registry import UnknownName
from mesaprobe.settings import SettingError, field_docs
from mesaprobe.train.rollout import play

#: Every registered baseline that plays bandits (prediction baselines are tested in test_sequences).
BANDIT_BASELINES = [name for name in BASELINES.names() if "bandit" in BASELINES.get(name).serves]


SIGMAS = 4.0


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def bandit(arms: int = 2, horizon: int = 100, **prior) -> BernoulliBandit:
    return BernoulliBandit(BernoulliBanditConfig(arms=arms, horizon=horizon, **prior))


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def play_baseline(name, environment, tasks, seed=0, config=None, device="cpu"):
    agent = build_baseline(name, config, environment)
    return play(environment, tasks, agent, generator(seed, device), generator(seed + 1, device))


def episode_regret(name, environment, tasks, config=None):
    """(B,) cumulative expected regret of each episode, common tasks and generators."""
    return play_baseline(name, environment, tasks, config=config).regrets.sum(dim=1).double()


def feed(agent, observations: list[torch.Tensor], generator: torch.Generator):
    """Act on a fixed observation sequence (the agent's own actions are ignored)."""
    state = agent.initial_state(observations[0].shape[0], agent.environment.horizon, "cpu")
    actions = []
    for observation in observations:
        state, action = agent.act(state, observation, generator)
        actions.append(action)
    return state, torch.stack(actions, dim=1)  # (B, T)


def history(environment: BernoulliBandit, pulls: list[tuple[int, int]], batch: int):
    """Observations for a fixed history of (arm, reward) pulls, the same in every episode."""
    observations = [torch.zeros(batch, environment.observation_size)]
    for t, (arm, reward) in enumerate(pulls, start=1):
        action = torch.full((batch,), arm, dtype=torch.long)
        observations.append(environment.observation(action, torch.full((batch,), float(reward)), t))
    return observations


def decisions(name, environment, pulls, batch, seed, config=None) -> torch.Tensor:
    """(B, len(pulls) + 1) actions of a fresh ``name`` agent fed a fixed history."""
    agent = build_baseline(name, config, environment)
    return feed(agent, history(environment, pulls, batch), generator(seed))[1]


def assert_frequency(hits: torch.Tensor, probability: float):
    """Binomial frequency within SIGMAS standard deviations of the exact probability."""
    n = hits.numel()
    frequency = hits.double().mean().item()
    sigma = math.sqrt(probability * (1 - probability) / n)
    assert abs(frequency - probability) <= SIGMAS * sigma + 1e-12, (frequency, probability, sigma)


# ---------------------------------------------------------------- contract, every baseline


@pytest.mark.parametrize("name", BANDIT_BASELINES)
@pytest.mark.parametrize("arms", [2, 5])
@pytest.mark.parametrize("batch", [1, 64])
def test_contract(name, arms, batch):
    environment = bandit(arms=arms, horizon=30)
    tasks = environment.sample_tasks(batch, generator(7), "cpu")
    first = play_baseline(name, environment, tasks, seed=3)
    again = play_baseline(name, environment, tasks, seed=3)
    other = play_baseline(name, environment, tasks, seed=11)
    assert first.actions.shape == (batch, 30)
    assert first.actions.dtype == torch.long
    assert ((first.actions >= 0) & (first.actions < arms)).all()
    assert torch.equal(first.actions, again.actions)
    assert torch.equal(first.rewards, again.rewards)
    if batch > 1:
        assert not torch.equal(first.actions, other.actions)
    assert (first.regrets >= 0).all()


@pytest.mark.parametrize("name", BANDIT_BASELINES)
def test_learns_only_from_observations(name):
    """Replaying a trajectory's observations, without tasks or environment, gives its actions.

    The agent's only inputs are observations and its generator; the counts it keeps
    are exactly the pulls and successes the observations report.
    """
    environment = bandit(arms=3, horizon=40)
    tasks = environment.sample_tasks(200, generator(5), "cpu")
    trajectory = play_baseline(name, environment, tasks, seed=8)
    # No tasks and no environment step: only the recorded observations.
    agent = build_baseline(name, None, environment)
    observations = list(trajectory.observations.unbind(dim=1))
    state, actions = feed(agent, observations, generator(9))
    assert torch.equal(actions, trajectory.actions)

    final = environment.observation(trajectory.actions[:, -1], trajectory.rewards[:, -1], 40)
    counts = agent.update(state, final)
    chosen = torch.nn.functional.one_hot(trajectory.actions, 3).float()  # (B, T, arms)
    assert torch.equal(counts.pulls, chosen.sum(dim=1))
    assert torch.equal(counts.successes, (chosen * trajectory.rewards[..., None]).sum(dim=1))


@pytest.mark.parametrize("name", BANDIT_BASELINES)
def test_first_observation_counts_nothing(name):
    environment = bandit(arms=4, horizon=10)  # small enough for the exact bayes_optimal DP
    agent = build_baseline(name, None, environment)
    state, _ = agent.act(agent.initial_state(6, 10, "cpu"), torch.zeros(6, 6), generator(0))
    assert isinstance(state, ArmCounts)
    assert state.pulls.shape == state.successes.shape == (6, 4)
    assert not state.pulls.any() and not state.successes.any()


@pytest.mark.parametrize("name", BANDIT_BASELINES)
def test_registered_class_metadata(name):
    cls = BASELINES.get(name)
    assert cls.registered_name == name
    assert "bandit" in cls.serves
    config = cls.Config()
    assert dataclasses.is_dataclass(config) and cls.Config.__dataclass_params__.frozen
    docs = field_docs(cls.Config)
    assert {field.name for field in dataclasses.fields(config)} == set(docs)


def test_registry_and_settings_errors():
    environment = bandit()
    with pytest.raises(UnknownName, match="ucb1"):
        build_baseline("ucb2", None, environment)
    with pytest.raises(TypeError):
        build_baseline("ucb1", BASELINES.get("eps_greedy").Config(), environment)
    with pytest.raises(SettingError):
        BASELINES.get("eps_greedy").Config(epsilon=1.5).validate()
    with pytest.raises(SettingError):
        BASELINES.get("ucb1").Config(exploration=-1.0).validate()


def test_thompson_prior_comes_from_environment():
    beta_prior = bandit(prior="beta", prior_alpha=2.0, prior_beta=3.0)
    assert build_baseline("thompson", None, beta_prior).prior == (2.0, 3.0)
    dependent = bandit(prior="dependent_easy")
    assert build_baseline("thompson", None, dependent).prior == (1.0, 1.0)
    tasks = dependent.sample_tasks(50, generator(1), "cpu")
    assert play_baseline("thompson", dependent, tasks).regrets.sum(dim=1).mean() < 20


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", BANDIT_BASELINES)
def test_plays_on_gpu(name):
    environment = bandit(arms=3, horizon=20)
    tasks = environment.sample_tasks(32, generator(2, "cuda"), "cuda")
    trajectory = play_baseline(name, environment, tasks, device="cuda")
    assert trajectory.actions.device.type == "cuda"
    assert ((trajectory.actions >= 0) & (trajectory.actions < 3)).all()


# ---------------------------------------------------------------- tie-breaking


def test_ties_are_broken_uniformly():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]]).expand(30_000, 5)
    chosen = argmax_breaking_ties(scores, generator(4))
    assert set(chosen.unique().tolist()) == {1, 2, 4}
    for arm in (1, 2, 4):
        assert_frequency(chosen == arm, 1 / 3)  # sigma = sqrt(2/9 / 30000) = 0.0027


# ---------------------------------------------------------------- science


def test_random_regret_matches_exact_value():
    """Random play on 2 uniform arms: E[regret per step] = E|p1 - p2| / 2 = 1/6.

    So the cumulative expected regret over 100 steps is 100/6 = 16.67; sigma is the
    standard error of the mean over 4000 episodes (about 0.19), estimated from the sample.
    """
    environment = bandit(arms=2, horizon=100)
    tasks = environment.sample_tasks(4000, generator(21), "cpu")
    regret = episode_regret("random", environment, tasks)
    standard_error = regret.std().item() / math.sqrt(regret.numel())
    assert abs(regret.mean().item() - 100 / 6) <= SIGMAS * standard_error


def test_regret_ordering_on_two_uniform_arms():
    """Paired comparison on common tasks and luck (2000 episodes, horizon 100).

    Measured: random 16.7, ucb1 5.6, eps_greedy 3.2, thompson 2.7, greedy 2.4, and
    every asserted gap is 20 to 50 standard errors of the paired difference; the test
    asks for 4.  Greedy vs thompson (about 2 SE apart) is deliberately not asserted.
    """
    environment = bandit(arms=2, horizon=100)
    tasks = environment.sample_tasks(2000, generator(31), "cpu")
    regret = {name: episode_regret(name, environment, tasks) for name in BANDIT_BASELINES}

    def clearly_below(better: str, worse: str):
        difference = regret[worse] - regret[better]
        standard_error = difference.std().item() / math.sqrt(difference.numel())
        assert difference.mean().item() > SIGMAS * standard_error, (better, worse)

    for learner in ("thompson", "ucb1", "greedy", "eps_greedy"):
        clearly_below(learner, "random")
    for learner in ("thompson", "greedy", "eps_greedy"):
        clearly_below(learner, "ucb1")
    # epsilon-greedy pays at least epsilon times random's regret on every task.
    assert regret["eps_greedy"].mean() > 0.1 * 100 / 6


def beta_density(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Beta(a, b) density on [0, 1] (finite at the ends for a, b >= 1)."""
    norm = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
    return norm * x ** (a - 1) * (1 - x) ** (b - 1)


def probability_first_larger_numeric(a1, b1, a2, b2, points: int = 200_001) -> float:
    """P(X > Y), X ~ Beta(a1, b1), Y ~ Beta(a2, b2): the integral of f_X(x) F_Y(x) by trapezoids."""
    x = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    cdf_y = torch.cumulative_trapezoid(beta_density(x, a2, b2), x)
    cdf_y = torch.cat([cdf_y.new_zeros(1), cdf_y])
    return torch.trapezoid(beta_density(x, a1, b1) * cdf_y, x).item()


def probability_first_larger_exact(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X > Y) in closed form for integer a1 (E. Miller, 'Formulas for Bayesian A/B testing')."""

    def log_beta(a, b):
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    return sum(
        math.exp(log_beta(a2 + i, b2 + b1) - math.log(b1 + i) - log_beta(1 + i, b1) - log_beta(a2, b2))
        for i in range(a1)
    )


@pytest.mark.parametrize(
    ("prior", "pulls"),
    [
        # Uniform prior: arm 0 has 2/3 successes, arm 1 has 2/5 -> Beta(3, 2) vs Beta(3, 4).
        ({}, [(0, 1), (1, 0), (0, 1), (1, 1), (1, 0), (0, 0), (1, 1), (1, 0)]),
        # Beta(2, 3) prior: arm 0 has 1/1, arm 1 has 3/4 -> Beta(3, 3) vs Beta(5, 4).
        (
            {"prior": "beta", "prior_alpha": 2.0, "prior_beta": 3.0},
            [(1, 1), (0, 1), (1, 1), (1, 0), (1, 1)],
        ),
        # No pulls: both arms are the prior, P = 1/2 by symmetry.
        ({}, []),
    ],
)
def test_thompson_matches_exact_posterior_probability(prior, pulls):
    """Thompson pulls arm 0 with probability P(theta_0 > theta_1) under the posteriors.

    20000 episodes with the same history; sigma = sqrt(P(1-P)/20000) <= 0.0036.
    """
    environment = bandit(arms=2, **prior)
    alpha, beta = environment.config.independent_beta_prior
    successes = [sum(r for a, r in pulls if a == arm) for arm in (0, 1)]
    failures = [sum(1 - r for a, r in pulls if a == arm) for arm in (0, 1)]
    posterior = [(int(alpha) + successes[arm], int(beta) + failures[arm]) for arm in (0, 1)]
    exact = probability_first_larger_exact(*posterior[0], *posterior[1])
    # Two independent computations of the same integral agree.
    numeric = probability_first_larger_numeric(*posterior[0], *posterior[1])
    assert exact == pytest.approx(numeric, abs=1e-6)

    actions = decisions("thompson", environment, pulls, batch=20_000, seed=13)
    assert_frequency(actions[:, -1] == 0, exact)


def test_ucb1_pulls_every_arm_once_first_in_random_order():
    environment = bandit(arms=5, horizon=20)
    tasks = environment.sample_tasks(2000, generator(17), "cpu")
    actions = play_baseline("ucb1", environment, tasks).actions
    assert torch.equal(actions[:, :5].sort(dim=1).values, torch.arange(5).expand(2000, 5))
    for arm in range(5):
        assert_frequency(actions[:, 0] == arm, 1 / 5)  # sigma = sqrt(0.16 / 2000) = 0.0089


def test_ucb1_index_after_fixed_history():
    """After 10 pulls: arm 0 3/4, arm 1 0/1, arm 2 4/5; index m + sqrt(2 ln 10 / n)."""
    environment = bandit(arms=3)
    pulls = [(0, 1), (1, 0), (2, 1), (0, 1), (2, 1), (0, 0), (2, 0), (2, 1), (0, 1), (2, 1)]
    index = [
        3 / 4 + math.sqrt(2 * math.log(10) / 4),  # 1.823
        0 / 1 + math.sqrt(2 * math.log(10) / 1),  # 2.146
        4 / 5 + math.sqrt(2 * math.log(10) / 5),  # 1.760
    ]
    actions = decisions("ucb1", environment, pulls, batch=8, seed=0)
    assert (actions[:, -1] == index.index(max(index))).all()
    # Less exploration: the empirical means decide, and arm 2 (0.8) wins.
    config = BASELINES.get("ucb1").Config(exploration=0.01)
    actions = decisions("ucb1", environment, pulls, batch=8, seed=0, config=config)
    assert (actions[:, -1] == 2).all()


def test_greedy_posterior_mean_and_ties():
    """Posterior means (s + 1) / (n + 2): arm 0 1/2 -> 0.5, arm 1 unpulled -> 0.5, arm 2 0/1 -> 1/3.

    Arms 0 and 1 tie exactly, so each is pulled half the time (sigma = 0.0035 over
    20000 episodes) and arm 2 never.
    """
    environment = bandit(arms=3)
    pulls = [(0, 1), (2, 0), (0, 0)]
    actions = decisions("greedy", environment, pulls, batch=20_000, seed=1)
    assert_frequency(actions[:, 0] == 0, 1 / 3)  # no data yet: a three-way tie
    assert not (actions[:, -1] == 2).any()
    assert_frequency(actions[:, -1] == 0, 1 / 2)


def test_eps_greedy_explores_with_probability_epsilon():
    """Arm 1 is the greedy arm; each arm is also drawn uniformly with probability epsilon.

    P(arm) = epsilon / 3 for arms 0 and 2, and 1 - epsilon + epsilon / 3 for arm 1;
    sigma <= 0.0036 over 20000 episodes.
    """
    environment = bandit(arms=3)
    pulls = [(0, 0), (1, 1), (2, 0), (1, 1)]
    epsilon = 0.3
    config = BASELINES.get("eps_greedy").Config(epsilon=epsilon)
    last = decisions("eps_greedy", environment, pulls, batch=20_000, seed=2, config=config)[:, -1]
    assert_frequency(last == 0, epsilon / 3)
    assert_frequency(last == 2, epsilon / 3)
    assert_frequency(last == 1, 1 - epsilon + epsilon / 3)
