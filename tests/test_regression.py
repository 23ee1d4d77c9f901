"""In-context linear regression: exact ridge and dmmse, projected inputs, training, a whole study."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from mesaprobe import jobs
from mesaprobe.agents import ModelRegressor
from mesaprobe.analysis.charts import make_charts
from mesaprobe.baselines import BASELINES
from mesaprobe.baselines.regression import DiscreteMMSEPredictor, RidgePredictor, pool_posterior_predict
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.envs.linear_regression import (
    Examples,
    LinearRegression,
    LinearRegressionConfig,
    ProjectedRegression,
    RegressionTasks,
    ridge_predict,
)
from mesaprobe.envs.task_pool import TaskPool
from mesaprobe.errors import SpecError, UserError
from mesaprobe.metrics import regression_step_metrics
from mesaprobe.models import ARCHITECTURES, build_model
from mesaprobe.probes.adaptation import AdaptationConfig, AdaptationProbe
from mesaprobe.seeding import fixed_orthogonal, make_generator
from mesaprobe.study import load_study, make_plan
from mesaprobe.study.outputs import chart_outputs
from mesaprobe.study.plan import SkippedBaseline, Unplayed
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.loop import train
from mesaprobe.train.state import TrainingState
from tests.conftest import run_all_jobs


def environment(dimension: int = 3, horizon: int = 6, noise_variance: float = 0.25) -> LinearRegression:
    return LinearRegression(LinearRegressionConfig(dimension, horizon, noise_variance))


def draw(env, episodes: int, name: str = "draw") -> tuple[RegressionTasks, Examples]:
    generator = make_generator(name)
    tasks = env.sample_tasks(episodes, generator, "cpu")
    return tasks, env.sample(tasks, generator)


# --------------------------------------------------------------------------- the environment


def test_registered_with_its_own_kind_and_sizes():
    env = ENVIRONMENTS.get("linear_regression")(LinearRegressionConfig())
    assert (env.kind, env.dimension, env.horizon, env.noise_variance) == ("regression", 8, 16, 0.25)
    assert env.observation_size == 2 * 8 + 2
    tasks, examples = draw(env, 5)
    assert tasks.weights.shape == (5, 8) and tasks.weights.dtype == torch.float64
    assert examples.inputs.shape == (5, 16, 8) and examples.targets.shape == (5, 16)


def test_targets_are_linear_plus_noise_of_the_stated_variance():
    env = environment(dimension=4, horizon=8, noise_variance=0.5)
    tasks, examples = draw(env, 5000)
    noise = examples.targets - env.oracle_predict(tasks, examples)
    # Variance of 40000 N(0, 0.5) draws: standard error 0.5 * sqrt(2 / 40000) = 0.0035; 5 sigma.
    assert abs(noise.var().item() - 0.5) < 5 * 0.5 * math.sqrt(2 / noise.numel())
    assert abs(examples.inputs.var().item() - 1.0) < 5 * math.sqrt(2 / examples.inputs.numel())
    assert abs(tasks.weights.var().item() - 1.0) < 5 * math.sqrt(2 / tasks.weights.numel())


def test_observation_is_causal_and_carries_the_previous_example():
    env = environment(dimension=2, horizon=4)
    _, examples = draw(env, 3)
    observed = env.observation(examples)  # (B, K, 2 D + 2)
    assert observed.shape == (3, 4, 6) and observed.dtype == torch.float32
    torch.testing.assert_close(observed[:, :, :2], examples.inputs.float())  # x_k
    torch.testing.assert_close(observed[:, 1:, 2:4], examples.inputs[:, :-1].float())  # x_(k-1)
    torch.testing.assert_close(observed[:, 1:, 4], examples.targets[:, :-1].float())  # y_(k-1)
    assert (observed[:, 0, 2:5] == 0).all()  # nothing before the first example
    torch.testing.assert_close(observed[0, :, 5], torch.arange(4) / 4.0)
    # The target y_k itself never reaches step k: changing it changes later steps only.
    changed = Examples(examples.inputs, examples.targets.clone())
    changed.targets[:, 2] += 10.0
    difference = (env.observation(changed) - observed).abs().sum(dim=(0, 2))
    assert difference[:3].eq(0).all() and difference[3] > 0


@pytest.mark.parametrize(
    "settings,key",
    [
        ({"dimension": 0}, "dimension"),
        ({"horizon": 0}, "horizon"),
        ({"noise_variance": 0.0}, "noise_variance"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, settings, key):
    path = write_study(tmp_path, lambda data: data["environments"]["linreg"].update(settings))
    with pytest.raises(SpecError) as error:
        load_study(path)
    assert error.value.key == f"environments.linreg.{key}"


def test_regression_is_trained_by_regress_only(tmp_path):
    path = write_study(tmp_path, lambda data: data["training"].update(algorithm="predict"))
    with pytest.raises(SpecError, match="regress") as error:
        make_plan(load_study(path))
    assert error.value.key == "training.algorithm"


# --------------------------------------------------------------------------- ridge


def gaussian_conditional_means(inputs: np.ndarray, targets: np.ndarray, noise_variance: float) -> np.ndarray:
    """E[y_k | y_<k] by conditioning the joint Gaussian of the targets (K,) given the inputs (K, D).

    Under w ~ N(0, I) the targets are jointly N(0, X X^T + noise I): a derivation
    that never forms a posterior over w, so it checks ridge independently.
    """
    covariance = inputs @ inputs.T + noise_variance * np.eye(len(targets))
    means = np.zeros(len(targets))
    for k in range(1, len(targets)):
        means[k] = covariance[k, :k] @ np.linalg.solve(covariance[:k, :k], targets[:k])
    return means


def test_ridge_is_the_exact_posterior_mean():
    env = environment(dimension=3, horizon=7, noise_variance=0.3)
    tasks, examples = draw(env, 4)
    bayes = env.bayes_predict(examples)
    assert bayes.dtype == torch.float64 and (bayes[:, 0] == 0).all()
    for episode in range(4):
        exact = gaussian_conditional_means(
            examples.inputs[episode].numpy(), examples.targets[episode].numpy(), 0.3
        )
        np.testing.assert_allclose(bayes[episode].numpy(), exact, rtol=0, atol=1e-10)
    # The ridge baseline is the same predictor.
    ridge = RidgePredictor(RidgePredictor.Config(), env)
    torch.testing.assert_close(ridge.predict(env, tasks, examples), bayes, rtol=0, atol=0)


def test_ridge_recovers_noiseless_weights_after_d_examples():
    env = environment(dimension=4, horizon=10)
    tasks, examples = draw(env, 50)
    noiseless = env.oracle_predict(tasks, examples)  # targets without noise
    predictions = ridge_predict(examples.inputs, noiseless, penalty=1e-9)
    error = (predictions - noiseless).pow(2) / 4
    assert error[:, 4:].max() < 1e-12  # after D examples w is determined
    assert error[:, :4].mean(dim=0).min() > 1e-3  # before, it is not


# --------------------------------------------------------------------------- dmmse


def test_dmmse_with_one_task_is_the_oracle():
    env = environment(dimension=3, horizon=6)
    pool = TaskPool(env, 1, key=("linreg", 0))
    tasks, examples = draw(pool, 20)
    dmmse = DiscreteMMSEPredictor(DiscreteMMSEPredictor.Config(), pool, pool=pool.pool())
    torch.testing.assert_close(dmmse.predict(pool, tasks, examples), pool.oracle_predict(tasks, examples))


def test_dmmse_locates_a_pool_task_after_one_example():
    # Pool tasks differ by O(1) in w . x; with noise variance 1e-4 one example tells them apart.
    env = environment(dimension=4, horizon=5, noise_variance=1e-6)
    pool = TaskPool(env, 6, key=("linreg", 1))
    tasks, examples = draw(pool, 40)
    dmmse = DiscreteMMSEPredictor(None, pool, pool=pool.pool()).predict(pool, tasks, examples)
    oracle = pool.oracle_predict(tasks, examples)
    torch.testing.assert_close(dmmse[:, 1:], oracle[:, 1:], rtol=0, atol=1e-6)
    assert (dmmse[:, 0] - oracle[:, 0]).abs().max() > 0.1  # before any example it averages the pool


def enumerated_pool_mean(inputs, targets, pool, noise_variance) -> np.ndarray:
    """Posterior mean of y_k over a uniform pool by explicit enumeration of Gaussian likelihoods."""
    steps, size = len(targets), len(pool)
    means = np.zeros(steps)
    for k in range(steps):
        log_weights = np.array(
            [
                sum(
                    -0.5 * math.log(2 * math.pi * noise_variance)
                    - (targets[j] - pool[m] @ inputs[j]) ** 2 / (2 * noise_variance)
                    for j in range(k)
                )
                for m in range(size)
            ]
        )
        weights = np.exp(log_weights - log_weights.max())
        means[k] = sum(weights[m] * (pool[m] @ inputs[k]) for m in range(size)) / weights.sum()
    return means


@pytest.mark.parametrize("block_elements", [1, 1 << 22], ids=["one-task-blocks", "one-block"])
@pytest.mark.parametrize("noise_variance", [0.25, 1e-3])
def test_dmmse_is_exact_enumeration_over_a_small_pool(block_elements, noise_variance):
    env = environment(dimension=2, horizon=5, noise_variance=noise_variance)
    pool = TaskPool(env, 5, key=("linreg", 2))
    _, examples = draw(env, 3)  # fresh tasks: the pool posterior never concentrates exactly
    weights = pool.pool().weights
    predicted = pool_posterior_predict(
        examples.inputs, examples.targets, weights, noise_variance, block_elements=block_elements
    )
    assert torch.isfinite(predicted).all()
    for episode in range(3):
        exact = enumerated_pool_mean(
            examples.inputs[episode].numpy(),
            examples.targets[episode].numpy(),
            weights.numpy(),
            noise_variance,
        )
        np.testing.assert_allclose(predicted[episode].numpy(), exact, rtol=1e-9, atol=1e-9)


def test_dmmse_needs_a_pool():
    with pytest.raises(UserError, match="task_pool"):
        DiscreteMMSEPredictor(None, environment())


# --------------------------------------------------------------------------- projected inputs


def test_projection_is_a_fixed_orthogonal_matrix():
    q = fixed_orthogonal(5, "input-projection")
    torch.testing.assert_close(q.T @ q, torch.eye(5, dtype=torch.float64))
    assert not torch.allclose(q, torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(q, fixed_orthogonal(5, "input-projection"), rtol=0, atol=0)
    assert not torch.equal(q, fixed_orthogonal(5, "other"))


def test_ridge_stays_exact_under_projected_inputs():
    """The prior is rotation invariant: Q w ~ N(0, Q Q^T) = N(0, I), so ridge on Q x is still Bayes."""
    env = environment(dimension=3, horizon=6, noise_variance=0.2)
    projected = AdaptationProbe(AdaptationConfig(project_inputs=True)).environment(env)
    assert isinstance(projected, ProjectedRegression)
    generator = make_generator("p")
    tasks = projected.sample_tasks(4, generator, "cpu")
    state = generator.get_state()
    shown = projected.sample(tasks, generator)
    generator.set_state(state)
    original = env.sample(tasks, generator)
    q = projected.projection
    torch.testing.assert_close(shown.inputs, original.inputs @ q.T)  # every x_k shown as Q x_k
    torch.testing.assert_close(shown.targets, original.targets, rtol=0, atol=0)
    # Ridge's predictions do not change, nor does the oracle's (it uses Q w on Q x).
    torch.testing.assert_close(
        projected.bayes_predict(shown), env.bayes_predict(original), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(projected.oracle_predict(tasks, shown), env.oracle_predict(tasks, original))
    # The exact posterior mean of the projected problem (prior covariance Q Q^T on Q w, built
    # explicitly) is ridge on the projected inputs.
    prior = (q @ q.T).numpy()
    for episode in range(4):
        x, y = shown.inputs[episode].numpy(), shown.targets[episode].numpy()
        for k in range(1, 6):
            precision = np.linalg.inv(prior) + x[:k].T @ x[:k] / 0.2
            mean = np.linalg.solve(precision, x[:k].T @ y[:k] / 0.2)
            assert abs(x[k] @ mean - projected.bayes_predict(shown)[episode, k].item()) < 1e-10


def test_projection_applies_to_pool_tasks_and_regression_only():
    env = environment()
    pool = TaskPool(env, 3, key=("linreg", 3))
    config = AdaptationConfig(tasks="pool", project_inputs=True)
    config.validate()  # the one out-of-distribution setting that combines with pool tasks
    played = AdaptationProbe(config).environment(pool)
    tasks = played.sample_tasks(30, make_generator("t"), "cpu")
    assert set(tasks.weights[:, 0].tolist()) <= set(pool.pool().weights[:, 0].tolist())
    with pytest.raises(UserError, match="regression environments only"):
        AdaptationProbe(AdaptationConfig(project_inputs=True)).environment(
            ENVIRONMENTS.get("iid")(ENVIRONMENTS.get("iid").Config())
        )
    with pytest.raises(UserError, match="permute_labels"):
        AdaptationProbe(AdaptationConfig(permute_labels=True)).environment(env)


# --------------------------------------------------------------------------- models and training


@pytest.mark.parametrize("family", ARCHITECTURES.names())
def test_step_agrees_with_forward_on_regression_inputs(family):
    from tests.test_models import VARIANTS

    env = environment(dimension=3, horizon=9)
    torch.manual_seed(0)
    config = ARCHITECTURES.get(family).Config(**VARIANTS[family][0])
    model = build_model(family, config, env.observation_size, 1).eval()
    _, examples = draw(env, 4)
    xs = env.observation(examples)
    with torch.no_grad():
        whole = model(xs)
        state = model.initial_state(4, 9, "cpu")
        steps = []
        for k in range(9):
            state, y = model.step(state, xs[:, k])
            steps.append(y)
    assert whole.shape == (4, 9, 1)
    torch.testing.assert_close(torch.stack(steps, dim=1), whole, atol=1e-5, rtol=1e-5)


def held_out_mse(model, env) -> torch.Tensor:
    """(K,) mean squared error / D of the model at each step, on 2000 held-out episodes."""
    tasks, examples = draw(env, 2000, "held-out")
    with torch.no_grad():
        predictions = ModelRegressor(model).predict(env, tasks, examples)
    metrics = regression_step_metrics(
        predictions, env.bayes_predict(examples), examples.targets, env.dimension
    )
    return metrics["mse_per_dim"].mean(dim=0)


def test_regress_training_learns_in_context(tmp_path):
    env = environment(dimension=2, horizon=8)
    torch.manual_seed(0)
    model = build_model(
        "transformer",
        ARCHITECTURES.get("transformer").Config(d_model=16, layers=1, heads=2),
        env.observation_size,
        1,
    )
    before = held_out_mse(model, env)
    config = TrainingConfig(algorithm="regress", env_steps=8 * 32 * 300, batch=32, lr=3e-3)
    state = TrainingState(
        model,
        torch.optim.Adam(model.parameters(), lr=config.lr),
        make_generator("tasks"),
        make_generator("actions"),
    )
    train(env, state, config, tmp_path / "partial.pt", {}, progress=False)
    after = held_out_mse(model, env)
    assert set(state.history[-1]) == {"update", "env_steps", "mse_per_dim"}
    # Predicting the prior mean 0 costs E[y^2] / D = (D + noise) / D = 1.125 per step.
    assert after.mean() < 0.75 * before.mean() and after.mean() < 0.8
    assert after[-1] < 0.6 * after[0]  # it learns from the examples: late steps beat the first


# --------------------------------------------------------------------------- a whole study

STUDY = """\
study: tinyregression
seeds: [0, 1]
environments:
  linreg: {family: linear_regression, dimension: 3, horizon: 8, task_pool: 4}
  unlimited: {family: linear_regression, dimension: 3, horizon: 8}
