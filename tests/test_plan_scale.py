"""Plans of large studies: fast to build, and every id and output path exactly as before.

The plan hashes each run's settings once per setting rather than once per seed, and builds
each settings class's field types once; the digests below were recorded before these
speed-ups (commit 10a2321), so any change to a run, probe or baseline id or path fails here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mesaprobe.errors import SpecError
from mesaprobe.settings import build
from mesaprobe.study import Run, load_study, make_plan
from mesaprobe.study import plan as plan_module
from mesaprobe.study.load import HASH_DIGITS
from tests.conftest import REPO

#: The shipped studies (specs/) as they were when the digests were recorded, comments left out,
#: so that later edits of specs/ do not touch this test.
PINNED_STUDIES = {
    "bandits_rl2": """\
study: bandits_rl2
seeds: [0, 1, 2]
environments:
  h10_k5: {family: bernoulli_bandit, arms: 5, horizon: 10}
  h10_k10: {family: bernoulli_bandit, arms: 10, horizon: 10}
  h10_k50: {family: bernoulli_bandit, arms: 50, horizon: 10}
  h100_k5: {family: bernoulli_bandit, arms: 5, horizon: 100}
  h100_k10: {family: bernoulli_bandit, arms: 10, horizon: 100}
  h100_k50: {family: bernoulli_bandit, arms: 50, horizon: 100}
  h500_k5: {family: bernoulli_bandit, arms: 5, horizon: 500}
  h500_k10: {family: bernoulli_bandit, arms: 10, horizon: 500}
  h500_k50: {family: bernoulli_bandit, arms: 50, horizon: 500}
architectures:
  gru: {family: gru, hidden: 64}
  lstm: {family: lstm, hidden: 64}
  transformer:
    family: transformer
    d_model: 32
    layers: 2
    heads: 2
    training: {lr: 0.001, env_steps: 4000000}
  memoryless:
    family: memoryless
    hidden: 64
    training: {env_steps: 2000000}
training: {algorithm: a2c, env_steps: 10000000, batch: 64, lr: 0.002, gamma: 0.8, gae_lambda: 0.5}
probes:
  adaptation: {kind: adaptation, episodes: 2000}
  longer_x2: {kind: adaptation, episodes: 1000, horizon_factor: 2}
  shifted_prior: {kind: adaptation, episodes: 1000, prior_alpha: 0.5, prior_beta: 0.5}
  squeezed:
    kind: adaptation
    episodes: 1000
    squeeze: [0.4, 0.6]
  permuted: {kind: adaptation, episodes: 1000, permute_labels: true}
  restless: {kind: adaptation, episodes: 1000, switch_at: 0.5}
baselines: [random, greedy, eps_greedy, ucb1, thompson, optimistic_thompson, gittins, bayes_optimal]
""",
    "bandits_wang": """\
study: bandits_wang
seeds: [0, 1, 2]
environments:
  independent: {family: bernoulli_bandit, arms: 2, horizon: 100, prior: uniform}
  dependent_uniform: {family: bernoulli_bandit, arms: 2, horizon: 100, prior: dependent_uniform}
  dependent_easy: {family: bernoulli_bandit, arms: 2, horizon: 100, prior: dependent_easy}
  dependent_medium: {family: bernoulli_bandit, arms: 2, horizon: 100, prior: dependent_medium}
  dependent_hard: {family: bernoulli_bandit, arms: 2, horizon: 100, prior: dependent_hard}
architectures:
  gru: {family: gru, hidden: 64}
  lstm: {family: lstm, hidden: 64}
  transformer:
    family: transformer
    d_model: 32
    layers: 2
    heads: 2
    training: {lr: 0.001, env_steps: 2000000}
  memoryless:
    family: memoryless
    hidden: 64
    training: {env_steps: 2000000}
training: {algorithm: a2c, env_steps: 6000000, batch: 64, lr: 0.002, gamma: 0.8, gae_lambda: 0.5}
probes:
  adaptation: {kind: adaptation, episodes: 2000}
baselines: [random, greedy, eps_greedy, ucb1, thompson, optimistic_thompson, gittins, bayes_optimal]
""",
    "commitment": """\
