"""The fitted-learner probe: likelihoods by hand and by brute force, quadrature against exact
and Monte Carlo values, recovery of a known learner, the replicate batch, and the whole probe.

Statistical tolerances are stated where they are used, from spreads measured over
episode-bootstrap replicates; seeds are fixed, so every test is deterministic.
"""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from mesaprobe.agents import ModelAgent, sample_categorical
from mesaprobe.analysis.inside import INSIDE_COLUMNS, write_inside_table
from mesaprobe.baselines import build_baseline
from mesaprobe.envs.bernoulli_bandit import BernoulliBandit, BernoulliBanditConfig
from mesaprobe.frozen import parameter_hash
from mesaprobe.metrics import INSIDE_QUANTITIES
from mesaprobe.models import ARCHITECTURES, build_model
from mesaprobe.probes.fitted_learner import FittedLearnerConfig, FittedLearnerProbe, fitted_rows, play_choices
from mesaprobe.probes.inside import INSIDE_ROW_COLUMNS, episode_bootstrap_weights
from mesaprobe.probes.learner_choices import Choices
from mesaprobe.probes.learner_fitting import _whitening, fit_model
from mesaprobe.probes.learner_q_learning import QLearningModel, bayes_learning_rates, decaying_learning_rates
from mesaprobe.probes.learner_thompson import (
    ThompsonModel,
    beta_quadrature_tables,
    thompson_choice_probabilities,
)
from mesaprobe.settings import SettingError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def bandit(arms: int = 2, horizon: int = 50, **settings) -> BernoulliBandit:
    return BernoulliBandit(BernoulliBanditConfig(arms=arms, horizon=horizon, **settings))


def choices_of(actions, rewards, arms) -> Choices:
    return Choices(
        actions=torch.tensor(actions, dtype=torch.long),
        rewards=torch.tensor(rewards, dtype=torch.float64),
        arms=arms,
    )


class QLearningAgent:
    """A synthetic agent that is exactly the q_learning model: delta rule with
    alpha_n = alpha_0 / (1 + kappa (n - 1))^beta, softmax(Q / temperature) choices."""

    def __init__(self, arms, alpha_0, kappa, beta, temperature, initial_value=0.5):
        self.arms, self.initial_value = arms, initial_value
        self.alpha_0, self.kappa, self.beta, self.temperature = alpha_0, kappa, beta, temperature

    def initial_state(self, batch, horizon, device):
        values = torch.full((batch, self.arms), self.initial_value, dtype=torch.float64)
        return values, torch.zeros(batch, self.arms, dtype=torch.float64)

    def act(self, state, observation, generator):
        values, pulls = state
        action, reward, has_previous = BernoulliBandit.decode_observation(observation, self.arms)
        pulled = torch.nn.functional.one_hot(action, self.arms).double() * has_previous[:, None].double()
        pulls = pulls + pulled
        rate = self.alpha_0 / (1 + self.kappa * (pulls - 1).clamp_min(0)) ** self.beta
        values = values + pulled * rate * (reward.double()[:, None] - values)
        return (values, pulls), sample_categorical(values / self.temperature, generator)


def raw_rows(model, *rows: dict[str, float]) -> torch.Tensor:
    return torch.tensor([model.raw(**row) for row in rows], dtype=torch.float64)


def q_nll(model, raw, weights) -> torch.Tensor:
    return model.negative_log_likelihood(raw, model.prepare(weights))


# ---------------------------------------------------------------------------------- settings


def test_settings_are_checked():
    FittedLearnerConfig().validate()
    bad = [
        ({"episodes": 0}, "episodes"),
        ({"replicates": -1}, "replicates"),
        ({"max_pulls": 0}, "max_pulls"),
        ({"models": ()}, "models"),
        ({"models": ("thompson", "thompson")}, "models"),
        ({"models": ("sarsa",)}, "models"),
    ]
    for settings, key in bad:
        with pytest.raises(SettingError) as error:
            FittedLearnerConfig(**settings).validate()
        assert error.value.key == key
    assert FittedLearnerProbe.not_applicable(FittedLearnerConfig(), "bandit") is None
    assert "bandit" in FittedLearnerProbe.not_applicable(FittedLearnerConfig(), "prediction")


# ------------------------------------------------------------------------- Q-learning likelihood


