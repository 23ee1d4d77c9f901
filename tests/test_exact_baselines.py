"""Exact baselines: Bayes-optimal DP, Gittins index, optimistic Thompson sampling.

Each is checked against an independent computation: a brute-force recursion over
whole histories for the DP, a restart-in-state value iteration for the Gittins index,
and numerical integration for optimistic Thompson sampling.  Statistical tests allow
4 standard errors (two-sided, about 6e-5 false alarms per test if the baseline were
correct); seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.polynomial import Polynomial

from mesaprobe.baselines import BASELINES, build_baseline
from mesaprobe.baselines.bayes_optimal import (
    MultisetRanks,
    bayes_optimal_value,
    dependent_mean,
    solve,
    state_count,
)
from mesaprobe.baselines.gittins import (
    TableKey,
    cache_file,
    compute_gittins_indices,
    gittins_table,
    read_cached,
    write_cached,
)
from mesaprobe.envs.bernoulli_bandit import DEPENDENT_LEVELS, BernoulliBandit, BernoulliBanditConfig
from mesaprobe.errors import UserError
from mesaprobe.settings import SettingError
from mesaprobe.train.rollout import play

SIGMAS = 4.0
DEPENDENT_PRIORS = ["dependent_uniform", *DEPENDENT_LEVELS]


@pytest.fixture(autouse=True, scope="module")
def one_thread_and_private_cache(one_thread, tmp_path_factory):
    """Single-threaded torch (tiny tensors, busy 2-core machines), and Gittins tables
    cached in a temporary directory instead of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


def bandit(arms: int = 2, horizon: int = 20, **prior) -> BernoulliBandit:
    return BernoulliBandit(BernoulliBanditConfig(arms=arms, horizon=horizon, **prior))


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def play_baseline(name, environment, tasks, seed=0, config=None):
    agent = build_baseline(name, config, environment)
    return play(environment, tasks, agent, generator(seed), generator(seed + 1))


def history(environment: BernoulliBandit, pulls: list[tuple[int, int]], batch: int) -> list[torch.Tensor]:
    """Observations for a fixed history of (arm, reward) pulls, the same in every episode."""
    observations = [torch.zeros(batch, environment.observation_size)]
    for t, (arm, reward) in enumerate(pulls, start=1):
        action = torch.full((batch,), arm, dtype=torch.long)
        observations.append(environment.observation(action, torch.full((batch,), float(reward)), t))
    return observations


def last_decision(name, environment, pulls, batch, seed, config=None) -> torch.Tensor:
    """(B,) the action a fresh ``name`` agent takes after a fixed history."""
    agent = build_baseline(name, config, environment)
    state = agent.initial_state(batch, environment.horizon, "cpu")
    for observation in history(environment, pulls, batch):
        state, action = agent.act(state, observation, generator(seed))
    return action


def assert_frequency(hits: torch.Tensor, probability: float):
    """Binomial frequency within SIGMAS standard deviations of the exact probability."""
    n = hits.numel()
    frequency = hits.double().mean().item()
    sigma = math.sqrt(probability * (1 - probability) / n)
    assert abs(frequency - probability) <= SIGMAS * sigma + 1e-12, (frequency, probability, sigma)


# ---------------------------------------------------------------- Bayes-optimal: exact values


def brute_force_independent(arms: int, horizon: int, alpha: float, beta: float) -> float:
    """Bayes-optimal value by recursion over whole histories, no state merging or symmetry.

    The chance that arm a pays next is the Beta-Bernoulli predictive probability
    (alpha + successes_a) / (alpha + beta + pulls_a), read off the history each time.
    """

    def value(past: tuple[tuple[int, int], ...]) -> float:
        if len(past) == horizon:
            return 0.0
        best = -math.inf
        for arm in range(arms):
            rewards = [reward for pulled, reward in past if pulled == arm]
            pays = (alpha + sum(rewards)) / (alpha + beta + len(rewards))
            best = max(
                best,
                pays * (1 + value((*past, (arm, 1)))) + (1 - pays) * value((*past, (arm, 0))),
            )
        return best

    return value(())


