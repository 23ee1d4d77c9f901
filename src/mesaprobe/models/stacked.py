"""Several seeds of one model as one model, for training S seeds of a run in one job.

Small models leave most of a GPU idle; a job that trains S independent seeds of the same
run at once fills it.  :func:`stack_models` turns S members (one family, equal settings)
into one model of the same class in which every parameterised layer (``nn.Linear``,
``nn.LayerNorm``, ``nn.GRU``, ``nn.LSTM``, and :class:`RowParameter`, a plain parameter used
elementwise such as a state-space model's decay rates) is swapped for a seed-stacked counterpart
holding the members' parameters on a new leading seed dimension, under the same names:
``stacked.state_dict()[k][s]`` is member s's ``k``.  Everything else, the model's own
code included (attention, key/value caches, rotary embeddings, the recurrent ``step``,
scans), runs unchanged: a model reads a plain parameter through ``RowParameter.rows(n)``, one
copy per row, so the stacked model's rows read their own seed's.

Row layout: the stacked model takes S*B rows in seed-major blocks, rows s*B .. (s+1)*B - 1
belonging to member s, in ``forward``, ``initial_state(S*B, ...)`` and ``step`` alike.
Each stacked layer views its rows as S blocks and computes all seeds with one batched
matrix product (``torch.baddbmm``); nothing loops over seeds.  The layers in between
act on each row alone, so member s's rows get what member s computes on them: equal to
floating-point tolerance, not bitwise, because batched products sum in another order than
the members' own kernels.

:func:`member_state_dict` takes one member back out, loadable into a plain model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mesaprobe.models.base import SequenceModel


def stack_models(models: Sequence[SequenceModel]) -> SequenceModel:
    """One model computing all of ``models`` at once on seed-major rows (see the module docstring)."""
    if not models:
        raise ValueError("no models to stack")
    first = models[0]
    for index, model in enumerate(models[1:], start=1):
        if type(model) is not type(first):
            raise ValueError(f"model {index} is a {type(model).__name__}, model 0 a {type(first).__name__}")
        for name in ("config", "input_size", "output_size", "private_size"):
            if getattr(model, name) != getattr(first, name):
                raise ValueError(
                    f"model {index} has {name} {getattr(model, name)!r}, model 0 {getattr(first, name)!r}"
                )
        if layout(model) != layout(first):
            raise ValueError(f"model {index}'s parameters differ from model 0's in shape, dtype or device")
    if next(first.buffers(), None) is not None:
        raise ValueError(f"a {type(first).__name__} has buffers, which are not stacked")

    stacked = copy.deepcopy(first)
    members_layers = [dict(model.named_modules()) for model in models]
    for name, layer in first.named_modules():
        if next(layer.parameters(recurse=False), None) is None:
            continue  # holds no parameters of its own (activations, containers): shared as it is
        seed_layer = SEED_LAYERS.get(type(layer))
        if seed_layer is None:
            supported = ", ".join(
                f"nn.{kind.__name__}" if kind.__module__.startswith("torch.") else kind.__name__
                for kind in SEED_LAYERS
            )
            raise ValueError(
                f"cannot stack the {type(layer).__name__} at {name or 'the top'} of a "
                f"{type(first).__name__}: only {supported} may own parameters"
            )
        replacement = seed_layer([layers[name] for layers in members_layers]).train(layer.training)
        parent, _, child = name.rpartition(".")
        # Assigning an existing child keeps its place, so names and order stay the members'.
        setattr(stacked.get_submodule(parent), child, replacement)
    stacked.seeds = len(models)
    return stacked


def member_state_dict(stacked: SequenceModel, seed_index: int) -> dict[str, Tensor]:
    """Member ``seed_index``'s state dict, each tensor its own contiguous copy."""
    seeds = getattr(stacked, "seeds", None)
    if seeds is None:
        raise ValueError(f"this {type(stacked).__name__} is not a stacked model (see stack_models)")
    if not 0 <= seed_index < seeds:
        raise IndexError(f"seed index {seed_index} out of range for {seeds} seeds")
    return {
        name: value[seed_index].clone(memory_format=torch.contiguous_format)
        for name, value in stacked.state_dict().items()
    }


