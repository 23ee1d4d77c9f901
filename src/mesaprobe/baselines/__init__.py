"""Baselines: policies and predictors that are not trained, played on the runs' held-out tasks.

The contract is :class:`mesaprobe.baselines.base.Baseline`: a ``Config`` dataclass (its
settings), ``serves`` (the environment kinds it plays), built as ``cls(config, environment)``;
acting baselines are agents (``initial_state``, ``act``) played by
:func:`mesaprobe.train.rollout.play` like a frozen model, prediction and regression baselines
``predict``.  Adding one: a class and one ``register`` line below.
"""

from __future__ import annotations

from typing import ClassVar

from mesaprobe.baselines.bandit import (
    ArmCounts,
    BanditBaseline,
    EpsilonGreedyBaseline,
    GreedyBaseline,
    OptimisticThompsonBaseline,
    RandomBaseline,
    ThompsonBaseline,
    UCB1Baseline,
)
from mesaprobe.baselines.base import Baseline
from mesaprobe.baselines.bayes_optimal import BayesOptimalBaseline
from mesaprobe.baselines.commitment import CommitDeterministic, CommitOptimal
from mesaprobe.baselines.gittins import GittinsBaseline
from mesaprobe.baselines.mdp import (
    OracleMDPBaseline,
    PlansWithTask,
    PSRLBaseline,
    QLearningBaseline,
    RandomMDPBaseline,
)
from mesaprobe.baselines.predictors import BayesOptimalPredictor, OraclePredictor
from mesaprobe.baselines.regression import DiscreteMMSEPredictor, RidgePredictor
from mesaprobe.registry import Registry


class BayesOptimal(Baseline):
    """The exact Bayes-optimal agent of an environment: the finite-horizon optimal bandit
    policy (dynamic programming over posterior counts) or the exact posterior-predictive
    sequence predictor, chosen by the environment's kind."""

    Config: ClassVar[type] = BayesOptimalBaseline.Config
    serves: ClassVar[tuple[str, ...]] = ("bandit", "prediction")
    optimal_for: ClassVar[tuple[str, ...]] = ("bandit", "prediction")

    @classmethod
    def skip_reason(cls, config, environment) -> str | None:
        if environment.kind == "prediction":
            return None
        return BayesOptimalBaseline.skip_reason(config, environment)

    def __new__(cls, config, environment):
        if environment.kind == "prediction":
            return BayesOptimalPredictor(BayesOptimalPredictor.Config(), environment)
        return BayesOptimalBaseline(config, environment)


class Random(Baseline):
    """A uniformly random action every step (bandits and MDPs), chosen by the environment's kind."""

    Config: ClassVar[type] = RandomBaseline.Config
    serves: ClassVar[tuple[str, ...]] = ("bandit", "mdp")

    def __new__(cls, config, environment):
        if environment.kind == "mdp":
            return RandomMDPBaseline(RandomMDPBaseline.Config(), environment)
        return RandomBaseline(config, environment)


class Oracle(Baseline):
    """The agent that knows the task: the true predictive of a sequence or regression task, or
    the optimal policy of the true MDP, chosen by the environment's kind."""

    Config: ClassVar[type] = OraclePredictor.Config
    serves: ClassVar[tuple[str, ...]] = ("prediction", "regression", "mdp")

    def __new__(cls, config, environment):
        if environment.kind == "mdp":
            return OracleMDPBaseline(OracleMDPBaseline.Config(), environment)
        return OraclePredictor(config, environment)


BASELINES: Registry[type[Baseline]] = Registry("baseline")
BASELINES.register("random")(Random)
BASELINES.register("greedy")(GreedyBaseline)
BASELINES.register("eps_greedy")(EpsilonGreedyBaseline)
BASELINES.register("ucb1")(UCB1Baseline)
BASELINES.register("thompson")(ThompsonBaseline)
BASELINES.register("optimistic_thompson")(OptimisticThompsonBaseline)
BASELINES.register("gittins")(GittinsBaseline)
BASELINES.register("bayes_optimal")(BayesOptimal)
BASELINES.register("oracle")(Oracle)
BASELINES.register("commit_optimal")(CommitOptimal)
BASELINES.register("commit_deterministic")(CommitDeterministic)
BASELINES.register("ridge")(RidgePredictor)
BASELINES.register("dmmse")(DiscreteMMSEPredictor)
BASELINES.register("psrl")(PSRLBaseline)
BASELINES.register("q_learning")(QLearningBaseline)


def build_baseline(name: str, config, environment) -> Baseline:
    """The baseline registered as ``name``; ``config=None`` means its default settings."""
    cls = BASELINES.get(name)
    if config is None:
        config = cls.Config()
    if not isinstance(config, cls.Config):
        raise TypeError(f"baseline {name!r} takes a {cls.Config.__name__}, got {type(config).__name__}")
    return cls(config, environment)


__all__ = ["BASELINES", "ArmCounts", "BanditBaseline", "Baseline", "PlansWithTask", "build_baseline"]
