"""A model whose memory is restricted to the last w steps (the context-window ablation).

:func:`restrict_memory` wraps a frozen model so that it keeps the one sequence-model
contract (``initial_state``, ``step``, ``forward``) with less memory:

* a Transformer attends to the last ``w`` positions only (its ``attention_window``):
  the same computation as a Transformer built with ``context: w`` and the same weights;
* a model whose memory is a state carried from step to step (GRU, LSTM, LRU, Mamba, linear
  attention's fast weights: any model with memory and no attention window) has its state
  reset to the initial state every ``w`` steps, so the output at step t depends on the
  steps since the last multiple of w (between 1 and w steps, the current one included).
  Stepping resets the state; whole sequences run as chunks of ``w`` steps from the initial
  state, which is the same computation;
* a memoryless model is returned unchanged.

``w = 1`` leaves no memory at all.  The wrapper shares the model's weights and never
changes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mesaprobe.models.base import SequenceModel


def restrict_memory(model: SequenceModel, window: int) -> SequenceModel:
    """``model`` with its memory restricted to the last ``window`` steps (see the module docstring)."""
    if window < 1:
        raise ValueError(f"a memory window holds at least the current step, got {window}")
    if not model.has_memory:
        return model
    if hasattr(model, "attention_window"):
        return AttentionWindow(model, window)
    return PeriodicReset(model, window)


class Windowed(SequenceModel):
    """Shared body of the wrappers: the wrapped model and its window."""

    def __init__(self, model: SequenceModel, window: int):
        super().__init__(model.config, model.input_size, model.output_size, model.private_size)
        self.model = model
        self.window = window


class AttentionWindow(Windowed):
    """A Transformer attending to the last ``window`` positions only."""

    @property
    def has_memory(self) -> bool:  # type: ignore[override]
        with self.model.attention_window(self.window):
            return self.model.has_memory

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> Any:
        with self.model.attention_window(self.window):  # the cache holds the window only
            return self.model.initial_state(batch, horizon, device)

    def step(self, state: Any, x: Tensor) -> tuple[Any, Tensor]:
        with self.model.attention_window(self.window):
            return self.model.step(state, x)

    def forward(self, xs: Tensor, return_hidden: bool = False):
        with self.model.attention_window(self.window):
            return self.model(xs, return_hidden=return_hidden)


@dataclass
class ResetState:
    """The wrapped model's state plus what a reset needs."""

    inner: Any
    t: int
    """Steps taken in this episode."""
    batch: int
    horizon: int
    device: torch.device | str


class PeriodicReset(Windowed):
    """A model with a carried state (recurrent, state-space, fast weights) whose state is reset
    every ``window`` steps."""

    @property
    def has_memory(self) -> bool:  # type: ignore[override]
        return self.window > 1

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> ResetState:
        return ResetState(self.model.initial_state(batch, horizon, device), 0, batch, horizon, device)

    def step(self, state: ResetState, x: Tensor) -> tuple[ResetState, Tensor]:
        inner = state.inner
        if state.t and state.t % self.window == 0:
            inner = self.model.initial_state(state.batch, state.horizon, state.device)
        inner, y = self.model.step(inner, x)
        return ResetState(inner, state.t + 1, state.batch, state.horizon, state.device), y

    def forward(self, xs: Tensor, return_hidden: bool = False):
        B, T, C = xs.shape
        w = self.window
        if w >= T:
            return self.model(xs, return_hidden=return_hidden)
        chunks = -(-T // w)
        # Zeros after the last step fill the last chunk: a causal model's earlier outputs never see them.
        padded = F.pad(xs, (0, 0, 0, chunks * w - T))  # (B, chunks * w, C)
        result = self.model(
            padded.reshape(B * chunks, w, C), return_hidden=return_hidden
        )  # (B * chunks, w, ...)

        def unchunk(y: Tensor) -> Tensor:
            return y.reshape(B, chunks * w, *y.shape[2:])[:, :T]  # (B, T, ...)

        if not return_hidden:
            return unchunk(result)
        ys, hidden = result
        return unchunk(ys), {name: unchunk(h) for name, h in hidden.items()}
