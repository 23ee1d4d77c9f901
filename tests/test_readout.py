"""The read-out probe: posterior statistics aligned with the model's inputs, ridge read-outs, R^2."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
import torch

from mesaprobe.agents import ModelAgent, ModelPredictor
from mesaprobe.analysis.inside import write_inside_table
from mesaprobe.analysis.tables import GROUP_COLUMNS
from mesaprobe.baselines.bandit import RandomBaseline, RandomConfig
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.envs.bernoulli_bandit import BanditTransform, BernoulliBandit
from mesaprobe.errors import UserError
from mesaprobe.frozen import parameter_hash
from mesaprobe.models import ARCHITECTURES, build_model
from mesaprobe.models.base import SequenceModel
from mesaprobe.probes.adaptation import heldout_streams
from mesaprobe.probes.inside import INSIDE_ROW_COLUMNS, episode_bootstrap_weights
from mesaprobe.probes.posterior_statistics import (
    bandit_offered,
    bandit_statistics,
    prediction_offered,
    prediction_statistics,
)
from mesaprobe.probes.readout import (
    ReadoutConfig,
    ReadoutProbe,
    fit_ridge_readout,
    pooled_r2,
    readout_scores,
)
from mesaprobe.settings import SettingError, build
from mesaprobe.train.rollout import play


def environment(family: str, **settings):
    environment_class = ENVIRONMENTS.get(family)
    return environment_class(build(environment_class.Config, settings, key="", file=""))


# ---------------------------------------------------------------- statistics and their alignment


def random_trajectory(bandit, episodes=16):
    tasks_generator, luck, actions = heldout_streams(("bandit", "test", 0), ("random", "test"), "cpu")
    tasks = bandit.sample_tasks(episodes, tasks_generator, "cpu")
    return play(bandit, tasks, RandomBaseline(RandomConfig(), bandit), luck, actions)


def hand_posterior_mean(prior, successes, failures):
    """Posterior mean of each arm by direct summation (dependent priors) or the Beta rule."""
    if prior == "dependent_easy":  # p in {0.1, 0.9}, arms pay p and 1 - p
        likelihood = {
            p: p ** (successes[0] + failures[1]) * (1 - p) ** (failures[0] + successes[1]) for p in (0.1, 0.9)
        }
        mean = sum(p * weight for p, weight in likelihood.items()) / sum(likelihood.values())
        return [mean, 1 - mean]
    alpha, beta = prior
    return [(alpha + s) / (alpha + beta + s + f) for s, f in zip(successes, failures, strict=True)]


@pytest.mark.parametrize(
    "settings,prior",
    [
        ({"arms": 3, "horizon": 7, "prior": "beta", "prior_alpha": 2.0, "prior_beta": 3.0}, (2.0, 3.0)),
        ({"arms": 2, "horizon": 7, "prior": "dependent_easy"}, "dependent_easy"),
    ],
)
def test_bandit_statistics_are_the_posterior_before_each_pull_read_from_the_inputs(settings, prior):
    bandit = environment("bernoulli_bandit", **settings)
    trajectory = random_trajectory(bandit)
    names = bandit_offered(bandit)
    assert names == ("successes", "failures", "posterior_mean")
    statistics = bandit_statistics(bandit, trajectory.actions, trajectory.rewards, names)
    arms, horizon = bandit.arms, bandit.horizon
    for episode in range(trajectory.actions.shape[0]):
        successes, failures = [0] * arms, [0] * arms
        for t in range(horizon):
            # The model's input at step t + 1 is observation t: it has seen observations 0 .. t.
            if t > 0:
                action, reward, has_previous = BernoulliBandit.decode_observation(
                    trajectory.observations[episode, t][None], arms
                )
                assert bool(has_previous)
                (successes if reward.item() == 1.0 else failures)[action.item()] += 1
            else:
                assert not trajectory.observations[episode, 0].any()  # step 1 sees nothing: the prior
            assert statistics["successes"][episode, t].tolist() == successes
            assert statistics["failures"][episode, t].tolist() == failures
            torch.testing.assert_close(
                statistics["posterior_mean"][episode, t],
                torch.tensor(hand_posterior_mean(prior, successes, failures), dtype=torch.float64),
                rtol=0,
                atol=1e-12,
            )
    assert statistics["successes"][:, 0].abs().sum() == 0  # step 1 is the prior


def test_bandit_posterior_mean_is_offered_only_where_it_is_exact():
    bandit = environment("bernoulli_bandit", arms=2, horizon=5)
    assert "posterior_mean" in bandit_offered(bandit)
    assert bandit_offered(bandit.transformed(BanditTransform(squeeze=(0.2, 0.8)))) == (
        "successes",
        "failures",
    )
    assert bandit_offered(bandit.transformed(BanditTransform(switch_at=0.5))) == ("successes", "failures")
    dependent = environment("bernoulli_bandit", arms=2, horizon=5, prior="dependent_hard")
    relabelled = dependent.transformed(BanditTransform(permute_labels=True))
    assert bandit_offered(relabelled) == ("successes", "failures")


def sample_tokens(env, episodes=6, seed=3):
    generator = torch.Generator().manual_seed(seed)
    return env.sample(env.sample_tasks(episodes, generator, "cpu"), generator)


@pytest.mark.parametrize(
    "family,settings,offered",
    [
        ("iid", {"symbols": 3, "horizon": 9}, ("counts", "bayes_prediction")),
        (
            "markov",
            {"symbols": 2, "horizon": 9, "order": 2},
            ("counts", "bayes_prediction", "transition_counts"),
        ),
        (
            "vom",
            {"symbols": 2, "horizon": 9, "depth": 2},
            ("counts", "bayes_prediction", "transition_counts"),
        ),
        ("streak", {"symbols": 3, "horizon": 9}, ("counts", "bayes_prediction", "run_length")),
        ("periodic", {"symbols": 2, "horizon": 9}, ("counts", "bayes_prediction")),
        (
            "switching",
            {"symbols": 2, "horizon": 9},
            ("counts", "bayes_prediction", "run_length", "change_probability"),
        ),
    ],
)
def test_prediction_statistics_are_the_posterior_after_the_tokens_the_inputs_carry(family, settings, offered):
    env = environment(family, **settings)
    assert prediction_offered(env) == offered
    tokens = sample_tokens(env)
    statistics = prediction_statistics(env, tokens, offered)
    inputs = env.observation(tokens)  # (B, T, K + 1): input t carries x_{t-1}
    symbols, (episodes, horizon) = env.symbols, tokens.shape
    seen = inputs[:, :, :symbols].double().cumsum(dim=1)  # what inputs 0 .. t carry, per symbol
    expected_counts = seen[:, :, 1:] if symbols == 2 else seen
    torch.testing.assert_close(statistics["counts"], expected_counts, rtol=0, atol=0)
    expected_prediction = env.bayes_predict(tokens)
    expected_prediction = expected_prediction[:, :, 1:] if symbols == 2 else expected_prediction
    torch.testing.assert_close(statistics["bayes_prediction"], expected_prediction, rtol=0, atol=0)
    for episode, t in itertools.product(range(episodes), range(horizon)):
        history = tokens[episode, :t].tolist()
        if "transition_counts" in offered:
            # Counts of (context, next symbol) over x_0 .. x_{t-1}, the history sun-padded.
            depth = settings.get("order", settings.get("depth"))
            padded = [0] * depth + history
            table = torch.zeros(symbols**depth, symbols, dtype=torch.float64)
            for position in range(depth, len(padded)):
                context = padded[position - depth : position]
                if family == "markov":  # oldest digit first
                    index = sum(c * symbols ** (depth - 1 - i) for i, c in enumerate(context))
                else:  # most recent digit first
                    index = sum(c * symbols**i for i, c in enumerate(reversed(context)))
                table[index, padded[position]] += 1
            assert statistics["transition_counts"][episode, t].tolist() == table.flatten().tolist()
        if family == "streak":
            run = 0
            for position, token in enumerate(history):
                run = run + 1 if position > 0 and token == history[position - 1] else 1
            assert statistics["run_length"][episode, t, 0].item() == run
    assert statistics["counts"][:, 0].abs().sum() == 0  # step 1 has seen nothing


def test_unoffered_prediction_statistics_are_refused():
    with pytest.raises(ValueError, match="does not offer"):
        prediction_statistics(
            environment("iid", horizon=4), torch.zeros(2, 4, dtype=torch.long), ("run_length",)
        )


# ---------------------------------------------------------------- change-point posteriors against enumeration


def enumerate_segments(tokens: list[int], hazard: float, segment_evidence) -> tuple[float, float]:
    """(posterior mean tokens in the current segment, P(latest token started a segment)) by
    summing over every change-point pattern of ``tokens``; ``segment_evidence(segment)`` is
    the prior-weighted likelihood of one segment's tokens."""
    posterior_run = posterior_change = total = 0.0
    for rest in itertools.product([0, 1], repeat=len(tokens) - 1):
        changes = (1, *rest)  # the first token always starts a segment
        weight = math.prod(hazard if change else 1.0 - hazard for change in rest)
        starts = [j for j, change in enumerate(changes) if change]
        for start, end in zip(starts, [*starts[1:], len(tokens)], strict=True):
            weight *= segment_evidence(tokens[start:end])
        total += weight
        posterior_change += weight * changes[-1]
        posterior_run += weight * (len(tokens) - starts[-1])
    return posterior_run / total, posterior_change / total


