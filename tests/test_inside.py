"""Inside tables: episode-bootstrap replicates, validation, and the two-level summary."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from mesaprobe.analysis.collect import collect
from mesaprobe.analysis.inside import (
    INSIDE_COLUMNS,
    INSIDE_SUMMARY_COLUMNS,
    read_inside_table,
    summarise,
    write_inside_table,
)
from mesaprobe.analysis.stats import two_level_replicate_bootstrap
from mesaprobe.errors import ArtifactError
from mesaprobe.probes.inside import episode_bootstrap_weights, rows_frame


def test_episode_bootstrap_weights_are_resamples_of_every_episode():
    weights = episode_bootstrap_weights(50, 400, torch.Generator().manual_seed(3))
    assert weights.shape == (401, 50)
    assert torch.equal(weights[0], torch.ones(50, dtype=torch.float64))
    assert torch.equal(weights.sum(dim=1), torch.full((401,), 50.0, dtype=torch.float64))
    # Each episode is drawn Binomial(50, 1/50) times: mean 1, variance 0.98; over 400 x 50
    # draws the mean weight is 1 within 5 sigma = 5 * sqrt(0.98 / 20000) = 0.035.
    assert abs(weights[1:].mean().item() - 1.0) < 0.035
    again = episode_bootstrap_weights(50, 400, torch.Generator().manual_seed(3))
    assert torch.equal(weights, again)


def test_two_level_bootstrap_of_constant_replicates_is_the_seed_bootstrap():
    # Replicates equal to each seed's estimate: only the seed level varies.
    estimates = np.array([[1.0], [2.0], [3.0]])
    replicates = np.repeat(estimates[:, None, :], 10, axis=1)  # (S, R, F)
    mean, low, high = two_level_replicate_bootstrap(
        estimates, replicates, 4000, 0.90, np.random.default_rng(0)
    )
    assert mean[0] == 2.0
    # Means of 3 seeds drawn from {1, 2, 3}: P(1) = 1/27 = 3.7% < 5% < P(<= 4/3) = 4/27, so the
    # 90% interval is [4/3, 8/3] (148 of 4000 resamples expected at 1, 4 sigma from 200).
    assert low[0] == pytest.approx(4 / 3) and high[0] == pytest.approx(8 / 3)


def test_two_level_bootstrap_of_one_seed_is_its_replicate_spread():
    rng = np.random.default_rng(1)
    replicates = rng.normal(5.0, 2.0, size=(1, 2000, 1))
    mean, low, high = two_level_replicate_bootstrap(
        np.array([[5.0]]), replicates, 20000, 0.95, np.random.default_rng(2)
    )
    assert mean[0] == 5.0
    # One seed: the interval is the replicates' own 2.5% and 97.5% quantiles (+-1.96 sigma = 3.92),
    # up to the quantile error of 2000 normal draws (~0.15 at those tails).
    assert abs(low[0] - (5.0 - 3.92)) < 0.3 and abs(high[0] - (5.0 + 3.92)) < 0.3


def _table(seed: int, values: np.ndarray, agent: str = "gru") -> pl.DataFrame:
    rows = rows_frame("readout_r2", values, index=[2, 3], layer="layer1", target="successes")
    identifying = {
        "study": "s",
        "environment": "bandit2",
        "variant": "",
        "probe": "readout",
        "agent": agent,
        "agent_kind": "architecture",
        "run": f"{agent}-s{seed}",
        "seed": seed,
    }
    return rows.with_columns(*(pl.lit(value).alias(name) for name, value in identifying.items())).select(
        pl.col(name).cast(dtype) for name, dtype in INSIDE_COLUMNS.items()
    )


def test_summary_is_the_mean_of_seed_estimates_with_an_interval(tmp_path):
    paths = []
    for seed, level in ((0, 0.5), (1, 0.7)):
        values = np.array([[level, level + 0.1], [level - 0.05, level], [level + 0.05, level + 0.2]])
        paths.append(write_inside_table(_table(seed, values), tmp_path / f"s{seed}.parquet"))
    summary = summarise(paths, resamples=500)
    assert summary.schema == pl.Schema(INSIDE_SUMMARY_COLUMNS)
    assert summary["index"].to_list() == [2, 3]
    assert summary["mean"].to_list() == pytest.approx([0.6, 0.7])
    assert summary["seeds"].to_list() == [2, 2] and summary["replicates"].to_list() == [2, 2]
    # Every resample averages two of the four replicates of a step: the interval lies within
    # their extremes, e.g. step 2: replicates 0.45, 0.55 (seed 0) and 0.65, 0.75 (seed 1).
    assert 0.45 - 1e-12 <= summary["ci_low"][0] <= summary["ci_high"][0] <= 0.75 + 1e-12


def test_inside_tables_are_validated(tmp_path):
    frame = _table(0, np.ones((2, 2)))
    with pytest.raises(ValueError, match="unknown quantity"):
        write_inside_table(frame.with_columns(quantity=pl.lit("r_squared")), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="repeats a replicate"):
        write_inside_table(pl.concat([frame, frame]), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_inside_table(frame.with_columns(value=pl.lit(float("nan"))), tmp_path / "c.parquet")
    assert not any(tmp_path.iterdir())  # nothing half-written
    (tmp_path / "d.parquet").write_text("not parquet")
    with pytest.raises(ArtifactError, match=r"d\.parquet"):
        read_inside_table(tmp_path / "d.parquet")


def test_collect_of_inside_tables_only_writes_empty_curves(tmp_path):
    path = write_inside_table(_table(0, np.ones((3, 2))), tmp_path / "probe.parquet")
    written = collect([], tmp_path / "tables", resamples=50, inside_paths=[path])
    assert pl.read_parquet(written["curve_bands"]).height == 0
    inside = pl.read_parquet(written["inside"])
    assert inside["mean"].to_list() == [1.0, 1.0] and inside["ci_low"].to_list() == [1.0, 1.0]
    assert pl.read_csv(written["inside_csv"]).height == 2


INSIDE_STUDY = """\
study: inside_tiny
seeds: [0, 1]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8, prior: uniform}
  switching: {family: switching, horizon: 10, hazard: 0.1, training: {algorithm: predict}}
