"""The task-diversity axis: training on a finite pool of tasks, and probes on pool or fresh tasks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from mesaprobe import jobs
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.envs.sequences.base import combine, first_tensor
from mesaprobe.envs.task_pool import MAX_TASK_POOL, TaskPool, select_tasks
from mesaprobe.errors import SpecError
from mesaprobe.probes.adaptation import AdaptationConfig
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError, build
from mesaprobe.study import load_study, make_plan
from mesaprobe.train import algorithm_of
from tests.conftest import TINY_STUDY, run_all_jobs


def write_study(tmp_path: Path, change=None, name: str = "study.yaml") -> Path:
    data = yaml.safe_load(TINY_STUDY)
    if change is not None:
        change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def with_pool(size):
    return lambda data: data["environments"]["bandit2"].update(task_pool=size)


def tensors(tasks) -> list[torch.Tensor]:
    """Every tensor of a tasks dataclass tree, in field order."""
    found = []
    combine(lambda tensor: found.append(tensor) or tensor, tasks)
    return found


def rows_of_pool(tasks, pool) -> torch.Tensor:
    """(n,) index of the pool row equal (in every tensor) to each row of ``tasks``; -1 if none."""
    n, size = first_tensor(tasks).shape[0], first_tensor(pool).shape[0]
    equal = torch.ones(n, size, dtype=torch.bool)
    for drawn, member in zip(tensors(tasks), tensors(pool), strict=True):
        flat_drawn, flat_member = drawn.reshape(n, -1), member.reshape(size, -1)
        equal &= (flat_drawn[:, None, :] == flat_member[None, :, :]).all(dim=2)
    return torch.where(equal.any(dim=1), equal.float().argmax(dim=1), -1)


FAMILIES = {
    "bernoulli_bandit": {"arms": 3, "horizon": 6},
    "iid": {"horizon": 6},
    "markov": {"horizon": 6},
    "switching": {"horizon": 6},
    "drifting": {"horizon": 6},
    "periodic": {"horizon": 6},
    "linear_regression": {"dimension": 3, "horizon": 6},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_pool_tasks_are_pool_members(family):
    environment = ENVIRONMENTS.get(family)(
        build(ENVIRONMENTS.get(family).Config, FAMILIES[family], key="", file="")
    )
    pooled = TaskPool(environment, 5, key=("env", 0))
    pool = pooled.pool()
    assert first_tensor(pool).shape[0] == 5
    generator = make_generator("draw")
    drawn = pooled.sample_tasks(200, generator, "cpu")
    indices = pooled.sample_indices(200, make_generator("draw"))
    assert ((indices >= 0) & (indices < 5)).all()
    assert set(indices.tolist()) == set(range(5))  # 200 uniform draws hit all 5 (fails with p < 1e-18)
    for tensor, member in zip(tensors(drawn), tensors(pool), strict=True):
        torch.testing.assert_close(tensor, member[indices], rtol=0, atol=0)
    assert (rows_of_pool(drawn, pool) >= 0).all()
    # The environment's own behaviour is untouched: sequences from pool tasks as usual.
    if environment.kind == "prediction":
        tokens = pooled.sample(drawn, make_generator("luck"))
        assert tokens.shape == (200, environment.horizon)
        assert pooled.bayes_predict(tokens).shape == (200, environment.horizon, environment.symbols)


def test_a_pool_of_one_is_one_task():
    environment = ENVIRONMENTS.get("bernoulli_bandit")(
        build(ENVIRONMENTS.get("bernoulli_bandit").Config, {"arms": 4}, key="", file="")
    )
    tasks = TaskPool(environment, 1, key=("env", 3)).sample_tasks(50, make_generator("draw"), "cpu")
    assert torch.unique(tasks.probs, dim=0).shape[0] == 1
    fresh = environment.sample_tasks(50, make_generator("draw"), "cpu")
    assert torch.unique(fresh.probs, dim=0).shape[0] == 50


def test_pool_is_drawn_once_whatever_the_device_of_the_draws():
    environment = ENVIRONMENTS.get("iid")(build(ENVIRONMENTS.get("iid").Config, {}, key="", file=""))
    first = TaskPool(environment, 7, key=("iid-1234", 2)).pool()
    again = TaskPool(environment, 7, key=("iid-1234", 2)).pool()
    torch.testing.assert_close(first.probs, again.probs, rtol=0, atol=0)
    other = TaskPool(environment, 7, key=("iid-1234", 3)).pool()
    assert not torch.equal(first.probs, other.probs)


def test_select_tasks_shares_fields_that_are_not_tensors():
    from mesaprobe.envs.bernoulli_bandit import BanditTasks

    tasks = BanditTasks(probs=torch.rand(4, 2), probs_after_switch=torch.rand(4, 2), switch_step=3)
    chosen = select_tasks(tasks, torch.tensor([2, 2, 0]))
    assert chosen.switch_step == 3
    torch.testing.assert_close(chosen.probs, tasks.probs[[2, 2, 0]])
    torch.testing.assert_close(chosen.probs_after_switch, tasks.probs_after_switch[[2, 2, 0]])


def test_pool_is_shared_by_architectures_of_a_seed_and_differs_across_seeds(tmp_path):
    plan = make_plan(load_study(write_study(tmp_path, with_pool(6))))
    pools = {
        (run.architecture.name, run.seed): jobs.make_environment(run.environment, run.seed).pool().probs
        for run in plan.runs
    }
    assert len(pools) == 3 * 2
    for seed in (0, 1):
        torch.testing.assert_close(pools["gru", seed], pools["transformer", seed], rtol=0, atol=0)
        torch.testing.assert_close(pools["gru", seed], pools["memoryless", seed], rtol=0, atol=0)
    assert not torch.equal(pools["gru", 0], pools["gru", 1])
    # Another pool size is another pool.
    other = make_plan(load_study(write_study(tmp_path, with_pool(7), "other.yaml")))
    run = other.runs[0]
    assert not torch.equal(jobs.make_environment(run.environment, run.seed).pool().probs[:6], pools["gru", 0])


def test_training_draws_only_pool_tasks(tmp_path, monkeypatch):
    plan = make_plan(load_study(write_study(tmp_path, with_pool(3))))
    run = next(run for run in plan.runs if run.architecture.name == "gru" and run.seed == 1)
    drawn = []
    original = TaskPool.sample_tasks

    def record(self, n, generator, device):
        tasks = original(self, n, generator, device)
        drawn.append((self.pool(), tasks))
        return tasks

    monkeypatch.setattr(TaskPool, "sample_tasks", record)
    jobs.train_job(plan, run.id, tmp_path / "results", progress=False)
    updates = algorithm_of(run.training).updates(run.training, 8)
    assert len(drawn) == updates and updates > 1
    expected_pool = jobs.make_environment(run.environment, run.seed).pool()
    hits = set()
    for pool, tasks in drawn:
        torch.testing.assert_close(pool.probs, expected_pool.probs, rtol=0, atol=0)
        rows = rows_of_pool(tasks, pool)
        assert (rows >= 0).all()
        hits |= set(rows.tolist())
    assert hits == {0, 1, 2}


def test_without_a_pool_training_draws_fresh_tasks(tmp_path):
    plan = make_plan(load_study(write_study(tmp_path)))
    run = plan.runs[0]
    assert run.environment.task_pool is None
    assert not isinstance(jobs.make_environment(run.environment, run.seed), TaskPool)


def test_task_pool_changes_ids_and_null_does_not(tmp_path):
    plain = make_plan(load_study(write_study(tmp_path, name="plain.yaml")))
    null = make_plan(load_study(write_study(tmp_path, with_pool(None), "null.yaml")))
    pooled = make_plan(load_study(write_study(tmp_path, with_pool(16), "pooled.yaml")))
    other = make_plan(load_study(write_study(tmp_path, with_pool(64), "other.yaml")))
    ids = [{run.id for run in plan.runs} for plan in (plain, null, pooled, other)]
    assert ids[0] == ids[1]
    assert ids[0].isdisjoint(ids[2]) and ids[2].isdisjoint(ids[3]) and ids[0].isdisjoint(ids[3])
    assert pooled.runs[0].resolved["environment"]["task_pool"] == 16
    assert "task_pool" not in plain.runs[0].resolved["environment"]
    assert pooled.study.environments[0].id != plain.study.environments[0].id
    # Baselines are keyed by the environment, so each pool has its own.
    assert {job.output for job in pooled.baseline_jobs}.isdisjoint(job.output for job in plain.baseline_jobs)


def test_grid_over_task_pool(tmp_path):
    study = load_study(
        write_study(
            tmp_path, lambda data: data.update(grid={"environments.bandit2.task_pool": [1, 4, 16, 64]})
        )
    )
    assert [env.label for env in study.environments] == [
        "bandit2[task_pool=1]",
        "bandit2[task_pool=4]",
        "bandit2[task_pool=16]",
        "bandit2[task_pool=64]",
    ]
    assert [env.task_pool for env in study.environments] == [1, 4, 16, 64]
    plan = make_plan(study)
    assert len(plan.runs) == 4 * 3 * 2 and len({run.id for run in plan.runs}) == len(plan.runs)
    assert {run.variant for run in plan.runs} == {f"task_pool={size}" for size in (1, 4, 16, 64)}


@pytest.mark.parametrize(
    "value,shown",
    [
        (0, "0"),
        (MAX_TASK_POOL + 1, "1048577"),
        (-3, "-3"),
        (2.5, "2.5"),
        ("16", "the string '16'"),
        (True, "the boolean True"),
    ],
)
@pytest.mark.parametrize("through_grid", [False, True], ids=["block", "grid"])
def test_bad_task_pool_is_one_line_naming_file_and_key(tmp_path, value, shown, through_grid):
    if through_grid:
        change = lambda data: data.update(grid={"environments.bandit2.task_pool": [4, value]})  # noqa: E731
    else:
        change = with_pool(value)
    path = write_study(tmp_path, change)
    with pytest.raises(SpecError) as error:
        make_plan(load_study(path))
    assert str(error.value) == (
        f"{path}: environments.bandit2.task_pool: expected an integer from 1 to 1048576 or null, got {shown}"
    )


def test_largest_pool_and_integral_floats_are_accepted(tmp_path):
    study = load_study(write_study(tmp_path, with_pool(MAX_TASK_POOL)))
    assert study.environments[0].task_pool == MAX_TASK_POOL
    study = load_study(write_study(tmp_path, with_pool(16.0), "float.yaml"))
    assert study.environments[0].task_pool == 16 and type(study.environments[0].task_pool) is int


def test_unknown_environment_key_lists_task_pool(tmp_path):
    path = write_study(tmp_path, lambda data: data["environments"]["bandit2"].update(task_pools=4))
    with pytest.raises(SpecError, match="task_pool") as error:
        load_study(path)
    assert error.value.key == "environments.bandit2.task_pools"


def test_pool_probe_refuses_out_of_distribution_settings():
    AdaptationConfig(tasks="pool", permute_labels=True).validate()  # relabelled pool tasks
    with pytest.raises(SettingError, match="tasks: pool"):
        AdaptationConfig(tasks="pool", permute_labels=True, switch_at=0.5).validate()
    with pytest.raises(SpecError, match=r"probes\.pool\.tasks"):
        build(AdaptationConfig, {"tasks": "pool", "horizon_factor": 2}, key="probes.pool", file="s.yaml")


def test_tasks_setting_at_its_default_keeps_probe_ids(tmp_path):
    plain = load_study(write_study(tmp_path, name="plain.yaml"))
    fresh = load_study(
        write_study(tmp_path, lambda data: data["probes"]["adaptation"].update(tasks="fresh"), "fresh.yaml")
    )

    def pool_probe(data):  # a pool probe needs an environment with a pool to play
        data["probes"]["adaptation"].update(tasks="pool")
        data["environments"]["bandit2"].update(task_pool=4)

    pool = load_study(write_study(tmp_path, pool_probe, "pool.yaml"))
    assert plain.probes[0].id == fresh.probes[0].id != pool.probes[0].id


POOL_STUDY_PROBES = {
    "fresh": {"kind": "adaptation", "episodes": 24, "batch": 16},
    "pool": {"kind": "adaptation", "episodes": 24, "batch": 16, "tasks": "pool"},
}


@pytest.fixture
def pool_plan(tmp_path):
    def change(data):
        data["environments"]["bandit2"]["task_pool"] = 2
        data["probes"] = POOL_STUDY_PROBES

    return make_plan(load_study(write_study(tmp_path, change)))


def best_expected_reward(table: pl.DataFrame) -> pl.DataFrame:
    """Per (episode, step) the best arm's probability: expected reward plus regret."""
    wide = table.pivot("metric", index=["episode", "step"], values="value")
    return wide.select("episode", "step", best=pl.col("expected_reward") + pl.col("regret")).sort(
        "episode", "step"
    )