def test_q_learning_likelihood_of_two_arms_by_hand():
    """alpha_n = 0.5 / n (alpha_0 0.5, kappa 1, beta 1), temperature 0.5, Q starts at 0.5.
    Pulls: arm 0 pays 1, arm 0 pays 0, arm 1.  Step 1: Q = (0.5, 0.5), p = 1/2.  Arm 0 learns
    at alpha_1 = 0.5: Q0 = 0.75.  Step 2: p(0) = 1 / (1 + exp((0.5 - 0.75) / 0.5)).  Arm 0 at
    alpha_2 = 0.25: Q0 = 0.75 - 0.25 * 0.75 = 0.5625.  Step 3: p(1) = 1 / (1 + exp(0.0625 / 0.5))."""
    choices = choices_of([[0, 0, 1]], [[1.0, 0.0, 1.0]], arms=2)
    model = QLearningModel(choices, initial_value=0.5)
    raw = raw_rows(model, {"alpha_0": 0.5, "kappa": 1.0, "beta": 1.0, "temperature": 0.5})
    expected = math.log(2) + math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(0.125))
    torch.testing.assert_close(
        q_nll(model, raw, torch.ones(1, 1, dtype=torch.float64)),
        torch.tensor([expected], dtype=torch.float64),
    )
    # A weight scales the episode's contribution; the constant model with alpha 0.5 differs at step 3.
    torch.testing.assert_close(
        q_nll(model, raw, torch.full((1, 1), 2.5, dtype=torch.float64)),
        torch.tensor([2.5 * expected], dtype=torch.float64),
    )
    constant = QLearningModel(choices, initial_value=0.5, decaying=False)
    raw_constant = raw_rows(constant, {"alpha_0": 0.5, "temperature": 0.5})
    # alpha 0.5 at the second pull: Q0 = 0.75 - 0.5 * 0.75 = 0.375; step 3: p(1) = 1 / (1 + exp(-0.25)).
    expected_constant = math.log(2) + math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(-0.25))
    torch.testing.assert_close(
        q_nll(constant, raw_constant, torch.ones(1, 1, dtype=torch.float64)),
        torch.tensor([expected_constant], dtype=torch.float64),
    )


def test_q_learning_likelihood_of_three_arms_by_hand():
    """Same parameters, 3 arms.  Arm 2 pays 1 (p = 1/3; Q2 = 0.75), arm 0 pays 1 with
    Q = (0.5, 0.5, 0.75): p = e^1 / (2 e^1 + e^1.5) = 1 / (2 + e^0.5); Q0 = 0.75.  Arm 2 with
    Q = (0.75, 0.5, 0.75): p = 1 / (2 + e^-0.5)."""
    choices = choices_of([[2, 0, 2]], [[1.0, 1.0, 0.0]], arms=3)
    model = QLearningModel(choices, initial_value=0.5)
    raw = raw_rows(model, {"alpha_0": 0.5, "kappa": 1.0, "beta": 1.0, "temperature": 0.5})
    expected = math.log(3) + math.log(2 + math.exp(0.5)) + math.log(2 + math.exp(-0.5))
    torch.testing.assert_close(
        q_nll(model, raw, torch.ones(1, 1, dtype=torch.float64)),
        torch.tensor([expected], dtype=torch.float64),
    )


def loop_negative_log_likelihood(actions, rewards, arms, initial_value, named, weights):
    """The Q-learning likelihood step by step, one episode at a time (plain autograd)."""
    total = 0.0
    for episode in range(actions.shape[0]):
        values = torch.full((arms,), initial_value, dtype=torch.float64)
        pulls = [0] * arms
        for step in range(actions.shape[1]):
            arm = int(actions[episode, step])
            log_policy = torch.log_softmax(values / named["temperature"], dim=0)
            total = total - weights[episode] * log_policy[arm]
            pulls[arm] += 1
            rate = named["alpha_0"]
            if "kappa" in named:
                rate = rate / (1 + named["kappa"] * (pulls[arm] - 1)) ** named["beta"]
            step_vector = torch.zeros(arms, dtype=torch.float64)
            step_vector[arm] = 1.0
            values = values + step_vector * rate * (rewards[episode, step] - values[arm])
    return total


