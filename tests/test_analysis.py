"""Analysis: probe tables, collect (curves, bands, summary), the two-level bootstrap, charts.

Statistical tests compare estimates with exact values and allow 4 standard errors
(two-sided, about 6e-5 false alarms per check if the code were right); all data
and bootstrap seeds are fixed, so every test is deterministic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.stats

from mesaprobe.analysis.charts import make_charts
from mesaprobe.analysis.collect import collect, episode_metric_values, paper_table
from mesaprobe.analysis.costs import MODEL_COST_COLUMNS
from mesaprobe.analysis.tables import (
    CURVE_BANDS_COLUMNS,
    CURVES_COLUMNS,
    PROBE_COLUMNS,
    SUMMARY_COLUMNS,
    TABLE_FILES,
    read_probe_table,
    write_probe_table,
)
from mesaprobe.errors import ArtifactError
from mesaprobe.metrics import BANDIT_METRICS, METRIC_FAMILIES, PREDICTION_METRICS, MetricFamily
from mesaprobe.study.outputs import chart_stem, slugify, summary_charts

SIGMAS = 4.0
Z_95 = 1.959964


def step_values_frame(
    step_values: np.ndarray,
    family: MetricFamily,
    *,
    agent: str,
    agent_kind: str = "architecture",
    seed: int = 0,
    study: str = "toy",
    environment: str = "bandit2",
    variant: str = "",
    probe: str = "adaptation",
) -> pl.DataFrame:
    """A probe table from one family's step metrics (E, 3, T), in family order."""
    episodes, metrics, horizon = step_values.shape
    rows = step_values.size
    return pl.DataFrame(
        {
            "study": [study] * rows,
            "environment": [environment] * rows,
            "variant": [variant] * rows,
            "probe": [probe] * rows,
            "agent": [agent] * rows,
            "agent_kind": [agent_kind] * rows,
            "run": [f"{agent}-seed{seed}"] * rows,
            "seed": np.full(rows, seed),
            "episode": np.repeat(np.arange(episodes), metrics * horizon),
            "step": np.tile(np.arange(1, horizon + 1), episodes * metrics),
            "metric": np.tile(np.repeat(family.step_metrics, horizon), episodes),
            "value": step_values.ravel(),
        },
        schema=PROBE_COLUMNS,
    )


def probe_frame(expected_rewards: np.ndarray, best_expected_rewards: np.ndarray, **names) -> pl.DataFrame:
    """A bandit probe table from per-step expected rewards (E, T) and each episode's best arm (E,)."""
    regret = best_expected_rewards[:, None] - expected_rewards  # (E, T)
    step_values = np.stack([expected_rewards, regret, regret.cumsum(axis=1)], axis=1)  # (E, M, T)
    return step_values_frame(step_values, BANDIT_METRICS, **names)


def prediction_frame(logloss: np.ndarray, bayes_logloss: np.ndarray, **names) -> pl.DataFrame:
    """A prediction probe table from per-step log-loss (E, T) and the Bayes predictor's (E, T)."""
    regret = logloss - bayes_logloss  # (E, T)
    step_values = np.stack([logloss, regret, regret.cumsum(axis=1)], axis=1)  # (E, M, T)
    names = {"environment": "markov", "probe": "prediction", **names}
    return step_values_frame(step_values, PREDICTION_METRICS, **names)


def bernoulli_regret_frame(
    regret_probability: float, episodes: int, horizon: int, rng: np.random.Generator, **names
) -> pl.DataFrame:
    """Per-step regret 1 with the given probability, else 0 (best arm's reward is 1)."""
    regret = (rng.random((episodes, horizon)) < regret_probability).astype(np.float64)
    return probe_frame(1.0 - regret, np.ones(episodes), **names)


# Tiny study: one architecture, one baseline, one seed, two episodes of three steps.
# All values are dyadic, so every mean below is exact in floating point.
TINY_EXPECTED_REWARDS = np.array([[0.5, 1.0, 1.0], [0.25, 0.75, 0.5]])
TINY_BEST = np.array([1.0, 1.0])
# regret:            [[0.5, 0, 0], [0.75, 0.25, 0.5]]
# cumulative regret: [[0.5, 0.5, 0.5], [0.75, 1.0, 1.5]]
# adaptation window: ceil(0.1 * 3) = 1 step at each end.
TINY_EPISODE_METRICS = {
    "total_reward": (2.5 + 1.5) / 2,
    "cumulative_regret": (0.5 + 1.5) / 2,
    "adaptation": ((0.5 - 0.0) + (0.75 - 0.5)) / 2,
}


