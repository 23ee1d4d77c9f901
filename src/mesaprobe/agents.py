"""Agents: anything that acts in a bandit-like environment, one step at a time.

(Predictors, which only predict tokens of prediction environments, have
``predict(environment, tasks, tokens) -> probs``; :class:`ModelPredictor` wraps a model.
Regressors predict the targets of regression environments the same way,
``predict(environment, tasks, examples) -> predictions``; :class:`ModelRegressor`.)

An agent has ``initial_state(batch, horizon, device)`` and
``act(state, observation, generator) -> (state, action)``.  A trained sequence model
becomes an agent through :class:`ModelAgent`; the untrained baselines in
:mod:`mesaprobe.baselines` are agents too, so probes treat both alike.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from mesaprobe.models.base import SequenceModel
from mesaprobe.seeding import SeedGenerators, uniform


def sample_categorical(logits: Tensor, generator: torch.Generator | SeedGenerators) -> Tensor:
    """One draw per row from softmax(logits), by the Gumbel-max trick (no host sync)."""
    draws = uniform(logits.shape, generator, logits.device, logits.dtype)
    gumbel = -torch.log(-torch.log(draws.clamp_min(torch.finfo(logits.dtype).tiny)))
    return (logits + gumbel).argmax(dim=-1)


def policy_and_value(outputs: Tensor, actions: int) -> tuple[Tensor, Tensor]:
    """Split an actor-critic model's outputs (..., actions + 1) into logits and value."""
    return outputs[..., :actions], outputs[..., actions]


class ModelAgent:
    """A sequence model acting through its policy head (sampled, or greedy)."""

    def __init__(self, model: SequenceModel, actions: int, policy: Literal["sample", "greedy"] = "sample"):
        self.model = model
        self.actions = actions
        self.policy = policy

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> Any:
        return self.model.initial_state(batch, horizon, device)

    def act(self, state: Any, observation: Tensor, generator: torch.Generator) -> tuple[Any, Tensor]:
        state, outputs = self.model.step(state, observation)
        logits, _ = policy_and_value(outputs, self.actions)
        if self.policy == "greedy":
            return state, logits.argmax(dim=-1)
        return state, sample_categorical(logits, generator)


class ModelPredictor:
    """A sequence model predicting every next token of whole sequences (prediction environments)."""

    def __init__(self, model: SequenceModel):
        self.model = model

    def predict(self, environment, tasks, tokens: Tensor) -> Tensor:
        """(B, T, K) float64 probabilities of each token given the tokens before it."""
        logits = self.model(environment.observation(tokens))  # (B, T, K)
        return torch.softmax(logits.double(), dim=-1)


class ModelRegressor(ModelPredictor):
    """A sequence model predicting every target of whole regression episodes (its one output)."""

    def predict(self, environment, tasks, examples) -> Tensor:
        """(B, K) float64 prediction of each target y_k from x_1..x_k and y_1..y_(k-1)."""
        return self.model(environment.observation(examples))[..., 0].double()
