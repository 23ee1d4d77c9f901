"""What the probes that look inside a frozen learner share (``readout``, ``fitted_learner``,
``in_weights``): they write inside tables (:mod:`mesaprobe.analysis.inside`) rather than
per-episode curves, play the environment as it was trained, and declare their charts
(:mod:`mesaprobe.analysis.inside_charts`)."""

from __future__ import annotations

from typing import Any, ClassVar

from mesaprobe.envs.base import Environment


class InsideProbe:
    """Base of the inside probe kinds; a kind sets ``Config``, ``serves``, ``charts``,
    ``task`` and ``run(agent, environment, heldout_key, agent_key, device, untrained)``."""

    Config: ClassVar[type]
    serves: ClassVar[tuple[str, ...]]
    #: Its job writes an inside table, not curves.
    writes: ClassVar[str] = "inside"
    #: Whether untrained baseline agents are probed too (False where hidden states are read).
    plays_baselines: ClassVar[bool] = True
    #: Its charts (keys of mesaprobe.analysis.inside_charts.INSIDE_CHARTS).
    charts: ClassVar[tuple[str, ...]] = ()
    #: What it does, for the note of a study that asks it of another kind of environment.
    task: ClassVar[str]

    def __init__(self, config: Any):
        self.config = config

    @classmethod
    def not_applicable(cls, config: Any, kind: str) -> str | None:
        """Why these settings cannot probe an environment of ``kind`` (None: they can)."""
        if kind not in cls.serves:
            return f"the {cls.task}; it serves {' and '.join(cls.serves)} environments, not {kind}"
        return None

    def environment(self, trained: Environment) -> Environment:
        """The environment it plays: the trained one as it is (no out-of-distribution transforms)."""
        return trained
