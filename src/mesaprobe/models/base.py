"""The one contract every architecture follows.

A sequence model maps inputs ``x_1..x_T`` to outputs ``y_1..y_T`` where ``y_t``
may depend on ``x_1..x_t`` only.  It can be run two ways, which must agree
numerically (tests check every registered family):

* ``forward(xs)`` over whole sequences ``(B, T, I) -> (B, T, O)``, for training;
* ``step(state, x)`` one step at a time ``(B, I) -> (B, O)``, for acting, starting
  from ``initial_state(batch, horizon)``.

The state is reset by starting a new one at each episode boundary (all episodes of
a batch are aligned).  ``forward(xs, return_hidden=True)`` also returns the hidden
representations probes read: ``{name: (B, T, H)}``, one entry per layer.

The last ``private_size`` input columns are *private*: the environment promises them
to the current step only.  Recurrent and memoryless models read them like any
input; the Transformer feeds them to its output head and never into the residual
stream it attends over, so no later step can see them.

Every family also states its cost, which the frozen manifest records and the tables carry
(the architecture ladder puts them on its axes):

* ``state_floats(horizon)``: numbers one episode carries from one step to the next at the
  last step of an episode of ``horizon`` steps, measured on the state object itself
  (hidden state, SSM and convolution state, fast-weight matrix, key/value cache);
* ``flops_per_step(horizon)``: 2 x the multiply-adds of one ``step`` at the last step of such
  an episode, counted analytically by each family: every product of a weight matrix with a
  vector (biases, normalisations, activations and gates not counted) and every product
  with the carried state (attention over the cached steps, the fast-weight read and
  outer-product write, the state-space update and read-out), as each family's method says.

Parameters a family applies elementwise (decay rates, per-channel gains, filters) are
:class:`mesaprobe.models.stacked.RowParameter`, read with ``rows(n)``; every other parameter
lives in ``nn.Linear``, ``nn.LayerNorm``, ``nn.GRU`` or ``nn.LSTM``, so that several seeds
stack into one model (:mod:`mesaprobe.models.stacked`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


class SequenceModel(nn.Module):
    """Base of all architecture families."""

    #: The family's settings dataclass (what a study may set under ``architectures.<name>``).
    Config: ClassVar[type]
    #: True if the model carries information between steps (False: memoryless).
    has_memory: ClassVar[bool] = True
    #: Filled in by the registry.
    registered_name: ClassVar[str]

    def __init__(self, config: Any, input_size: int, output_size: int, private_size: int = 0):
        super().__init__()
        if not 0 <= private_size <= input_size:
            raise ValueError(f"private_size {private_size} must be within the input size {input_size}")
        self.config = config
        self.input_size = input_size
        self.output_size = output_size
        self.private_size = private_size

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> Any:
        raise NotImplementedError

    def step(self, state: Any, x: Tensor) -> tuple[Any, Tensor]:
        raise NotImplementedError

    def forward(self, xs: Tensor, return_hidden: bool = False):
        raise NotImplementedError

    def state_floats(self, horizon: int) -> int:
        """Numbers carried from one step to the next, per episode, at the last step of an episode
        of ``horizon`` steps: the floating-point entries of the state object ``step`` is handed
        there (after ``horizon - 1`` steps of one episode), preallocated buffers counted whole
        (a key/value cache holds min(window, horizon) steps)."""
        if horizon < 1:
            raise ValueError(f"an episode has at least one step, got horizon {horizon}")
        parameter = next(self.parameters())
        inputs = torch.zeros(1, self.input_size, device=parameter.device, dtype=parameter.dtype)
        with torch.inference_mode():
            state = self.initial_state(1, horizon, parameter.device)
            for _ in range(horizon - 1):
                state, _ = self.step(state, inputs)
        return floats_in(state)

    def flops_per_step(self, horizon: int) -> int:
        """2 x the multiply-adds of one ``step`` at the last step of an episode of ``horizon``
        steps, per episode (see the module docstring for what is counted)."""
        raise NotImplementedError

    def parameter_count(self) -> int:
        """Trained numbers: every parameter's entries."""
        return sum(parameter.numel() for parameter in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def floats_in(state: Any) -> int:
    """Floating-point entries of every tensor inside ``state`` (tensors, sequences, mappings,
    dataclasses, nested); integers such as a step counter are not state floats."""
    if isinstance(state, Tensor):
        return state.numel() if state.is_floating_point() or state.is_complex() else 0
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return sum(floats_in(getattr(state, field.name)) for field in dataclasses.fields(state))
    if isinstance(state, Mapping):
        return sum(floats_in(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return sum(floats_in(item) for item in state)
    return 0


def linear_flops(*layers: nn.Linear) -> int:
    """2 x the multiply-adds of these linear layers applied to one vector each (biases not counted)."""
    return sum(2 * layer.in_features * layer.out_features for layer in layers)