@pytest.mark.parametrize("decaying", [True, False])
@pytest.mark.parametrize("arms", [2, 3])
def test_q_learning_likelihood_and_gradient_equal_a_step_by_step_loop(decaying, arms):
    generator = torch.Generator().manual_seed(5)
    actions = torch.randint(arms, (5, 9), generator=generator)
    rewards = (torch.rand(5, 9, generator=generator) < 0.5).double()
    choices = Choices(actions=actions, rewards=rewards, arms=arms)
    model = QLearningModel(choices, initial_value=0.3, decaying=decaying)
    raw = torch.randn(3, len(model.parameter_names), generator=generator, dtype=torch.float64)
    weights = torch.rand(3, 5, generator=generator, dtype=torch.float64) * 2
    raw.requires_grad_()
    fast = q_nll(model, raw, weights)
    (fast_gradient,) = torch.autograd.grad((fast * torch.tensor([1.0, -2.0, 0.5])).sum(), raw)
    for row in range(3):
        row_raw = raw[row].detach().clone().requires_grad_()
        named = model.natural(row_raw[None])
        named = {name: value[0] for name, value in named.items()}
        slow = loop_negative_log_likelihood(actions, rewards, arms, 0.3, named, weights[row])
        (slow_gradient,) = torch.autograd.grad(slow, row_raw)
        torch.testing.assert_close(fast[row], slow, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            fast_gradient[row], slow_gradient * [1.0, -2.0, 0.5][row], rtol=1e-9, atol=1e-12
        )


def test_bayes_learning_rate_makes_the_values_posterior_means():
    """With alpha_n = 1 / (n + a + b) (alpha_0 = kappa = 1 / (1 + a + b), beta = 1) and Q starting at
    a / (a + b), the value of every arm before every choice is its posterior mean (a + s) / (a + b + n)."""
    a, b = 2.0, 3.0
    generator = torch.Generator().manual_seed(2)
    actions = torch.randint(3, (7, 12), generator=generator)
    rewards = (torch.rand(7, 12, generator=generator) < 0.6).double()
    choices = Choices(actions=actions, rewards=rewards, arms=3)
    model = QLearningModel(choices, initial_value=a / (a + b))
    rate = 1 / (1 + a + b)
    raw = raw_rows(model, {"alpha_0": rate, "kappa": rate, "beta": 1.0, "temperature": 1.0})
    torch.testing.assert_close(model.learning_rates(raw, 12)[0], bayes_learning_rates((a, b), 12))
    values = model.values(raw)[:, 0]  # (F,)
    pulls, successes = choices.counts_before()
    posterior_mean = (a + successes) / (a + b + pulls)  # (E, T, K)
    chosen = posterior_mean.gather(2, actions[..., None])[..., 0]
    torch.testing.assert_close(values[model.chosen_index], chosen.double())
    others = torch.arange(3).expand(7, 12, 3)
    other_arms = others[others != actions[..., None]].reshape(7, 12, 2)
    torch.testing.assert_close(values[model.other_index], posterior_mean.gather(2, other_arms).double())


def test_fit_recovers_the_learning_rate_of_a_q_learning_agent():
    """A synthetic Q-learning agent (alpha_0 0.6, kappa 0.5, beta 0.7, temperature 0.15) plays
    2000 episodes of 50 pulls of a 2-armed uniform bandit.  Measured over 40 episode-bootstrap
    replicates, the standard deviation of the fitted alpha_n was 0.0095 at n = 1, 0.006 at
    n = 2 and at most 0.005 for n = 3..20; the tolerance is 4 of those (0.038, 0.024, 0.02).
    Bayes' 1 / (n + 2) and the best constant rate are both far outside it."""
    truth = {"alpha_0": 0.6, "kappa": 0.5, "beta": 0.7, "temperature": 0.15}
    environment = bandit(horizon=50)
    agent = QLearningAgent(2, **truth)
    choices = play_choices(agent, environment, 2000, 2000, ("recovery", "probe", 0), ("q",), "cpu")
    model = QLearningModel(choices, initial_value=0.5)
    fit = fit_model(model, torch.ones(1, 2000, dtype=torch.float64))
    fitted = model.learning_rates(fit.raw, 20)[0]
    true_rates = decaying_learning_rates(
        *(torch.tensor([truth[name]], dtype=torch.float64) for name in ("alpha_0", "kappa", "beta")), 20
    )[0]
    tolerance = 4 * torch.tensor([0.0095, 0.006] + [0.005] * 18, dtype=torch.float64)
    assert ((fitted - true_rates).abs() <= tolerance).all(), (fitted, true_rates)
    assert ((bayes_learning_rates((1.0, 1.0), 20) - true_rates).abs() > tolerance).any()
    assert (true_rates.max() - true_rates.min()) > 2 * tolerance.max()  # no constant rate fits
    assert abs(float(model.natural(fit.raw)["temperature"][0]) - 0.15) < 0.01  # bootstrap sd 0.002


