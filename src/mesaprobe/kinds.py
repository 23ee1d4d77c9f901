"""Environment kinds: what the kind of an environment decides for everything built on it.

Every environment family names its kind (``Environment.kind``: ``bandit``, ``commitment``,
``prediction``, ``regression``, ``mdp``), and :data:`KINDS` maps the name to an
:class:`EnvironmentKind`, which carries what used to be decided by ``if kind == ...`` in
several places: the metric family of its tables, the size of a model's output, how a
frozen model becomes an agent, and how one batch of held-out episodes is played and
scored by the adaptation probe.  Training algorithms, probes and baselines say which kinds
they serve by name.

A new environment family of an existing kind needs nothing here; a new kind is one
:class:`EnvironmentKind` subclass and one ``register`` line.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from mesaprobe.agents import ModelAgent, ModelPredictor, ModelRegressor
from mesaprobe.baselines.mdp import PlansWithTask
from mesaprobe.envs.base import Environment
from mesaprobe.metrics import (
    BANDIT_METRICS,
    COMMITMENT_METRICS,
    MDP_METRICS,
    PREDICTION_METRICS,
    REGRESSION_METRICS,
    MetricFamily,
    bandit_step_metrics,
    mdp_step_metrics,
    prediction_step_metrics,
    regression_step_metrics,
)
from mesaprobe.models.base import SequenceModel
from mesaprobe.registry import Registry
from mesaprobe.train.rollout import play


class EnvironmentKind:
    """Base of the environment kinds; see the module docstring."""

    #: Filled in by the registry: the name environments give as their ``kind``.
    registered_name: ClassVar[str]
    #: The metrics its probes write (:mod:`mesaprobe.metrics`).
    metrics: ClassVar[MetricFamily]
    #: Played by an agent choosing actions (trained by a2c/ppo, a policy and a value head);
    #: otherwise predicted (the model's outputs are its predictions).
    acting: ClassVar[bool]
    #: How an agent's distance to the optimum is stated as a ratio (:mod:`mesaprobe.analysis.differences`):
    #: ``optimum``: its cumulative regret over the exact optimum's on the same tasks (the
    #: optimum baseline must play them); ``own``: its loss over the exact Bayes predictor's on
    #: the same sequences, which its own table carries (loss minus regret); None: no ratio.
    regret_ratio: ClassVar[Literal["optimum", "own"] | None] = None

    def output_size(self, environment: Environment) -> int:
        """Outputs of a model of this environment."""
        raise NotImplementedError

    def agent(
        self, model: SequenceModel, environment: Environment, policy: Literal["sample", "greedy"]
    ) -> Any:
        """A frozen model as the agent probes play (``policy`` applies to acting kinds)."""
        raise NotImplementedError

    def step_metrics(
        self,
        agent: Any,
        environment: Environment,
        tasks: Any,
        luck: torch.Generator,
        actions: torch.Generator,
    ) -> dict[str, Tensor]:
        """Play or predict one episode of each of ``tasks``; its ``metrics.step_metrics``, each (B, T)."""
        raise NotImplementedError(f"{self.registered_name} environments are not scored step by step")


class ActingKind(EnvironmentKind):
    """Kinds played by an agent: outputs are the policy's logits and a value."""

    acting: ClassVar[bool] = True

    def output_size(self, environment: Environment) -> int:
        return environment.action_count + 1

    def agent(
        self, model: SequenceModel, environment: Environment, policy: Literal["sample", "greedy"]
    ) -> Any:
        return ModelAgent(model, environment.action_count, policy=policy)


class BanditKind(ActingKind):
    """Bandits: regret against the best arm's expected reward, per pull."""

    metrics: ClassVar[MetricFamily] = BANDIT_METRICS
    regret_ratio: ClassVar[Literal["optimum", "own"] | None] = "optimum"

    def step_metrics(
        self,
        agent: Any,
        environment: Environment,
        tasks: Any,
        luck: torch.Generator,
        actions: torch.Generator,
    ) -> dict[str, Tensor]:
        trajectory = play(environment, tasks, agent, luck, actions)
        return bandit_step_metrics(trajectory.expected_rewards, trajectory.best_expected_rewards)


class MDPKind(ActingKind):
    """Tabular MDPs: value regret against the true MDP's optimal action values, per step.

    An agent that plans with the true task (the oracle baseline, :class:`PlansWithTask`) is
    given the tasks before it plays them.
    """

    metrics: ClassVar[MetricFamily] = MDP_METRICS

    def step_metrics(
        self,
        agent: Any,
        environment: Environment,
        tasks: Any,
        luck: torch.Generator,
        actions: torch.Generator,
    ) -> dict[str, Tensor]:
        if isinstance(agent, PlansWithTask):
            agent = agent.for_tasks(tasks)
        trajectory = play(environment, tasks, agent, luck, actions)
        value_regrets = environment.value_regret(tasks, trajectory.observations, trajectory.actions)
        return mdp_step_metrics(trajectory.expected_rewards, value_regrets)


class CommitmentKind(ActingKind):
    """The commitment game: one outcome per episode (the commitment probe scores it)."""

    metrics: ClassVar[MetricFamily] = COMMITMENT_METRICS


class PredictionKind(EnvironmentKind):
    """Next-token prediction: log-loss against the exact Bayes predictor, per token."""

    metrics: ClassVar[MetricFamily] = PREDICTION_METRICS
    acting: ClassVar[bool] = False
    regret_ratio: ClassVar[Literal["optimum", "own"] | None] = "own"

    def output_size(self, environment: Environment) -> int:
        return environment.symbols

    def agent(
        self, model: SequenceModel, environment: Environment, policy: Literal["sample", "greedy"]
    ) -> Any:
        return ModelPredictor(model)

    def step_metrics(
        self,
        agent: Any,
        environment: Environment,
        tasks: Any,
        luck: torch.Generator,
        actions: torch.Generator,
    ) -> dict[str, Tensor]:
        tokens = environment.sample(tasks, luck)  # (B, T)
        probs = agent.predict(environment, tasks, tokens)
        return prediction_step_metrics(probs, environment.bayes_predict(tokens), tokens)


class RegressionKind(EnvironmentKind):
    """In-context regression: squared error against ridge (exact Bayes), per example."""

    metrics: ClassVar[MetricFamily] = REGRESSION_METRICS
    acting: ClassVar[bool] = False
    regret_ratio: ClassVar[Literal["optimum", "own"] | None] = "own"

    def output_size(self, environment: Environment) -> int:
        return 1

    def agent(
        self, model: SequenceModel, environment: Environment, policy: Literal["sample", "greedy"]
    ) -> Any:
        return ModelRegressor(model)

    def step_metrics(
        self,
        agent: Any,
        environment: Environment,
        tasks: Any,
        luck: torch.Generator,
        actions: torch.Generator,
    ) -> dict[str, Tensor]:
        examples = environment.sample(tasks, luck)  # inputs (B, K, D), targets (B, K)
        predictions = agent.predict(environment, tasks, examples)  # (B, K)
        ridge = environment.bayes_predict(examples)
        return regression_step_metrics(predictions, ridge, examples.targets, environment.dimension)


KINDS: Registry[EnvironmentKind] = Registry("environment kind")
KINDS.register("bandit")(BanditKind())
KINDS.register("commitment")(CommitmentKind())
KINDS.register("prediction")(PredictionKind())
KINDS.register("regression")(RegressionKind())
KINDS.register("mdp")(MDPKind())


def kind_of(environment: Environment | type[Environment]) -> EnvironmentKind:
    """The kind of an environment (or of an environment family)."""
    return KINDS.get(environment.kind)