def brute_force_dependent(horizon: int, prior: str) -> float:
    """Bayes-optimal value for arms paying p and 1 - p, by recursion over whole histories.

    The history's likelihood is kept as a polynomial in p (a product of p and 1 - p
    factors); the chance of the next reward is E[likelihood x P(pay | p)] / E[likelihood],
    the expectation an exact integral over U(0, 1) or the mean over the two levels.
    """
    if prior == "dependent_uniform":

        def expect(polynomial: Polynomial) -> float:
            antiderivative = polynomial.integ()
            return antiderivative(1.0) - antiderivative(0.0)
    else:
        levels = DEPENDENT_LEVELS[prior]

        def expect(polynomial: Polynomial) -> float:
            return sum(polynomial(level) for level in levels) / len(levels)

    p = Polynomial([0.0, 1.0])
    pays = [p, 1 - p]  # chance that arm 0 / arm 1 pays, given p

    def value(likelihood: Polynomial, remaining: int) -> float:
        if remaining == 0:
            return 0.0
        evidence = expect(likelihood)
        best = -math.inf
        for arm in (0, 1):
            win, lose = likelihood * pays[arm], likelihood * (1 - pays[arm])
            chance = expect(win) / evidence
            best = max(
                best, chance * (1 + value(win, remaining - 1)) + (1 - chance) * value(lose, remaining - 1)
            )
        return best

    return value(Polynomial([1.0]), horizon)