def test_pool_probes_give_architectures_and_baselines_the_pool_tasks(tmp_path, pool_plan):
    results = tmp_path / "results"
    tables = run_all_jobs(pool_plan, results, resamples=20)
    assert tables["summary"].exists()
    for seed in (0, 1):
        run = next(run for run in pool_plan.runs if run.architecture.name == "gru" and run.seed == seed)
        pool = jobs.make_environment(run.environment, seed).pool().probs  # (2, arms)
        pool_best = set(pool.max(dim=1).values.double().round(decimals=6).tolist())

        def table(probe, agent_kind, seed=seed, run=run):
            if agent_kind == "architecture":
                job = next(j for j in pool_plan.probe_jobs if j.run.id == run.id and j.probe.name == probe)
            else:
                job = next(
                    j
                    for j in pool_plan.baseline_jobs
                    if j.probe.name == probe and j.seed == seed and j.baseline.name == "thompson"
                )
            return pl.read_parquet(results / job.output)

        model_pool, baseline_pool = (
            best_expected_reward(table("pool", "architecture")),
            best_expected_reward(table("pool", "baseline")),
        )
        assert model_pool.equals(baseline_pool)  # the same tasks, episode by episode
        drawn = set(model_pool["best"].round(6).to_list())
        assert drawn == pool_best  # 24 episodes from a pool of 2: both tasks, nothing else
        fresh = best_expected_reward(table("fresh", "architecture"))
        assert fresh.equals(best_expected_reward(table("fresh", "baseline")))
        assert len(set(fresh["best"].round(6).to_list())) == 24  # fresh tasks: all different
    summary = pl.read_parquet(tables["summary"])
    assert set(summary["probe"]) == {"fresh", "pool"}


