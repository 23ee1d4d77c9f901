"""Shared fixtures: one torch thread (fast and deterministic on small CPUs), tiny studies."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]

TINY_STUDY = """\
study: tiny
seeds: [0, 1]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8, prior: uniform}
architectures:
  gru: {family: gru, hidden: 8}
  transformer: {family: transformer, d_model: 8, layers: 1, heads: 2, training: {lr: 1.0e-3}}
  memoryless: {family: memoryless, hidden: 8}
training: {env_steps: 256, batch: 16, checkpoint_every: 1}
probes:
  adaptation: {kind: adaptation, episodes: 40, batch: 16}
baselines: [random, thompson]
"""


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module, restored after it, whatever the tests in between set:
    tensors in these tests are tiny, and on a busy 2-core machine OpenMP threads waiting on
    each other at every op made such files several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    """A complete study that trains in well under a second per run."""
    path = tmp_path / "specs" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(TINY_STUDY))
    return path


def run_all_jobs(plan, results: Path, resamples: int) -> dict[str, Path]:
    """Every job of a plan in order (train, freeze, probe, baseline, collect), as Snakemake would."""
    from mesaprobe import jobs
    from mesaprobe.analysis.collect import collect
    from mesaprobe.analysis.training import TrainedRun

    for run in plan.runs:
        jobs.train_job(plan, run.id, results, progress=False)
        jobs.freeze_job(plan, run.id, results)
        for job in plan.probe_jobs:
            if job.run.id == run.id:
                jobs.probe_job(plan, run.id, job.probe.label, results, "cpu")
    for job in plan.baseline_jobs:
        jobs.baseline_job(plan, job.environment.label, job.probe.label, job.baseline.label, job.seed, results)
    return collect(
        [results / path for path in plan.table_inputs],
        results / "tables",
        resamples=resamples,
        inside_paths=[results / path for path in plan.inside_inputs],
        references=plan.references,
        training_runs=[
            TrainedRun(
                results / run.directory / jobs.TRAIN_MANIFEST, run.environment.label, run.variant, run.agent
            )
            for run in plan.runs
        ],
    )


@contextlib.contextmanager
def preempted_during(monkeypatch, update: int):
    """Training inside the block gets SIGTERM while it takes update number ``update + 1`` (it
    checkpoints and stops after that update); the real update function is back afterwards."""
    import os
    import signal

    from mesaprobe.train import loop

    real_update = loop.update

    def update_then_preempt(environment, state, config, total_updates):
        statistics = real_update(environment, state, config, total_updates)
        if state.update == update:
            os.kill(os.getpid(), signal.SIGTERM)
        return statistics

    monkeypatch.setattr(loop, "update", update_then_preempt)
    try:
        yield
    finally:
        monkeypatch.setattr(loop, "update", real_update)
