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
"""

from __future__ import annotations

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

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