@pytest.mark.parametrize("arms", [2, 3])
@pytest.mark.parametrize("horizon", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("prior", [(1.0, 1.0), (2.0, 1.0)])
def test_dp_value_matches_brute_force_independent(arms, horizon, prior):
    assert bayes_optimal_value(arms, horizon, prior) == pytest.approx(
        brute_force_independent(arms, horizon, *prior), abs=1e-9
    )


@pytest.mark.parametrize("prior", DEPENDENT_PRIORS)
@pytest.mark.parametrize("horizon", [1, 2, 3, 4, 5])
def test_dp_value_matches_brute_force_dependent(prior, horizon):
    assert bayes_optimal_value(2, horizon, prior) == pytest.approx(
        brute_force_dependent(horizon, prior), abs=1e-9
    )


def test_dp_known_values():
    # One pull: the prior mean, however many arms.
    for arms in (2, 3, 5):
        assert bayes_optimal_value(arms, 1, "uniform") == pytest.approx(0.5, abs=1e-12)
        assert bayes_optimal_value(arms, 1, (2.0, 1.0)) == pytest.approx(2 / 3, abs=1e-12)
    for prior in DEPENDENT_PRIORS:
        assert bayes_optimal_value(2, 1, prior) == pytest.approx(0.5, abs=1e-12)
    # Two uniform arms, two pulls, by hand: the first pull pays 1/2.  After a success
    # that arm's posterior mean is 2/3 (pull it again); after a failure it is 1/3 and
    # the untouched arm's 1/2 is better.  So the second pull pays
    # E[max posterior mean] = 1/2 * 2/3 + 1/2 * 1/2 = 7/12, and the total is 1/2 + 7/12 = 13/12.
    assert bayes_optimal_value(2, 2, "uniform") == pytest.approx(13 / 12, abs=1e-12)
    # More pulls never hurt, and no policy beats knowing the best arm: E[max of k uniforms] = k / (k + 1).
    values = [bayes_optimal_value(2, horizon, "uniform") for horizon in range(1, 30)]
    assert all(later > earlier for earlier, later in itertools.pairwise(values))
    assert all(value < horizon * 2 / 3 for horizon, value in enumerate(values, start=1))


def test_multiset_ranks_are_dense_and_invertible():
    """Ranks number each layer's states 0..n-1, and the counts match plain enumeration."""
    for arms, horizon in [(2, 6), (3, 5), (4, 4)]:
        ranks = MultisetRanks.build(arms, horizon)
        arm_states = [(n - f, f) for n in range(horizon) for f in range(n + 1)]  # numbered in this order
        for pulls in range(horizon):
            enumerated = [
                combination
                for combination in itertools.combinations_with_replacement(range(len(arm_states)), arms)
                if sum(sum(arm_states[number]) for number in combination) == pulls
            ]
            size = ranks.layer_size(pulls)
            assert size == len(enumerated)
            columns = ranks.unrank(np.arange(size), pulls)
            rows = {tuple(row) for row in np.stack(columns, axis=1).tolist()}
            assert rows == {tuple(sorted(combination, reverse=True)) for combination in enumerated}
            assert np.array_equal(ranks.rank(columns, pulls), np.arange(size))
        assert state_count(arms, horizon, "uniform") == sum(ranks.layer_size(t) for t in range(horizon))


def test_dependent_optimum_is_greedy_in_the_posterior_mean():
    """Under p / 1 - p arms both pulls are equally informative, so the optimal pull is
    the arm with the larger posterior mean, and both arms when the means are equal."""
    for prior in DEPENDENT_PRIORS:
        policy = solve(2, 12, prior)
        for t in range(12):
            v = np.arange(t + 1)
            mean = dependent_mean(prior, t - v, v)
            bits = policy.optimal[t * (t + 1) // 2 : t * (t + 1) // 2 + t + 1]
            expected = np.where(np.isclose(mean, 0.5, rtol=0, atol=1e-12), 3, np.where(mean > 0.5, 1, 2))
            assert np.array_equal(bits, expected), (prior, t)


# ---------------------------------------------------------------- Bayes-optimal: play


@pytest.mark.parametrize(
    ("arms", "horizon", "prior"),
    [(2, 20, {}), (5, 10, {}), (2, 20, {"prior": "dependent_uniform"}), (2, 20, {"prior": "dependent_easy"})],
)
def test_bayes_optimal_play_earns_its_value(arms, horizon, prior):
    """Mean total expected reward over 4000 sampled tasks vs the DP value: within 4 SE.

    Measured: z = -0.3 (2 arms), 1.0 (5 arms), -0.2 (dependent_uniform), -0.5 (dependent_easy).
    """
    environment = bandit(arms=arms, horizon=horizon, **prior)
    tasks = environment.sample_tasks(4000, generator(0), "cpu")
    total = play_baseline("bayes_optimal", environment, tasks, seed=1).expected_rewards.sum(dim=1).double()
    standard_error = total.std().item() / math.sqrt(total.numel())
    value = bayes_optimal_value(arms, horizon, prior.get("prior", "uniform"))
    assert abs(total.mean().item() - value) <= SIGMAS * standard_error


def test_bayes_optimal_beats_heuristics():
    """Paired on common tasks and luck (2 uniform arms, horizon 20, 4000 episodes).

    Measured gaps in standard errors of the paired difference: thompson 24, ucb1 45,
    optimistic_thompson 14 (asserted, > 4); gittins 5 and greedy 4 (not asserted).
    """
    environment = bandit(arms=2, horizon=20)
    tasks = environment.sample_tasks(4000, generator(0), "cpu")
    total = {
        name: play_baseline(name, environment, tasks, seed=1).expected_rewards.sum(dim=1).double()
        for name in ("bayes_optimal", "thompson", "ucb1", "optimistic_thompson")
    }
    for other in ("thompson", "ucb1", "optimistic_thompson"):
        difference = total["bayes_optimal"] - total[other]
        standard_error = difference.std().item() / math.sqrt(difference.numel())
        assert difference.mean().item() > SIGMAS * standard_error, other


def test_bayes_optimal_breaks_ties_at_random_and_plans_for_the_horizon():
    """Arm 0 has 1 success and 1 failure (mean 1/2), arm 1 is unpulled (mean 1/2).

    With one pull left the means tie and each arm is chosen half the time (sigma =
    0.0035 over 20000 episodes); with many pulls left the untried arm is worth
    exploring and is always chosen.  At the start every arm ties.
    """
    pulls = [(0, 1), (0, 0)]
    last_pull = last_decision("bayes_optimal", bandit(horizon=3), pulls, batch=20_000, seed=3)
    assert_frequency(last_pull == 0, 1 / 2)
    assert (last_decision("bayes_optimal", bandit(horizon=20), pulls, batch=100, seed=3) == 1).all()
    first = last_decision("bayes_optimal", bandit(arms=5, horizon=10), [], batch=20_000, seed=4)
    for arm in range(5):
        assert_frequency(first == arm, 1 / 5)


def test_too_large_settings_are_refused_quickly():
    for arms, horizon in [(4, 100), (2, 1_000_000), (50, 1000), (3, 100)]:
        start = time.perf_counter()
        with pytest.raises(UserError, match=rf"arms={arms}, horizon={horizon}\b.*max_states"):
            bayes_optimal_value(arms, horizon, "uniform")
        with pytest.raises(UserError, match=rf"arms={arms}, horizon={horizon}\b"):
            build_baseline("bayes_optimal", None, bandit(arms=arms, horizon=horizon))
        assert time.perf_counter() - start < 1.0
    small_limit = BASELINES.get("bayes_optimal").Config(max_states=1000)
    with pytest.raises(UserError, match="arms=2, horizon=40"):
        build_baseline("bayes_optimal", small_limit, bandit(horizon=40))
    with pytest.raises(SettingError):
        BASELINES.get("bayes_optimal").Config(max_states=0).validate()


# ---------------------------------------------------------------- Gittins


def restart_in_state_index(a: float, b: float, discount: float, depth: int) -> float:
    """Gittins index of Beta(a, b) as (1 - discount) x the value of the restart-in-state
    problem (Katehakis & Veinott 1987), solved by plain value iteration.

    In every posterior one may pull the arm or restart from Beta(a, b) (and pull); the
    posteriors reachable in ``depth`` pulls are kept, and at that depth the posterior
    is frozen (pull forever at its mean, or restart).
    """
    i, j = np.indices((depth + 1, depth + 1))  # successes and failures since Beta(a, b)
    inside, edge = i + j <= depth, i + j == depth
    mean = (a + i) / (a + b + i + j)
    value = np.zeros((depth + 1, depth + 1))
    while True:
        after_success = np.zeros_like(value)
        after_success[:-1] = value[1:]
        after_failure = np.zeros_like(value)
        after_failure[:, :-1] = value[:, 1:]
        pull = mean + discount * (mean * after_success + (1 - mean) * after_failure)
        pull = np.where(edge, mean / (1 - discount), pull)
        updated = np.where(inside, np.maximum(pull, pull[0, 0]), 0.0)
        if np.abs(updated - value).max() < 1e-12:
            return (1 - discount) * updated[0, 0]
        value = updated


@pytest.mark.parametrize("discount", [0.5, 0.9])
def test_gittins_matches_restart_in_state(discount):
    """All Beta(a, b) with integer a, b >= 1 and a + b <= 6, to 1e-4 (measured: < 1e-5).

    A lookahead of 100 levels is plenty at these discounts (0.9^100 = 3e-5 of weight left).
    """
    table = compute_gittins_indices(1.0, 1.0, discount, 4, 100, 1024)
    depth = 30 if discount == 0.5 else 100
    for s, f in itertools.product(range(5), repeat=2):
        if s + f <= 4:
            reference = restart_in_state_index(1.0 + s, 1.0 + f, discount, depth)
            assert table[s, f] == pytest.approx(reference, abs=1e-4), (s, f)


def test_gittins_published_value():
    """Gittins (1979), Gittins, Glazebrook & Weber (2011): Beta(1, 1) at discount 0.9 has
    index 0.7029 (four printed decimals)."""
    assert gittins_table(1.0, 1.0, 0.9, 4)[0, 0] == pytest.approx(0.7029, abs=1e-4)  # default settings


def test_gittins_qualitative_facts():
    table = compute_gittins_indices(1.0, 1.0, 0.9, 20, 100, 1024)
    s, f = np.indices(table.shape)
    valid = s + f <= 20
    mean = (1.0 + s) / (2.0 + s + f)
    assert (table[valid] > mean[valid]).all()  # learning is worth something
    assert (np.diff(table, axis=0)[valid[1:]] > 0).all()  # more successes, higher index
    assert (np.diff(table, axis=1)[valid[:, 1:]] < 0).all()  # more failures, lower index
    # A short-sighted player: as the discount goes to 0 the index tends to the posterior mean.
    myopic = compute_gittins_indices(1.0, 1.0, 1e-3, 10, 20, 1024)
    s, f = np.indices(myopic.shape)
    valid = s + f <= 10
    gap = myopic[valid] - ((1.0 + s) / (2.0 + s + f))[valid]
    assert (gap > 0).all() and gap.max() < 1e-3


def test_gittins_disk_cache(tmp_path):
    path = tmp_path / "table.npz"
    key = TableKey(2.0, 3.0, 0.8, 5, 30, 64)
    table = compute_gittins_indices(2.0, 3.0, 0.8, 5, 30, 64)
    write_cached(path, table, key)
    assert np.array_equal(read_cached(path, key), table, equal_nan=True)
    assert read_cached(path, TableKey(2.0, 3.0, 0.8, 6, 30, 64)) is None  # another shape: not this table
    assert read_cached(path, TableKey(2.0, 3.0, 0.9, 5, 30, 64)) is None  # another discount
    path.write_bytes(b"not a numpy file")
    assert read_cached(path, key) is None
    assert read_cached(tmp_path / "missing.npz", key) is None
    # The cached function writes under $XDG_CACHE_HOME and recomputes an unreadable file.
    compute = gittins_table.__wrapped__  # bypass the in-process cache
    first = compute(2.0, 3.0, 0.8, 5, 30, 64)
    written = cache_file(2.0, 3.0, 0.8, 5, 30, 64)
    assert written.parent == Path(os.environ["XDG_CACHE_HOME"]) / "mesaprobe" and written.exists()
    written.write_bytes(b"garbage")
    assert np.array_equal(compute(2.0, 3.0, 0.8, 5, 30, 64), first, equal_nan=True)
    assert np.array_equal(read_cached(written, TableKey(2.0, 3.0, 0.8, 5, 30, 64)), first, equal_nan=True)
    assert not list(written.parent.glob("*.tmp"))


def test_gittins_settings_errors():
    config = BASELINES.get("gittins").Config
    for bad in ({"discount": 1.0}, {"discount": 0.0}, {"lookahead": 0}, {"calibration_points": 1}):
        with pytest.raises(SettingError):
            config(**bad).validate()


# ---------------------------------------------------------------- optimistic Thompson sampling


def optimistic_choice_probability(first: tuple[int, int], second: tuple[int, int], points=400_001) -> float:
    """P(optimistic Thompson pulls the first of two arms with Beta posteriors ``first``, ``second``).

    Arm i scores S_i = max(X_i, m_i), X_i ~ Beta, m_i its mean: an atom F_i(m_i) at m_i
    and the Beta density above it.  P = P(S_0 > S_1) + P(S_0 = S_1) / 2 (random
    tie-break), integrated on a grid with numpy.
    """
    x = np.linspace(0.0, 1.0, points)

    def density_and_cdf(a: int, b: int):
        density = (
            math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)) * x ** (a - 1) * (1 - x) ** (b - 1)
        )
        cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(x))])
        return density, cdf, a / (a + b)

    density_0, cdf_0, mean_0 = density_and_cdf(*first)
    _, cdf_1, mean_1 = density_and_cdf(*second)
    below_1 = np.where(x > mean_1, cdf_1, 0.0)  # P(S_1 < z)
    above_mean_0 = x > mean_0
    integrand = density_0 * below_1 * above_mean_0
    continuous = np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(x))
    atom_0 = np.interp(mean_0, x, cdf_0)
    below_1_at_mean_0 = np.interp(mean_0, x, cdf_1) if mean_0 > mean_1 else 0.0
    tie = atom_0 * np.interp(mean_1, x, cdf_1) if mean_0 == mean_1 else 0.0
    return float(continuous + atom_0 * below_1_at_mean_0 + tie / 2)


