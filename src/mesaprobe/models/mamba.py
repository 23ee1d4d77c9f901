"""Mamba: a selective state-space model, whose step size and read-in/read-out depend on the input.

Gu and Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"
(the Mamba-1 block).  Each block maps the residual stream x (d_model) through

    [u, z] = in_proj(LayerNorm(x))                       # d_inner = expand * d_model each
    u = silu(causal depthwise conv of u, width conv_width)
    [delta_low, B, C] = x_proj(u);  delta = softplus(dt_proj(delta_low))   # (d_inner), (N), (N)
    h_t = exp(delta_t * A) * h_(t-1) + (delta_t * u_t) B_t^T              # (d_inner, N)
    y_t = h_t C_t + D * u_t
    x = x + out_proj(y * silu(z))

with A = -exp(A_log) (d_inner x N) negative, initialised to -(1, 2, ..., N) in every channel
(S4D-real), D initialised to one, and dt_proj's bias set so that delta starts log-uniform in
[dt_min, dt_max].  The step size delta and B and C are functions of the current input: the
model chooses, token by token, what to write into its state and how fast to forget it.

``step`` carries each layer's SSM state h (d_inner x N) and the convolution's last
conv_width - 1 inputs (state floats: d_inner * (N + conv_width - 1) per layer).  ``forward``
runs the projections and the convolution over the whole sequence at once and the scan
sequentially over time (the same update as ``step``, on (B, d_inner, N) per step); a
GPU-only kernel is never needed.  Normalisations are LayerNorm (the paper uses RMSNorm) and the convolution's weights
are :class:`~mesaprobe.models.stacked.RowParameter` (as are A_log and D), so that seeds stack.
Private inputs are read like any input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mesaprobe.models.base import SequenceModel, linear_flops
from mesaprobe.models.stacked import RowParameter
from mesaprobe.settings import SettingError


@dataclass(frozen=True)
class MambaConfig:
    d_model: int = 64
    """Width of the residual stream."""
    layers: int = 2
    """Mamba blocks."""
    expand: int = 2
    """Inner width d_inner = expand * d_model (channels of the convolution and the SSM)."""
    d_state: int = 16
    """State size N per inner channel (state floats: d_inner * (N + conv_width - 1) per layer)."""
    conv_width: int = 4
    """Steps seen by the causal depthwise convolution before the SSM (1: none carried)."""
    dt_rank: int | Literal["auto"] = "auto"
    """Rank of the projection that makes the step size delta from the input; auto: ceil(d_model / 16)."""
    dt_min: float = 0.001
    """Smallest initial step size delta."""
    dt_max: float = 0.1
    """Largest initial step size delta."""

    def validate(self) -> None:
        for name in ("d_model", "layers", "expand", "d_state", "conv_width"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        if self.dt_rank != "auto" and self.dt_rank < 1:
            raise SettingError("dt_rank", f"expected auto or a positive integer, got {self.dt_rank}")
        if not 0.0 < self.dt_min < self.dt_max:
            raise SettingError("dt_max", f"expected 0 < dt_min ({self.dt_min}) < dt_max, got {self.dt_max}")

    @property
    def inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)


@dataclass
class MambaState:
    """One layer's carried state."""

    ssm: Tensor
    """(B, d_inner, N): the state-space state h."""
    conv: Tensor
    """(B, d_inner, conv_width - 1): the convolution's last inputs, oldest first."""


