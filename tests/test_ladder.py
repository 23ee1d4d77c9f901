"""The architecture ladder: what each family carries between steps and computes per step, the
new families' own behaviour, and how a study records, tabulates and charts state and compute."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from mesaprobe.models import ARCHITECTURES, build_model
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

INPUTS, OUTPUTS, HORIZON = 5, 3, 9


def make(family: str, settings: dict, private: int = 0):
    torch.manual_seed(0)
    config = ARCHITECTURES.get(family).Config(**settings)
    return build_model(family, config, INPUTS, OUTPUTS, private).eval()


# --------------------------------------------------------------------------- state floats

#: family, settings, private inputs, the state one episode carries into its last step of HORIZON,
#: counted by hand from the family's definition
STATE_CASES = [
    ("memoryless", {"hidden": 8}, 0, 0),
    ("gru", {"hidden": 8, "layers": 2}, 0, 2 * 8),
    ("lstm", {"hidden": 8, "layers": 2}, 0, 2 * 2 * 8),  # hidden and cell state
    # keys and values of every layer for every step of the episode
    ("transformer", {"d_model": 16, "layers": 2, "heads": 2}, 1, 2 * 2 * HORIZON * 16),
    # a window keeps w steps
    ("transformer", {"d_model": 16, "layers": 2, "heads": 2, "context": 4}, 0, 2 * 2 * 4 * 16),
    ("transformer", {"d_model": 8, "layers": 1, "heads": 2, "context": 1}, 0, 2 * 1 * 1 * 8),
    # per head a D x D fast-weight matrix and a D-vector normaliser (D = 16 / 2)
    ("linear_attention", {"d_model": 16, "layers": 2, "heads": 2}, 0, 2 * 2 * (8 * 8 + 8)),
    # real and imaginary part of each complex state unit
    ("lru", {"d_model": 16, "state": 6, "layers": 2}, 0, 2 * 2 * 6),
    # d_inner x N SSM state and the convolution's last conv_width - 1 inputs
    ("mamba", {"d_model": 8, "layers": 2, "d_state": 4, "conv_width": 3}, 1, 2 * 16 * (4 + 2)),
]


@pytest.mark.parametrize("family,settings,private,expected", STATE_CASES)
def test_state_floats_count_what_is_carried_into_the_last_step(family, settings, private, expected):
    assert make(family, settings, private).state_floats(HORIZON) == expected


def test_only_the_key_value_cache_grows_with_the_episode():
    for family, settings, private, _ in STATE_CASES:
        model = make(family, settings, private)
        grows = family == "transformer" and settings.get("context", "full") == "full"
        assert (model.state_floats(2 * HORIZON) > model.state_floats(HORIZON)) == grows, family


# --------------------------------------------------------------------------- FLOPs per step


def counted_flops(model, horizon: int) -> int:
    """FLOPs torch's counter finds in ``step`` at the last step of an episode (matrix products;
    CPU attention counted with torch's own attention formula).  In float64, where torch's LSTM
    runs as matrix products the counter sees rather than as a fused float32 kernel it does not."""
    model = model.double()

    def attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    inputs = torch.randn(1, INPUTS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        state = model.initial_state(1, horizon, "cpu")
        for _ in range(horizon - 1):
            state, _ = model.step(state, inputs)
        with FlopCounterMode(display=False, custom_mapping={cpu_attention: attention_flops}) as counter:
            model.step(state, inputs)
    return counter.get_total_flops()


def elementwise_state_flops(family: str, model) -> int:
    """The products with the carried state that are elementwise, not matrix products, in each
    family's ``step`` (2 x multiply-adds, as its ``flops_per_step`` docstring lists them)."""
    config = model.config
    if family == "lru":  # lambda * h, a complex product: 4 real multiply-adds per state unit
        return config.layers * 2 * 4 * config.state
    if family == "mamba":  # convolution, exp(delta A) * h, (delta u) B^T, h C
        inner = config.expand * config.d_model
        return config.layers * 2 * (inner * config.conv_width + 3 * inner * config.d_state)
    if family == "linear_attention":  # the write phi(k) [v, 1]^T (the read is a matrix product)
        size = config.d_model // config.heads
        return config.layers * 2 * config.d_model * (size + 1)
    return 0