@pytest.fixture
def tiny_tables(tmp_path: Path) -> dict[str, Path]:
    paths = []
    for agent, kind in (("thompson", "baseline"), ("gru", "architecture")):
        frame = probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent=agent, agent_kind=kind)
        paths.append(write_probe_table(frame, tmp_path / "probes" / f"{agent}.parquet"))
    return collect(paths, tmp_path / "tables", resamples=200)


# --------------------------------------------------------------------------- probe tables


def test_probe_table_round_trip(tmp_path: Path) -> None:
    frame = probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent="gru")
    path = write_probe_table(frame.select(reversed(frame.columns)), tmp_path / "gru.parquet")
    read = read_probe_table(path)
    assert read.schema == pl.Schema(PROBE_COLUMNS)
    assert read.equals(frame)


def test_write_probe_table_rejects_wrong_dtype_extra_column_and_unknown_metric(
    tmp_path: Path,
) -> None:
    frame = probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent="gru")
    with pytest.raises(ValueError, match="column 'seed' has type Int32, expected Int64"):
        write_probe_table(frame.with_columns(pl.col("seed").cast(pl.Int32)), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match="unexpected columns"):
        write_probe_table(frame.with_columns(note=pl.lit("x")), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="unknown metric 'reward'"):
        write_probe_table(frame.with_columns(metric=pl.lit("reward")), tmp_path / "c.parquet")
    with pytest.raises(ValueError, match="lacks metric 'regret'; a bandit probe table holds"):
        write_probe_table(frame.filter(pl.col("metric") != "regret"), tmp_path / "d.parquet")
    assert not list(tmp_path.iterdir())


def test_read_probe_table_names_one_problem(tmp_path: Path) -> None:
    frame = probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent="gru")
    with pytest.raises(ArtifactError, match="file not found"):
        read_probe_table(tmp_path / "absent.parquet")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ArtifactError, match="not a readable parquet file"):
        read_probe_table(garbage)
    no_metric = tmp_path / "no_metric.parquet"
    frame.drop("metric").write_parquet(no_metric)
    with pytest.raises(ArtifactError, match="missing column 'metric'") as error:
        read_probe_table(no_metric)
    assert error.value.file == str(no_metric)
    float_step = tmp_path / "float_step.parquet"
    frame.with_columns(pl.col("step").cast(pl.Float64)).write_parquet(float_step)
    with pytest.raises(ArtifactError, match="column 'step' has type Float64, expected Int64"):
        read_probe_table(float_step)


# --------------------------------------------------------------------------- collect


def test_collect_writes_exact_schemas(tiny_tables: dict[str, Path]) -> None:
    assert set(tiny_tables) == set(TABLE_FILES)
    expected = {
        "curves": CURVES_COLUMNS,
        "curve_bands": CURVE_BANDS_COLUMNS,
        "summary": {**SUMMARY_COLUMNS, **MODEL_COST_COLUMNS},  # costs: null without manifests
    }
    for key, columns in expected.items():
        assert pl.read_parquet(tiny_tables[key]).schema == pl.Schema(columns), key
    csv = pl.read_csv(tiny_tables["summary_csv"], schema={**SUMMARY_COLUMNS, **MODEL_COST_COLUMNS})
    assert csv.equals(pl.read_parquet(tiny_tables["summary"]))
    provenance = json.loads(tiny_tables["provenance"].read_text())
    assert provenance["confidence"] == 0.95 and provenance["inside_bootstrap"]["resamples"] == 200
    assert [len(entry["sha256"]) for entry in provenance["inputs"]] == [64, 64]
    assert "versions" in provenance["provenance"]


