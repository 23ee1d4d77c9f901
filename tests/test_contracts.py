"""One contract per extension axis, checked for every registered name.

Adding an environment family, an architecture, a probe kind, a baseline or a training
algorithm is one file plus one registry line; these tests then cover it with no edit here
(the behaviour of each family is tested in its own file; step-versus-forward agreement of
every architecture in tests/test_models.py).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mesaprobe.baselines import BASELINES, Baseline, PlansWithTask
from mesaprobe.envs import ENVIRONMENTS, Environment
from mesaprobe.envs.task_pool import TaskPool
from mesaprobe.kinds import KINDS, EnvironmentKind, kind_of
from mesaprobe.models import ARCHITECTURES, SequenceModel, build_model
from mesaprobe.probes import PROBES, Probe
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError, build, field_docs
from mesaprobe.train import ALGORITHMS, Algorithm, check_training
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.state import TrainingState

pytestmark = pytest.mark.usefixtures("one_thread")


def small_environment(family: str) -> Environment:
    """The family with its default settings, episodes shortened where it has a horizon."""
    config = build(ENVIRONMENTS.get(family).Config, {}, key=f"environments.{family}", file="contract")
    if "horizon" in {field.name for field in dataclasses.fields(config)}:
        config = dataclasses.replace(config, horizon=min(config.horizon, 6))
    return ENVIRONMENTS.get(family)(config)


def environment_of_kind(kind: str) -> Environment:
    family = next(name for name in ENVIRONMENTS if ENVIRONMENTS.get(name).kind == kind)
    return small_environment(family)


def tensors_of(value) -> list[torch.Tensor]:
    """Every tensor inside a tasks dataclass (fields may hold tuples of tensors or nested tasks)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value):
        return [t for field in dataclasses.fields(value) for t in tensors_of(getattr(value, field.name))]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in tensors_of(item)]
    return []


# ----------------------------------------------------------------------- settings of every axis


@pytest.mark.parametrize(
    "registry,name",
    [(registry, name) for registry in (ENVIRONMENTS, ARCHITECTURES, PROBES, BASELINES) for name in registry],
    ids=lambda value: value if isinstance(value, str) else value.axis.replace(" ", "_"),
)
def test_every_family_has_documented_default_settings(registry, name):
    cls = registry.get(name)
    assert cls.registered_name == name
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    build(cls.Config, {}, key=name, file="contract")  # every setting has a valid default

    undocumented = [
        field.name for field in dataclasses.fields(cls.Config) if field.name not in field_docs(cls.Config)
    ]
    assert not undocumented, f"{registry.axis} {name}: settings without a docstring: {undocumented}"


# ----------------------------------------------------------------------------- environment kinds


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_has_its_metric_family_and_an_environment(kind):
    entry = KINDS.get(kind)
    assert isinstance(entry, EnvironmentKind) and entry.metrics.kind == kind
    assert any(ENVIRONMENTS.get(name).kind == kind for name in ENVIRONMENTS)


# ---------------------------------------------------------------------------------- environments


@pytest.mark.parametrize("family", list(ENVIRONMENTS))
def test_environment_contract(family):
    cls = ENVIRONMENTS.get(family)
    assert issubclass(cls, Environment) and cls.kind in KINDS
    environment = small_environment(family)
    kind = kind_of(environment)
    assert kind.output_size(environment) >= 1
    tasks = environment.sample_tasks(3, make_generator("contract-tasks", family), "cpu")
    luck = make_generator("contract-luck", family)
    if kind.acting:
        state, observation = environment.reset(tasks)
        assert observation.shape == (3, environment.observation_size)
        action = torch.zeros(3, dtype=torch.long)
        assert environment.expected_reward(state, action).shape == (3,)
        state, observation, reward, _done = environment.step(state, action, luck)
        assert observation.shape == (3, environment.observation_size) and reward.shape == (3,)
    else:
        sample = environment.sample(tasks, luck)
        observation = environment.observation(sample)
        assert observation.shape[:2] == (3, environment.horizon)
        assert observation.shape[2] == environment.observation_size
    # Drawing tasks is a pure function of the generator's state.
    again = environment.sample_tasks(3, make_generator("contract-tasks", family), "cpu")
    assert tensors_of(tasks) and all(
        torch.equal(a, b) for a, b in zip(tensors_of(tasks), tensors_of(again), strict=True)
    )