FLOP_CASES = [
    ("memoryless", {"hidden": 8, "layers": 2}, 0),
    ("gru", {"hidden": 8, "layers": 2}, 0),
    ("lstm", {"hidden": 8}, 0),
    ("transformer", {"d_model": 16, "layers": 2, "heads": 2}, 0),
    ("transformer", {"d_model": 16, "layers": 2, "heads": 2}, 2),
    ("transformer", {"d_model": 16, "layers": 1, "heads": 4, "context": 3}, 0),
    ("linear_attention", {"d_model": 16, "layers": 2, "heads": 2}, 0),
    ("lru", {"d_model": 16, "state": 6, "layers": 2}, 1),
    ("mamba", {"d_model": 8, "layers": 2, "d_state": 4, "conv_width": 3}, 0),
]


@pytest.mark.parametrize("family,settings,private", FLOP_CASES)
def test_flops_per_step_is_what_one_step_computes(family, settings, private):
    model = make(family, settings, private)
    assert model.flops_per_step(HORIZON) == counted_flops(model, HORIZON) + elementwise_state_flops(
        family, model
    )


@pytest.mark.parametrize("family", list(ARCHITECTURES))
def test_every_family_states_its_costs_at_its_defaults(family):
    model = make(family, {})
    flops, state = model.flops_per_step(HORIZON), model.state_floats(HORIZON)
    assert isinstance(flops, int) and isinstance(state, int)
    assert flops >= 2 * model.head.in_features * OUTPUTS  # at least the head
    assert (state > 0) == model.has_memory


def test_attention_cost_grows_with_the_window_only_up_to_it():
    full = make("transformer", {"d_model": 16, "layers": 2, "heads": 2})
    windowed = make("transformer", {"d_model": 16, "layers": 2, "heads": 2, "context": 4})
    per_cached_step = 2 * 2 * 16 * 2  # two layers, scores and values
    assert full.flops_per_step(20) - full.flops_per_step(10) == 10 * per_cached_step
    assert windowed.flops_per_step(20) == windowed.flops_per_step(10) == full.flops_per_step(4)


# --------------------------------------------------------------------------- the new families


def test_lru_eigenvalues_start_on_the_ring_and_stay_inside_the_unit_circle():
    model = make("lru", {"d_model": 8, "state": 200, "r_min": 0.6, "r_max": 0.9, "max_phase": 0.5})
    model.requires_grad_(False)
    log_modulus, phase = model.blocks[0].recurrence.eigenvalues(1)
    modulus = torch.exp(log_modulus)
    assert float(modulus.min()) >= 0.6 - 1e-6 and float(modulus.max()) <= 0.9 + 1e-6
    assert float(phase.min()) >= 0.0 and float(phase.max()) <= 0.5
    gamma = torch.exp(model.blocks[0].recurrence.gamma_log.rows(1))
    torch.testing.assert_close(gamma, torch.sqrt(1 - modulus**2))


def test_lru_scan_is_the_recurrence():
    from mesaprobe.models.lru import diagonal_scan

    generator = torch.Generator().manual_seed(0)
    log_modulus = -torch.rand(2, 1, 3, generator=generator, dtype=torch.float64)
    phase = torch.rand(2, 1, 3, generator=generator, dtype=torch.float64)
    real, imaginary = torch.randn(2, 2, 13, 3, generator=generator, dtype=torch.float64)
    scanned = torch.complex(*diagonal_scan(log_modulus, phase, real, imaginary))
    eigenvalue = torch.exp(torch.complex(log_modulus, phase))[:, 0]  # (2, 3)
    h = torch.zeros(2, 3, dtype=torch.complex128)
    for t in range(13):
        h = eigenvalue * h + torch.complex(real[:, t], imaginary[:, t])
        torch.testing.assert_close(scanned[:, t], h, rtol=0, atol=1e-12)


