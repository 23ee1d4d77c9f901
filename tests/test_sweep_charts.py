"""Transition charts (score vs task-pool size M) and window charts (score vs memory window w)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from mesaprobe.analysis.chart_builders import SWEEP_END_FACTOR, transition_data, window_data
from mesaprobe.analysis.tables import SUMMARY_COLUMNS, read_table
from mesaprobe.cli import main
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.metrics import METRIC_FAMILIES
from mesaprobe.probes.window import WindowProbe
from mesaprobe.study import load_study, make_plan
from mesaprobe.study.load import render_grid
from mesaprobe.study.outputs import CHART_FORMATS, chart_outputs, learning_curve_stem, summary_charts
from mesaprobe.study.sweeps import PoolSweep, Sweeps, WindowSweep, study_sweeps, without_task_pool
from tests.conftest import REPO, TINY_STUDY, run_all_jobs

SWEEP_STUDY = """\
study: sweep
seeds: [0]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 6}
  markov: {family: markov, horizon: 6, order: 1, training: {algorithm: predict}}
  regression: {family: linear_regression, dimension: 2, horizon: 6, training: {algorithm: regress}}
architectures:
  gru: {family: gru, hidden: 8}
  transformer: {family: transformer, d_model: 8, layers: 1, heads: 2}
training: {env_steps: 192, batch: 16}
probes:
  adaptation: {kind: adaptation, episodes: 24}
  pool: {kind: adaptation, episodes: 24, tasks: pool}
  window: {kind: window, episodes: 24, windows: [4, 1]}
baselines: [random, thompson, bayes_optimal, ridge, dmmse]
grid:
  environments.bandit2.task_pool: [4, 1, null]
  environments.regression.task_pool: [8, null]
