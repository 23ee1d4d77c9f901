"""The contract every probe kind follows.

A probe measures a frozen run (or a baseline, on the same held-out tasks) and returns a
long table.  The plan reads a kind's class attributes to decide which jobs exist; the
jobs call :meth:`Probe.environment` and :meth:`Probe.run`.  A kind is one file with a
:class:`Probe` subclass and one ``register`` line in :mod:`mesaprobe.probes`.

``run(agent, environment, heldout_key, agent_key, device, **extra)`` plays ``agent`` on
held-out tasks of ``environment`` (what :meth:`Probe.environment` returned): the task and
luck streams are named by ``heldout_key`` and shared by every agent at one seed, the
action stream by ``agent_key``.  It runs without changing weights; the job checks the
frozen hash before and after.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import polars as pl
import torch

from mesaprobe.envs.base import Environment

#: Grid values a kind adds when it expands one probe into several (``(("w", 4),)``).
ExpandedGrid = tuple[tuple[str, Any], ...]


class Probe:
    """Base of all probe kinds; a kind sets ``Config``, ``serves`` and ``run``."""

    #: The kind's settings dataclass (what a study may set under ``probes.<name>``).
    Config: ClassVar[type]
    #: Filled in by the registry.
    registered_name: ClassVar[str]
    #: Environment kinds it can probe; the plan leaves other environments out.
    serves: ClassVar[tuple[str, ...]]
    #: What its jobs write: per-episode ``curves`` (:mod:`mesaprobe.analysis.tables`) or an
    #: ``inside`` table (:mod:`mesaprobe.analysis.inside`).
    writes: ClassVar[Literal["curves", "inside"]] = "curves"
    #: Whether the study's baselines play it too (False where hidden states are read).
    plays_baselines: ClassVar[bool] = True
    #: Settings that do not change the held-out tasks (every value plays the same tasks).
    task_neutral: ClassVar[tuple[str, ...]] = ()
    #: Its inside charts (names of :mod:`mesaprobe.analysis.inside_charts`); curve probes have
    #: the charts of their metric family.
    charts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any):
        self.config = config

    @classmethod
    def expand(cls, config: Any) -> list[tuple[ExpandedGrid, Any]]:
        """The probes one study block stands for: (grid values added, settings) pairs; most
        kinds are one probe as written."""
        return [((), config)]

    @classmethod
    def not_applicable(cls, config: Any, kind: str) -> str | None:
        """Why these settings cannot probe an environment of ``kind`` (None: they can); the plan
        skips such pairs with a note, so one study can mix kinds and kind-specific probes."""
        if kind not in cls.serves:
            return f"{cls.registered_name} probes serve {' and '.join(cls.serves)} environments, not {kind}"
        return None

    @property
    def plays_pool(self) -> bool:
        """Whether it plays the run's training pool (``tasks: pool``) rather than fresh tasks."""
        return False

    @property
    def policy(self) -> Literal["sample", "greedy"]:
        """How a frozen model acts in it: sampling its policy, or greedily."""
        return "sample"

    def environment(self, trained: Environment) -> Environment:
        """The environment it plays: the trained one as it is unless a kind transforms it."""
        return trained

    def run(
        self,
        agent: Any,
        environment: Environment,
        heldout_key: tuple,
        agent_key: tuple,
        device: torch.device | str = "cpu",
        **extra: Any,
    ) -> pl.DataFrame:
        """Play ``agent`` on held-out tasks; a long table of the kind's rows."""
        raise NotImplementedError