architectures:
  gru: {family: gru, hidden: 8}
  memoryless: {family: memoryless, hidden: 8, environments: [bandit2]}
  reptile:
    family: memoryless
    hidden: 8
    environments: [bandit2]
    training: {algorithm: reptile, inner_steps: 2}
training: {env_steps: 256, batch: 16, checkpoint_every: 1}
probes:
  adaptation: {kind: adaptation, episodes: 40, batch: 16}
  readout: {kind: readout, episodes: 120, replicates: 5}
  sgd: {kind: in_weights, episodes: 10, max_steps: 30, replicates: 5, init: both}
  fitted: {kind: fitted_learner, episodes: 40, replicates: 3}
baselines: [random, thompson]
"""


def test_inside_probes_run_through_the_pipeline(tmp_path):
    from mesaprobe.analysis.charts import make_charts
    from mesaprobe.study import load_study, make_plan
    from mesaprobe.study.outputs import chart_outputs
    from tests.conftest import run_all_jobs

    spec = tmp_path / "inside_tiny.yaml"
    spec.write_text(INSIDE_STUDY)
    study = load_study(spec)
    plan = make_plan(study)
    # Read-outs need hidden states: no baseline plays them; the in-weights probe plays every bandit baseline.
    assert {job.probe.name for job in plan.baseline_jobs} == {"adaptation", "sgd", "fitted"}
    assert {(run.environment.name, run.architecture.name) for run in plan.runs} == {
        ("bandit2", "gru"),
        ("bandit2", "memoryless"),
        ("bandit2", "reptile"),
        ("switching", "gru"),
    }
    written = run_all_jobs(plan, tmp_path / "results", resamples=50)
    inside = pl.read_parquet(written["inside"])
    cells = set(inside.select("environment", "probe", "agent", "quantity").unique().iter_rows())
    assert ("switching", "readout", "gru", "readout_r2_untrained") in cells
    assert ("bandit2", "sgd", "thompson", "sgd_steps_to_match") in cells
    assert ("bandit2", "fitted", "reptile", "learning_rate") in cells
    bayes = inside.filter((pl.col("quantity") == "learning_rate") & (pl.col("target") == "bayes"))
    assert bayes["mean"].to_list()[:3] == pytest.approx([1 / 3, 1 / 4, 1 / 5])  # 1 / (n + 2), uniform prior
    assert not any(probe == "readout" and agent in ("random", "thompson") for _, probe, agent, _ in cells)
    own = inside.filter((pl.col("quantity") == "sgd_regret") & (pl.col("target") == "own_init"))
    assert set(own["agent"]) == {"memoryless", "reptile"}  # own weights: memoryless models only
    assert (inside["seeds"] == 2).all() and (inside["ci_low"] <= inside["ci_high"]).all()

    outputs = chart_outputs(study)
    charts = make_charts(written["inside"].parent, tmp_path / "charts", outputs)
    expected = [name for chart in outputs for name in chart.files]
    assert [path.name for path in charts] == expected
    assert sorted(path.name for path in (tmp_path / "charts").iterdir()) == sorted(expected)
    assert "readout_r2_switching_readout.html" in expected and "sgd_regret_bandit2_sgd.svg" in expected
    assert "learning_rate_bandit2_fitted.html" in expected


def test_every_inside_chart_a_probe_kind_names_is_registered_and_has_a_caption():
    from mesaprobe.analysis.inside_charts import INSIDE_CHARTS
    from mesaprobe.probes import PROBES
    from tests.conftest import REPO

    named = {chart for name in PROBES for chart in getattr(PROBES.get(name), "charts", ())}
    assert named == set(INSIDE_CHARTS)
    for chart in named:
        assert callable(INSIDE_CHARTS.get(chart).draw) and INSIDE_CHARTS.get(chart).title
        assert (REPO / "workflow" / "report" / f"{chart}.rst").is_file(), chart