def layout(model: nn.Module) -> list[tuple]:
    """Name, shape, dtype and device of every entry of the state dict: what members must share."""
    return [(name, value.shape, value.dtype, value.device) for name, value in model.state_dict().items()]


def stacked_parameter(tensors: Sequence[Tensor]) -> nn.Parameter:
    """The members' tensors on a new leading seed dimension (S, ...), as a new parameter."""
    return nn.Parameter(torch.stack([t.detach() for t in tensors]), requires_grad=tensors[0].requires_grad)


def seed_blocks(x: Tensor, seeds: int) -> Tensor:
    """Rows ``x`` (N, *, C) as (S, N/S * prod(*), C): block s holds member s's rows."""
    if x.dim() < 2:
        raise ValueError(f"expected rows of shape (N, ..., C), got {tuple(x.shape)}")
    rows = x.shape[0]
    if rows % seeds:
        raise ValueError(f"{rows} rows do not split into {seeds} equal seed blocks (seed-major rows)")
    return x.reshape(seeds, rows // seeds * math.prod(x.shape[1:-1]), x.shape[-1])  # (S, R, C)


class RowParameter(nn.Module):
    """A parameter a model applies elementwise to every row of a batch (a per-channel decay rate,
    gain or filter), not in a matrix product; the one kind of plain parameter that stacks.

    A model reads it as ``rows(n)``: the value once per row, (n, *shape), a broadcast view.  In a
    stacked model (:class:`SeedRowParameter`) rows s*B .. (s+1)*B - 1 get seed s's value, so
    the model's code is the same stacked or not.
    """

    def __init__(self, value: Tensor):
        super().__init__()
        self.value = nn.Parameter(value)

    def rows(self, count: int) -> Tensor:
        """The value for each of ``count`` rows: (count, *shape)."""
        return self.value.expand(count, *self.value.shape)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.value.shape)}"