def test_collect_tiny_study_exact_values(tiny_tables: dict[str, Path]) -> None:
    summary = pl.read_parquet(tiny_tables["summary"])
    # Architectures before baselines, metrics in the bandit family's order.
    assert summary["agent"].to_list() == ["gru"] * 3 + ["thompson"] * 3
    assert summary["metric"].to_list() == list(BANDIT_METRICS.episode_metrics) * 2
    for row in summary.iter_rows(named=True):
        assert row["mean"] == TINY_EPISODE_METRICS[row["metric"]]
        assert (row["seeds"], row["episodes"]) == (1, 2)
    # One training seed: no interval, and the reason; the baseline's is over its episodes.
    gru = summary.filter(pl.col("agent") == "gru")
    assert gru["ci_low"].null_count() == 3 and gru["ci_high"].null_count() == 3
    assert set(gru["interval"]) == {"training seeds (Student t)"}
    assert set(gru["interval_note"]) == {"1 training seeds; an interval needs at least 3"}
    thompson = summary.filter(pl.col("agent") == "thompson")
    assert set(thompson["interval"]) == {"episodes (Student t)"} and set(thompson["interval_note"]) == {""}

    curves = pl.read_parquet(tiny_tables["curves"]).filter(pl.col("agent") == "gru")
    regret = curves.filter(pl.col("metric") == "regret").sort("step")
    assert regret["value"].to_list() == [0.625, 0.125, 0.25]
    assert regret["episodes"].to_list() == [2, 2, 2]
    assert curves["metric"].to_list() == [m for m in BANDIT_METRICS.step_metrics for _ in range(3)]

    bands = pl.read_parquet(tiny_tables["curve_bands"]).filter(pl.col("metric") == "cumulative_regret")
    assert bands.filter(pl.col("agent") == "gru")["mean"].to_list() == [0.625, 0.75, 1.0]
    # The baseline's interval over its two episodes: mean +- t(0.975, 1) * sd / sqrt(2), where
    # sd / sqrt(2) of two values is half their distance: 12.706 * |a - b| / 2.
    thompson = bands.filter(pl.col("agent") == "thompson")
    half_width = scipy.stats.t.ppf(0.975, 1) * np.abs(np.array([0.75, 1.0, 1.5]) - 0.5) / 2
    np.testing.assert_allclose(thompson["ci_high"] - thompson["mean"], half_width, rtol=1e-12)
    np.testing.assert_allclose(thompson["mean"] - thompson["ci_low"], half_width, rtol=1e-12)


def test_episode_metrics_use_the_adaptation_window() -> None:
    horizon = 20  # adaptation window ceil(0.1 * 20) = 2 steps
    regret = np.zeros((1, horizon))
    regret[0, :2] = [1.0, 0.5]
    regret[0, -2:] = [0.25, 0.25]
    step_values = np.stack([1.0 - regret, regret, regret.cumsum(axis=1)], axis=1)
    values = dict(
        zip(
            BANDIT_METRICS.episode_metrics, episode_metric_values(step_values, BANDIT_METRICS)[0], strict=True
        )
    )
    assert values["adaptation"] == 0.75 - 0.25
    assert values["cumulative_regret"] == 2.0
    assert values["total_reward"] == horizon - 2.0


# Tiny prediction study: log-loss in bits of two episodes of three steps, and the exact
# Bayes-optimal predictor's on the same sequences; all values dyadic, so means are exact.
TINY_LOGLOSS = np.array([[1.0, 0.5, 0.25], [2.0, 1.0, 1.0]])
TINY_BAYES_LOGLOSS = np.array([[0.5, 0.5, 0.5], [1.0, 1.0, 0.5]])
# regret_bits:            [[0.5, 0, -0.25], [1.0, 0, 0.5]]  (an oracle may beat Bayes)
# cumulative_regret_bits: [[0.5, 0.5, 0.25], [1.0, 1.0, 1.5]]
# adaptation window: ceil(0.1 * 3) = 1 step at each end.
TINY_PREDICTION_EPISODE_METRICS = {
    "total_logloss_bits": (1.75 + 4.0) / 2,
    "cumulative_regret_bits": (0.25 + 1.5) / 2,
    "adaptation": ((0.5 - -0.25) + (1.0 - 0.5)) / 2,
}


def test_prediction_episode_metrics_by_hand() -> None:
    regret = TINY_LOGLOSS - TINY_BAYES_LOGLOSS
    step_values = np.stack([TINY_LOGLOSS, regret, regret.cumsum(axis=1)], axis=1)  # (E, M, T)
    values = episode_metric_values(step_values, PREDICTION_METRICS)
    np.testing.assert_array_equal(values, [[1.75, 0.25, 0.75], [4.0, 1.5, 0.5]])


