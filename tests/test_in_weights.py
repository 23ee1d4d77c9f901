"""The in-weights probe: per-task online SGD of a memoryless policy against a frozen agent's in-context regret."""

from __future__ import annotations

import copy
import math

import polars as pl
import pytest
import torch

from mesaprobe.agents import ModelAgent
from mesaprobe.analysis.inside import write_inside_table
from mesaprobe.analysis.tables import GROUP_COLUMNS
from mesaprobe.baselines import build_baseline
from mesaprobe.envs.bernoulli_bandit import BanditTasks, BernoulliBandit, BernoulliBanditConfig
from mesaprobe.models import build_model
from mesaprobe.models.memoryless import MemorylessConfig
from mesaprobe.models.recurrent import RecurrentConfig
from mesaprobe.probes.adaptation import heldout_streams
from mesaprobe.probes.in_weights import (
    InWeightsConfig,
    InWeightsProbe,
    centred_moving_average,
    finetune_online,
    steps_to_match,
)
from mesaprobe.probes.inside import INSIDE_ROW_COLUMNS
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError


def bandit(arms: int, horizon: int) -> BernoulliBandit:
    return BernoulliBandit(BernoulliBanditConfig(arms=arms, horizon=horizon))


def memoryless(input_size: int, output_size: int, hidden: int = 8, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("memoryless", MemorylessConfig(hidden=hidden), input_size, output_size)


def test_batched_sgd_equals_one_torch_sgd_loop_per_task():
    """Every task's copy, fine-tuned in the stack, ends exactly where torch.optim.SGD takes a lone
    copy on the same pulls; the recorded regrets are its policy's. Horizon 5 and 12 steps cross
    two episode boundaries, where the observation is reset."""
    environment, steps, lr = bandit(arms=3, horizon=5), 12, 0.3
    model = memoryless(environment.observation_size, environment.action_count + 1).double()
    tasks = BanditTasks(probs=torch.tensor([[0.2, 0.7, 0.5], [0.9, 0.1, 0.4]], dtype=torch.float64))
    stacked = finetune_online(
        model, environment, tasks, steps, lr, make_generator("luck", 0), make_generator("actions", 0)
    )
    assert torch.equal(stacked.observations[:, [0, 5, 10]], torch.zeros(2, 3, environment.observation_size))
    for task in range(2):
        alone = copy.deepcopy(model)
        optimiser = torch.optim.SGD(alone.parameters(), lr=lr)
        rewards = stacked.rewards[task]
        probs = tasks.probs[task]
        for k in range(steps + 1):
            logits = alone(stacked.observations[task, k][None, None])[0, 0, :3]
            policy = torch.softmax(logits.detach(), dim=0)
            expected_regret = (policy * (probs.max() - probs)).sum()
            torch.testing.assert_close(stacked.expected_regrets[task, k], expected_regret, rtol=0, atol=1e-10)
            if k == steps:
                break
            baseline = rewards[0] if k == 0 else rewards[:k].mean()
            loss = -torch.log_softmax(logits, dim=0)[stacked.actions[task, k]] * (rewards[k] - baseline)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        for name, value in alone.named_parameters():
            torch.testing.assert_close(stacked.parameters[name][task], value.detach(), rtol=0, atol=1e-10)
    # The copies did move (a test of nothing otherwise), and the model handed in did not.
    moved = stacked.parameters["head.weight"][0] - model.head.weight
    assert moved.abs().max() > 1e-3
    assert model.head.weight.grad is None


def test_fresh_sgd_learns_a_clear_two_armed_bandit():
    """Arms (0.9, 0.1): a uniform policy's regret is 0.4. With the default learning rate the 16
    fresh copies end far below it: over the last 50 of 200 steps the task-mean regret was
    0.0006..0.0015 across four initialisations, so 0.05 leaves a wide margin."""
    environment, tasks_count, steps = bandit(arms=2, horizon=100), 16, 200
    model = memoryless(environment.observation_size, 3, hidden=MemorylessConfig.hidden)
    tasks = BanditTasks(probs=torch.tensor([[0.9, 0.1]]).expand(tasks_count, 2).clone())
    finetuning = finetune_online(
        model,
        environment,
        tasks,
        steps,
        InWeightsConfig().lr,
        make_generator("luck", 1),
        make_generator("actions", 1),
    )
    curve = finetuning.expected_regrets.mean(dim=0)  # (N + 1,)
    assert curve[0] > 0.2  # a fresh MLP starts near uniform (0.4), not already solved
    assert curve[-50:].mean() < 0.05
    assert finetuning.expected_regrets[:, -50:].mean(dim=1).max() < 0.1  # every task learned


def test_steps_to_match_is_the_first_recorded_crossing_or_censored():
    steps = [0, 10, 20, 30, 40]
    curves = torch.tensor([[0.5, 0.4, 0.3, 0.35, 0.2]] * 4, dtype=torch.float64)
    targets = torch.tensor([0.3, 0.25, 0.1, 0.6], dtype=torch.float64)
    # at or below: 0.3 reached at 20 (then left, still 20); 0.25 first at 40; 0.1 never; 0.6 at once.
    assert steps_to_match(curves, steps, targets, max_steps=40).tolist() == [20.0, 40.0, 41.0, 0.0]


def test_centred_moving_average_matches_brute_force_and_keeps_straight_lines():
    values = torch.randn(3, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    smoothed = centred_moving_average(values, 5)
    for n in range(9):
        torch.testing.assert_close(smoothed[:, n], values[:, max(0, n - 2) : n + 3].mean(dim=1))
    line = torch.arange(9, dtype=torch.float64)
    torch.testing.assert_close(centred_moving_average(line, 5)[2:-2], line[2:-2])
    assert torch.equal(centred_moving_average(values, 1), values)


def inside_values(frame: pl.DataFrame, quantity: str, target: str = "") -> pl.DataFrame:
    return frame.filter((pl.col("quantity") == quantity) & (pl.col("target") == target)).sort(
        "replicate", "index"
    )


def test_thompson_sets_a_lower_in_context_regret_than_random_play():
    """Random play's regret per step is E|p1 - p2| / 2 = 1/6 under a uniform prior at every step;
    Thompson sampling, 18 pulls into a 20-pull episode, is well below that. Both are checked
    within 4 bootstrap standard errors (the replicates' spread over resampled tasks)."""
    environment = bandit(arms=2, horizon=20)
    probe = InWeightsProbe(
        InWeightsConfig(episodes=400, replicates=50, max_steps=2, record_every=1, hidden=4)
    )
    key = ("bandit2", "in_weights", 0)
    levels = {}
    for name in ("random", "thompson"):
        frame = probe.run(build_baseline(name, None, environment), environment, key, (name, 0))
        values = inside_values(frame, "in_context_regret")["value"].to_numpy()
        levels[name] = (values[0], values[1:].std())
    random_level, random_error = levels["random"]
    thompson_level, thompson_error = levels["thompson"]
    assert abs(random_level - 1 / 6) < 4 * random_error
    assert thompson_level < random_level - 4 * math.hypot(random_error, thompson_error)


@pytest.fixture(scope="module")
def end_to_end():
    """The probe on an untrained GRU and a memoryless model (init: both), the same seed."""
    environment = bandit(arms=2, horizon=10)
    config = InWeightsConfig(
        episodes=12, replicates=4, max_steps=30, record_every=10, hidden=8, smoothing_steps=1, init="both"
    )
    probe, key = InWeightsProbe(config), ("bandit2", "in_weights", 3)
    torch.manual_seed(5)
    models = {
        "gru": build_model("gru", RecurrentConfig(hidden=8), environment.observation_size, 3).eval(),
        "memoryless": memoryless(environment.observation_size, 3, seed=6).eval(),
    }
    frames, unchanged = {}, {}
    for name, model in models.items():
        before = {key: value.clone() for key, value in model.state_dict().items()}
        frames[name] = probe.run(ModelAgent(model, 2), environment, key, (name, 0))
        after = model.state_dict()
        unchanged[name] = all(torch.equal(before[key], after[key]) for key in before)
    return {
        "environment": environment,
        "probe": probe,
        "key": key,
        "models": models,
        "frames": frames,
        "unchanged": unchanged,
    }


def test_end_to_end_rows(end_to_end, tmp_path):
    frames, unchanged = end_to_end["frames"], end_to_end["unchanged"]
    for name, frame in frames.items():
        assert unchanged[name], f"the frozen {name} model changed"
        assert frame.schema == pl.Schema(INSIDE_ROW_COLUMNS)
        assert frame["value"].is_finite().all()
        assert set(frame["layer"]) == {""}
        inits = ["fresh_init", "own_init"] if name == "memoryless" else ["fresh_init"]
        expected_cells = {("in_context_regret", "")} | {
            (quantity, init)
            for quantity in ("sgd_regret", "sgd_steps_to_match", "sgd_matched_fraction")
            for init in inits
        }
        assert set(frame.select("quantity", "target").unique().iter_rows()) == expected_cells
        for quantity, target in expected_cells:
            cell = inside_values(frame, quantity, target)
            indices = [0, 10, 20, 30] if quantity == "sgd_regret" else [0]
            assert cell["index"].to_list() == indices * 5 and cell["replicate"].to_list() == sorted(
                list(range(5)) * len(indices)
            )
        steps = frame.filter(pl.col("quantity") == "sgd_steps_to_match")["value"]
        assert set(steps.to_list()) <= {0.0, 10.0, 20.0, 30.0, 31.0}
        fractions = frame.filter(pl.col("quantity") == "sgd_matched_fraction")["value"]
        assert fractions.min() >= 0 and fractions.max() <= 1
        table = frame.with_columns(
            *[pl.lit(name if column == "agent" else "x").alias(column) for column in GROUP_COLUMNS],
            run=pl.lit(name),
            seed=pl.lit(0, dtype=pl.Int64),
        )
        write_inside_table(table, tmp_path / f"{name}.parquet")  # the table's own validation
    # The fine-tuning draws from held-out streams only: both agents get the same fresh curve.
    assert inside_values(frames["gru"], "sgd_regret", "fresh_init").equals(
        inside_values(frames["memoryless"], "sgd_regret", "fresh_init")
    )


def zero_observation_regret(model, environment, probe, key) -> float:
    """Task-mean expected regret of ``model``'s policy at an episode's first (all-zero) observation."""
    tasks = environment.sample_tasks(probe.config.episodes, heldout_streams(key, ("any",), "cpu")[0], "cpu")
    with torch.no_grad():
        logits = model(torch.zeros(1, 1, environment.observation_size))[0, 0, :2]
    regret = torch.softmax(logits, dim=0) @ (tasks.probs.max(dim=1).values[:, None] - tasks.probs).T
    return regret.mean().item()


def test_fine_tuning_starts_from_the_stated_weights(end_to_end):
    """With smoothing_steps 1, sgd_regret at 0 is the starting policy's regret at the first observation:
    the probed model's own for own_init, the probe's fresh model for fresh_init."""
    environment, probe, key, models = (end_to_end[name] for name in ("environment", "probe", "key", "models"))
    frames = end_to_end["frames"]
    fresh = probe.initial_models(ModelAgent(models["gru"], 2), environment, key, "cpu")
    assert list(fresh) == ["fresh_init"]
    starts = {
        "own_init": zero_observation_regret(models["memoryless"], environment, probe, key),
        "fresh_init": zero_observation_regret(fresh["fresh_init"], environment, probe, key),
    }
    assert abs(starts["own_init"] - starts["fresh_init"]) > 1e-3  # the two starts differ
    for target, start in starts.items():
        recorded = inside_values(frames["memoryless"], "sgd_regret", target).filter(pl.col("replicate") == 0)
        assert recorded["value"][0] == pytest.approx(start, abs=1e-6)


@pytest.mark.parametrize(
    "settings,key",
    [({"smoothing_steps": 4}, "smoothing_steps"), ({"lr": 0.0}, "lr"), ({"init": "own"}, "init")],
)
def test_invalid_settings_name_their_key(settings, key):
    with pytest.raises(SettingError) as error:
        InWeightsConfig(**settings).validate()
    assert error.value.key == key
    assert InWeightsProbe.not_applicable(InWeightsConfig(), "prediction") is not None
    assert InWeightsProbe.not_applicable(InWeightsConfig(), "bandit") is None