def dirichlet_evidence(concentration):
    def evidence(segment):
        counts, probability = [0.0] * len(concentration), 1.0
        for token in segment:
            probability *= (concentration[token] + counts[token]) / (sum(concentration) + sum(counts))
            counts[token] += 1
        return probability

    return evidence


def test_switching_change_point_statistics_match_enumeration():
    concentration = (0.7, 1.3, 2.0)
    env = environment("switching", symbols=3, horizon=7, hazard=0.3, prior_counts=concentration)
    tokens = sample_tokens(env, episodes=4, seed=1)
    probs, run_length, change_probability = env.bayes_predict_with_segments(tokens)
    torch.testing.assert_close(probs, env.bayes_predict(tokens), rtol=0, atol=0)
    assert run_length[:, 0].abs().sum() == 0 and change_probability[:, 0].abs().sum() == 0
    for episode, t in itertools.product(range(4), range(1, 7)):
        run, change = enumerate_segments(tokens[episode, :t].tolist(), 0.3, dirichlet_evidence(concentration))
        assert run_length[episode, t].item() == pytest.approx(run, abs=1e-12)
        assert change_probability[episode, t].item() == pytest.approx(change, abs=1e-12)


def test_drifting_change_point_statistics_match_enumeration():
    env = environment(
        "drifting",
        symbols=2,
        horizon=6,
        hazard=0.25,
        families=("iid", "markov", "periodic"),
        components={"periodic": {"max_period": 2}},
    )
    tokens = sample_tokens(env, episodes=4, seed=2)
    probs, run_length, change_probability = env.bayes_predict_with_segments(tokens)
    torch.testing.assert_close(probs, env.bayes_predict(tokens), rtol=0, atol=0)
    families = env.segment_families

    def evidence(segment):
        # Each family equally likely, its own exact predictor restarted at the segment's start.
        x = torch.tensor([segment])
        return sum(
            family.bayes_predict(x)[0].gather(1, x[0][:, None]).prod().item() / len(families)
            for family in families
        )

    for episode, t in itertools.product(range(4), range(1, 6)):
        run, change = enumerate_segments(tokens[episode, :t].tolist(), 0.25, evidence)
        assert run_length[episode, t].item() == pytest.approx(run, abs=1e-12)
        assert change_probability[episode, t].item() == pytest.approx(change, abs=1e-12)