class SelectiveSSM(nn.Module):
    """The Mamba mixer: (N, T, d_model) -> (N, T, d_model)."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        inner, state, rank = config.inner, config.d_state, config.rank
        self.state_size, self.rank = state, rank
        self.in_proj = nn.Linear(config.d_model, 2 * inner, bias=False)
        bound = 1.0 / math.sqrt(config.conv_width)  # nn.Conv1d's default for a depthwise filter
        self.conv_weight = RowParameter(torch.empty(inner, config.conv_width).uniform_(-bound, bound))
        self.conv_bias = RowParameter(torch.empty(inner).uniform_(-bound, bound))
        self.x_proj = nn.Linear(inner, rank + 2 * state, bias=False)
        self.dt_proj = nn.Linear(rank, inner)
        nn.init.uniform_(self.dt_proj.weight, -(rank**-0.5), rank**-0.5)
        step_sizes = torch.exp(
            torch.rand(inner) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min)
        )
        with torch.no_grad():  # softplus(bias) = step_sizes
            self.dt_proj.bias.copy_(step_sizes + torch.log(-torch.expm1(-step_sizes)))
        self.A_log = RowParameter(torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = RowParameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, config.d_model, bias=False)

    def selection(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(delta (..., d_inner), B (..., N), C (..., N)) of the convolved inputs ``u`` (..., d_inner)."""
        low, B, C = self.x_proj(u).split([self.rank, self.state_size, self.state_size], dim=-1)
        return F.softplus(self.dt_proj(low)), B, C

    @staticmethod
    def update(h: Tensor, delta: Tensor, A: Tensor, inputs: Tensor, B: Tensor) -> Tensor:
        """h' = exp(delta A) * h + (delta u) B^T: ``h`` (N, E, S), ``delta`` and ``inputs`` = delta u
        (N, E), ``A`` (N, E, S), ``B`` (N, S)."""
        return torch.addcmul(torch.exp(delta[:, :, None] * A) * h, inputs[:, :, None], B[:, None, :])

    def forward(self, x: Tensor) -> Tensor:
        rows, steps, _ = x.shape
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (N, T, E) each
        weight = self.conv_weight.rows(rows)  # (N, E, K)
        width = weight.shape[-1]
        padded = F.pad(u, (0, 0, width - 1, 0))  # (N, T + K - 1, E): zeros before the first step
        convolved = self.conv_bias.rows(rows)[:, None]  # (N, 1, E)
        for k in range(width):
            convolved = convolved + padded[:, k : k + steps] * weight[:, None, :, k]  # (N, T, E)
        u = F.silu(convolved)
        delta, B, C = self.selection(u)  # (N, T, E), (N, T, S), (N, T, S)
        A = -torch.exp(self.A_log.rows(rows))  # (N, E, S)
        inputs = delta * u  # (N, T, E)
        h = u.new_zeros(rows, u.shape[-1], self.state_size)  # (N, E, S)
        outputs = []
        # One step at a time, each step's decay and write made inside the loop, elementwise: on a
        # CPU this beats materialising (N, T, E, S) decays and writes, and small batched matrix
        # products, forward and backward.  unbind,
        # not indexing per step (the backward pass of one index per step is quadratic in T).
        for delta_t, input_t, B_t, C_t in zip(
            delta.unbind(dim=1), inputs.unbind(dim=1), B.unbind(dim=1), C.unbind(dim=1), strict=True
        ):
            h = self.update(h, delta_t, A, input_t, B_t)  # (N, E, S)
            outputs.append((h * C_t[:, None, :]).sum(dim=-1))  # (N, E): h C
        y = torch.stack(outputs, dim=1)  # (N, T, E)
        y = y + self.D.rows(rows)[:, None] * u
        return self.out_proj(y * F.silu(z))  # (N, T, d_model)

    def step(self, x: Tensor, state: MambaState) -> tuple[MambaState, Tensor]:
        rows = x.shape[0]
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (N, E) each
        window = torch.cat([state.conv, u[:, :, None]], dim=2)  # (N, E, K): oldest first
        weight, bias = self.conv_weight.rows(rows), self.conv_bias.rows(rows)  # (N, E, K), (N, E)
        convolved = (window * weight).sum(dim=-1) + bias  # (N, E)
        u = F.silu(convolved)
        delta, B, C = self.selection(u)  # (N, E), (N, S), (N, S)
        A = -torch.exp(self.A_log.rows(rows))  # (N, E, S)
        h = self.update(state.ssm, delta, A, delta * u, B)  # (N, E, S)
        y = (h * C[:, None, :]).sum(dim=-1) + self.D.rows(rows) * u  # (N, E): h C + D u
        return MambaState(h, window[:, :, 1:]), self.out_proj(y * F.silu(z))


class MambaBlock(nn.Module):
    def __init__(self, config: MambaConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.mixer = SelectiveSSM(config)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))

    def step(self, x: Tensor, state: MambaState) -> tuple[MambaState, Tensor]:
        state, mixed = self.mixer.step(self.norm(x), state)
        return state, x + mixed


class Mamba(SequenceModel):
    Config: ClassVar[type] = MambaConfig

    def __init__(self, config: MambaConfig, input_size: int, output_size: int, private_size: int = 0):
        super().__init__(config, input_size, output_size, private_size)
        self.embed = nn.Linear(input_size, config.d_model)
        self.blocks = nn.ModuleList(MambaBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, output_size)

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> list[MambaState]:
        config = self.config
        dtype = self.embed.weight.dtype
        return [
            MambaState(
                torch.zeros(batch, config.inner, config.d_state, device=device, dtype=dtype),
                torch.zeros(batch, config.inner, config.conv_width - 1, device=device, dtype=dtype),
            )
            for _ in self.blocks
        ]

    def step(self, state: list[MambaState], x: Tensor) -> tuple[list[MambaState], Tensor]:
        h = self.embed(x)  # (B, C)
        new_state = []
        for block, layer_state in zip(self.blocks, state, strict=True):
            layer_state, h = block.step(h, layer_state)
            new_state.append(layer_state)
        return new_state, self.head(self.norm(h))

    def forward(self, xs: Tensor, return_hidden: bool = False):
        h = self.embed(xs)  # (B, T, C)
        hidden = {"layer0": h}
        for i, block in enumerate(self.blocks):
            h = block(h)
            hidden[f"layer{i + 1}"] = h
        ys = self.head(self.norm(h))  # (B, T, O)
        return (ys, hidden) if return_hidden else ys

    def flops_per_step(self, horizon: int) -> int:
        """The embedding; per block the projections (in, x, dt, out), the convolution
        (d_inner * conv_width multiply-adds), the write (delta u) B^T, the state update
        exp(delta A) * h + write and the read-out h C (d_inner * N multiply-adds each); the head.
        The same at every step, whatever the horizon."""
        config = self.config
        ssm = 2 * (config.inner * config.conv_width + 3 * config.inner * config.d_state)
        blocks = sum(
            linear_flops(block.mixer.in_proj, block.mixer.x_proj, block.mixer.dt_proj, block.mixer.out_proj)
            + ssm
            for block in self.blocks
        )
        return linear_flops(self.embed, self.head) + blocks