def test_collect_tiny_prediction_study_exact_values(tmp_path: Path) -> None:
    paths = []
    # The Bayes-optimal baseline's log-loss is the Bayes log-loss itself: zero regret.
    for agent, kind, logloss in (
        ("bayes_optimal", "baseline", TINY_BAYES_LOGLOSS),
        ("gru", "architecture", TINY_LOGLOSS),
    ):
        frame = prediction_frame(logloss, TINY_BAYES_LOGLOSS, agent=agent, agent_kind=kind)
        paths.append(write_probe_table(frame, tmp_path / f"{agent}.parquet"))
    tables = collect(paths, tmp_path / "tables", resamples=200)

    summary = pl.read_parquet(tables["summary"])
    assert summary["agent"].to_list() == ["gru"] * 3 + ["bayes_optimal"] * 3
    assert summary["metric"].to_list() == list(PREDICTION_METRICS.episode_metrics) * 2
    gru = {
        row["metric"]: row["mean"] for row in summary.filter(pl.col("agent") == "gru").iter_rows(named=True)
    }
    assert gru == TINY_PREDICTION_EPISODE_METRICS
    bayes = {
        row["metric"]: row for row in summary.filter(pl.col("agent") == "bayes_optimal").iter_rows(named=True)
    }
    assert bayes["total_logloss_bits"]["mean"] == (1.5 + 2.5) / 2
    # The Bayes-optimal predictor has zero regret in every episode: a zero-width interval.
    for metric in ("cumulative_regret_bits", "adaptation"):
        assert (bayes[metric]["mean"], bayes[metric]["ci_low"], bayes[metric]["ci_high"]) == (0.0, 0.0, 0.0)

    curves = pl.read_parquet(tables["curves"]).filter(pl.col("agent") == "gru")
    assert curves["metric"].to_list() == [m for m in PREDICTION_METRICS.step_metrics for _ in range(3)]
    assert curves.filter(pl.col("metric") == "regret_bits")["value"].to_list() == [0.75, 0.0, 0.125]
    bands = pl.read_parquet(tables["curve_bands"]).filter(pl.col("agent") == "gru")
    assert bands.filter(pl.col("metric") == "cumulative_regret_bits")["mean"].to_list() == [0.75, 0.75, 0.875]

    table = pl.read_csv(tables["total_reward_table"])
    assert table.columns == ["environment", "probe", "metric", "bayes_optimal", "gru"]
    # bayes_optimal: 2.0 +- t(0.975, 1) * 0.5 over its two episodes (1.5 and 2.5).
    assert table.row(0) == (
        "markov",
        "prediction",
        "total_logloss_bits",
        "2.0 [-4.35, 8.35]",
        table["gru"][0],
    )
    assert table["gru"][0] == "2.88 [no interval]"  # one training seed


def test_a_table_mixing_metric_families_is_rejected(tmp_path: Path) -> None:
    bandit = probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent="gru")
    prediction = prediction_frame(TINY_LOGLOSS, TINY_BAYES_LOGLOSS, agent="gru", environment="bandit2")
    mixed = pl.concat([bandit, prediction.with_columns(episode=pl.col("episode") + 2)])
    with pytest.raises(ValueError, match="mixes the metric families"):
        write_probe_table(mixed, tmp_path / "refused.parquet")
    path = tmp_path / "mixed.parquet"
    mixed.write_parquet(path)
    with pytest.raises(ArtifactError, match=r"mixes the metric families \['bandit', 'prediction'\]") as error:
        collect([path], tmp_path / "tables")
    assert error.value.file == str(path)
    lacking = tmp_path / "lacking.parquet"
    prediction.filter(pl.col("metric") != "cumulative_regret_bits").write_parquet(lacking)
    with pytest.raises(ArtifactError, match="lacks metric 'cumulative_regret_bits'") as error:
        collect([lacking], tmp_path / "tables")
    assert error.value.file == str(lacking)
    # One agent group split over files of different families is refused too.
    first = write_probe_table(bandit, tmp_path / "first.parquet")
    second = write_probe_table(
        prediction.with_columns(episode=pl.col("episode") + 2, probe=pl.lit("adaptation")),
        tmp_path / "second.parquet",
    )
    with pytest.raises(ArtifactError, match="has probe tables of the metric families"):
        collect([first, second], tmp_path / "tables")
    assert not (tmp_path / "tables").exists()


@pytest.fixture(scope="module")
def bernoulli_study(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[Path], dict[str, float]]:
    """Two agents x three seeds x 400 episodes x 20 steps of Bernoulli per-step regret."""
    directory = tmp_path_factory.mktemp("bernoulli")
    rng = np.random.default_rng(20240611)
    regret_probability = {"gru": 0.2, "ucb1": 0.35}
    paths = []
    for agent, probability in regret_probability.items():
        kind = "baseline" if agent == "ucb1" else "architecture"
        for seed in range(3):
            frame = bernoulli_regret_frame(probability, 400, 20, rng, agent=agent, agent_kind=kind, seed=seed)
            paths.append(write_probe_table(frame, directory / f"{agent}_{seed}.parquet"))
    return paths, regret_probability