def test_certain_changes_make_every_token_a_segment_of_one():
    env = environment("switching", horizon=5, hazard=1.0)
    _, run_length, change_probability = env.bayes_predict_with_segments(sample_tokens(env))
    assert (run_length[:, 1:] == 1).all() and (change_probability[:, 1:] == 1).all()


# ---------------------------------------------------------------- ridge read-outs


def hand_ridge(features, targets, penalties, validation):
    """The read-out written out with numpy, one (step, column) at a time."""
    features, targets = np.asarray(features, np.float64), np.asarray(targets, np.float64)
    count, steps, _ = features.shape
    mean, spread = features.mean(axis=0), features.std(axis=0)
    z = (features - mean) / spread

    def solve(x, y, penalty):
        xm, ym = x.mean(axis=0), y.mean()
        xc = x - xm
        w = np.linalg.solve(xc.T @ xc / len(x) + penalty * np.eye(x.shape[1]), xc.T @ (y - ym) / len(x))
        return w, ym - xm @ w

    inner = count - validation
    chosen = np.empty(targets.shape[1:])
    predictions = np.empty((count, *targets.shape[1:]))
    for t, c in itertools.product(range(steps), range(targets.shape[2])):
        errors = []
        for penalty in penalties:
            w, b = solve(z[:inner, t], targets[:inner, t, c], penalty)
            errors.append(((z[inner:, t] @ w + b - targets[inner:, t, c]) ** 2).sum())
        chosen[t, c] = penalties[int(np.argmin(errors))]
        w, b = solve(z[:, t], targets[:, t, c], chosen[t, c])
        predictions[:, t, c] = z[:, t] @ w + b
    return chosen, predictions