# ---------------------------------------------------------------------------------- Thompson


def probability_first_beats_second(a1: int, b1: int, a2: int, b2: int) -> float:
    """P(X1 > X2) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2) with integer a1 (Evan Miller's sum)."""

    def log_beta(x, y):
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    return sum(
        math.exp(log_beta(a2 + i, b1 + b2) - math.log(b1 + i) - log_beta(1 + i, b1) - log_beta(a2, b2))
        for i in range(a1)
    )


@pytest.mark.parametrize(
    "successes,failures",
    [
        ((0, 0), (0, 0)),
        ((1, 0), (0, 1)),
        ((50, 49), (50, 51)),
        ((10, 8), (90, 92)),
        ((0, 1), (100, 99)),
        ((29, 2), (4, 39)),
    ],
)
def test_thompson_probability_equals_the_closed_form(successes, failures):
    """Uniform prior, integer counts: the exact sum, to 1e-6 (the quadrature's error at these
    counts is below 1e-7; the largest posterior here is Beta(51, 52))."""
    probabilities = thompson_choice_probabilities(
        torch.tensor(successes, dtype=torch.float64), torch.tensor(failures, dtype=torch.float64), (1.0, 1.0)
    )
    exact = probability_first_beats_second(
        1 + successes[0], 1 + failures[0], 1 + successes[1], 1 + failures[1]
    )
    assert abs(float(probabilities[0]) - exact) < 1e-6
    assert abs(float(probabilities.sum()) - 1.0) < 1e-6