"""

ARCHITECTURES = ("gru", "transformer")


def write_study(directory: Path, text: str, name: str = "study.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def views_and_probes(study) -> tuple[list[tuple[str, str]], list[str]]:
    views = [(env.label, ENVIRONMENTS.get(env.family).kind) for env in study.environments]
    return views, [probe.label for probe in study.probes]


def chart_files(views, probes, sweeps=None, ratios=()) -> list[str]:
    """The files of the charts of the curve bands and summary of these environments, probes and
    sweeps (and the regret-ratio charts of ``ratios``)."""
    return [name for chart in summary_charts(views, probes, sweeps, ratios) for name in chart.files]


def regret_ratios(study) -> list[tuple[str, str]]:
    """The (environment, probe) pairs whose regret ratio the study states."""
    return [key for key, reference in make_plan(study).references.items() if reference.regret_ratio]


def html_spec(path: Path) -> dict:
    for line in path.read_text().splitlines():
        if line.strip().startswith("const spec = "):
            return json.loads(line.strip().removeprefix("const spec = ").removesuffix(";"))
    raise AssertionError(f"no spec in {path}")


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ((("task_pool", 16),), ""),
        ((("task_pool", None),), ""),
        ((("arms", 3), ("task_pool", 16)), "arms=3"),
        ((("task_pool", 16), ("tasks", "pool")), "tasks=pool"),
        ((("arms", 3), ("task_pool", 1048576), ("z", 1)), "arms=3,z=1"),
        ((("arms", 3),), "arms=3"),
        ((), ""),
        ((("squeeze", [0.2, 0.8]), ("task_pool", 4)), "squeeze=[0.2, 0.8]"),
        ((("task_pool_note", "a,task_pool=3"),), "task_pool_note=a,task_pool=3"),
    ],
)
def test_without_task_pool_drops_only_the_pool_size(grid, expected: str) -> None:
    assert render_grid(without_task_pool(grid)) == expected


def test_study_sweeps_reads_pool_sizes_and_windows_from_the_study(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path, SWEEP_STUDY))
    sweeps = study_sweeps(study)
    assert sweeps.pools[0] == (
        PoolSweep(
            environment="bandit2",
            kind="bandit",
            pools=(
                (1, "bandit2[task_pool=1]"),
                (4, "bandit2[task_pool=4]"),
                (None, "bandit2[task_pool=None]"),
            ),
            probes=("adaptation", "pool"),
        )
    )
    assert len(sweeps.pools) == 2
    assert sweeps.pools[1] == PoolSweep(
        environment="regression",
        kind="regression",
        pools=((8, "regression[task_pool=8]"), (None, "regression[task_pool=None]")),
        probes=("adaptation", "pool"),
    )
    assert sweeps.windows == (
        WindowSweep(
            probe="window",
            windows=((1, "window[w=1]"), (4, "window[w=4]")),
            reference="adaptation",
            kinds=WindowProbe.serves,
        ),
    )


def test_each_combination_of_other_grid_values_is_a_sweep_of_its_own(tmp_path: Path) -> None:
    text = SWEEP_STUDY.replace(
        "  environments.bandit2.task_pool: [4, 1, null]",
        "  environments.bandit2.task_pool: [16, 4]\n  environments.bandit2.arms: [2, 3]",
    ).replace(
        "  window: {kind: window, episodes: 24, windows: [4, 1]}",
        "  window: {kind: window, episodes: 24, windows: [2], tasks: pool}\n"
        "  alien: {kind: adaptation, episodes: 24, permute_labels: true}",
    )
    sweeps = study_sweeps(load_study(write_study(tmp_path, text)))
    assert [(sweep.environment, sweep.pools) for sweep in sweeps.pools if sweep.kind == "bandit"] == [
        ("bandit2[arms=2]", ((4, "bandit2[arms=2,task_pool=4]"), (16, "bandit2[arms=2,task_pool=16]"))),
        ("bandit2[arms=3]", ((4, "bandit2[arms=3,task_pool=4]"), (16, "bandit2[arms=3,task_pool=16]"))),
    ]
    assert sweeps.pools[0].probes == ("adaptation", "pool", "alien")
    # A window probe on pool tasks is referred to the adaptation probe on pool tasks.
    assert [(sweep.probe, sweep.reference) for sweep in sweeps.windows] == [("window", "pool")]


@pytest.mark.parametrize(
    "grid",
    [
        "",  # no grid: one environment, no sweep
        "grid: {environments.bandit2.task_pool: [8]}\n",  # one pool size
        "grid: {environments.bandit2.task_pool: [null]}\n",  # no finite pool size
        "grid: {environments.bandit2.horizon: [4, 6]}\n",  # another key swept, not the pool
    ],
)
def test_no_sweep_no_sweep_charts(tmp_path: Path, grid: str) -> None:
    study = load_study(write_study(tmp_path, TINY_STUDY + grid))
    sweeps = study_sweeps(study)
    assert sweeps == Sweeps()
    views, probes = views_and_probes(study)
    assert chart_files(views, probes, sweeps) == chart_files(views, probes)
    assert not any(name.startswith(("transition_", "window_")) for name in chart_files(views, probes))


def test_every_chart_has_a_report_caption(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path, SWEEP_STUDY))
    views, probes = views_and_probes(study)
    metrics = {chart.plots for chart in summary_charts(views, probes, study_sweeps(study))}
    metrics |= {metric for family in METRIC_FAMILIES.values() for metric in family.charts.values()}
    assert {"transition", "window"} <= metrics
    for metric in metrics | {"overview"}:
        assert (REPO / "workflow" / "report" / f"{metric}.rst").is_file(), metric


@pytest.fixture(scope="module")
def sweep_results(tmp_path_factory) -> tuple:
    """The sweep study run through every job, then charted by the command line."""
    directory = tmp_path_factory.mktemp("sweep")
    spec = write_study(directory, SWEEP_STUDY)
    study = load_study(spec)
    results = directory / "results" / study.name
    run_all_jobs(make_plan(study), results, resamples=50)
    assert main(["chart", str(spec), "--results-root", str(directory / "results")]) == 0
    return study, results


def test_chart_command_writes_exactly_the_predicted_files(sweep_results) -> None:
    study, results = sweep_results
    views, probes = views_and_probes(study)
    learning_curves = [
        f"{learning_curve_stem(view)}.{suffix}" for view, _ in views for suffix in CHART_FORMATS
    ]
    expected = chart_files(views, probes, study_sweeps(study), regret_ratios(study)) + learning_curves
    assert sorted(path.name for path in (results / "charts").iterdir()) == sorted(expected)
    assert [name for chart in chart_outputs(study) for name in chart.files] == expected
    sweep_files = sorted(name for name in expected if name.startswith(("transition_", "window_")))
    assert sweep_files == sorted(
        f"{stem}.{suffix}"
        for stem in (
            "transition_total_reward_bandit2",
            "window_total_reward_bandit2-task_pool-1",
            "window_total_reward_bandit2-task_pool-4",
            "window_total_reward_bandit2-task_pool-None",
            "window_total_logloss_bits_markov",
            "transition_total_mse_per_dim_regression",
            "window_total_mse_per_dim_regression-task_pool-8",
            "window_total_mse_per_dim_regression-task_pool-None",
        )
        for suffix in ("html", "svg")
    )
    # Existing chart names are unchanged.
    assert "total_reward_bandit2-task_pool-4_window-w-1.html" in expected
    assert chart_files(views, probes, ratios=regret_ratios(study)) == [
        name for name in expected if not name.startswith(("transition_", "window_", "learning_curve"))
    ]
    # Regret ratios only where the exact optimum plays fresh tasks (not on a replayed pool).
    assert "regret_ratio_bandit2-task_pool-1_adaptation.html" in expected
    assert not any(
        name.startswith("regret_ratio_") and name.split(".")[0].endswith("_pool") for name in expected
    )


def test_transition_chart_has_one_point_per_probe_pool_size_and_agent(sweep_results) -> None:
    study, results = sweep_results
    summary = read_table(results / "tables" / "summary.parquet", SUMMARY_COLUMNS)
    sweep = study_sweeps(study).pools[0]
    data = transition_data(summary, sweep, "total_reward")
    agents = {"gru", "transformer", "random", "thompson", "bayes_optimal"}
    assert set(data["agent"]) == agents
    counts = data.group_by("probe", "value", "agent").len()
    assert counts.height == 2 * 3 * len(agents) and (counts["len"] == 1).all()
    architectures = data.filter(pl.col("agent_kind") == "architecture")
    assert architectures.height == 2 * 3 * len(ARCHITECTURES)
    # M = None (no pool) is the end point, two octaves right of the largest pool.
    end = data.filter(pl.col("end"))
    assert end["value"].is_null().all() and set(end["tick"]) == {"∞"}
    assert set(end["position"]) == {float(SWEEP_END_FACTOR * 4)}
    assert set(end["environment"]) == {"bandit2[task_pool=None]"}
    finite = data.filter(~pl.col("end"))
    assert (finite["position"] == finite["value"].cast(pl.Float64)).all()
    # Each point is the summary's own row.
    row = finite.filter((pl.col("agent") == "gru") & (pl.col("probe") == "pool") & (pl.col("value") == 4))
    original = summary.filter(
        (pl.col("environment") == "bandit2[task_pool=4]")
        & (pl.col("probe") == "pool")
        & (pl.col("agent") == "gru")
        & (pl.col("metric") == "total_reward")
    )
    assert (
        row.select("mean", "ci_low", "ci_high").rows() == original.select("mean", "ci_low", "ci_high").rows()
    )

    spec = html_spec(results / "charts" / "transition_total_reward_bandit2.html")
    assert spec["title"]["text"] == "Total reward per episode vs task pool size M: bandit2"
    assert "∞: no task pool" in spec["title"]["subtitle"]
    assert spec["facet"]["column"]["field"] == "panel"
    assert spec["facet"]["column"]["sort"] == ["adaptation", "pool"]
    (dataset,) = spec["datasets"].values()
    assert len(dataset) == data.height
    band, line, *_ = spec["spec"]["layer"]
    x = line["encoding"]["x"]
    assert x["scale"]["type"] == "log" and x["scale"]["base"] == 2
    assert x["axis"]["values"] == [1.0, 4.0, 16.0]
    assert "'∞'" in x["axis"]["labelExpr"]
    assert band["mark"]["type"] == "area" and line["encoding"]["strokeDash"]["field"] == "agent_kind"


def test_window_chart_has_flat_baselines_and_the_full_context_point(sweep_results) -> None:
    study, results = sweep_results
    summary = read_table(results / "tables" / "summary.parquet", SUMMARY_COLUMNS)
    windows = study_sweeps(study).windows
    data = window_data(summary, "markov", windows, "total_logloss_bits")
    assert set(data["panel"]) == {"window"}
    counts = data.group_by("tick", "agent").len()
    assert set(counts["tick"]) == {"1", "4", "full"} and (counts["len"] == 1).all()
    assert set(data["agent"]) == {"gru", "transformer", "bayes_optimal"}
    full = data.filter(pl.col("end"))
    assert set(full["probe"]) == {"adaptation"} and full["value"].is_null().all()
    # Baselines ignore the window: every window plays the same tasks, so their totals agree.
    baseline = data.filter((pl.col("agent") == "bayes_optimal") & ~pl.col("end"))
    assert baseline["mean"].n_unique() == 1

    spec = html_spec(results / "charts" / "window_total_logloss_bits_markov.html")
    assert spec["title"]["text"] == "Total log-loss per episode (bits) vs memory window w: markov"
    assert "full: whole episode in context (probe adaptation)" in spec["title"]["subtitle"]
    x = spec["spec"]["layer"][1]["encoding"]["x"]
    assert x["axis"]["values"] == [1.0, 4.0, 16.0] and "'full'" in x["axis"]["labelExpr"]


def test_transition_chart_of_regression_draws_ridge_everywhere_and_dmmse_where_there_is_a_pool(
    sweep_results,
) -> None:
    study, results = sweep_results
    summary = read_table(results / "tables" / "summary.parquet", SUMMARY_COLUMNS)
    sweep = next(sweep for sweep in study_sweeps(study).pools if sweep.kind == "regression")
    data = transition_data(summary, sweep, METRIC_FAMILIES["regression"].total)
    ticks = dict(data.group_by("agent").agg(pl.col("tick").unique().sort()).iter_rows())
    assert ticks == {
        "gru": ["8", "∞"],
        "transformer": ["8", "∞"],
        "ridge": ["8", "∞"],
        "dmmse": ["8"],  # the finite pool's Bayes predictor: no pool, no dmmse
    }
    assert (results / "charts" / "transition_total_mse_per_dim_regression.svg").is_file()