def test_ridge_with_penalty_selection_equals_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 3, 4, generator=generator, dtype=torch.float64) * torch.tensor(
        [1.0, 3.0, 0.5, 2.0]
    )
    truth = torch.randn(3, 4, 2, generator=generator, dtype=torch.float64)
    noise_scale = torch.tensor([0.0, 0.3, 3.0], dtype=torch.float64)[:, None]  # (T, 1): none, some, much
    targets = torch.einsum("nth,thc->ntc", features, truth) + noise_scale * torch.randn(
        40, 3, 2, generator=generator, dtype=torch.float64
    )
    penalties = (1e-3, 1e-1, 10.0, 1000.0)
    readout = fit_ridge_readout(features, targets, penalties, validation=8)
    chosen, predictions = hand_ridge(features, targets, penalties, validation=8)
    np.testing.assert_array_equal(readout.penalty.numpy(), chosen)
    np.testing.assert_allclose(readout.predict(features).numpy(), predictions, rtol=0, atol=1e-10)
    # Noise-free targets want the least shrinkage; a readout of noise alone is no better.
    assert (readout.penalty[0] == 1e-3).all()
    # The fitted weights make the gradient of mean squared error + penalty ||w||^2 vanish.
    z = (features - readout.mean) / readout.scale
    residual = torch.einsum("nth,thc->ntc", z, readout.weights) + readout.intercept - targets
    gradient = (
        2 * torch.einsum("nth,ntc->thc", z, residual) / 40 + 2 * readout.penalty[:, None, :] * readout.weights
    )
    assert gradient.abs().max() < 1e-10
    assert residual.sum(dim=0).abs().max() < 1e-10  # the intercept is not penalised


def test_ridge_drops_constant_features_and_prefers_large_penalties_for_noise():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(150, 2, 80, generator=generator, dtype=torch.float64)
    features[:, :, 2] = 5.0  # a dead unit
    targets = torch.randn(150, 2, 3, generator=generator, dtype=torch.float64)  # unrelated to the features
    readout = fit_ridge_readout(features, targets, (1e-3, 1e3), validation=30)
    assert (readout.weights[:, 2] == 0).all() and torch.isinf(readout.scale[:, 2]).all()
    # 79 noise features fitted to 120 episodes: least squares roughly triples the validation
    # error (1 + 79 / (120 - 79)), far beyond chance, so the large penalty wins everywhere.
    assert (readout.penalty == 1e3).all()