def test_bands_are_student_t_over_seeds_for_architectures_and_over_episodes_for_baselines(
    bernoulli_study: tuple[list[Path], dict[str, float]], tmp_path: Path
) -> None:
    paths, regret_probability = bernoulli_study
    seeds, episodes_per_seed, horizon = 3, 400, 20
    tables = collect(paths, tmp_path)
    bands = pl.read_parquet(tables["curve_bands"]).filter(pl.col("metric") == "regret").sort("agent", "step")
    raw = pl.concat([pl.read_parquet(path) for path in paths]).filter(pl.col("metric") == "regret")
    t_seeds, t_episodes = (
        scipy.stats.t.ppf(0.975, seeds - 1),
        scipy.stats.t.ppf(0.975, seeds * episodes_per_seed - 1),
    )
    for agent, probability in regret_probability.items():
        rows = bands.filter(pl.col("agent") == agent)
        assert rows.height == horizon and set(rows["seeds"]) == {seeds}
        values = raw.filter(pl.col("agent") == agent)
        standard_error = math.sqrt(probability * (1 - probability) / (seeds * episodes_per_seed))
        assert (rows["mean"] - probability).abs().max() < SIGMAS * standard_error
        if agent == "gru":  # an architecture: Student t on the three per-seed means
            per_seed = values.group_by("step", "seed").agg(pl.col("value").mean()).sort("step", "seed")
            means = per_seed["value"].to_numpy().reshape(horizon, seeds)
            expected = t_seeds * means.std(axis=1, ddof=1) / math.sqrt(seeds)
            assert set(rows["interval"]) == {"training seeds (Student t)"}
        else:  # a baseline: Student t over all 1200 episodes
            episodes = values.sort("step", "seed", "episode")["value"].to_numpy().reshape(horizon, -1)
            expected = t_episodes * episodes.std(axis=1, ddof=1) / math.sqrt(seeds * episodes_per_seed)
            assert set(rows["interval"]) == {"episodes (Student t)"}
        np.testing.assert_allclose((rows["ci_high"] - rows["ci_low"]).to_numpy() / 2, expected, rtol=1e-9)

    summary = pl.read_parquet(tables["summary"])
    for agent, probability in regret_probability.items():
        total = summary.filter((pl.col("agent") == agent) & (pl.col("metric") == "total_reward")).row(
            0, named=True
        )
        # Total reward is a sum of 20 independent Bernoulli(1 - p) steps per episode.
        total_se = math.sqrt(horizon * probability * (1 - probability) / (seeds * episodes_per_seed))
        assert abs(total["mean"] - horizon * (1 - probability)) < SIGMAS * total_se


def test_collect_is_deterministic(
    bernoulli_study: tuple[list[Path], dict[str, float]], tmp_path: Path
) -> None:
    paths, _ = bernoulli_study
    first = collect(paths, tmp_path / "first", resamples=300)
    second = collect(list(reversed(paths)), tmp_path / "second", resamples=300)
    for key in ("curves", "curve_bands", "summary", "summary_csv"):
        assert first[key].read_bytes() == second[key].read_bytes(), key
    # The bootstrap seed is the inside tables'; curve intervals are exact (Student t).
    other_seed = collect(paths, tmp_path / "other", resamples=300, seed=1)
    assert other_seed["curve_bands"].read_bytes() == first["curve_bands"].read_bytes()


def test_an_agents_interval_does_not_depend_on_other_agents(
    bernoulli_study: tuple[list[Path], dict[str, float]], tmp_path: Path
) -> None:
    paths, _ = bernoulli_study
    gru_only = [path for path in paths if path.name.startswith("gru")]
    alone = pl.read_parquet(collect(gru_only, tmp_path / "alone", resamples=300)["curve_bands"])
    together = pl.read_parquet(collect(paths, tmp_path / "together", resamples=300)["curve_bands"])
    assert together.filter(pl.col("agent") == "gru").equals(alone)


def test_collect_rejects_a_table_with_a_missing_column(tmp_path: Path) -> None:
    good = write_probe_table(
        probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent="gru"), tmp_path / "gru.parquet"
    )
    broken = tmp_path / "lstm.parquet"
    probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent="lstm").drop("value").write_parquet(broken)
    with pytest.raises(ArtifactError, match="missing column 'value'") as error:
        collect([good, broken], tmp_path / "tables")
    assert error.value.file == str(broken)
    assert not (tmp_path / "tables").exists()


def test_collect_rejects_incomplete_and_duplicated_episodes(tmp_path: Path) -> None:
    frame = probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent="gru")
    incomplete = write_probe_table(frame.head(frame.height - 1), tmp_path / "incomplete.parquet")
    with pytest.raises(ArtifactError, match=r"episode 1 has 8 rows; expected one per metric"):
        collect([incomplete], tmp_path / "tables")
    once = write_probe_table(frame, tmp_path / "once.parquet")
    again = write_probe_table(frame, tmp_path / "again.parquet")
    with pytest.raises(ArtifactError, match="episode 0 is also in"):
        collect([once, again], tmp_path / "tables")
    other_study = write_probe_table(
        probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent="lstm", study="other"),
        tmp_path / "other.parquet",
    )
    with pytest.raises(ArtifactError, match=r"study 'other', but .*once\.parquet to 'toy'"):
        collect([once, other_study], tmp_path / "tables")