# --------------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("family", list(ARCHITECTURES))
def test_architecture_contract(family):
    cls = ARCHITECTURES.get(family)
    assert issubclass(cls, SequenceModel)
    torch.manual_seed(0)
    model = build_model(family, cls.Config(), input_size=5, output_size=3, private_size=1).eval()
    xs = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ys, hidden = model(xs, return_hidden=True)
        state = model.initial_state(2, 4, "cpu")
        state, y = model.step(state, xs[:, 0])
    assert ys.shape == (2, 4, 3) and y.shape == (2, 3)
    assert hidden and all(h.shape[:2] == (2, 4) for h in hidden.values())


# ------------------------------------------------------------------------------------------ probes


@pytest.mark.parametrize("name", list(PROBES))
def test_probe_contract(name):
    cls = PROBES.get(name)
    assert issubclass(cls, Probe)
    assert cls.serves and set(cls.serves) <= set(KINDS)
    assert cls.writes in ("curves", "inside")
    config = cls.Config()
    parts = cls.expand(config)
    assert parts and all(isinstance(grid, tuple) and isinstance(part, cls.Config) for grid, part in parts)
    for kind in KINDS:
        reason = cls.not_applicable(config, kind)
        assert reason is None or (isinstance(reason, str) and reason)
        if kind not in cls.serves:
            continue
        probe = cls(parts[0][1])
        assert probe.policy in ("sample", "greedy") and isinstance(probe.plays_pool, bool)
        if reason is None:
            trained = environment_of_kind(kind)
            assert probe.environment(trained).kind == kind


# --------------------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_contract(name):
    cls = BASELINES.get(name)
    assert issubclass(cls, Baseline)
    assert cls.serves and set(cls.serves) <= set(KINDS)
    assert not cls.needs_task_pool or cls.without_task_pool
    for kind in cls.serves:
        environment = environment_of_kind(kind)
        config = cls.Config()
        reason = cls.skip_reason(config, environment)
        assert reason is None or isinstance(reason, str)
        if reason is not None:
            continue
        if cls.needs_task_pool:
            pool = TaskPool(environment, 4, key=("contract", name)).pool()
            baseline = cls(config, environment, pool=pool)
        else:
            baseline = cls(config, environment)
        tasks = environment.sample_tasks(2, make_generator("contract-tasks", name), "cpu")
        luck = make_generator("contract-luck", name)
        if isinstance(baseline, PlansWithTask):  # an oracle plays the tasks it is given
            baseline = baseline.for_tasks(tasks)
        if KINDS.get(kind).acting:
            state = baseline.initial_state(2, environment.horizon, "cpu")
            _, observation = environment.reset(tasks)
            _, action = baseline.act(state, observation, make_generator("contract-actions", name))
            assert (
                action.shape == (2,)
                and int(action.min()) >= 0
                and int(action.max()) < environment.action_count
            )
        else:
            sample = environment.sample(tasks, luck)
            predictions = baseline.predict(environment, tasks, sample)
            assert predictions.shape[:2] == (2, environment.horizon)
            assert torch.isfinite(predictions).all()


# -------------------------------------------------------------------------------------- algorithms


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_algorithm_contract(name):
    """One update of each algorithm on an environment and architecture it trains: finite statistics,
    and the weights move."""
    cls = ALGORITHMS.get(name)
    assert issubclass(cls, Algorithm) and cls.registered_name == name
    assert cls.serves and set(cls.serves) <= set(KINDS)
    assert cls.architectures is None or set(cls.architectures) <= set(ARCHITECTURES)
    config = TrainingConfig(algorithm=name, batch=4, env_steps=48, inner_steps=2)
    check_training(config)
    environment = environment_of_kind(cls.serves[0])
    family = (cls.architectures or ("gru",))[0]
    torch.manual_seed(0)
    model = build_model(
        family,
        ARCHITECTURES.get(family).Config(),
        environment.observation_size,
        kind_of(environment).output_size(environment),
        environment.private_size,
    )
    before = [parameter.detach().clone() for parameter in model.parameters()]
    state = TrainingState(
        model,
        torch.optim.Adam(model.parameters(), lr=config.lr),
        make_generator("contract-tasks", name),
        make_generator("contract-actions", name),
    )
    assert cls.updates(config, environment.horizon) >= 1
    statistics = cls.update(environment, state, config, cls.updates(config, environment.horizon))
    assert statistics and all(math.isfinite(float(value)) for value in statistics.values())
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))


def test_unknown_algorithm_is_refused_naming_the_valid_ones():

    with pytest.raises(SettingError, match="expected one of a2c, ppo, predict, regress, reptile"):
        check_training(TrainingConfig(algorithm="sgd"))