def test_replicate_zero_is_the_plain_r2_and_replicates_are_resampled_episodes():
    generator = torch.Generator().manual_seed(2)
    targets = torch.randn(50, 4, 2, generator=generator, dtype=torch.float64)
    targets[:, 0] = 1.5  # constant at the first step: no R^2 there
    predictions = targets + 0.5 * torch.randn(50, 4, 2, generator=generator, dtype=torch.float64)
    weights = episode_bootstrap_weights(50, 30, torch.Generator().manual_seed(3))
    r2, kept = pooled_r2(targets, predictions, weights)
    assert kept.tolist() == [False, True, True, True]
    y, yhat = targets[:, 1:].numpy(), predictions[:, 1:].numpy()
    plain = 1 - ((y - yhat) ** 2).sum(axis=(0, 2)) / ((y - y.mean(axis=0)) ** 2).sum(axis=(0, 2))
    np.testing.assert_allclose(r2[0, 1:].numpy(), plain, rtol=0, atol=1e-12)
    # Replicate r is the plain R^2 of the episodes resample r drew (each as often as drawn).
    for replicate in (1, 17):
        drawn = torch.repeat_interleave(torch.arange(50), weights[replicate].long())
        y, yhat = targets[drawn, 1:].numpy(), predictions[drawn, 1:].numpy()
        plain = 1 - ((y - yhat) ** 2).sum(axis=(0, 2)) / ((y - y.mean(axis=0)) ** 2).sum(axis=(0, 2))
        np.testing.assert_allclose(r2[replicate, 1:].numpy(), plain, rtol=0, atol=1e-12)
    assert (r2[1:, 1:].std(dim=0) > 1e-3).all()  # resamples differ
    assert torch.isnan(r2[:, 0]).all()


def test_readout_scores_leave_out_steps_where_the_statistic_is_constant_in_some_resample():
    targets = torch.zeros(40, 3, 1, dtype=torch.float64)
    targets[:, 2, 0] = torch.arange(40, dtype=torch.float64)  # varies at step 3
    targets[-1, 1, 0] = 1.0  # step 2: one test episode differs, so some resamples miss it
    features = torch.randn(40, 3, 2, generator=torch.Generator().manual_seed(4))
    weights = episode_bootstrap_weights(20, 40, torch.Generator().manual_seed(5))
    assert (weights[:, -1] == 0).any()
    scores = readout_scores(features, {"statistic": targets}, 20, (1.0,), weights)
    r2, steps = scores["statistic"]
    assert steps.tolist() == [3] and r2.shape == (41, 1) and torch.isfinite(r2).all()


# ---------------------------------------------------------------- the probe end to end


class CountingModel(SequenceModel):
    """A stub whose hidden state is exactly the symbol counts its inputs carried (layer "counts")
    and pure noise (layer "noise")."""

    def __init__(self, symbols: int):
        super().__init__(None, symbols + 1, symbols)
        self.symbols = symbols
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, xs, return_hidden=False):
        counts = xs[:, :, : self.symbols].cumsum(dim=1)  # (B, T, K): tokens x_0 .. x_{t-1}
        noise = torch.randn(*xs.shape[:2], 6, generator=torch.Generator().manual_seed(xs.shape[0]))
        outputs = torch.zeros(*xs.shape[:2], self.symbols)
        return (outputs, {"counts": counts, "noise": noise}) if return_hidden else outputs


def test_a_model_holding_the_counts_reads_out_perfectly_and_noise_reads_out_nothing():
    env = environment("iid", symbols=3, horizon=12)
    probe = ReadoutProbe(ReadoutConfig(episodes=2000, replicates=5, statistics=("counts",)))
    rows = probe.run(ModelPredictor(CountingModel(3)), env, ("iid", "readout", 0), ("stub", "readout"))
    estimates = rows.filter(pl.col("replicate") == 0)
    counts = estimates.filter(pl.col("layer") == "counts")["value"]
    noise = estimates.filter(pl.col("layer") == "noise")["value"]
    assert sorted(estimates["index"].unique().to_list()) == list(range(2, 13))  # step 1: all counts 0
    # The state is the statistic, so only the smallest penalty's shrinkage (about 1e-3) is lost.
    assert counts.min() > 0.999
    # Six noise features fitted to 1000 episodes: the expected test R^2 is about -(6 + 1) / 1000
    # and its spread about sqrt(2 * 6) / 1000, so |R^2| < 0.05 holds by more than 10 spreads.
    assert noise.abs().max() < 0.05


def trained_and_untrained(family, settings, input_size, output_size):
    config = ARCHITECTURES.get(family).Config(**settings)
    torch.manual_seed(0)
    trained = build_model(family, config, input_size, output_size).eval()
    untrained = build_model(family, config, input_size, output_size).eval()
    return trained, untrained


