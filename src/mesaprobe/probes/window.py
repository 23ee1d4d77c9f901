"""The context-window probe: how much of a frozen model's in-context learning needs its memory.

A frozen model plays (or predicts) held-out tasks with its memory restricted to the
last w steps (:func:`mesaprobe.models.windowed.restrict_memory`): a Transformer
attends to the last w positions only, a recurrent model's state is reset every w
steps, a memoryless model is unchanged.  w = 1 leaves no memory at all (gwern's
point: a model that does as well with w = 1 did not learn in context).

The study expands ``windows: [1, 2, 4, ...]`` into one probe per window, labelled
``<name>[w=<w>]`` (:meth:`WindowProbe.expand`), so every window is a curve of its own
in tables and charts.  Every window of one probe plays the same held-out tasks with
the same luck and action streams (``windows`` is :attr:`WindowProbe.task_neutral`), so
the curves differ by the window only.  Metrics are the adaptation probe's; so are the
other settings (including ``tasks: fresh | pool`` and the out-of-distribution ones).
Baselines play every window too, unaffected by it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import polars as pl
import torch

from mesaprobe.agents import ModelAgent, ModelPredictor
from mesaprobe.envs.base import Environment
from mesaprobe.models.windowed import restrict_memory
from mesaprobe.probes.adaptation import AdaptationConfig, AdaptationProbe
from mesaprobe.probes.base import ExpandedGrid
from mesaprobe.settings import SettingError


@dataclass(frozen=True)
class WindowConfig(AdaptationConfig):
    windows: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    """Memory windows w to evaluate, one probe each (labelled <name>[w=<w>]): a Transformer
    attends to the last w steps (a model trained with a shorter context keeps its own), a
    model that carries a state (GRU, LSTM, LRU, Mamba, linear attention) has it reset every
    w steps, a memoryless model ignores w. w = 1: no
    memory; w at least the horizon: the model as trained."""

    def validate(self) -> None:
        super().validate()
        windows = list(self.windows)
        if not windows or min(windows) < 1 or len(set(windows)) != len(windows):
            raise SettingError("windows", f"expected distinct windows of at least 1 step, got {windows}")


class WindowProbe(AdaptationProbe):
    """The adaptation probe's metrics with the model's memory restricted to the last w steps."""

    Config: ClassVar[type] = WindowConfig
    serves: ClassVar[tuple[str, ...]] = ("bandit", "prediction", "regression")
    #: Settings that do not change the held-out tasks: every window plays the same ones.
    task_neutral: ClassVar[tuple[str, ...]] = ("windows",)

    @classmethod
    def expand(cls, config: WindowConfig) -> list[tuple[ExpandedGrid, WindowConfig]]:
        """One probe per window: (grid value ``w``, settings with that window only)."""
        return [
            ((("w", window),), dataclasses.replace(config, windows=(window,))) for window in config.windows
        ]

    @property
    def window(self) -> int:
        windows = self.config.windows
        if len(windows) != 1:
            raise ValueError(
                f"a window probe plays one window; the study expands {list(windows)} into one each"
            )
        return windows[0]

    def run(
        self,
        agent,
        environment: Environment,
        heldout_key: tuple,
        agent_key: tuple,
        device: torch.device | str = "cpu",
    ) -> pl.DataFrame:
        """The adaptation probe's table, with a trained model's memory restricted to the window."""
        if isinstance(agent, (ModelAgent, ModelPredictor)):  # baselines play as they are
            agent = copy.copy(agent)
            agent.model = restrict_memory(agent.model, self.window)
        return super().run(agent, environment, heldout_key, agent_key, device)
