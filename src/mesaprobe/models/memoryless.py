"""A memoryless MLP: each output depends on the current input only.

With RL^2 inputs it still sees the previous action and reward, so the best it can
do is a one-step rule such as win-stay/lose-shift: the reference that shows how much
of an agent's performance needs memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from mesaprobe.models.base import SequenceModel, linear_flops
from mesaprobe.settings import SettingError


@dataclass(frozen=True)
class MemorylessConfig:
    hidden: int = 64
    """Units in each hidden layer."""
    layers: int = 2
    """Hidden layers of the MLP."""

    def validate(self) -> None:
        if self.hidden < 1:
            raise SettingError("hidden", f"expected a positive size, got {self.hidden}")
        if self.layers < 1:
            raise SettingError("layers", f"expected at least one layer, got {self.layers}")


class Memoryless(SequenceModel):
    Config: ClassVar[type] = MemorylessConfig
    has_memory: ClassVar[bool] = False

    def __init__(self, config: MemorylessConfig, input_size: int, output_size: int, private_size: int = 0):
        super().__init__(config, input_size, output_size, private_size)
        sizes = [input_size] + [config.hidden] * config.layers
        self.layers = nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1]) for i in range(config.layers))
        self.head = nn.Linear(config.hidden, output_size)

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> None:
        return None

    def step(self, state: None, x: Tensor) -> tuple[None, Tensor]:
        return None, self.forward(x[:, None])[:, 0]

    def flops_per_step(self, horizon: int) -> int:
        """The MLP's matrix products; nothing is carried between steps."""
        return linear_flops(*self.layers, self.head)

    def forward(self, xs: Tensor, return_hidden: bool = False):
        h = xs  # (B, T, I)
        hidden = {}
        for i, layer in enumerate(self.layers):
            h = torch.relu(layer(h))  # (B, T, H)
            hidden[f"layer{i + 1}"] = h
        ys = self.head(h)
        return (ys, hidden) if return_hidden else ys
