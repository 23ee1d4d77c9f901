"""Sequence prediction end to end: log-loss training, probes with transforms, Bayes references."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from mesaprobe import jobs
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.envs.prediction_transform import TransformedPrediction
from mesaprobe.seeding import make_generator
from mesaprobe.study import load_study, make_plan
from tests.conftest import run_all_jobs

STUDY = """\
study: tinyweather
seeds: [0]
environments:
  markov: {family: markov, horizon: 12, order: 1}
architectures:
  gru: {family: gru, hidden: 8}
training: {algorithm: predict, env_steps: 768, batch: 16}
probes:
  adaptation: {kind: adaptation, episodes: 24}
  regime_change: {kind: adaptation, episodes: 24, switch_at: 0.5}
  relabelled: {kind: adaptation, episodes: 24, permute_labels: true}
  longer_x2: {kind: adaptation, episodes: 24, horizon_factor: 2}
baselines: [bayes_optimal, oracle, thompson]
"""


@pytest.fixture
def plan(tmp_path):
    spec = tmp_path / "weather.yaml"
    spec.write_text(STUDY)
    return make_plan(load_study(spec))


def test_prediction_study_runs_and_bayes_has_zero_regret(tmp_path, plan):
    run = plan.runs[0]
    assert run.training.algorithm == "predict"
    # Bandit-only baselines are not played on prediction environments.
    assert {job.baseline.name for job in plan.baseline_jobs} == {"bayes_optimal", "oracle"}
    tables = run_all_jobs(plan, tmp_path, resamples=50)
    assert (tmp_path / run.directory / jobs.FROZEN_MANIFEST).exists()
    summary = pl.read_parquet(tables["summary"])
    # The family's episode metrics, and the regret ratio: every predictor's log-loss over the
    # exact Bayes predictor's on the same sequences (1 for bayes_optimal itself).
    assert set(summary["metric"]) == {
        "total_logloss_bits",
        "cumulative_regret_bits",
        "adaptation",
        "regret_ratio",
    }
    ratio = summary.filter(pl.col("agent") == "bayes_optimal", pl.col("metric") == "regret_ratio")["mean"]
    assert ratio.to_list() == pytest.approx([1.0] * ratio.len())
    bayes = summary.filter(pl.col("agent") == "bayes_optimal", pl.col("metric") == "cumulative_regret_bits")
    assert (bayes["mean"] == 0).all()
    longer = pl.read_parquet(
        tmp_path / next(j.output for j in plan.probe_jobs if j.probe.name == "longer_x2")
    )
    assert longer["step"].max() == 24


@pytest.mark.parametrize("settings", [{"permute_labels": True}, {"switch_at": 0.5}, {"horizon_factor": 2}])
def test_transformed_bayes_is_exact_by_enumeration(settings):
    """The transformed process's Bayes predictor is the ratio of its marginals (all sequences)."""
    import itertools

    base = ENVIRONMENTS.get("iid")(ENVIRONMENTS.get("iid").Config(horizon=3))
    environment = TransformedPrediction(base, **settings)
    horizon = environment.horizon
    sequences = torch.tensor(list(itertools.product([0, 1], repeat=horizon)))
    probs = environment.bayes_predict(sequences)  # (S, T, 2)
    chosen = probs.gather(-1, sequences[..., None]).squeeze(-1)
    marginal = chosen.prod(dim=1)
    torch.testing.assert_close(marginal.sum(), torch.tensor(1.0, dtype=marginal.dtype))
    # Empirical frequencies of sampled sequences match the marginal (4 sigma).
    tasks = environment.sample_tasks(20_000, make_generator("t"), "cpu")
    tokens = environment.sample(tasks, make_generator("s"))
    index = (tokens * (2 ** torch.arange(horizon - 1, -1, -1))).sum(dim=1)
    frequencies = torch.bincount(index, minlength=2**horizon).double() / 20_000
    sigma = (marginal * (1 - marginal) / 20_000).sqrt()
    assert ((frequencies - marginal).abs() <= 4 * sigma + 1e-12).all()