architectures:
  gru: {family: gru, hidden: 8}
  transformer: {family: transformer, d_model: 8, layers: 1, heads: 2}
training: {algorithm: regress, env_steps: 512, batch: 16}
probes:
  fresh: {kind: adaptation, episodes: 24, batch: 16}
  pool: {kind: adaptation, episodes: 24, batch: 16, tasks: pool}
  alien: {kind: adaptation, episodes: 24, batch: 16, tasks: pool, project_inputs: true}
  window: {kind: window, episodes: 24, windows: [1, 8]}
baselines: [ridge, dmmse, oracle, thompson, bayes_optimal]
"""


def write_study(tmp_path: Path, change=None) -> Path:
    data = yaml.safe_load(STUDY)
    if change is not None:
        change(data)
    path = tmp_path / "tinyregression.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_regression_study_runs_every_job(tmp_path):
    plan = make_plan(load_study(write_study(tmp_path)))
    probes = ["fresh", "pool", "alien", "window[w=1]", "window[w=8]"]
    assert len(plan.runs) == 2 * 2 * 2 and len(plan.probe_jobs) == 8 * len(probes)
    played = {(job.environment.name, job.baseline.name) for job in plan.baseline_jobs}
    assert played == {(env, name) for env in ("linreg", "unlimited") for name in ("ridge", "oracle")} | {
        ("linreg", "dmmse")
    }
    skipped = [skip for skip in plan.skipped if isinstance(skip, SkippedBaseline)]
    assert {(skip.environment, skip.probe) for skip in skipped} == {("unlimited", probe) for probe in probes}
    assert all("no task_pool" in skip.reason for skip in skipped)
    # Anything else the plan notes is a probe or baseline that plays no environment of the study.
    assert all(isinstance(skip, Unplayed) for skip in plan.skipped if skip not in skipped)

    results = tmp_path / "results"
    tables = run_all_jobs(plan, results, resamples=20)
    summary = pl.read_parquet(tables["summary"])
    assert set(summary["metric"]) == {
        "total_mse_per_dim",
        "cumulative_regret_mse",
        "adaptation",
        "regret_ratio",
    }
    # The regret ratio is stated on fresh tasks only (on a replayed pool ridge is not the optimum).
    assert set(summary.filter(pl.col("metric") == "regret_ratio")["probe"]) <= {
        "fresh",
        "window[w=1]",
        "window[w=8]",
    }
    ridge = summary.filter(pl.col("agent") == "ridge", pl.col("metric") == "cumulative_regret_mse")
    assert ridge.height == 2 * len(probes) and (ridge["mean"] == 0).all()

    # Every agent of one seed and probe predicted the same examples: its squared error minus
    # its regret is ridge's, row for row.
    ridge_errors: dict[tuple, np.ndarray] = {}
    for output in plan.table_inputs:
        table = pl.read_parquet(results / output)
        key = table.select("environment", "probe", "seed").row(0)
        wide = table.pivot("metric", index=["episode", "step"], values="value").sort("episode", "step")
        reference = (wide["mse_per_dim"] - wide["regret_mse"]).to_numpy()
        np.testing.assert_allclose(reference, ridge_errors.setdefault(key, reference), rtol=0, atol=1e-12)
    assert len(ridge_errors) == 2 * len(probes) * 2  # (environment, probe, seed)

    def total(environment, probe, agent):
        row = summary.filter(
            pl.col("environment") == environment,
            pl.col("probe") == probe,
            pl.col("agent") == agent,
            pl.col("metric") == "total_mse_per_dim",
        )
        return row["mean"].item()

    # On its own pool dmmse beats ridge; on projected pool tasks (never seen) it does not.
    assert total("linreg", "pool", "dmmse") < total("linreg", "pool", "ridge")
    assert total("linreg", "alien", "dmmse") > total("linreg", "alien", "ridge")
    # The oracle pays the noise only: 8 steps x 0.25 / 3 per episode (5 sigma of 48 episodes).
    oracle = total("unlimited", "fresh", "oracle")
    assert abs(oracle - 8 * 0.25 / 3) < 5 * (0.25 / 3) * math.sqrt(2 * 8 / 48)

    outputs = chart_outputs(plan.study)
    charts = make_charts(tables["summary"].parent, tmp_path / "charts", outputs)
    assert [path.name for path in charts] == [name for chart in outputs for name in chart.files]
    assert (tmp_path / "charts" / "regret_mse_linreg_alien.html").exists()


def test_dmmse_uses_the_pool_of_its_seed(tmp_path, monkeypatch):
    plan = make_plan(load_study(write_study(tmp_path)))
    job = next(j for j in plan.baseline_jobs if j.baseline.name == "dmmse" and j.seed == 1)
    captured = {}
    original = DiscreteMMSEPredictor.__init__

    def record(self, config=None, environment=None, pool=None):
        captured["pool"] = pool
        original(self, config, environment, pool)

    monkeypatch.setattr(DiscreteMMSEPredictor, "__init__", record)
    jobs.baseline_job(plan, job.environment.label, job.probe.label, job.baseline.label, 1, tmp_path)
    run = next(run for run in plan.runs if run.environment.name == "linreg" and run.seed == 1)
    trained = jobs.make_environment(run.environment, run.seed).pool().weights
    torch.testing.assert_close(captured["pool"].weights, trained, rtol=0, atol=0)
    assert BASELINES.get("dmmse").serves == ("regression",)
