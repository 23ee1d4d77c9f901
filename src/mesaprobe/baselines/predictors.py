"""Reference predictors for prediction environments: the exact Bayes-optimal one and the oracle.

Neither is trained.  ``bayes_optimal`` knows the environment's prior but not the task:
its predictive is the family's exact posterior predictive, the floor of expected
log-loss for any predictor that, like a sequence model, sees only the tokens.
``oracle`` also knows the task (every hidden parameter, change points included): the
floor for a predictor that had nothing left to learn.  A model's log-loss between the
two measures how much of the learnable structure it picks up in context.

Each predictor is built as ``cls(config, environment)`` like the bandit baselines and
answers ``predict(environment, tasks, tokens) -> (B, T, K)`` probabilities of token t
given tokens < t; :func:`logloss_bits` scores them.  ``oracle`` also serves regression
environments, where it predicts w . x_k with the true w (the noise floor; the exact
regression references are in :mod:`mesaprobe.baselines.regression`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from mesaprobe.baselines.base import Baseline
from mesaprobe.metrics import logloss_bits  # noqa: F401  (re-exported for predictors)


@dataclass(frozen=True)
class BayesOptimalConfig:
    """No settings: the prior is the environment's own."""

    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class OracleConfig:
    """No settings: the task is the one that generated the tokens."""

    def validate(self) -> None:
        pass


class PredictionBaseline(Baseline):
    """Shared body: checks that the environment is a prediction environment."""

    serves: ClassVar[tuple[str, ...]] = ("prediction",)

    def __init__(self, config=None, environment=None):
        self.config = self.Config() if config is None else config
        if environment is not None:
            self.check(environment)
        self.environment = environment

    def predict(self, environment, tasks, tokens: Tensor) -> Tensor:
        raise NotImplementedError


class BayesOptimalPredictor(PredictionBaseline):
    """Exact posterior predictive under the environment's prior; never looks at ``tasks``."""

    Config: ClassVar[type] = BayesOptimalConfig

    def predict(self, environment, tasks, tokens: Tensor) -> Tensor:
        self.check(environment)
        return environment.bayes_predict(tokens)


class OraclePredictor(PredictionBaseline):
    """Predictive given the true task of each episode (regression: w . x_k with the true w)."""

    Config: ClassVar[type] = OracleConfig
    serves: ClassVar[tuple[str, ...]] = ("prediction", "regression")

    def predict(self, environment, tasks, tokens: Tensor) -> Tensor:
        self.check(environment)
        return environment.oracle_predict(tasks, tokens)
