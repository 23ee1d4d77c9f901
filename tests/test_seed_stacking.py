"""Several seeds as one stacked model: each member's rows get what that member computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mesaprobe.models import ARCHITECTURES, build_model
from mesaprobe.models.stacked import (
    RowParameter,
    SeedGRU,
    SeedLinear,
    SeedRowParameter,
    member_state_dict,
    stack_models,
)

SEEDS, BATCH, STEPS, INPUTS, OUTPUTS = 3, 4, 7, 5, 3
TOLERANCE = {"rtol": 0, "atol": 1e-10}

#: family, settings, private inputs
CASES = {
    "gru": ("gru", {"hidden": 8, "layers": 2}, 0),
    "lstm": ("lstm", {"hidden": 8, "layers": 2}, 0),
    "transformer-private": ("transformer", {"d_model": 16, "layers": 2, "heads": 2}, 2),
    "transformer-window": ("transformer", {"d_model": 16, "layers": 2, "heads": 2, "context": 3}, 0),
    "memoryless": ("memoryless", {"hidden": 8}, 0),
    "linear_attention": ("linear_attention", {"d_model": 8, "layers": 2, "heads": 2}, 0),
    "lru": ("lru", {"d_model": 8, "state": 6, "layers": 2}, 1),
    "mamba": ("mamba", {"d_model": 8, "layers": 2, "d_state": 4, "conv_width": 3}, 0),
}


def member(family: str, settings: dict, private: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    config = ARCHITECTURES.get(family).Config(**settings)
    return build_model(family, config, INPUTS, OUTPUTS, private).double()


def members(case: str, seeds: int = SEEDS) -> list:
    return [member(*CASES[case], seed=100 + s) for s in range(seeds)]


def rows(seeds: int = SEEDS, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(seeds * BATCH, STEPS, INPUTS, generator=generator, dtype=torch.float64)


def block(x: torch.Tensor, s: int) -> torch.Tensor:
    """Member s's rows of seed-major stacked rows."""
    return x[s * BATCH : (s + 1) * BATCH]


@pytest.mark.parametrize("case", CASES)
def test_forward_gives_each_member_its_own_outputs(case):
    models = members(case)
    stacked = stack_models(models)
    xs = rows()
    with torch.no_grad():
        ys, hidden = stacked(xs, return_hidden=True)
        for s, model in enumerate(models):
            member_ys, member_hidden = model(block(xs, s), return_hidden=True)
            torch.testing.assert_close(block(ys, s), member_ys, **TOLERANCE)
            assert list(hidden) == list(member_hidden)  # the LSTM's cell states included
            for name, h in hidden.items():
                torch.testing.assert_close(block(h, s), member_hidden[name], **TOLERANCE)


@pytest.mark.parametrize("case", CASES)
def test_steps_give_each_member_its_own_outputs(case):
    models = members(case)
    stacked = stack_models(models)
    xs = rows()
    with torch.no_grad():
        state = stacked.initial_state(SEEDS * BATCH, STEPS, "cpu")
        steps = []
        for t in range(STEPS):
            state, y = stacked.step(state, xs[:, t])
            steps.append(y)
        ys = torch.stack(steps, dim=1)  # (S*B, T, O)
        for s, model in enumerate(models):
            torch.testing.assert_close(block(ys, s), model(block(xs, s)), **TOLERANCE)


@pytest.mark.parametrize("case", CASES)
def test_each_seed_slice_gets_its_members_gradient(case):
    models = members(case)
    stacked = stack_models(models)
    xs = rows()
    targets = rows(seed=1)[..., :OUTPUTS]

    def loss(ys, target):
        return (ys - target).pow(2).mean()

    ys = stacked(xs)
    sum(loss(block(ys, s), block(targets, s)) for s in range(SEEDS)).backward()
    for s, model in enumerate(models):
        loss(model(block(xs, s)), block(targets, s)).backward()
        for (name, stacked_parameter), (member_name, parameter) in zip(
            stacked.named_parameters(), model.named_parameters(), strict=True
        ):
            assert name == member_name
            torch.testing.assert_close(stacked_parameter.grad[s], parameter.grad, **TOLERANCE)


@pytest.mark.parametrize("case", CASES)
def test_parameters_keep_the_members_names_order_and_values(case):
    models = members(case)
    stacked = stack_models(models)
    assert type(stacked) is type(models[0]) and stacked.seeds == SEEDS
    state = stacked.state_dict()
    assert list(state) == list(models[0].state_dict())
    assert [name for name, _ in stacked.named_parameters()] == [
        name for name, _ in models[0].named_parameters()
    ]
    for s, model in enumerate(models):
        for name, value in model.state_dict().items():
            assert torch.equal(state[name][s], value)
    assert all(p.is_leaf and p.requires_grad for p in stacked.parameters())
    assert not any(
        isinstance(layer, (nn.Linear, nn.LayerNorm, nn.RNNBase, RowParameter)) for layer in stacked.modules()
    )