study: commitment
seeds: [0, 1, 2]
environments:
  identity_private: {family: commitment, bits: 3, function: identity, noise: private}
  identity_history: {family: commitment, bits: 3, function: identity, noise: history}
  xor_mask_private: {family: commitment, bits: 3, function: xor_mask, noise: private}
  xor_mask_history: {family: commitment, bits: 3, function: xor_mask, noise: history}
  modmul_private: {family: commitment, bits: 3, function: modmul, noise: private}
  modmul_history: {family: commitment, bits: 3, function: modmul, noise: history}
  gf2_linear_private: {family: commitment, bits: 3, function: gf2_linear, noise: private}
  gf2_linear_history: {family: commitment, bits: 3, function: gf2_linear, noise: history}
  random_table_private: {family: commitment, bits: 3, function: random_table, noise: private}
  random_table_history: {family: commitment, bits: 3, function: random_table, noise: history}
  discrete_exp_private: {family: commitment, bits: 3, function: discrete_exp, noise: private}
  discrete_exp_history: {family: commitment, bits: 3, function: discrete_exp, noise: history}
architectures:
  gru: {family: gru, hidden: 64}
  lstm: {family: lstm, hidden: 64}
  transformer:
    family: transformer
    d_model: 32
    layers: 2
    heads: 2
    training: {lr: 0.001}
training: {algorithm: a2c, env_steps: 2000000, batch: 64, lr: 0.002, gamma: 1.0, gae_lambda: 0.95, entropy_coef: 0.05}
probes:
  sampled: {kind: commitment, episodes: 2000}
  greedy: {kind: commitment, episodes: 2000, policy: greedy}
baselines: [commit_optimal, commit_deterministic]
""",
    "quickstart": """\
study: quickstart
seeds: [0, 1]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 100, prior: uniform}
architectures:
  gru: {family: gru, hidden: 64}
  lstm: {family: lstm, hidden: 64}
  transformer:
    family: transformer
    d_model: 32
    layers: 2
    heads: 2
    context: full
    training: {lr: 0.001, env_steps: 4000000}
  memoryless: {family: memoryless, hidden: 64}
training: {algorithm: a2c, env_steps: 10000000, batch: 64, lr: 0.002, gamma: 0.8, gae_lambda: 0.5, entropy_coef: 0.01}
probes:
  adaptation: {kind: adaptation, episodes: 2000}
baselines: [random, greedy, eps_greedy, ucb1, thompson]
""",
    "task_location": """\
study: task_location
seeds: [0, 1]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 20, prior: uniform}
  markov:
    family: markov
    horizon: 20
    order: 1
    training: {algorithm: predict}
  regression:
    family: linear_regression
    dimension: 4
    horizon: 16
    noise_variance: 0.25
    training: {algorithm: regress}
architectures:
  gru: {family: gru, hidden: 32}
  transformer:
    family: transformer
    d_model: 32
    layers: 2
    heads: 2
    training: {lr: 0.001, env_steps: 1500000}
training: {algorithm: a2c, env_steps: 3000000, batch: 64, lr: 0.002, gamma: 0.8, gae_lambda: 0.5, entropy_coef: 0.01}
probes:
  adaptation: {kind: adaptation, episodes: 1000}
  pool: {kind: adaptation, episodes: 1000, tasks: pool}
  alien: {kind: adaptation, episodes: 1000, tasks: pool, permute_labels: true}
  alien_projected: {kind: adaptation, episodes: 1000, tasks: pool, project_inputs: true}
  window:
    kind: window
    episodes: 1000
    windows: [1, 2, 8]
baselines: [bayes_optimal, ridge, dmmse]
grid:
  environments.bandit2.task_pool: [1, 4, 16, 64, 256, null]
  environments.markov.task_pool: [1, 4, 16, 64, 256, null]
  environments.regression.task_pool: [1, 4, 16, 64, 256, null]
""",
    "weather": """\
study: weather
seeds: [0, 1, 2]
environments:
  iid: {family: iid, horizon: 100}
  markov: {family: markov, horizon: 100, order: 2}
  streak: {family: streak, horizon: 100, mode: either}
  switching: {family: switching, horizon: 100, hazard: 0.05}
  periodic: {family: periodic, horizon: 100, max_period: 4, flip_probability: 0.1}
  vom: {family: vom, horizon: 100, depth: 3}
  drifting:
    family: drifting
    horizon: 100
    hazard: 0.02
    families: [iid, markov, periodic]