def test_thompson_probability_equals_monte_carlo():
    """Three arms, a Beta(2, 3) prior and non-integer (scaled) counts, two rows at once: the
    frequency with which each arm's draw is the largest in 200000 draws is within 5 standard
    errors sqrt(p (1 - p) / 200000) of the quadrature."""
    prior = (2.0, 3.0)
    successes = torch.tensor([[2.5, 7.0, 0.0], [30.0, 28.5, 3.0]], dtype=torch.float64)
    failures = torch.tensor([[4.0, 9.5, 1.0], [20.0, 19.0, 1.5]], dtype=torch.float64)
    probabilities = thompson_choice_probabilities(successes, failures, prior)  # (2, 3)
    draws = 200_000
    generator = torch.Generator().manual_seed(11)
    alpha = (prior[0] + successes).expand(draws, -1, -1)
    beta = (prior[1] + failures).expand(draws, -1, -1)
    x = torch._standard_gamma(alpha.contiguous(), generator=generator)
    y = torch._standard_gamma(beta.contiguous(), generator=generator)
    winners = (x / (x + y)).argmax(dim=2)  # (draws, 2)
    frequency = torch.nn.functional.one_hot(winners, 3).double().mean(dim=0)  # (2, 3)
    standard_error = (probabilities * (1 - probabilities) / draws).sqrt()
    assert ((frequency - probabilities).abs() <= 5 * standard_error).all(), (frequency, probabilities)
    torch.testing.assert_close(
        probabilities.sum(dim=1), torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_quadrature_tables_are_distributions():
    """Each row's masses sum to 1, its distribution function rises from 0 to 1, and the mean of x
    under the masses is the Beta mean a / (a + b): to 1e-6 for a flat density and a narrow one
    (Beta(400, 900)), to 1e-4 for one with an infinite density at 1 (Beta(3.5, 0.7): a parameter
    below 1 leaves the density in the arcsine coordinate non-smooth at an end, measured error 1.6e-5)."""
    alpha = torch.tensor([1.0, 3.5, 400.0], dtype=torch.float64)
    beta = torch.tensor([1.0, 0.7, 900.0], dtype=torch.float64)
    (mass, cdf), (coarse_mass, _) = beta_quadrature_tables(alpha, beta, 384)
    assert mass.shape == (3, 384) and coarse_mass.shape == (3, 128)
    torch.testing.assert_close(mass.sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert (cdf.diff(dim=1) >= 0).all() and (cdf >= 0).all() and (cdf <= 1).all()
    u = (torch.arange(384, dtype=torch.float64) + 0.5) / 384
    x = torch.sin(math.pi * u / 2) ** 2
    error = ((mass * x).sum(dim=1) - alpha / (alpha + beta)).abs()
    assert (error < torch.tensor([1e-6, 1e-4, 1e-6], dtype=torch.float64)).all(), error


def thompson_choices(name: str, episodes: int, horizon: int) -> Choices:
    environment = bandit(horizon=horizon)
    agent = build_baseline(name, None, environment)
    return play_choices(agent, environment, episodes, episodes, ("thompson-test", "probe", 0), (name,), "cpu")


def test_thompson_model_interpolates_the_quadrature_in_the_evidence_scale():
    """Between its Chebyshev nodes the model's probabilities agree with the quadrature at that
    scale within 3e-5 (interpolation error below 1e-6, plus up to 1e-5 for each of the model's
    quadrature, whose grid is sized to the counts, and this 384-point one), and its streamed
    likelihood and gradient agree with plain autograd."""
    choices = thompson_choices("thompson", 60, 30)
    model = ThompsonModel(choices, (1.0, 1.0))
    raw = torch.tensor([[-2.1, 0.0], [-0.3, 0.0], [0.4, 0.0], [1.7, 0.0]], dtype=torch.float64)
    interpolated = model.choice_probabilities(raw)  # (M, 4), lapse 0
    pulls, successes = choices.counts_before()
    for column, scale in enumerate(model.natural(raw)["thompson_evidence_scale"]):
        direct = thompson_choice_probabilities(scale * successes, scale * (pulls - successes), (1.0, 1.0))
        chosen = direct.gather(2, choices.actions[..., None])[..., 0].reshape(-1)  # (E T,)
        assert (interpolated[model.row_of, column] - chosen).abs().max() < 3e-5

    raw = torch.tensor([[0.3, 0.2], [-1.0, 0.05]], dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, 60, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    prepared = model.prepare(weights)
    streamed = model.negative_log_likelihood(raw, prepared)
    plain = -(prepared * torch.log(model.choice_probabilities(raw))).sum(dim=0)
    torch.testing.assert_close(streamed, plain)
    (streamed_gradient,) = torch.autograd.grad(streamed.sum(), raw)
    (plain_gradient,) = torch.autograd.grad(plain.sum(), raw)
    torch.testing.assert_close(streamed_gradient, plain_gradient)


def test_thompson_agent_is_fitted_by_thompson_sampling():
    """400 episodes of 50 pulls.  Measured over 40 bootstrap replicates: the Thompson agent's
    fitted evidence scale is 1.008 with standard deviation 0.017 (tolerance 1 +- 0.1, about 6
    of them), its lapse 0; the thompson model beats q_learning on its choices by 0.013 bits per
    choice with standard deviation 0.0014 (asserted: more than 0.005).  A uniformly random agent
    is fitted no better than a uniform guess, 1 bit."""
    models = ("q_learning", "thompson")
    weights = torch.ones(1, 400, dtype=torch.float64)
    rows, thompson_fits = fitted_rows(
        thompson_choices("thompson", 400, 50), weights, models, (1.0, 1.0), 10, True
    )
    _, random_fits = fitted_rows(
        thompson_choices("random", 400, 50), weights, ("thompson",), (1.0, 1.0), 10, True
    )
    named = {
        row["target"]: row["value"]
        for row in rows.filter(pl.col("quantity") == "fitted_parameter").iter_rows(named=True)
    }
    assert abs(named["thompson_evidence_scale"] - 1.0) < 0.1
    assert named["thompson_lapse"] < 0.01
    fit = thompson_fits["thompson"]
    thompson_bits = float(fit.surprisal_bits[0])
    random_bits = float(random_fits["thompson"].surprisal_bits[0])
    assert thompson_bits < 0.6 < 0.99 < random_bits <= 1.0 + 1e-9
    assert float(thompson_fits["q_learning"].surprisal_bits[0]) - thompson_bits > 0.005


# ---------------------------------------------------------------------------------- replicates


def test_replicate_zero_is_the_unweighted_fit_and_every_replicate_its_own():
    """The batch fit of replicates 0..6 against separate fits of replicate 0 (all episodes,
    unweighted) and of replicate 4 alone: the same optimum, to 0.05 standard errors (from the
    Hessian) in every parameter and 1e-3 nats in the likelihood (the optimiser stops within
    about 1e-4 nats).  The replicates themselves differ by about a standard error."""
    choices = thompson_choices("thompson", 300, 40)
    model = QLearningModel(choices, initial_value=0.5)
    weights = episode_bootstrap_weights(300, 6, torch.Generator().manual_seed(3))
    batch = fit_model(model, weights)
    for replicate, alone in (
        (0, fit_model(model, torch.ones(1, 300, dtype=torch.float64))),
        (4, fit_model(model, weights[4:5])),
    ):
        transform = _whitening(model, alone.raw, weights[replicate])[0]  # M: theta = theta_hat + M phi
        standard_errors = (transform @ transform.T).diagonal().sqrt()
        gap = (batch.raw[replicate] - alone.raw[0]).abs() / standard_errors
        assert (gap < 0.05).all(), gap
        assert abs(float(batch.negative_log_likelihood[replicate] - alone.negative_log_likelihood[0])) < 1e-3
    spread = (batch.raw[1:] - batch.raw[0]).abs() / standard_errors
    assert spread.max() > 0.3


# ---------------------------------------------------------------------------------- the probe


def complete_inside_table(rows: pl.DataFrame) -> pl.DataFrame:
    """The probe's rows with placeholder identifying columns, as a probe job writes them."""
    placeholders = {
        name: pl.lit(0 if dtype == pl.Int64() else "x", dtype=dtype)
        for name, dtype in INSIDE_COLUMNS.items()
        if name not in rows.columns
    }
    return rows.with_columns(**placeholders).select(list(INSIDE_COLUMNS))


def test_probe_fits_an_untrained_gru_without_changing_it(tmp_path):
    environment = bandit(horizon=10)
    torch.manual_seed(0)
    model = build_model(
        "gru",
        ARCHITECTURES.get("gru").Config(hidden=8),
        environment.observation_size,
        environment.action_count + 1,
    ).eval()
    before = parameter_hash(model)
    config = FittedLearnerConfig(episodes=40, replicates=4, batch=16)
    config.validate()
    probe = FittedLearnerProbe(config)
    rows = probe.run(
        ModelAgent(model, environment.action_count),
        probe.environment(environment),
        ("env", "probe", 0),
        ("run", "probe"),
    )
    assert parameter_hash(model) == before
    assert dict(rows.schema) == INSIDE_ROW_COLUMNS
    assert set(rows["quantity"]) <= set(INSIDE_QUANTITIES)
    assert rows["value"].is_finite().all()
    cells = rows.group_by("quantity", "target").agg(
        pl.col("index").unique().sort(), pl.col("replicate").unique().sort()
    )
    expected = {
        ("learning_rate", "q_learning"): list(range(1, 11)),
        ("learning_rate", "bayes"): list(range(1, 11)),
        **{("fitted_parameter", name): [0] for name in ("alpha_0", "kappa", "beta", "temperature")},
        **{("fitted_parameter", name): [0] for name in ("thompson_evidence_scale", "thompson_lapse")},
        **{
            ("choice_surprisal_bits", name): [0] for name in ("q_learning", "q_learning_constant", "thompson")
        },
    }
    assert {(row["quantity"], row["target"]): row["index"] for row in cells.iter_rows(named=True)} == expected
    assert all(row["replicate"] == [0, 1, 2, 3, 4] for row in cells.iter_rows(named=True))
    bayes = rows.filter((pl.col("target") == "bayes") & (pl.col("replicate") == 0)).sort("index")
    assert bayes["value"].to_list() == pytest.approx([1 / (n + 2) for n in range(1, 11)])
    # 2 arms: a uniform guess is 1 bit.  An untrained GRU chooses almost regardless of its
    # history; the fits' weak prior keeps the temperature finite, which can cost up to about
    # 0.001 bits on these 400 choices (0.1 nats of prior over 400 ln 2).
    surprisal = rows.filter(pl.col("quantity") == "choice_surprisal_bits")["value"]
    assert (surprisal > 0.9).all() and (surprisal <= 1.001).all()
    write_inside_table(complete_inside_table(rows), tmp_path / "inside.parquet")  # the table's own checks


def test_probe_plays_baselines_and_leaves_out_bayes_without_independent_arms():
    """Arms paying p and 1 - p have no per-arm Beta posterior: no Bayes row, and the fits use
    Beta(1, 1) arms; max_pulls sets the learning-rate indices."""
    environment = bandit(horizon=12, prior="dependent_easy")
    config = FittedLearnerConfig(episodes=30, replicates=2, max_pulls=5, models=("q_learning",))
    rows = FittedLearnerProbe(config).run(
        build_baseline("thompson", None, environment), environment, ("env", "probe", 1), ("thompson", "probe")
    )
    assert "bayes" not in set(rows["target"])
    assert sorted(set(rows.filter(pl.col("quantity") == "learning_rate")["index"])) == [1, 2, 3, 4, 5]
    assert set(rows["target"]) == {"q_learning", "alpha_0", "kappa", "beta", "temperature"}
    assert rows["value"].is_finite().all()
