"""Log-loss training of next-token predictors on sequence-prediction environments.

Each update samples ``batch`` fresh tasks, draws one sequence of ``horizon`` tokens
from each, and takes one gradient step on the mean cross-entropy of the model's
prediction of every token from the tokens before it (teacher forcing over whole
sequences: the same computation as acting step by step, which the model tests check).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from mesaprobe.train.algorithm import Algorithm
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.stacked import per_seed_mean
from mesaprobe.train.state import TrainingState, gradient_step, schedule


def predict_update(
    environment, state: TrainingState, config: TrainingConfig, total_updates: int
) -> dict[str, Tensor]:
    """One batch of fresh sequences and one gradient step; returns log-loss statistics."""
    schedule(config, state, total_updates)
    model = state.model
    tasks = environment.sample_tasks(config.batch, state.task_generator, model.device)
    tokens = environment.sample(tasks, state.task_generator)  # (B, T)
    logits = model(environment.observation(tokens))  # (B, T, K)
    if state.seeds == 1:
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))
    else:  # each seed's own mean (mesaprobe.train.stacked)
        losses = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # (S * B, T)
        loss = per_seed_mean(losses, state.seeds)
    gradient_step(state, loss, config)
    return {"logloss_bits": loss.detach() / math.log(2)}


class Predict(Algorithm):
    """Log-loss training of a next-token predictor (prediction environments)."""

    serves: ClassVar[tuple[str, ...]] = ("prediction",)
    update = staticmethod(predict_update)