architectures:
  gru: {family: gru, hidden: 64}
  lstm: {family: lstm, hidden: 64}
  transformer:
    family: transformer
    d_model: 32
    layers: 2
    heads: 2
    training: {lr: 0.001}
  memoryless: {family: memoryless, hidden: 64}
training: {algorithm: predict, env_steps: 1000000, batch: 64, lr: 0.002}
probes:
  adaptation: {kind: adaptation, episodes: 1000}
  longer_x2: {kind: adaptation, episodes: 500, horizon_factor: 2}
  regime_change: {kind: adaptation, episodes: 500, switch_at: 0.5}
  relabelled: {kind: adaptation, episodes: 500, permute_labels: true}
baselines: [bayes_optimal, oracle]
""",
}


def grid_study(rates: int, seeds: int) -> str:
    """The study of benchmarks/dag_build.py: one environment and architecture, learning rates x seeds."""
    grid = ", ".join(f"{1e-4 * (1 + i):.6g}" for i in range(rates))
    return (
        "study: grid\n"
        f"seeds: [{', '.join(str(seed) for seed in range(seeds))}]\n"
        "environments:\n  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 100}\n"
        "architectures:\n  gru: {family: gru, hidden: 64}\n"
        "probes:\n  adaptation: {kind: adaptation}\n"
        f"grid:\n  training.lr: [{grid}]\n"
    )


PINNED_STUDIES["grid"] = grid_study(rates=10, seeds=100)  # 1,000 runs

#: sha256 (first 16 hex digits) of each part of Plan.to_json() for each pinned study,
#: recorded with the code before the speed-ups (commits 10a2321 and 41728df give the same).
RECORDED_DIGESTS = {
    "bandits_rl2": {
        "study": "a968ec4f89fb13aa",
        "runs": "733511baca463b6f",
        "probes": "147edbc54979d494",
        "baselines": "3ad41256e5737c90",
        "skipped": "0e7ab0ba4901995f",
    },
    "bandits_wang": {
        "study": "d804b2bfff3323a7",
        "runs": "33f92d374ef80016",
        "probes": "d803134e241fa121",
        "baselines": "8ad14ca0d3098758",
        "skipped": "4f53cda18c2baa0c",
    },
    "commitment": {
        "study": "56e7413074d1ad57",
        "runs": "e4fd71dfd2993746",
        "probes": "588e075c59f46f0d",
        "baselines": "d967f712b9c4267a",
        "skipped": "4f53cda18c2baa0c",
    },
    "quickstart": {
        "study": "ef728d18856a3b35",
        "runs": "d7e590549ed96c22",
        "probes": "8cd2ac31f4332816",
        "baselines": "b46e6d559c45ea40",
        "skipped": "4f53cda18c2baa0c",
    },
    "task_location": {
        "study": "3c97e1ad4b840aa8",
        "runs": "eb07723a85188767",
        "probes": "5e5c80bd8058fff0",
        "baselines": "655dc3b28e4bf755",
        "skipped": "bad110603f56e82b",
    },
    "weather": {
        "study": "94baa6a5e0fffd7a",
        "runs": "46c01160bf156172",
        "probes": "bb399d4745377ebd",
        "baselines": "2595f658c6ed657f",
        "skipped": "4f53cda18c2baa0c",
    },
    "grid": {
        "study": "ac4474d55b3f2e19",
        "runs": "73f55bc0b62f18e3",
        "probes": "189361e7683d4b95",
        "baselines": "4f53cda18c2baa0c",
        "skipped": "4f53cda18c2baa0c",
    },
}


def with_recorded_hash_length(data: Any) -> Any:
    """Plan JSON with every id's hash cut to the 8 digits ids had when the digests were recorded
    (ids now carry 16, the same sha256 twice as long): ``bandit2-gru-626bd16842f9e4e3-s0`` ->
    ``bandit2-gru-626bd168-s0``, in ids and output paths alike."""
    text = json.dumps(data, sort_keys=True)
    return json.loads(re.sub(r"-([0-9a-f]{8})[0-9a-f]{8}(?=-s[0-9]|/|\.parquet|\")", r"-\1", text))


def plan_digests(spec: Path) -> dict[str, str]:
    """sha256 of each part of the plan's JSON: the study, runs (ids, agents, seeds, resolved
    settings), probe jobs (with output paths), baseline jobs (with output paths), skipped jobs;
    ids as they were recorded (:func:`with_recorded_hash_length`)."""
    plan = with_recorded_hash_length(make_plan(load_study(spec)).to_json())
    parts = {
        "study": [plan["study"], plan["spec_hash"]],
        "runs": plan["runs"],
        "probes": plan["probes"],
        "baselines": plan["baselines"],
        "skipped": plan["skipped"],
    }
    return {
        name: hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]
        for name, part in parts.items()
    }


@pytest.mark.parametrize("name", sorted(PINNED_STUDIES))
def test_plan_of_pinned_study_is_unchanged(tmp_path, name):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(PINNED_STUDIES[name])
    assert plan_digests(spec) == RECORDED_DIGESTS[name]


@pytest.mark.parametrize(
    "spec", [*sorted((REPO / "specs").glob("*.yaml")), "grid"], ids=lambda spec: getattr(spec, "stem", spec)
)
def test_every_run_equals_the_run_built_alone(tmp_path, spec):
    """Runs of one setting share its resolved settings across seeds: each must still equal the
    run built on its own, which resolves and hashes its settings itself (studies as shipped now)."""
    if spec == "grid":
        spec = tmp_path / "grid.yaml"
        spec.write_text(grid_study(rates=4, seeds=25))
    plan = make_plan(load_study(spec))
    for run in plan.runs:
        alone = Run(run.environment, run.architecture, run.training, run.training_grid, run.seed)
        assert (run.id, run.config_hash, run.resolved) == (alone.id, alone.config_hash, alone.resolved)
        assert run.directory == f"runs/{alone.id}"


def test_ten_thousand_runs_hash_their_settings_once_per_setting(tmp_path, monkeypatch):
    """The benchmark's study (100 learning rates x 100 seeds): 100 settings hashed, not 10,000."""
    hashed: list[Any] = []

    def counted(data: Any, length: int = HASH_DIGITS) -> str:
        hashed.append(data)
        return settings_hash(data, length)

    settings_hash = plan_module.settings_hash
    monkeypatch.setattr(plan_module, "settings_hash", counted)
    spec = tmp_path / "grid.yaml"
    spec.write_text(grid_study(rates=100, seeds=100))
    plan = make_plan(load_study(spec))
    assert len(plan.runs) == len({run.id for run in plan.runs}) == 10_000
    assert len(plan.probe_jobs) == 10_000
    assert len(hashed) == 100
    assert sorted(run["training"]["lr"] for run in hashed) == pytest.approx(
        [1e-4 * (1 + i) for i in range(100)]
    )


