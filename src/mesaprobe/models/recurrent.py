"""Recurrent architectures: GRU and LSTM (cuDNN kernels on GPU, MKL on CPU).

The layers are kept as separate single-layer modules so that probes can read every
layer's hidden sequence (for the LSTM also its cell states, ``layer<i>_cell``); acting runs the same modules on sequences of length one,
so ``step`` and ``forward`` share all weights and kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mesaprobe.models.base import SequenceModel, linear_flops
from mesaprobe.settings import SettingError

if TYPE_CHECKING:
    from mesaprobe.models.stacked import SeedLSTM


@dataclass(frozen=True)
class RecurrentConfig:
    hidden: int = 64
    """Units in each recurrent layer."""
    layers: int = 1
    """Stacked recurrent layers."""

    def validate(self) -> None:
        if self.hidden < 1:
            raise SettingError("hidden", f"expected a positive size, got {self.hidden}")
        if self.layers < 1:
            raise SettingError("layers", f"expected at least one layer, got {self.layers}")


class Recurrent(SequenceModel):
    """Shared body of GRU and LSTM; subclasses name the torch cell (``cell``)."""

    Config: ClassVar[type] = RecurrentConfig
    cell: ClassVar[type[nn.RNNBase]]
    #: Gate pre-activations per hidden unit (GRU: reset, update, new; LSTM: input, forget, cell, output).
    gates: ClassVar[int]

    def __init__(self, config: RecurrentConfig, input_size: int, output_size: int, private_size: int = 0):
        super().__init__(config, input_size, output_size, private_size)
        sizes = [input_size] + [config.hidden] * config.layers
        self.rnns = nn.ModuleList(
            self.cell(sizes[i], sizes[i + 1], batch_first=True) for i in range(config.layers)
        )
        self.head = nn.Linear(config.hidden, output_size)

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> list:
        dtype = self.head.weight.dtype  # the layers refuse a state of another dtype
        zeros = lambda: torch.zeros(1, batch, self.config.hidden, device=device, dtype=dtype)  # noqa: E731
        if self.cell is nn.LSTM:
            return [(zeros(), zeros()) for _ in self.rnns]
        return [zeros() for _ in self.rnns]

    def flops_per_step(self, horizon: int) -> int:
        """Each layer's gate products with its input and its previous hidden state
        (gates x hidden x (inputs + hidden)), then the head; the same at every step."""
        recurrent = sum(
            2 * self.gates * rnn.hidden_size * (rnn.input_size + rnn.hidden_size) for rnn in self.rnns
        )
        return recurrent + linear_flops(self.head)

    def step(self, state: list, x: Tensor) -> tuple[list, Tensor]:
        h = x[:, None]  # (B, 1, I)
        new_state = []
        for rnn, layer_state in zip(self.rnns, state, strict=True):
            h, layer_state = run_layer(rnn, h, layer_state)  # (B, 1, H)
            new_state.append(layer_state)
        return new_state, self.head(h[:, 0])

    def forward(self, xs: Tensor, return_hidden: bool = False):
        h = xs  # (B, T, I)
        hidden = {}
        for i, rnn in enumerate(self.rnns):
            inputs = h
            h, _ = run_layer(rnn, h)  # (B, T, H)
            hidden[f"layer{i + 1}"] = h
            if return_hidden and self.cell is nn.LSTM:  # the class: a seed-stacked layer is no nn.LSTM
                hidden[f"layer{i + 1}_cell"] = lstm_cell_states(rnn, inputs, h)  # the LSTM's other state
        ys = self.head(h)  # (B, T, O)
        return (ys, hidden) if return_hidden else ys


def run_layer(rnn: nn.Module, h: Tensor, state=None):
    """One recurrent layer on (B, T, I) inputs, from ``state`` (None: zeros).

    Under bf16 autocast on a CPU, torch hands an LSTM to oneDNN in bfloat16, which needs
    processor support that not every CPU has ("could not create a primitive descriptor for the
    LSTM forward propagation primitive" on an AMD EPYC without it); there the LSTM's layers run
    in float32 and the rest of the model in bf16.  GPUs (cuDNN) and the GRU are unchanged.
    """
    cpu_bf16_lstm = isinstance(rnn, nn.LSTM) and h.device.type == "cpu" and torch.is_autocast_enabled("cpu")
    if not cpu_bf16_lstm:
        return rnn(h, state)
    with torch.autocast("cpu", enabled=False):
        state = None if state is None else tuple(part.float() for part in state)
        return rnn(h.float(), state)


def lstm_cell_states(rnn: nn.LSTM | SeedLSTM, xs: Tensor, hs: Tensor) -> Tensor:
    """(B, T, H) cell states c_t of a one-layer, batch-first LSTM, from its inputs xs (B, T, I)
    and outputs hs (B, T, H), starting from zero state.

    torch's LSTM returns the cell state of the last step only.  The gates are affine in
    (x_t, h_(t-1)) and every h_(t-1) is known, so one matrix product gives all gates; only
    c_t = f_t c_(t-1) + i_t g_t runs over time (elementwise).  A seed-stacked LSTM
    (``models/stacked.py``) is not an ``nn.LSTM`` and gives its gates itself, one product per seed.
    """
    previous = F.pad(hs, (0, 0, 1, 0))[:, :-1]  # (B, T, H): h_(t-1), h_0 = 0
    if isinstance(rnn, nn.LSTM):
        assert rnn.num_layers == 1 and rnn.batch_first and not rnn.bidirectional and rnn.proj_size == 0
        gates = xs @ rnn.weight_ih_l0.T + previous @ rnn.weight_hh_l0.T  # (B, T, 4H)
        if rnn.bias:
            gates = gates + rnn.bias_ih_l0 + rnn.bias_hh_l0
    else:
        gates = rnn.gates(xs, previous)  # (B, T, 4H)
    input_gate, forget_gate, cell_input, _ = gates.chunk(4, dim=-1)  # torch's order: i, f, g, o
    input_gate, forget_gate, cell_input = input_gate.sigmoid(), forget_gate.sigmoid(), cell_input.tanh()
    cell = torch.zeros_like(hs[:, 0])  # (B, H)
    cells = []
    for t in range(hs.shape[1]):
        cell = forget_gate[:, t] * cell + input_gate[:, t] * cell_input[:, t]
        cells.append(cell)
    return torch.stack(cells, dim=1)  # (B, T, H)


class GRU(Recurrent):
    cell = nn.GRU
    gates = 3


class LSTM(Recurrent):
    cell = nn.LSTM
    gates = 4
