"""The context-window probe: frozen models with memory restricted to the last w steps."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

from mesaprobe import jobs
from mesaprobe.agents import ModelAgent, ModelPredictor
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.errors import SpecError
from mesaprobe.frozen import load_frozen, parameter_hash
from mesaprobe.models import ARCHITECTURES, build_model
from mesaprobe.models.windowed import restrict_memory
from mesaprobe.probes.adaptation import AdaptationConfig, AdaptationProbe
from mesaprobe.probes.window import WindowConfig, WindowProbe
from mesaprobe.settings import build
from mesaprobe.study import load_study, make_plan
from tests.conftest import TINY_STUDY, run_all_jobs


def make(family, settings, input_size=5, output_size=3, seed=0):
    torch.manual_seed(seed)
    return build_model(family, ARCHITECTURES.get(family).Config(**settings), input_size, output_size).eval()


def stepped(model, xs):
    """Outputs of ``model`` acting step by step on ``xs`` (B, T, I)."""
    state = model.initial_state(xs.shape[0], xs.shape[1], "cpu")
    outputs = []
    for t in range(xs.shape[1]):
        state, y = model.step(state, xs[:, t])
        outputs.append(y)
    return torch.stack(outputs, dim=1)


XS = torch.randn(3, 11, 5, generator=torch.Generator().manual_seed(4))
TRANSFORMER = {"d_model": 16, "layers": 2, "heads": 2}


@pytest.mark.parametrize("window", [1, 3, 4, 11, 20])
def test_windowed_transformer_is_a_transformer_built_with_that_context(window):
    full = make("transformer", TRANSFORMER)
    built = make("transformer", {**TRANSFORMER, "context": window}, seed=1)
    built.load_state_dict(full.state_dict())
    restricted = restrict_memory(full, window)
    with torch.no_grad():
        expected = built(XS)
        torch.testing.assert_close(restricted(XS), expected, rtol=0, atol=0)
        torch.testing.assert_close(stepped(restricted, XS), stepped(built, XS), rtol=0, atol=0)
        torch.testing.assert_close(stepped(restricted, XS), expected, rtol=1e-5, atol=1e-5)
        _, hidden = restricted(XS, return_hidden=True)
        _, built_hidden = built(XS, return_hidden=True)
    torch.testing.assert_close(hidden["layer2"], built_hidden["layer2"], rtol=0, atol=0)
    assert restricted.has_memory == (window != 1)
    # Outside the probe the model is the one trained: full attention again.
    assert full.window is None and all(block.attention.window is None for block in full.blocks)
    with torch.no_grad():
        assert not torch.allclose(full(XS), expected) or window >= XS.shape[1]


def test_a_transformer_trained_with_a_window_keeps_it():
    trained = make("transformer", {**TRANSFORMER, "context": 3})
    with torch.no_grad():
        torch.testing.assert_close(restrict_memory(trained, 8)(XS), trained(XS), rtol=0, atol=0)
        narrower = make("transformer", {**TRANSFORMER, "context": 2}, seed=1)
        narrower.load_state_dict(trained.state_dict())
        torch.testing.assert_close(restrict_memory(trained, 2)(XS), narrower(XS), rtol=0, atol=0)
    assert trained.window == 3


#: Families whose memory is a recurrent state (restricted by resetting it every w steps).
RECURRENT = {
    "gru": {"hidden": 8, "layers": 2},
    "lstm": {"hidden": 8, "layers": 2},
    "lru": {"d_model": 8, "state": 4, "layers": 2},
    "mamba": {"d_model": 8, "layers": 2, "d_state": 4},
    "linear_attention": {"d_model": 8, "layers": 2, "heads": 2},
}


@pytest.mark.parametrize("family", list(RECURRENT))
@pytest.mark.parametrize("window", [1, 3, 4, 11, 20])
def test_recurrent_reset_every_w_steps(family, window):
    model = make(family, RECURRENT[family])
    restricted = restrict_memory(model, window)
    with torch.no_grad():
        whole = restricted(XS)
        torch.testing.assert_close(stepped(restricted, XS), whole, rtol=1e-5, atol=1e-5)
        # The definition: each block of w steps is a fresh episode of the model.
        for start in range(0, XS.shape[1], window):
            chunk = XS[:, start : start + window]
            torch.testing.assert_close(whole[:, start : start + window], model(chunk), rtol=1e-5, atol=1e-5)
        _, hidden = restricted(XS, return_hidden=True)
    assert hidden["layer2"].shape == (3, 11, 8)
    assert restricted.has_memory == (window > 1)
    if window == 1:  # no memory: each output is the model's output on that input alone
        with torch.no_grad():
            alone = model(XS.reshape(33, 1, 5)).reshape(3, 11, 3)
        torch.testing.assert_close(whole, alone, rtol=1e-5, atol=1e-5)


def test_memoryless_models_ignore_the_window():
    model = make("memoryless", {"hidden": 8})
    assert restrict_memory(model, 1) is model and restrict_memory(model, 5) is model


@pytest.mark.parametrize("family", ["gru", "transformer", "lru", "mamba", "linear_attention"])
def test_restricting_memory_changes_no_weight(family):
    model = make(family, TRANSFORMER if family == "transformer" else RECURRENT[family])
    before = parameter_hash(model)
    with torch.inference_mode():
        restrict_memory(model, 2)(XS)
        stepped(restrict_memory(model, 2), XS)
    assert parameter_hash(model) == before


BANDIT = {"arms": 2, "horizon": 7}
MARKOV = {"horizon": 7}


def probe_tables(family, environment_settings, architecture, settings, horizon):
    environment_class = ENVIRONMENTS.get(family)
    environment = environment_class(build(environment_class.Config, environment_settings, key="", file=""))
    outputs = environment.action_count + 1 if environment.kind == "bandit" else environment.symbols
    model = make(architecture, settings, environment.observation_size, outputs)

    def agent():
        if environment.kind == "bandit":
            return ModelAgent(model, environment.action_count)
        return ModelPredictor(model)

    common = {"episodes": 30, "batch": 16}
    keys = {"heldout_key": ("env", "probe", 0), "agent_key": ("run", "probe")}
    adaptation = AdaptationProbe(AdaptationConfig(**common)).run(agent(), environment, **keys)
    windows = {
        window: WindowProbe(WindowConfig(**common, windows=(window,))).run(agent(), environment, **keys)
        for window in (1, horizon, 2 * horizon)
    }
    return adaptation, windows


@pytest.mark.parametrize("family,environment", [("bernoulli_bandit", BANDIT), ("markov", MARKOV)])
@pytest.mark.parametrize(
    "architecture,settings",
    [
        ("gru", {"hidden": 8}),
        ("transformer", {"d_model": 8, "layers": 1, "heads": 2}),
        ("mamba", {"d_model": 8, "layers": 1, "d_state": 4}),
    ],
)
def test_a_window_as_long_as_the_episode_is_the_adaptation_probe(family, environment, architecture, settings):
    adaptation, windows = probe_tables(family, environment, architecture, settings, horizon=7)
    assert windows[7].equals(adaptation)
    assert windows[14].equals(adaptation)
    assert not windows[1].equals(adaptation)


def test_window_probe_plays_one_window():
    with pytest.raises(ValueError, match="one window"):
        _ = WindowProbe(WindowConfig(windows=(1, 2))).window
    assert WindowProbe(WindowConfig(windows=(4,))).window == 4


WINDOW_STUDY_CHANGES = {
    "environments": {"bandit2": {"family": "bernoulli_bandit", "arms": 2, "horizon": 8, "task_pool": 4}},
    "probes": {
        "adaptation": {"kind": "adaptation", "episodes": 24, "batch": 16},
        "window": {"kind": "window", "episodes": 24, "batch": 16, "windows": [1, 2, 8]},
        "pool_window": {"kind": "window", "episodes": 24, "batch": 16, "windows": [1, 8], "tasks": "pool"},
    },
}


def write_study(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(TINY_STUDY)
    change(data)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_study_expands_windows_into_one_probe_each(tmp_path):
    study = load_study(write_study(tmp_path, lambda data: data.update(WINDOW_STUDY_CHANGES)))
    labels = [probe.label for probe in study.probes]
    assert labels == [
        "adaptation",
        "window[w=1]",
        "window[w=2]",
        "window[w=8]",
        "pool_window[w=1]",
        "pool_window[w=8]",
    ]
    windows = [probe for probe in study.probes if probe.name == "window"]
    assert [probe.config.windows for probe in windows] == [(1,), (2,), (8,)]
    assert len({probe.id for probe in study.probes}) == len(study.probes)
    # Every window of one probe plays the same held-out tasks.
    assert len({jobs.heldout_id(probe) for probe in windows}) == 1
    assert jobs.heldout_id(study.probes[0]) == study.probes[0].id
    plan = make_plan(study)
    assert len(plan.probe_jobs) == 6 * len(plan.runs)
    assert len(plan.baseline_jobs) == 6 * 2 * 2  # probes x baselines x seeds


def test_window_grid_joins_the_window_label(tmp_path):
    def change(data):
        data["probes"] = {"window": {"kind": "window", "windows": [1, 4]}}
        data["grid"] = {"probes.window.episodes": [10, 20]}

    study = load_study(write_study(tmp_path, change))
    assert [probe.label for probe in study.probes] == [
        "window[episodes=10,w=1]",
        "window[episodes=10,w=4]",
        "window[episodes=20,w=1]",
        "window[episodes=20,w=4]",
    ]


@pytest.mark.parametrize("windows,shown", [([], "[]"), ([0, 2], "[0, 2]"), ([2, 2], "[2, 2]")])
def test_bad_windows_name_file_and_key(tmp_path, windows, shown):
    path = write_study(
        tmp_path, lambda data: data.update(probes={"window": {"kind": "window", "windows": windows}})
    )
    with pytest.raises(SpecError) as error:
        load_study(path)
    assert str(error.value) == (
        f"{path}: probes.window.windows: expected distinct windows of at least 1 step, got {shown}"
    )


def test_tiny_study_with_task_pool_and_window_probe_runs_every_job(tmp_path):
    plan = make_plan(load_study(write_study(tmp_path, lambda data: data.update(WINDOW_STUDY_CHANGES))))
    results = tmp_path / "results"
    tables = run_all_jobs(plan, results, resamples=20)
    summary = pl.read_parquet(tables["summary"])
    probes = {
        "adaptation",
        "window[w=1]",
        "window[w=2]",
        "window[w=8]",
        "pool_window[w=1]",
        "pool_window[w=8]",
    }
    assert set(summary["probe"]) == probes
    assert set(summary["agent"]) == {"gru", "transformer", "memoryless", "random", "thompson"}
    curves = pl.read_parquet(tables["curves"])

    def curve(probe: str, agent: str) -> pl.DataFrame:
        rows = curves.filter(pl.col("probe") == probe, pl.col("agent") == agent)
        return rows.select("seed", "step", "metric", "value").sort("seed", "metric", "step")

    # Memoryless models and baselines ignore the window: identical curves for every w.
    for agent in ("memoryless", "thompson", "random"):
        assert curve("window[w=1]", agent).equals(curve("window[w=8]", agent))
    # Memory matters to a model with memory (the same tasks and luck, so any change is the window's).
    assert not curve("window[w=1]", "gru").equals(curve("window[w=8]", "gru"))
    # Frozen weights are checked unchanged by every probe job; the frozen files are still intact.
    for run in plan.runs:
        load_frozen(results / run.directory / jobs.FROZEN_MANIFEST, "cpu").check_unchanged()