def test_with_seed_is_the_same_run_with_another_seed(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text(grid_study(rates=1, seeds=1))
    run = make_plan(load_study(spec)).runs[0]
    seeded = run.with_seed(7)
    alone = Run(run.environment, run.architecture, run.training, run.training_grid, 7)
    assert seeded == alone  # the same fields (dataclass equality)
    assert seeded.id == alone.id == run.id.removesuffix("-s0") + "-s7"
    assert seeded.resolved == alone.resolved and seeded.resolved is run.resolved


@dataclasses.dataclass(frozen=True)
class Whole:
    size: int = 1
    """An integer setting."""


@dataclasses.dataclass(frozen=True)
class Fraction:
    size: float = 0.5
    """A number setting with the same name."""


def test_field_types_are_resolved_per_class():
    """Types are looked up once per class: a field of the same name keeps each class's own type."""
    assert build(Whole, {"size": 2.0}, key="whole", file="study.yaml").size == 2
    assert type(build(Fraction, {"size": 2}, key="fraction", file="study.yaml").size) is float
    with pytest.raises(SpecError, match=r"whole\.size: expected an integer, got 2\.5"):
        build(Whole, {"size": 2.5}, key="whole", file="study.yaml")
    assert build(Fraction, {"size": 2.5}, key="fraction", file="study.yaml").size == 2.5