def test_seeds_split_over_files_are_merged(tmp_path: Path) -> None:
    frame = probe_frame(TINY_EXPECTED_REWARDS, TINY_BEST, agent="gru")
    first = write_probe_table(frame.filter(pl.col("episode") == 0), tmp_path / "first.parquet")
    second = write_probe_table(frame.filter(pl.col("episode") == 1), tmp_path / "second.parquet")
    split = collect([first, second], tmp_path / "split", resamples=100)
    whole_table = write_probe_table(frame, tmp_path / "whole.parquet")
    whole = collect([whole_table], tmp_path / "whole", resamples=100)
    for key in ("curves", "curve_bands", "summary"):
        assert split[key].read_bytes() == whole[key].read_bytes()


# --------------------------------------------------------------------------- bootstrap


# --------------------------------------------------------------------------- charts


def test_slugs_and_stems() -> None:
    assert slugify("training.lr=0.001") == "training.lr-0.001"
    assert slugify("a/../b c") == "a-..-b-c"
    assert chart_stem("regret", "bandit2", "adaptation", "bandit") == "regret_bandit2_adaptation"
    assert (
        chart_stem("total", "bandit2[horizon=50]", "adaptation", "bandit")
        == "total_reward_bandit2-horizon-50_adaptation"
    )
    assert chart_stem("regret", "markov", "prediction", "prediction") == "regret_bits_markov_prediction"
    assert (
        chart_stem("cumulative_regret", "markov", "prediction", "prediction")
        == "cumulative_regret_bits_markov_prediction"
    )
    assert chart_stem("total", "markov", "prediction", "prediction") == "total_logloss_bits_markov_prediction"
    with pytest.raises(ValueError, match="unknown chart"):
        chart_stem("loss", "bandit2", "adaptation", "bandit")
    with pytest.raises(ValueError, match="unknown environment kind 'rl'"):
        chart_stem("regret", "bandit2", "adaptation", "rl")


def test_every_plotted_metric_has_a_chart_title() -> None:
    for family in METRIC_FAMILIES.values():
        for metric in family.charts.values():
            assert family.chart_title(metric)
        for metric in family.bar_metrics:
            assert "{horizon}" not in family.bar_axis_title(metric, 10)
        if not family.per_episode:
            assert tuple(family.charts) == ("regret", "cumulative_regret", "total")
            assert family.bar_metrics == (family.total,)


def files_of(charts) -> list[str]:
    return [name for chart in charts for name in chart.files]


def html_spec(path: Path) -> dict:
    """The Vega-Lite spec embedded in an HTML chart written by altair."""
    for line in path.read_text().splitlines():
        if line.strip().startswith("const spec = "):
            return json.loads(line.strip().removeprefix("const spec = ").removesuffix(";"))
    raise AssertionError(f"no spec in {path}")


# (agent, kind, regret probability, grid variant): a grid variant of an architecture is
# its own agent, drawn on the same chart as the other agents of its environment.
AGENTS_FOR_CHARTS = (
    ("gru", "architecture", 0.2, ""),
    ("gru[lr=0.001]", "architecture", 0.15, "lr=0.001"),
    ("thompson", "baseline", 0.1, ""),
)