def test_mamba_step_sizes_start_between_dt_min_and_dt_max_and_depend_on_the_input():
    model = make("mamba", {"d_model": 8, "layers": 1, "dt_min": 0.01, "dt_max": 0.05})
    model.requires_grad_(False)
    mixer = model.blocks[0].mixer
    start = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert float(start.min()) >= 0.01 - 1e-6 and float(start.max()) <= 0.05 + 1e-6
    u = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    delta, B, C = mixer.selection(u)
    assert not any(torch.allclose(value[0], value[1]) for value in (delta, B, C))
    torch.testing.assert_close(-torch.exp(mixer.A_log.rows(1))[0, 0], -torch.arange(1.0, 17.0))


def test_linear_attention_is_normalised_kernel_attention():
    """One layer's output is sum_s (phi(q_t) . phi(k_s)) v_s / sum_s phi(q_t) . phi(k_s) over s <= t
    (the normaliser plus a small epsilon)."""
    from mesaprobe.models.linear_attention import NORMALISER_EPSILON, feature_map

    model = make("linear_attention", {"d_model": 8, "layers": 1, "heads": 2}).double()
    attention = model.blocks[0].attention
    x = torch.randn(2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    q, k, v = attention.qkv(x).split(8, dim=2)
    expected = []
    for t in range(6):
        heads = []
        for head in range(2):
            part = slice(4 * head, 4 * head + 4)
            weights = (feature_map(q[:, t, None, part]) * feature_map(k[:, : t + 1, part])).sum(
                -1
            )  # (B, t+1)
            heads.append(
                (weights[..., None] * v[:, : t + 1, part]).sum(1)
                / (weights.sum(1, keepdim=True) + NORMALISER_EPSILON)
            )
        expected.append(torch.cat(heads, dim=-1))
    with torch.no_grad():
        torch.testing.assert_close(
            attention(x), attention.out(torch.stack(expected, dim=1)), rtol=0, atol=1e-10
        )


@pytest.mark.parametrize("family", ["lru", "mamba", "linear_attention"])
def test_new_families_read_private_inputs_and_remember_them(family):
    """Private inputs are read like any input: a later output depends on an earlier private input."""
    model = make(family, {}, private=2)
    xs = torch.randn(2, 6, INPUTS, generator=torch.Generator().manual_seed(3))
    changed = xs.clone()
    changed[:, 1, -2:] += 1.0
    with torch.no_grad():
        before, after = model(xs), model(changed)
    torch.testing.assert_close(before[:, 0], after[:, 0])
    assert not torch.allclose(before[:, 3:], after[:, 3:])


def test_parameter_count_is_every_parameter():
    model = make("gru", {"hidden": 8})
    assert model.parameter_count() == 3 * (INPUTS * 8 + 8 * 8 + 2 * 8) + 8 * OUTPUTS + OUTPUTS
    assert math.isclose(model.parameter_count(), sum(p.numel() for p in model.parameters()))


# --------------------------------------------------------------------------- studies of the ladder

LADDER_STUDY = """\
study: ladder_tiny
seeds: [0]
ladder_charts: true
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8}
architectures:
  memoryless: {family: memoryless, hidden: 8}
  lru: {family: lru, d_model: 8, state: 4, layers: 1}
  mamba: {family: mamba, d_model: 8, layers: 1, d_state: 4}
  linear_attention: {family: linear_attention, d_model: 8, layers: 1, heads: 2}
  transformer_w2: {family: transformer, d_model: 8, layers: 1, heads: 2, context: 2}
training: {env_steps: 128, batch: 16}
probes:
  adaptation: {kind: adaptation, episodes: 16, batch: 16}
baselines: [random]
"""


def write_study(tmp_path, text: str, change=None):
    data = yaml.safe_load(text)
    if change is not None:
        change(data)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def set_in(*keys_and_value):
    *keys, value = keys_and_value

    def change(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    "change,message",
    [
        (
            set_in("architectures", "transformer_w2", "context", 0),
            "architectures.transformer_w2.context: expected 'full' or a window of at least 1 step, got 0",
        ),
        (
            set_in("architectures", "linear_attention", "heads", 3),
            "architectures.linear_attention.heads: d_model (8) must split into 3 heads of equal size "
            "(each carries a (d_model / heads)^2 fast-weight state)",
        ),
        (
            set_in("architectures", "lru", "r_max", 1.0),
            "architectures.lru.r_max: expected a modulus in (r_min = 0.5, 1), got 1.0",
        ),
        (
            set_in("architectures", "mamba", "d_state", 0),
            "architectures.mamba.d_state: expected a positive integer, got 0",
        ),
        (
            set_in("architectures", "mamba", "training", {"algorithm": "reptile"}),
            "architectures.mamba.training.algorithm: reptile trains only the memoryless architecture; "
            "architecture 'mamba' is mamba",
        ),
        (set_in("ladder_charts", "yes"), "ladder_charts: expected true or false, got the string 'yes'"),
    ],
    ids=["window-0", "state-heads", "lru-radius", "mamba-state", "family-algorithm", "ladder-charts"],
)
def test_validate_refuses_bad_ladder_settings_in_one_line(tmp_path, capsys, change, message):
    from mesaprobe import cli

    path = write_study(tmp_path, LADDER_STUDY, change)
    assert cli.main(["validate", str(path)]) == 2
    error = capsys.readouterr().err
    assert error == f"mesaprobe: error: {path}: {message}\n"


@pytest.mark.parametrize("spec", ["ladder.yaml", "ladder_small.yaml"])
def test_ladder_rungs_are_matched_in_parameters(spec):
    """Every rung of the shipped ladders within 15% of the GRU's parameter count, on every environment."""
    from mesaprobe.jobs import make_environment, new_model
    from mesaprobe.study import load_study, make_plan

    plan = make_plan(load_study(REPO / "specs" / spec))
    counts: dict[str, dict[str, int]] = {}
    for run in plan.runs:
        if run.seed == 0:
            model = new_model(run, make_environment(run.environment))
            counts.setdefault(run.environment.label, {})[run.agent] = model.parameter_count()
    assert len({agent for rungs in counts.values() for agent in rungs}) == 10
    for environment, rungs in counts.items():
        for agent, count in rungs.items():
            assert abs(count / rungs["gru"] - 1) <= 0.15, (environment, agent, count, rungs["gru"])


def test_only_studies_that_ask_get_ladder_charts(tmp_path):
    from mesaprobe.study import load_study
    from mesaprobe.study.outputs import chart_outputs

    charts = chart_outputs(load_study(write_study(tmp_path, LADDER_STUDY)))
    ladder = [chart.stem for chart in charts if chart.plots == "ladder"]
    assert ladder == ["ladder_state_floats_bandit2_adaptation", "ladder_flops_per_step_bandit2_adaptation"]
    plain = load_study(write_study(tmp_path, LADDER_STUDY, set_in("ladder_charts", False)))
    assert not [chart for chart in chart_outputs(plain) if chart.plots == "ladder"]


@pytest.fixture(scope="module")
def ladder_results(tmp_path_factory):
    """The tiny ladder study trained, frozen, probed and played (tables not yet collected)."""
    from mesaprobe import jobs
    from mesaprobe.study import load_study, make_plan

    root = tmp_path_factory.mktemp("ladder")
    plan = make_plan(load_study(write_study(root, LADDER_STUDY)))
    results = root / "results"
    for run in plan.runs:
        jobs.train_job(plan, run.id, results, progress=False)
        jobs.freeze_job(plan, run.id, results)
    for job in plan.probe_jobs:
        jobs.probe_job(plan, job.run.id, job.probe.label, results, "cpu")
    for job in plan.baseline_jobs:
        jobs.baseline_job(plan, job.environment.label, job.probe.label, job.baseline.label, job.seed, results)
    return plan, results


def collected(plan, results, with_manifests: bool = True):
    from mesaprobe import jobs
    from mesaprobe.analysis.collect import collect

    frozen = [results / run.directory / jobs.FROZEN_MANIFEST for run in plan.runs] if with_manifests else []
    return collect(
        [results / path for path in plan.table_inputs], results / "tables", resamples=20, frozen_paths=frozen
    )


def test_summary_carries_each_architectures_recorded_costs(ladder_results):
    import polars as pl

    from mesaprobe.analysis.costs import MODEL_COST_COLUMNS
    from mesaprobe.manifests import FrozenManifest

    plan, results = ladder_results
    summary = pl.read_parquet(collected(plan, results)["summary"])
    assert summary.columns[-3:] == list(MODEL_COST_COLUMNS)
    assert pl.read_csv(results / "tables" / "summary.csv").columns == summary.columns
    for run in plan.runs:
        manifest = FrozenManifest.read(results / run.directory / "frozen.json")
        rows = summary.filter(pl.col("agent") == run.agent)
        assert rows.height == 3  # total, cumulative regret, adaptation
        recorded = (manifest.parameters, manifest.state_floats, manifest.flops_per_step)
        assert rows.select(*MODEL_COST_COLUMNS).unique().rows() == [recorded]
    lru = summary.filter(pl.col("agent") == "lru")
    assert lru["state_floats"][0] == 2 * 4 and lru["parameters"][0] > 0
    window = summary.filter(pl.col("agent") == "transformer_w2")
    assert window["state_floats"][0] == 2 * 2 * 8  # keys and values of 2 steps, one layer
    baseline = summary.filter(pl.col("agent_kind") == "baseline")
    assert (
        baseline.height and baseline.select(*MODEL_COST_COLUMNS).null_count().row(0) == (baseline.height,) * 3
    )


def test_ladder_charts_are_drawn_from_the_costs(ladder_results, tmp_path):
    from mesaprobe.analysis.charts import make_charts
    from mesaprobe.errors import ArtifactError
    from mesaprobe.study.outputs import chart_outputs

    plan, results = ladder_results
    collected(plan, results)
    ladder = [chart for chart in chart_outputs(plan.study) if chart.plots == "ladder"]
    written = make_charts(results / "tables", tmp_path / "charts", ladder[:1])  # state floats
    assert [path.name for path in written] == list(ladder[0].files)
    html = (tmp_path / "charts" / "ladder_state_floats_bandit2_adaptation.html").read_text()
    assert "symlog" in html and "transformer_w2" in html and "random" in html
    # Collected without the frozen manifests, the summary has no costs to draw.
    collected(plan, results, with_manifests=False)
    with pytest.raises(
        ArtifactError, match="no state_floats; collect the study with its runs' frozen manifests"
    ):
        make_charts(results / "tables", tmp_path / "charts", ladder[:1])


def test_seeds_that_disagree_on_their_costs_are_refused(ladder_results, tmp_path):
    import json
    import shutil

    from mesaprobe.analysis.costs import model_costs
    from mesaprobe.errors import ArtifactError

    plan, results = ladder_results
    run = next(run for run in plan.runs if run.agent == "lru")
    original = results / run.directory / "frozen.json"
    copy = tmp_path / "other_seed" / "frozen.json"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    data = json.loads(copy.read_text())
    data["state_floats"] += 1
    copy.write_text(json.dumps(data))
    assert model_costs([original]).height == 1
    with pytest.raises(ArtifactError, match="another seed of it records"):
        model_costs([original, copy])


@pytest.mark.parametrize("family", ["lru", "mamba", "linear_attention"])
def test_readout_probe_reads_every_layer_of_the_new_families(family):
    from mesaprobe.agents import ModelAgent
    from mesaprobe.envs.bernoulli_bandit import BernoulliBandit, BernoulliBanditConfig
    from mesaprobe.probes.readout import ReadoutConfig, ReadoutProbe

    environment = BernoulliBandit(BernoulliBanditConfig(arms=2, horizon=6))
    torch.manual_seed(0)
    config = ARCHITECTURES.get(family).Config(d_model=8, layers=2)
    model = build_model(family, config, environment.observation_size, 3).eval()
    probe = ReadoutProbe(ReadoutConfig(episodes=40, batch=20, replicates=2, statistics=("successes",)))
    rows = probe.run(ModelAgent(model, 2), environment, ("env", "readout", 0), ("run", "readout"))
    assert set(rows["layer"]) == {"layer0", "layer1", "layer2"}
    assert rows["value"].is_finite().all()
