"""Baselines: policies that are not trained.  Adding one: a class and one ``register`` line.

Each baseline class carries a frozen ``Config`` dataclass (its settings), a
``serves`` tuple naming the environment kinds it plays, and is built as
``cls(config, environment)``; the result is an agent with ``initial_state`` and
``act``, played by :func:`mesaprobe.train.rollout.play` like a frozen model.
"""

from __future__ import annotations

from mesaprobe.baselines.bandit import (
    ArmCounts,
    BanditBaseline,
    EpsilonGreedyBaseline,
    GreedyBaseline,
    RandomBaseline,
    ThompsonBaseline,
    UCB1Baseline,
)
from mesaprobe.registry import Registry

BASELINES: Registry[type[BanditBaseline]] = Registry("baseline")
BASELINES.register("random")(RandomBaseline)
BASELINES.register("greedy")(GreedyBaseline)
BASELINES.register("eps_greedy")(EpsilonGreedyBaseline)
BASELINES.register("ucb1")(UCB1Baseline)
BASELINES.register("thompson")(ThompsonBaseline)


def build_baseline(name: str, config, environment) -> BanditBaseline:
    """The baseline registered as ``name``; ``config=None`` means its default settings."""
    cls = BASELINES.get(name)
    if config is None:
        config = cls.Config()
    if not isinstance(config, cls.Config):
        raise TypeError(f"baseline {name!r} takes a {cls.Config.__name__}, got {type(config).__name__}")
    return cls(config, environment)


__all__ = ["BASELINES", "ArmCounts", "BanditBaseline", "build_baseline"]