@pytest.mark.parametrize(
    "pulls",
    [
        # arm 0: 2/3 -> Beta(3, 2), mean 0.6; arm 1: 1/2 -> Beta(2, 2), mean 0.5
        [(0, 1), (1, 0), (0, 1), (1, 1), (0, 0)],
        # arm 0: 1/4 -> Beta(2, 4), mean 1/3; arm 1: 0/1 -> Beta(1, 2), mean 1/3: the atoms tie
        [(0, 0), (1, 0), (0, 1), (0, 0), (0, 0)],
        # arm 0: 0/2 -> Beta(1, 3), mean 1/4; arm 1: 3/3 -> Beta(4, 1), mean 4/5
        [(0, 0), (1, 1), (0, 0), (1, 1), (1, 1)],
    ],
)
def test_optimistic_thompson_matches_exact_probability(pulls):
    """20000 episodes with the same history; sigma = sqrt(P(1 - P) / 20000) <= 0.0036."""
    posterior = []
    for arm in (0, 1):
        rewards = [reward for pulled, reward in pulls if pulled == arm]
        posterior.append((1 + sum(rewards), 1 + len(rewards) - sum(rewards)))
    exact = optimistic_choice_probability(*posterior)
    assert 0 <= exact <= 1
    actions = last_decision("optimistic_thompson", bandit(), pulls, batch=20_000, seed=5)
    assert_frequency(actions == 0, exact)