def test_pool_probe_without_a_pool_plays_the_prior(tmp_path):
    """At the unlimited end of a task_pool sweep (null) a pool probe plays the prior. (A study in
    which no environment it plays has a pool refuses it: tests/test_hardening.py.)"""

    def sweep(data):
        data["probes"] = {"pool": POOL_STUDY_PROBES["pool"]}
        data["grid"] = {"environments.bandit2.task_pool": [2, None]}

    plan = make_plan(load_study(write_study(tmp_path, sweep)))
    job = next(job for job in plan.probe_jobs if job.run.environment.task_pool is None)
    from mesaprobe.probes import PROBES

    environment = jobs.probed_environment(PROBES.get("adaptation")(job.probe.config), job.run.environment, 0)
    assert not isinstance(environment, TaskPool)


def test_pool_probe_environment_is_the_trained_pool():
    from mesaprobe.probes.adaptation import AdaptationProbe

    config = build(ENVIRONMENTS.get("bernoulli_bandit").Config, {"arms": 2, "horizon": 4}, key="", file="")
    pooled = TaskPool(ENVIRONMENTS.get("bernoulli_bandit")(config), 3, key=("env", 0))
    probe = AdaptationProbe(dataclasses.replace(AdaptationConfig(), tasks="pool"))
    assert probe.environment(pooled) is pooled


