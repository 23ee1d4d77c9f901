"""The architecture ladder: what each family carries between steps and computes per step, the
new families' own behaviour, and how a study records, tabulates and charts state and compute."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from mesaprobe.models import ARCHITECTURES, build_model

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