@pytest.mark.parametrize(
    "family,settings",
    [
        ("bernoulli_bandit", {"arms": 2, "horizon": 8}),
        ("switching", {"horizon": 8, "hazard": 0.2}),
    ],
)
def test_probe_end_to_end_on_a_small_gru(family, settings, tmp_path):
    env = environment(family, **settings)
    outputs = env.action_count + 1 if env.kind == "bandit" else env.symbols
    model, untrained = trained_and_untrained("gru", {"hidden": 8, "layers": 2}, env.observation_size, outputs)
    agent = ModelAgent(model, env.action_count) if env.kind == "bandit" else ModelPredictor(model)
    hashes = parameter_hash(model), parameter_hash(untrained)
    probe = ReadoutProbe(ReadoutConfig(episodes=60, replicates=4, batch=25))
    keys = {"heldout_key": (family, "readout", 0), "agent_key": ("gru", "readout")}
    rows = probe.run(agent, env, **keys, untrained=untrained)
    assert (parameter_hash(model), parameter_hash(untrained)) == hashes
    assert rows.schema == INSIDE_ROW_COLUMNS
    assert set(rows["quantity"]) == {"readout_r2", "readout_r2_untrained"}
    assert set(rows["layer"]) == {"layer1", "layer2"}
    offered = bandit_offered(env) if env.kind == "bandit" else prediction_offered(env)
    assert set(rows["target"]) == set(offered)
    assert rows["value"].is_finite().all() and rows.null_count().sum_horizontal().item() == 0
    assert set(rows["replicate"]) == set(range(5))
    assert rows["index"].min() >= 2 and rows["index"].max() <= 8  # step 1 (the prior) has no R^2
    # The trained and untrained read-outs score the same steps of the same episodes.
    steps = rows.group_by("quantity", "layer", "target").agg(pl.col("index").unique().sort())
    assert steps.group_by("target").agg(pl.col("index").n_unique())["index"].max() == 1
    # Same keys, same rows; and the table passes the inside-table check.
    torch.testing.assert_close(
        rows["value"].to_numpy(),
        probe.run(agent, env, **keys, untrained=untrained)["value"].to_numpy(),
        rtol=0,
        atol=0,
    )
    identifying = [pl.lit("x").alias(name) for name in GROUP_COLUMNS]
    identifying += [pl.lit("gru").alias("run"), pl.lit(0, dtype=pl.Int64).alias("seed")]
    write_inside_table(rows.with_columns(identifying), tmp_path / "inside.parquet")
    without = probe.run(agent, env, **keys)
    assert set(without["quantity"]) == {"readout_r2"}
    assert without.sort("layer", "target", "index", "replicate").equals(
        rows.filter(pl.col("quantity") == "readout_r2").sort("layer", "target", "index", "replicate")
    )


# ---------------------------------------------------------------- settings


def test_settings_are_checked():
    ReadoutConfig().validate()
    with pytest.raises(SettingError, match="statistics"):
        ReadoutConfig(statistics=("posterior_variance",)).validate()
    with pytest.raises(SettingError, match="fit_fraction"):
        ReadoutConfig(episodes=5, fit_fraction=0.9).validate()
    with pytest.raises(SettingError, match="penalties"):
        ReadoutConfig(penalties=(0.0, 1.0)).validate()
    with pytest.raises(SettingError, match="replicates"):
        ReadoutConfig(replicates=-1).validate()


def test_statistics_apply_per_kind_and_per_family():
    bandit_only = ReadoutConfig(statistics=("successes",))
    assert ReadoutProbe.not_applicable(bandit_only, "bandit") is None
    assert "do not apply to prediction" in ReadoutProbe.not_applicable(bandit_only, "prediction")
    assert ReadoutProbe.not_applicable(ReadoutConfig(), "regression") is not None
    probe = ReadoutProbe(ReadoutConfig(statistics=("run_length", "counts")))
    assert probe.statistic_names(environment("iid")) == ("counts",)  # iid has no run length
    assert probe.statistic_names(environment("switching")) == ("run_length", "counts")
    with pytest.raises(UserError, match="offers none"):
        ReadoutProbe(ReadoutConfig(statistics=("change_probability",))).statistic_names(environment("markov"))