@pytest.mark.parametrize("family", ["bernoulli_bandit", "markov"])
def test_relabelled_pool_tasks_are_the_pool_in_another_language(family):
    from mesaprobe.probes.adaptation import AdaptationProbe
    from mesaprobe.seeding import fixed_permutation

    base = ENVIRONMENTS.get(family)(ENVIRONMENTS.get(family).Config(**FAMILIES[family]))
    pool = TaskPool(base, 5, key=("relabel", 0))
    probe = AdaptationProbe(AdaptationConfig(tasks="pool", permute_labels=True))
    alien = probe.environment(pool)
    assert isinstance(alien, TaskPool) and alien.size == 5
    if family == "bernoulli_bandit":
        permutation = fixed_permutation(base.arms, "label-permutation")
        assert torch.equal(alien.pool().probs, pool.pool().probs[:, permutation])
    else:  # the same chains; their tokens come out relabelled
        for a, b in zip(tensors(alien.pool()), tensors(pool.pool()), strict=True):
            assert torch.equal(a, b)
        tokens = alien.sample(alien.pool(), make_generator("t"))
        plain = pool.sample(pool.pool(), make_generator("t"))
        assert torch.equal(tokens, alien.environment.permutation[plain])


def test_every_pool_size_is_probed_on_the_same_fresh_tasks(tmp_path):
    def change(data):
        data["grid"] = {"environments.bandit2.task_pool": [1, 4, None]}
        data["architectures"] = {"gru": data["architectures"]["gru"]}
        data["seeds"] = [0]
        data["probes"] = POOL_STUDY_PROBES
        data["baselines"] = ["random"]

    plan = make_plan(load_study(write_study(tmp_path, change)))
    results = tmp_path / "results"
    run_all_jobs(plan, results, resamples=10)
    best = {}
    for job in plan.baseline_jobs:
        best[(job.environment.task_pool, job.probe.name)] = best_expected_reward(
            pl.read_parquet(results / job.output)
        )
    assert best[(1, "fresh")].equals(best[(4, "fresh")]) and best[(4, "fresh")].equals(best[(None, "fresh")])
    assert not best[(1, "pool")].equals(best[(4, "pool")])