class SeedRowParameter(nn.Module):
    """S :class:`RowParameter`: value (S, *shape); ``rows(n)`` gives block s of n/S rows seed s's value."""

    def __init__(self, members: Sequence[RowParameter]):
        super().__init__()
        self.value = stacked_parameter([member.value for member in members])

    @property
    def seeds(self) -> int:
        return self.value.shape[0]

    def rows(self, count: int) -> Tensor:
        """(count, *shape), seed-major: rows s*count/S .. (s+1)*count/S - 1 hold seed s's value."""
        if count % self.seeds:
            raise ValueError(
                f"{count} rows do not split into {self.seeds} equal seed blocks (seed-major rows)"
            )
        shape = self.value.shape[1:]
        per_seed = self.value[:, None].expand(self.seeds, count // self.seeds, *shape)  # (S, n/S, *shape)
        return per_seed.reshape(count, *shape)

    def extra_repr(self) -> str:
        return f"seeds={self.seeds}, shape={tuple(self.value.shape[1:])}"


class SeedAffine(nn.Module):
    """Base of the stacked layers with a weight and an optional bias per seed."""

    def stack_weight_and_bias(self, members: Sequence[nn.Module]) -> None:
        self.weight = stacked_parameter([member.weight for member in members])
        if members[0].bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = stacked_parameter([member.bias for member in members])

    @property
    def seeds(self) -> int:
        return self.weight.shape[0]


class SeedLinear(SeedAffine):
    """S ``nn.Linear`` layers: weight (S, out, in), bias (S, out) or none."""

    def __init__(self, members: Sequence[nn.Linear]):
        super().__init__()
        self.in_features = members[0].in_features
        self.out_features = members[0].out_features
        self.stack_weight_and_bias(members)

    def forward(self, x: Tensor) -> Tensor:
        blocks = seed_blocks(x, self.seeds)  # (S, R, in)
        if self.bias is None:
            y = torch.bmm(blocks, self.weight.transpose(1, 2))
        else:
            y = torch.baddbmm(self.bias[:, None], blocks, self.weight.transpose(1, 2))  # (S, R, out)
        return y.view(*x.shape[:-1], self.out_features)  # (N, *, out)

    def extra_repr(self) -> str:
        return f"seeds={self.seeds}, in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SeedLayerNorm(SeedAffine):
    """S ``nn.LayerNorm`` layers over the last dimension: weight (S, C), bias (S, C) or none."""

    def __init__(self, members: Sequence[nn.LayerNorm]):
        super().__init__()
        first = members[0]
        if len(first.normalized_shape) != 1:
            raise ValueError(
                f"only a LayerNorm over the last dimension stacks, not over {first.normalized_shape}"
            )
        self.normalized_shape = tuple(first.normalized_shape)
        self.eps = first.eps
        self.stack_weight_and_bias(members)  # a LayerNorm without parameters is never swapped

    def forward(self, x: Tensor) -> Tensor:
        normal = seed_blocks(F.layer_norm(x, self.normalized_shape, eps=self.eps), self.seeds)  # (S, R, C)
        if self.bias is None:
            y = normal * self.weight[:, None]
        else:
            y = torch.addcmul(self.bias[:, None], normal, self.weight[:, None])
        return y.view(x.shape)  # (N, *, C)

    def extra_repr(self) -> str:
        return f"seeds={self.seeds}, {self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"


class SeedRecurrent(nn.Module):
    """Shared body of SeedGRU and SeedLSTM: what ``Recurrent`` uses of torch's layers (one
    layer, batch first, one direction, biases), with torch's parameter names and shapes
    plus the leading seed dimension: weight_ih_l0 (S, G*H, I), weight_hh_l0 (S, G*H, H),
    bias_ih_l0 and bias_hh_l0 (S, G*H), for G gates."""

    def __init__(self, members: Sequence[nn.RNNBase]):
        super().__init__()
        first = members[0]
        if first.num_layers != 1 or not first.batch_first or first.bidirectional or not first.bias:
            raise ValueError(
                f"only a one-layer, batch-first, one-direction {type(first).__name__} with biases stacks"
            )
        if getattr(first, "proj_size", 0):
            raise ValueError("an LSTM with projections does not stack")
        self.input_size = first.input_size
        self.hidden_size = first.hidden_size
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            setattr(self, name, stacked_parameter([getattr(member, name) for member in members]))

    @property
    def seeds(self) -> int:
        return self.weight_ih_l0.shape[0]

    def input_gates(self, xs: Tensor, bias: Tensor) -> Tensor:
        """Input projections of all steps of ``xs`` (N, T, I) in one product: (S, N/S, T, G*H)."""
        if xs.dim() != 3:
            raise ValueError(f"expected batch-first sequences (N, T, I), got {tuple(xs.shape)}")
        rows, steps, _ = xs.shape
        if steps < 1:
            raise ValueError("expected sequences of at least one step")  # as torch's layers
        projected = torch.baddbmm(
            bias[:, None], seed_blocks(xs, self.seeds), self.weight_ih_l0.transpose(1, 2)
        )  # (S, N/S * T, G*H)
        return projected.view(self.seeds, rows // self.seeds, steps, -1)  # (S, N/S, T, G*H)

    def hidden_blocks(self, state: Tensor | None, xs: Tensor) -> Tensor:
        """A layer state (1, N, H), zeros if None, as seed blocks (S, N/S, H)."""
        rows = xs.shape[0]
        shape = (self.seeds, rows // self.seeds, self.hidden_size)
        if state is None:
            return xs.new_zeros(shape)
        if state.shape != (1, rows, self.hidden_size):
            raise ValueError(
                f"expected a state of shape (1, {rows}, {self.hidden_size}), got {tuple(state.shape)}"
            )
        return state.view(shape)

    def outputs(self, hs: list[Tensor]) -> Tensor:
        """The hidden states of all steps, each (S, N/S, H), as (N, T, H)."""
        seeds, batch, hidden = hs[0].shape
        # One step (acting) is a view of the state; only longer sequences are copied together.
        out = hs[0][:, :, None] if len(hs) == 1 else torch.stack(hs, dim=2)  # (S, N/S, T, H)
        return out.view(seeds * batch, len(hs), hidden)  # (N, T, H)

    def extra_repr(self) -> str:
        return f"seeds={self.seeds}, {self.input_size}, {self.hidden_size}"


class SeedGRU(SeedRecurrent):
    """S one-layer ``nn.GRU``: ``forward(xs, h0)`` -> (out (N, T, H), h_n (1, N, H)), like torch's."""

    def forward(self, xs: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        input_gates = self.input_gates(xs, self.bias_ih_l0)  # (S, B, T, 3H)
        h = self.hidden_blocks(h0, xs)  # (S, B, H)
        hs = []
        split = 2 * self.hidden_size  # torch's gate order r, z | n
        # unbind, not indexing per step: the backward pass of one index per step would
        # write a zero gradient of all T steps each time (quadratic in T).
        for input_step in input_gates.unbind(dim=2):  # (S, B, 3H), as hidden_step
            hidden_step = torch.baddbmm(self.bias_hh_l0[:, None], h, self.weight_hh_l0.transpose(1, 2))
            # r and z in one sigmoid; n = tanh(i_n + r * h_n); h' = (1 - z) n + z h = lerp(n, h, z).
            # split, not slices: a slice's backward pass writes zeros over the whole tensor first.
            input_rz, input_n = input_step.split([split, self.hidden_size], dim=-1)
            hidden_rz, hidden_n = hidden_step.split([split, self.hidden_size], dim=-1)
            reset, update = torch.sigmoid(input_rz + hidden_rz).chunk(2, dim=-1)
            new = torch.tanh(torch.addcmul(input_n, reset, hidden_n))
            h = torch.lerp(new, h, update)
            hs.append(h)
        return self.outputs(hs), h.view(1, -1, self.hidden_size)


class SeedLSTM(SeedRecurrent):
    """S one-layer ``nn.LSTM``: ``forward(xs, (h0, c0))`` -> (out (N, T, H), (h_n, c_n)), like torch's."""

    def forward(
        self, xs: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        # Both biases add to the same pre-activations, so they join the input projection.
        input_gates = self.input_gates(xs, self.bias_ih_l0 + self.bias_hh_l0)  # (S, B, T, 4H)
        h0, c0 = (None, None) if state is None else state
        h, c = self.hidden_blocks(h0, xs), self.hidden_blocks(c0, xs)  # (S, B, H)
        hs = []
        for input_step in input_gates.unbind(dim=2):  # as in SeedGRU
            gates = torch.baddbmm(input_step, h, self.weight_hh_l0.transpose(1, 2))  # (S, B, 4H)
            # torch's gate order: i, f, g, o
            input_gate, forget_gate, cell_input, output_gate = gates.chunk(4, dim=-1)
            c = torch.sigmoid(forget_gate) * c + torch.sigmoid(input_gate) * torch.tanh(cell_input)
            h = torch.sigmoid(output_gate) * torch.tanh(c)
            hs.append(h)
        return self.outputs(hs), (h.view(1, -1, self.hidden_size), c.view(1, -1, self.hidden_size))

    def gates(self, xs: Tensor, previous: Tensor) -> Tensor:
        """(N, T, 4H) gate pre-activations of all steps at once, given every step's input
        ``xs`` (N, T, I) and previous hidden state ``previous`` (N, T, H); what
        :func:`mesaprobe.models.recurrent.lstm_cell_states` needs."""
        input_gates = self.input_gates(xs, self.bias_ih_l0 + self.bias_hh_l0)  # (S, B, T, 4H)
        hidden_gates = torch.bmm(seed_blocks(previous, self.seeds), self.weight_hh_l0.transpose(1, 2))
        return (input_gates + hidden_gates.view(input_gates.shape)).flatten(0, 1)  # (N, T, 4H)


#: The layers that may own parameters in a stackable model, and their stacked counterparts.
SEED_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: SeedLinear,
    nn.LayerNorm: SeedLayerNorm,
    nn.GRU: SeedGRU,
    nn.LSTM: SeedLSTM,
    RowParameter: SeedRowParameter,
}
