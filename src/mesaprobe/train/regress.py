"""Squared-error training of in-context regressors on regression environments.

Each update samples ``batch`` tasks (fresh, or from the run's task pool), draws one
episode of ``horizon`` examples from each, and takes one gradient step on the mean
squared error of the model's prediction of every target y_k from x_1..x_k and
y_1..y_(k-1), divided by the input dimension D (the ``mse_per_dim`` of
:mod:`mesaprobe.metrics`).  Whole sequences at once, as in log-loss training.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from mesaprobe.train.algorithm import Algorithm
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.stacked import per_seed_mean
from mesaprobe.train.state import TrainingState, gradient_step, schedule


def regress_update(
    environment, state: TrainingState, config: TrainingConfig, total_updates: int
) -> dict[str, Tensor]:
    """One batch of fresh episodes and one gradient step; returns the squared error per dimension."""
    schedule(config, state, total_updates)
    model = state.model
    tasks = environment.sample_tasks(config.batch, state.task_generator, model.device)
    examples = environment.sample(tasks, state.task_generator)  # inputs (B, K, D), targets (B, K)
    predictions = model(environment.observation(examples))[..., 0]  # (B, K)
    targets = examples.targets.to(predictions.dtype)
    if state.seeds == 1:
        loss = F.mse_loss(predictions, targets) / environment.dimension
    else:  # each seed's own mean (mesaprobe.train.stacked)
        loss = (
            per_seed_mean(F.mse_loss(predictions, targets, reduction="none"), state.seeds)
            / environment.dimension
        )
    gradient_step(state, loss, config)
    return {"mse_per_dim": loss.detach()}


class Regress(Algorithm):
    """Squared-error training of an in-context regressor (regression environments)."""

    serves: ClassVar[tuple[str, ...]] = ("regression",)
    update = staticmethod(regress_update)
