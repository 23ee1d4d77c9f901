"""bf16 mixed-precision training: autocast inside updates, float32 weights, results within tolerance."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.jobs import output_size
from mesaprobe.models import ARCHITECTURES, build_model
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SpecError
from mesaprobe.study import load_study, make_plan
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.loop import update
from mesaprobe.train.state import TrainingState

STUDY = """\
study: precision
environments:
  markov: {family: markov, horizon: 16, training: {algorithm: predict}}
architectures:
  transformer: {family: transformer, d_model: 16, layers: 2, heads: 2}
training: {env_steps: 1024, batch: 16}
"""


def plan_of(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return make_plan(load_study(path))


def test_float32_keeps_ids_and_bf16_changes_them(tmp_path):
    default = plan_of(tmp_path, STUDY).runs[0].id
    explicit = plan_of(tmp_path, STUDY.replace("batch: 16}", "batch: 16, precision: float32}")).runs[0].id
    bf16 = plan_of(tmp_path, STUDY.replace("batch: 16}", "batch: 16, precision: bf16}")).runs[0].id
    assert default == explicit != bf16


def test_reptile_refuses_bf16(tmp_path):
    study = STUDY.replace(
        "markov: {family: markov, horizon: 16, training: {algorithm: predict}}",
        "bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8}",
    )
    study = study.replace(
        "transformer: {family: transformer, d_model: 16, layers: 2, heads: 2}",
        "memoryless: {family: memoryless, hidden: 8}",
    )
    with pytest.raises(SpecError, match="precision: reptile trains in float32 only"):
        plan_of(tmp_path, study.replace("batch: 16}", "batch: 16, algorithm: reptile, precision: bf16}"))


SIZES = {
    "transformer": {"d_model": 16, "layers": 2, "heads": 2},
    "lstm": {"hidden": 16},
    "gru": {"hidden": 16},
}


def trained(config: TrainingConfig, family: str, environment_name: str, settings: dict, updates: int):
    """The model and per-update statistics of ``updates`` updates from fixed weights and generators."""
    environment = ENVIRONMENTS.get(environment_name)(ENVIRONMENTS.get(environment_name).Config(**settings))
    torch.manual_seed(0)
    model = build_model(
        family,
        ARCHITECTURES.get(family).Config(**SIZES[family]),
        environment.observation_size,
        output_size(environment),
    )
    state = TrainingState(
        model,
        torch.optim.Adam(model.parameters(), lr=config.lr),
        make_generator("precision-tasks"),
        make_generator("precision-actions"),
    )
    statistics = [
        {key: float(value) for key, value in update(environment, state, config, updates).items()}
        for _ in range(updates)
    ]
    return model, statistics


def test_bf16_updates_run_under_autocast_with_float32_weights():
    config = TrainingConfig(algorithm="predict", batch=16, precision="bf16")
    seen = []
    environment = ENVIRONMENTS.get("markov")(ENVIRONMENTS.get("markov").Config(horizon=16))
    model = build_model(
        "transformer",
        ARCHITECTURES.get("transformer").Config(d_model=16, layers=1, heads=2),
        environment.observation_size,
        environment.symbols,
    )
    model.embed.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    state = TrainingState(
        model, torch.optim.Adam(model.parameters()), make_generator("a"), make_generator("b")
    )
    update(environment, state, config, 1)
    assert seen == [torch.bfloat16]
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    model(environment.observation(torch.zeros(2, 16, dtype=torch.long)))  # outside an update: float32
    assert seen[-1] == torch.float32


@pytest.mark.parametrize(
    ("family", "algorithm", "environment", "settings"),
    [
        ("transformer", "predict", "markov", {"horizon": 16}),
        ("transformer", "a2c", "bernoulli_bandit", {"arms": 2, "horizon": 16}),
        ("lstm", "predict", "markov", {"horizon": 16}),
        ("gru", "a2c", "bernoulli_bandit", {"arms": 2, "horizon": 16}),
    ],
)
def test_bf16_training_stays_within_tolerance_of_float32(family, algorithm, environment, settings):
    """bf16 keeps 8 bits of mantissa (relative rounding 2**-9 = 0.2%).  After 8 Adam updates of a
    small model from the same weights and random numbers, each update's loss agrees with
    float32's to 3% and the weights differ by at most 15% of how far float32 training moved them
    (measured on this CPU: losses at most 1.2% apart, weights 1.5-5%; single coordinates can differ more, since
    Adam steps every coordinate by about lr whatever its gradient's size)."""
    base = TrainingConfig(algorithm=algorithm, batch=32)
    initial, _ = trained(dataclasses.replace(base, lr=0.0), family, environment, settings, 1)
    full, full_statistics = trained(base, family, environment, settings, 8)
    mixed, mixed_statistics = trained(
        dataclasses.replace(base, precision="bf16"), family, environment, settings, 8
    )
    key = "logloss_bits" if algorithm == "predict" else "value_loss"
    for ours, theirs in zip(mixed_statistics, full_statistics, strict=True):
        assert ours[key] == pytest.approx(theirs[key], rel=0.03)

    def weights(model):
        return torch.cat([parameter.detach().flatten() for parameter in model.parameters()])

    moved = weights(full) - weights(initial)
    assert (weights(mixed) - weights(full)).norm() <= 0.15 * moved.norm()