def test_optimistic_thompson_probability_integral_is_sound():
    """Cross-checks of the integral: symmetric arms give 1/2, and swapping arms complements."""
    assert optimistic_choice_probability((2, 3), (2, 3)) == pytest.approx(0.5, abs=1e-5)
    p = optimistic_choice_probability((3, 2), (2, 4))
    assert p + optimistic_choice_probability((2, 4), (3, 2)) == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize(
    ("name", "arms", "horizon", "prior"),
    [
        (name, arms, horizon, prior)
        for name in ("bayes_optimal", "gittins", "optimistic_thompson")
        for arms, horizon, prior in [
            (2, 30, {}),
            (2, 30, {"prior": "dependent_easy"}),
            (5, 10 if name == "bayes_optimal" else 30, {}),
        ]
    ],
)
def test_new_baselines_play_deterministically(name, arms, horizon, prior):
    environment = bandit(arms=arms, horizon=horizon, **prior)
    tasks = environment.sample_tasks(64, generator(7), "cpu")
    first = play_baseline(name, environment, tasks, seed=3)
    again = play_baseline(name, environment, tasks, seed=3)
    other = play_baseline(name, environment, tasks, seed=11)
    assert first.actions.shape == (64, horizon) and first.actions.dtype == torch.long
    assert ((first.actions >= 0) & (first.actions < arms)).all()
    assert torch.equal(first.actions, again.actions) and torch.equal(first.rewards, again.rewards)
    assert not torch.equal(first.actions, other.actions)
    assert (first.regrets >= -1e-7).all()
