"""The sequence-model contract, for every registered architecture."""

from __future__ import annotations

import pytest
import torch

from mesaprobe.models import ARCHITECTURES, build_model

VARIANTS = {
    "gru": [{"hidden": 16}, {"hidden": 8, "layers": 2}],
    "lstm": [{"hidden": 16}, {"hidden": 8, "layers": 2}],
    "transformer": [
        {"d_model": 16, "layers": 2, "heads": 2},
        {"d_model": 16, "layers": 1, "heads": 4, "context": 3},
        {"d_model": 8, "layers": 1, "heads": 2, "context": 1},
    ],
    "memoryless": [{"hidden": 16}],
    "linear_attention": [{"d_model": 16, "layers": 2, "heads": 2}, {"d_model": 12, "layers": 1, "heads": 3}],
    "lru": [
        {"d_model": 16, "state": 8, "layers": 2},
        {"d_model": 8, "state": 4, "layers": 1, "max_phase": 3.0},
    ],
    "mamba": [
        {"d_model": 16, "layers": 2, "d_state": 4},
        {"d_model": 8, "layers": 1, "expand": 1, "d_state": 2, "conv_width": 1, "dt_rank": 2},
    ],
}


def cases() -> list:
    """Every registered family: the settings above, or its defaults for a family not listed."""
    return [
        pytest.param(family, settings, id=f"{family}-{settings}")
        for family in ARCHITECTURES
        for settings in VARIANTS.get(family, [{}])
    ]


def make(family, settings, input_size=5, output_size=3):
    torch.manual_seed(0)
    return build_model(family, ARCHITECTURES.get(family).Config(**settings), input_size, output_size).eval()


@pytest.mark.parametrize("family,settings", cases())
def test_step_agrees_with_forward(family, settings):
    model = make(family, settings)
    xs = torch.randn(4, 12, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(xs)
        state = model.initial_state(4, 12, "cpu")
        steps = []
        for t in range(12):
            state, y = model.step(state, xs[:, t])
            steps.append(y)
    assert whole.shape == (4, 12, 3)
    torch.testing.assert_close(torch.stack(steps, dim=1), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family,settings", cases())
def test_steps_in_the_model_dtype(family, settings):
    """The initial state follows the parameters' dtype, so a float64 model can act."""
    model = make(family, settings).double()
    xs = torch.randn(2, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        state = model.initial_state(2, 3, "cpu")
        steps = []
        for t in range(3):
            state, y = model.step(state, xs[:, t])
            steps.append(y)
        torch.testing.assert_close(torch.stack(steps, dim=1), model(xs), rtol=0, atol=1e-12)


@pytest.mark.parametrize("family,settings", cases())
def test_outputs_are_causal(family, settings):
    model = make(family, settings)
    xs = torch.randn(2, 10, 5, generator=torch.Generator().manual_seed(2))
    changed = xs.clone()
    changed[:, 6:] += 1.0
    with torch.no_grad():
        before, after = model(xs), model(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


@pytest.mark.parametrize("family,settings", cases())
def test_hidden_states_on_request(family, settings):
    model = make(family, settings)
    with torch.no_grad():
        _ys, hidden = model(torch.randn(2, 7, 5), return_hidden=True)
    assert hidden and all(h.shape[:2] == (2, 7) for h in hidden.values())


@pytest.mark.parametrize(
    "family,settings,memory",
    [
        ("memoryless", {"hidden": 8}, 1),
        ("transformer", {"d_model": 8, "layers": 1, "heads": 2, "context": 1}, 1),
        ("transformer", {"d_model": 8, "layers": 1, "heads": 2, "context": 3}, 3),
        ("transformer", {"d_model": 8, "layers": 2, "heads": 2, "context": 3}, 5),
    ],
)
def test_memory_reaches_exactly_the_window(family, settings, memory):
    """The output at the last step ignores the input just beyond its receptive field.

    One attention layer with a window of w sees w steps; L layers see L * (w - 1) + 1.
    """
    model = make(family, settings)
    xs = torch.randn(2, 10, 5, generator=torch.Generator().manual_seed(3))
    changed = xs.clone()
    changed[:, 9 - memory] += 1.0  # just outside the window of the last step
    with torch.no_grad():
        before, after = model(xs), model(changed)
    torch.testing.assert_close(before[:, -1], after[:, -1])


def test_transformer_cache_refuses_to_overflow():
    model = make("transformer", {"d_model": 8, "heads": 2})
    state = model.initial_state(1, 2, "cpu")
    with torch.no_grad():
        for _ in range(2):
            state, _ = model.step(state, torch.zeros(1, 5))
        with pytest.raises(ValueError, match="cache"):
            model.step(state, torch.zeros(1, 5))


def test_lstm_cell_states_are_those_torch_computes():
    from mesaprobe.models.recurrent import lstm_cell_states

    torch.manual_seed(0)
    rnn = torch.nn.LSTM(5, 6, batch_first=True).double()
    xs = torch.randn(3, 9, 5, dtype=torch.float64)
    with torch.no_grad():
        hs, (_, last_cell) = rnn(xs)
        cells = lstm_cell_states(rnn, xs, hs)
        # Every step's cell state equals torch's final one for the sequence cut after that step.
        for t in (0, 4, 8):
            _, (_, cell_t) = rnn(xs[:, : t + 1])
            torch.testing.assert_close(cells[:, t], cell_t[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(cells[:, -1], last_cell[0], rtol=0, atol=1e-12)
    model = make("lstm", {"hidden": 6, "layers": 2})
    with torch.no_grad():
        _, hidden = model(torch.randn(2, 7, 5), return_hidden=True)
    assert sorted(hidden) == ["layer1", "layer1_cell", "layer2", "layer2_cell"]
