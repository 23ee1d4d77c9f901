"""The Linear Recurrent Unit: a diagonal, complex, linear recurrence between nonlinear layers.

Orvieto et al. (2023), "Resurrecting Recurrent Neural Networks for Long Sequences".  Each
layer carries P complex state units h (state floats: 2P per layer, real and imaginary parts)
updated by

    h_t = lambda * h_(t-1) + gamma * (B u_t),        y_t = Re(C h_t) + D * u_t,

with lambda = exp(-exp(nu) + i exp(theta)) diagonal (so |lambda| < 1: stable by
construction), gamma = exp(gamma_log) the normalisation initialised to sqrt(1 - |lambda|^2),
and complex B (P x H), C (H x P), real D (H).  The eigenvalues start uniform on the ring
r_min <= |lambda| <= r_max with phases in [0, max_phase].  Complex numbers are kept as
(real, imaginary) pairs of real tensors, so that every weight is an ``nn.Linear`` or a
:class:`~mesaprobe.models.stacked.RowParameter` and seeds stack; Re(C h) is one linear layer
over [Re h, Im h] (its weight is [Re C, -Im C]).

The recurrence is linear and time-invariant, so ``forward`` solves it with a parallel
(Hillis-Steele) scan: log2(T) rounds of h_t += lambda^d h_(t-d) for d = 1, 2, 4, ...,
with lambda^d computed from its modulus and phase; ``step`` takes one step of it.

A layer is the paper's block: x + GLU(GELU(LRU(LayerNorm(x)))), the GLU a linear layer to
2 d_model halves a * sigmoid(b).  Private inputs are read like any input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mesaprobe.models.base import SequenceModel, linear_flops
from mesaprobe.models.stacked import RowParameter
from mesaprobe.settings import SettingError


@dataclass(frozen=True)
class LRUConfig:
    d_model: int = 64
    """Width of the residual stream (the unit's input and output size H)."""
    state: int = 64
    """Complex state units P per layer (2P state floats: real and imaginary parts)."""
    layers: int = 2
    """Stacked LRU blocks."""
    r_min: float = 0.5
    """Smallest initial modulus |lambda| of the state's eigenvalues (memory of about
    1 / (1 - r) steps)."""
    r_max: float = 0.999
    """Largest initial modulus |lambda|, below 1."""
    max_phase: float = math.pi / 10
    """Initial phases of the eigenvalues are uniform in [0, max_phase] (radians per step);
    the paper uses pi / 10 for its long-range tasks."""

    def validate(self) -> None:
        for name in ("d_model", "state", "layers"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.r_min < 1.0:
            raise SettingError("r_min", f"expected a modulus in [0, 1), got {self.r_min}")
        if not self.r_min < self.r_max < 1.0:
            raise SettingError("r_max", f"expected a modulus in (r_min = {self.r_min}, 1), got {self.r_max}")
        if self.max_phase <= 0:
            raise SettingError("max_phase", f"expected a positive angle, got {self.max_phase}")


def ring_eigenvalues(config: LRUConfig) -> tuple[Tensor, Tensor]:
    """(nu_log, theta_log), each (P,): eigenvalues uniform on the ring r_min <= |lambda| <= r_max,
    phases uniform in [0, max_phase] (the paper's initialisation; global RNG, as nn.Linear's)."""
    radius_draw, phase_draw = torch.rand(config.state), torch.rand(config.state)
    squared = radius_draw * (config.r_max**2 - config.r_min**2) + config.r_min**2  # |lambda|^2
    nu_log = torch.log(-0.5 * torch.log(squared))
    theta_log = torch.log(config.max_phase * phase_draw.clamp_min(1e-4))
    return nu_log, theta_log


def complex_power(log_modulus: Tensor, phase: Tensor, exponent: int) -> tuple[Tensor, Tensor]:
    """(Re, Im) of lambda^exponent for lambda = exp(log_modulus + i phase)."""
    modulus = torch.exp(exponent * log_modulus)
    angle = exponent * phase
    return modulus * torch.cos(angle), modulus * torch.sin(angle)


def diagonal_scan(
    log_modulus: Tensor, phase: Tensor, inputs_real: Tensor, inputs_imaginary: Tensor
) -> tuple[Tensor, Tensor]:
    """h_t = lambda h_(t-1) + u_t from h_0 = 0 for all t at once: (Re h, Im h), each (N, T, P).

    ``log_modulus`` and ``phase`` (N, 1, P) give lambda per row; ``inputs_*`` (N, T, P) are u.
    Hillis-Steele: after the round with offset d, h_t holds the sum over the last 2d steps.
    """
    real, imaginary = inputs_real, inputs_imaginary
    steps = real.shape[1]
    offset = 1
    while offset < steps:
        power_real, power_imaginary = complex_power(log_modulus, phase, offset)  # (N, 1, P)
        earlier_real = F.pad(real[:, :-offset], (0, 0, offset, 0))  # (N, T, P): h_(t-d), 0 before the start
        earlier_imaginary = F.pad(imaginary[:, :-offset], (0, 0, offset, 0))
        real, imaginary = (
            real + power_real * earlier_real - power_imaginary * earlier_imaginary,
            imaginary + power_real * earlier_imaginary + power_imaginary * earlier_real,
        )
        offset *= 2
    return real, imaginary


class LinearRecurrentUnit(nn.Module):
    """One LRU layer: (N, T, H) -> (N, T, H) through P complex state units."""

    def __init__(self, config: LRUConfig):
        super().__init__()
        width, state = config.d_model, config.state
        nu_log, theta_log = ring_eigenvalues(config)
        modulus = torch.exp(-torch.exp(nu_log))
        self.nu_log = RowParameter(nu_log)
        self.theta_log = RowParameter(theta_log)
        self.gamma_log = RowParameter(torch.log(torch.sqrt(1.0 - modulus**2)))
        self.input_projection = nn.Linear(width, 2 * state, bias=False)  # [Re B; Im B]
        self.output_projection = nn.Linear(2 * state, width, bias=False)  # [Re C, -Im C]
        self.skip = RowParameter(torch.randn(width))  # D
        nn.init.normal_(self.input_projection.weight, std=1.0 / math.sqrt(2 * width))
        nn.init.normal_(self.output_projection.weight, std=1.0 / math.sqrt(state))

    def eigenvalues(self, rows: int) -> tuple[Tensor, Tensor]:
        """(log |lambda|, arg lambda), each (rows, P)."""
        return -torch.exp(self.nu_log.rows(rows)), torch.exp(self.theta_log.rows(rows))

    def projected_inputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """gamma * (B x): (Re, Im), each (N, ..., P)."""
        rows = x.shape[0]
        gamma = torch.exp(self.gamma_log.rows(rows))  # (N, P)
        gamma = gamma.view(rows, *([1] * (x.dim() - 2)), -1)  # (N, ..., P)
        real, imaginary = self.input_projection(x).chunk(2, dim=-1)  # (N, ..., P) each
        return gamma * real, gamma * imaginary

    def output(self, x: Tensor, real: Tensor, imaginary: Tensor) -> Tensor:
        """Re(C h) + D * x."""
        skip = self.skip.rows(x.shape[0]).view(x.shape[0], *([1] * (x.dim() - 2)), -1)
        return self.output_projection(torch.cat([real, imaginary], dim=-1)) + skip * x

    def forward(self, x: Tensor) -> Tensor:
        log_modulus, phase = self.eigenvalues(x.shape[0])
        real, imaginary = self.projected_inputs(x)  # (N, T, P)
        real, imaginary = diagonal_scan(log_modulus[:, None], phase[:, None], real, imaginary)
        return self.output(x, real, imaginary)  # (N, T, H)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[tuple[Tensor, Tensor], Tensor]:
        log_modulus, phase = self.eigenvalues(x.shape[0])
        power_real, power_imaginary = complex_power(log_modulus, phase, 1)  # (N, P)
        input_real, input_imaginary = self.projected_inputs(x)  # (N, P)
        real, imaginary = state
        real, imaginary = (
            input_real + power_real * real - power_imaginary * imaginary,
            input_imaginary + power_real * imaginary + power_imaginary * real,
        )
        return (real, imaginary), self.output(x, real, imaginary)


class LRUBlock(nn.Module):
    def __init__(self, config: LRUConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.recurrence = LinearRecurrentUnit(config)
        self.gate = nn.Linear(config.d_model, 2 * config.d_model)  # GLU: a * sigmoid(b)

    def mix(self, recurrent: Tensor) -> Tensor:
        return F.glu(self.gate(F.gelu(recurrent)), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(self.recurrence(self.norm(x)))

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[tuple[Tensor, Tensor], Tensor]:
        state, recurrent = self.recurrence.step(self.norm(x), state)
        return state, x + self.mix(recurrent)


class LRU(SequenceModel):
    Config: ClassVar[type] = LRUConfig

    def __init__(self, config: LRUConfig, input_size: int, output_size: int, private_size: int = 0):
        super().__init__(config, input_size, output_size, private_size)
        self.embed = nn.Linear(input_size, config.d_model)
        self.blocks = nn.ModuleList(LRUBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, output_size)

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> list:
        dtype = self.embed.weight.dtype
        zeros = lambda: torch.zeros(batch, self.config.state, device=device, dtype=dtype)  # noqa: E731
        return [(zeros(), zeros()) for _ in self.blocks]  # (Re h, Im h) per layer

    def step(self, state: list, x: Tensor) -> tuple[list, Tensor]:
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
        """The embedding; per block B and C (2 * P * d_model multiply-adds each), the state update
        lambda * h (a complex product: 4 real multiply-adds per state unit) and the GLU; the head.
        The same at every step, whatever the horizon."""
        update = 2 * 4 * self.config.state
        blocks = sum(
            linear_flops(block.recurrence.input_projection, block.recurrence.output_projection, block.gate)
            + update
            for block in self.blocks
        )
        return linear_flops(self.embed, self.head) + blocks