def test_make_charts_writes_offline_html_and_svg(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    paths = []
    for agent, kind, probability, variant in AGENTS_FOR_CHARTS:
        for seed in range(2):
            names = {"agent": agent, "agent_kind": kind, "seed": seed, "variant": variant}
            frame = bernoulli_regret_frame(probability, 40, 10, rng, **names)
            paths.append(write_probe_table(frame, tmp_path / "probes" / f"{slugify(agent)}_{seed}.parquet"))
    tables = collect(paths, tmp_path / "tables", resamples=100)
    charts = summary_charts([("bandit2", "bandit")], ["adaptation"])
    written = make_charts(tables["summary"].parent, tmp_path / "charts", charts)

    stems = [
        "regret_bandit2_adaptation",
        "cumulative_regret_bandit2_adaptation",
        "total_reward_bandit2_adaptation",
    ]
    assert [chart.stem for chart in charts] == stems
    assert files_of(charts) == [f"{stem}.{suffix}" for stem in stems for suffix in ("html", "svg")]
    charts_dir = tmp_path / "charts"
    expected = {charts_dir / f"{stem}.{suffix}" for stem in stems for suffix in ("html", "svg")}
    assert set(written) == expected and len(written) == len(expected)
    assert set(charts_dir.iterdir()) == expected  # no temporary files left behind
    for path in written:
        text = path.read_text()
        if path.suffix == ".svg":
            assert text.startswith("<svg")
            continue
        assert "cdn.jsdelivr" not in text and "https://cdn" not in text
        assert "<script src=" not in text  # vega, vega-lite and vega-embed are inlined
        spec = html_spec(path)
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
        assert spec["title"]["subtitle"] == (
            "mean over 2 seeds x 40 episodes, 95% CI: Student t over training seeds "
            "(architectures; none under 3 seeds), over episodes (baselines)"
        )

    regret_spec = html_spec(tmp_path / "charts" / f"{stems[0]}.html")
    band, line = regret_spec["layer"]
    assert band["mark"] == {"type": "area", "opacity": 0.2}
    assert band["encoding"]["y"]["field"] == "ci_low"
    assert band["encoding"]["y2"]["field"] == "ci_high"
    assert line["encoding"]["color"]["field"] == "agent"
    assert line["encoding"]["strokeDash"]["field"] == "agent"  # with the colour: one legend shows both
    assert line["encoding"]["x"]["title"] == "step"
    assert line["encoding"]["y"]["title"] == "regret per step (expected)"

    bars_spec = html_spec(tmp_path / "charts" / f"{stems[2]}.html")
    bars, error_bars = bars_spec["layer"]
    assert bars_spec["title"]["text"] == "Total reward per episode: bandit2, probe adaptation"
    assert bars["mark"]["type"] == "bar" and error_bars["mark"]["type"] == "errorbar"
    totals = pl.read_parquet(tables["summary"]).filter(pl.col("metric") == "total_reward")
    # Best first: the largest total reward at the top, as an explicit order.
    assert bars["encoding"]["y"]["sort"] == totals.sort("mean", descending=True)["agent"].to_list()
    assert bars["encoding"]["x"]["title"] == "total reward per episode (expected, sum over 10 steps)"
    assert error_bars["encoding"]["x"]["field"] == "ci_low"
    assert error_bars["encoding"]["x2"]["field"] == "ci_high"


def test_mixed_study_uses_each_environments_metric_family(tmp_path: Path) -> None:
    """One bandit and one prediction environment: per-family summaries, tables and charts."""
    rng = np.random.default_rng(13)
    paths, bandit_paths = [], []
    for agent, kind in (("gru", "architecture"), ("thompson", "baseline")):
        for seed in range(2):
            names = {"agent": agent, "agent_kind": kind, "seed": seed}
            frame = bernoulli_regret_frame(0.2, 12, 8, rng, **names)
            bandit_paths.append(
                write_probe_table(frame, tmp_path / "probes" / f"bandit_{agent}_{seed}.parquet")
            )
    for agent, kind, extra_bits in (("gru", "architecture", 0.5), ("bayes_optimal", "baseline", 0.0)):
        for seed in range(2):
            bayes = rng.random((12, 8)) * 2.0
            frame = prediction_frame(
                bayes + extra_bits * rng.random((12, 8)), bayes, agent=agent, agent_kind=kind, seed=seed
            )
            paths.append(write_probe_table(frame, tmp_path / "probes" / f"markov_{agent}_{seed}.parquet"))
    paths += bandit_paths
    tables = collect(paths, tmp_path / "tables", resamples=100)

    summary = pl.read_parquet(tables["summary"])
    metrics = dict(
        summary.group_by("environment").agg(pl.col("metric").unique(maintain_order=True)).iter_rows()
    )
    assert metrics == {
        "bandit2": list(BANDIT_METRICS.episode_metrics),
        "markov": list(PREDICTION_METRICS.episode_metrics),
    }
    bands = pl.read_parquet(tables["curve_bands"])
    step_metrics = dict(
        bands.group_by("environment").agg(pl.col("metric").unique(maintain_order=True)).iter_rows()
    )
    assert step_metrics == {
        "bandit2": list(BANDIT_METRICS.step_metrics),
        "markov": list(PREDICTION_METRICS.step_metrics),
    }
    # The bandit rows are exactly those of a bandit-only study (own bootstrap per family).
    alone = collect(bandit_paths, tmp_path / "bandit_only", resamples=100)
    for key in ("summary", "curve_bands"):
        together = pl.read_parquet(tables[key]).filter(pl.col("environment") == "bandit2")
        assert together.equals(pl.read_parquet(alone[key])), key
    table = pl.read_csv(tables["total_reward_table"])
    assert table.select("environment", "probe", "metric").rows() == [
        ("bandit2", "adaptation", "total_reward"),
        ("markov", "prediction", "total_logloss_bits"),
    ]
    assert table.columns[3:] == ["thompson", "bayes_optimal", "gru"]
    assert table["thompson"][1] is None and table["bayes_optimal"][0] is None

    charts = summary_charts(
        [("bandit2", "bandit"), ("markov", "prediction")],
        {"bandit2": ["adaptation"], "markov": ["prediction"]},
    )
    written = make_charts(tables["summary"].parent, tmp_path / "charts", charts)
    expected = files_of(charts)
    assert [path.name for path in written] == expected
    assert expected[6::2] == [
        "regret_bits_markov_prediction.html",
        "cumulative_regret_bits_markov_prediction.html",
        "total_logloss_bits_markov_prediction.html",
    ]
    charts_dir = tmp_path / "charts"
    regret_spec = html_spec(charts_dir / "regret_bits_markov_prediction.html")
    assert regret_spec["title"]["text"] == "Regret per step vs Bayes-optimal (bits): markov, probe prediction"
    assert regret_spec["layer"][1]["encoding"]["y"]["title"] == PREDICTION_METRICS.step_titles[1]
    cumulative_spec = html_spec(charts_dir / "cumulative_regret_bits_markov_prediction.html")
    assert cumulative_spec["layer"][1]["encoding"]["y"]["title"] == PREDICTION_METRICS.step_titles[2]
    bars_spec = html_spec(charts_dir / "total_logloss_bits_markov_prediction.html")
    bars = bars_spec["layer"][0]
    assert bars_spec["title"]["text"] == "Total log-loss per episode (bits): markov, probe prediction"
    assert bars["encoding"]["x"]["title"] == "total log-loss per episode (bits, sum over 8 steps)"
    # Lower log-loss is better, so the best (smallest) bar comes first.
    summary = pl.read_parquet(tables["summary"])
    logloss = summary.filter((pl.col("environment") == "markov") & (pl.col("metric") == "total_logloss_bits"))
    assert bars["encoding"]["y"]["sort"] == logloss.sort("mean")["agent"].to_list()
    bandit_bars = html_spec(charts_dir / "total_reward_bandit2_adaptation.html")["layer"][0]
    reward = summary.filter((pl.col("environment") == "bandit2") & (pl.col("metric") == "total_reward"))
    assert bandit_bars["encoding"]["y"]["sort"] == reward.sort("mean", descending=True)["agent"].to_list()


def test_make_charts_needs_the_tables(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="file not found"):
        make_charts(tmp_path, tmp_path / "charts", summary_charts([("bandit2", "bandit")], ["adaptation"]))


def test_make_charts_refuses_tables_that_disagree_with_the_study(tiny_tables: dict[str, Path]) -> None:
    """The study says which family an environment has and which probes play it; the tables must agree."""
    tables_dir = tiny_tables["summary"].parent
    with pytest.raises(ArtifactError, match=r"its environment is of kind 'prediction'"):
        make_charts(
            tables_dir, tables_dir / "charts", summary_charts([("bandit2", "prediction")], ["adaptation"])
        )
    with pytest.raises(ArtifactError, match=r"no rows for environment 'bandit2', probe 'pool'"):
        make_charts(tables_dir, tables_dir / "charts", summary_charts([("bandit2", "bandit")], ["pool"]))


def test_paper_table_puts_settings_down_and_agents_across(tiny_tables: dict[str, Path]) -> None:
    summary = pl.read_parquet(tiny_tables["summary"])
    table = pl.read_csv(tiny_tables["total_reward_table"])
    expected_agents = summary.filter(pl.col("metric") == "total_reward")["agent"].unique().to_list()
    assert table.columns[:3] == ["environment", "probe", "metric"]
    assert table["metric"].to_list() == ["total_reward"]
    assert sorted(table.columns[3:]) == sorted(expected_agents)
    assert table.drop("metric").equals(paper_table(summary, "total_reward"))
    kinds = dict(summary.select("agent", "agent_kind").unique().iter_rows())
    order = [kinds[agent] for agent in table.columns[3:]]
    assert order == sorted(order, key=lambda kind: kind == "architecture")  # baselines first
    row = summary.filter(pl.col("metric") == "total_reward").row(0, named=True)
    cell = table.filter(pl.col("environment") == row["environment"])[row["agent"]][0]
    assert cell.startswith(f"{round(row['mean'], 2)} [")