@pytest.mark.parametrize("case", CASES)
def test_member_state_dict_round_trip(case):
    models = members(case)
    stacked = stack_models(models)
    xs = block(rows(), 0)
    for s, model in enumerate(models):
        state = member_state_dict(stacked, s)
        assert list(state) == list(model.state_dict())
        assert all(value.is_contiguous() for value in state.values())
        fresh = member(*CASES[case], seed=999)
        fresh.load_state_dict(state)
        with torch.no_grad():
            torch.testing.assert_close(fresh(xs), model(xs), rtol=0, atol=0)
    state = member_state_dict(stacked, 1)
    with torch.no_grad():
        next(iter(state.values())).add_(1.0)  # a copy: the stacked model is untouched
    assert torch.equal(stacked.state_dict()[next(iter(state))][1], models[1].state_dict()[next(iter(state))])
    with pytest.raises(IndexError):
        member_state_dict(stacked, SEEDS)


@pytest.mark.parametrize("case", ["gru", "transformer-private"])
def test_one_seed_is_still_stacked(case):
    (model,) = members(case, seeds=1)
    stacked = stack_models([model])
    assert stacked.seeds == 1 and any(isinstance(layer, SeedLinear) for layer in stacked.modules())
    assert stacked.state_dict()["rnns.0.weight_ih_l0" if case == "gru" else "embed.weight"].shape[0] == 1
    xs = rows(seeds=1)
    with torch.no_grad():
        torch.testing.assert_close(stacked(xs), model(xs), **TOLERANCE)


def test_members_must_share_family_and_settings():
    gru, lstm = member(*CASES["gru"], seed=0), member(*CASES["lstm"], seed=1)
    with pytest.raises(ValueError, match="LSTM"):
        stack_models([gru, lstm])
    wider = member("gru", {"hidden": 16, "layers": 2}, 0, seed=2)
    with pytest.raises(ValueError, match="config"):
        stack_models([gru, wider])
    private = member("gru", {"hidden": 8, "layers": 2}, 1, seed=3)
    with pytest.raises(ValueError, match="private_size"):
        stack_models([gru, private])
    with pytest.raises(ValueError, match="dtype"):
        stack_models([gru, member(*CASES["gru"], seed=4).float()])
    with pytest.raises(ValueError, match="no models"):
        stack_models([])


def test_unsupported_layers_are_refused():
    models = members("memoryless", seeds=2)
    for model in models:
        model.layers.append(nn.PReLU())  # owns a parameter: no stacked counterpart
    with pytest.raises(ValueError, match="PReLU"):
        stack_models(models)
    two_layers = nn.GRU(INPUTS, 8, num_layers=2, batch_first=True)
    with pytest.raises(ValueError, match="one-layer"):
        SeedGRU([two_layers])


def test_row_parameters_give_each_seed_block_its_members_value():
    members = [RowParameter(torch.full((2, 3), float(s))) for s in range(SEEDS)]
    stacked = SeedRowParameter(members)
    rows = stacked.rows(SEEDS * BATCH)  # (S*B, 2, 3)
    assert rows.shape == (SEEDS * BATCH, 2, 3)
    for s, member in enumerate(members):
        assert torch.equal(block(rows, s), member.rows(BATCH))
    with pytest.raises(ValueError, match="rows"):
        stacked.rows(SEEDS * BATCH - 1)


@pytest.mark.parametrize("case", ["gru", "lstm", "transformer-private", "memoryless", "lru", "mamba"])
def test_rows_must_split_into_seed_blocks(case):
    stacked = stack_models(members(case))
    xs = rows()[:-1]  # S*B - 1 rows
    with torch.no_grad(), pytest.raises(ValueError, match="rows"):
        stacked(xs)
    with torch.no_grad(), pytest.raises(ValueError, match="rows"):
        stacked.step(stacked.initial_state(len(xs), STEPS, "cpu"), xs[:, 0])


def test_stacked_recurrent_layers_check_their_inputs():
    layer = SeedGRU([nn.GRU(INPUTS, 8, batch_first=True) for _ in range(SEEDS)])
    xs = torch.randn(SEEDS * BATCH, 2, INPUTS)
    out, last = layer(xs)
    assert out.shape == (SEEDS * BATCH, 2, 8) and last.shape == (1, SEEDS * BATCH, 8)
    with pytest.raises(ValueError, match="state of shape"):
        layer(xs, torch.zeros(1, BATCH, 8))
    with pytest.raises(ValueError, match="at least one step"):
        layer(xs[:, :0])
