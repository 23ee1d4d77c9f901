"""A tiny study end to end through Snakemake: tables, charts and the report."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from mesaprobe.analysis.costs import MODEL_COST_COLUMNS
from mesaprobe.analysis.tables import SUMMARY_COLUMNS
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SMOKE_STUDY = """\
study: smoke
seeds: [0]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 6}
architectures:
  gru: {family: gru, hidden: 8}
  transformer: {family: transformer, d_model: 8, layers: 1, heads: 2}
training: {env_steps: 192, batch: 16}
probes:
  adaptation: {kind: adaptation, episodes: 30}
baselines: [random, ucb1]
"""


def snakemake(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("snakemake")
    command = [str(executable) if executable.exists() else shutil.which("snakemake") or "snakemake"]
    return subprocess.run(
        [*command, "-s", str(REPO / "Snakefile"), "-d", str(cwd), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tiny_study_through_snakemake(tmp_path):
    spec = tmp_path / "smoke.yaml"
    spec.write_text(SMOKE_STUDY)
    # How long it takes is a benchmark's business (benchmarks/), not this test's.
    result = snakemake("--cores", "2", "--config", f"spec={spec}", "results_root=results", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    out = tmp_path / "results" / "smoke"
    summary = pl.read_csv(out / "tables" / "summary.csv")
    assert summary.columns == [*SUMMARY_COLUMNS, *MODEL_COST_COLUMNS]
    # The runs' costs from their frozen manifests: a GRU's hidden state, a Transformer's cache of 6 steps.
    state = summary.filter(pl.col("agent_kind") == "architecture").select("agent", "state_floats").unique()
    assert dict(state.iter_rows()) == {"gru": 8, "transformer": 2 * 6 * 8}
    assert set(summary["agent"]) == {"gru", "transformer", "random", "ucb1"}
    assert set(summary["metric"]) == {"total_reward", "cumulative_regret", "adaptation"}
    assert (summary["ci_low"] <= summary["mean"]).all() and (summary["mean"] <= summary["ci_high"]).all()
    assert (summary["episodes"] == 30).all() and (summary["seeds"] == 1).all()
    charts = sorted(path.name for path in (out / "charts").iterdir())
    assert "regret_bandit2_adaptation.html" in charts and "total_reward_bandit2_adaptation.svg" in charts

    # A second run has nothing to do.
    again = snakemake("--cores", "2", "--config", f"spec={spec}", "-n", cwd=tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    report = tmp_path / "report.html"
    made = snakemake("--config", f"spec={spec}", "--report", str(report), cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    text = report.read_text(errors="replace")
    assert "regret_bandit2_adaptation" in text and "summary" in text


def test_bad_study_fails_before_anything_runs(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SMOKE_STUDY.replace("horizon: 6", "horizon: -6"))
    result = snakemake("--cores", "1", "--config", f"spec={spec}", cwd=tmp_path)
    assert result.returncode != 0
    assert f"{spec}: environments.bandit2.horizon: expected a positive horizon" in result.stderr
    assert not (tmp_path / "results").exists()
