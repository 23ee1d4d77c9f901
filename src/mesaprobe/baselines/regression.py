"""Exact reference predictors of in-context linear regression: ``ridge`` and ``dmmse``.

Both answer ``predict(environment, tasks, examples) -> (B, K)`` float64 predictions of
each target y_k from x_1..x_k and y_1..y_(k-1), like a frozen model (they never look at
``tasks``).  The two ends of Raventós et al. (2023):

* ``ridge``: the posterior mean of y_k under the Gaussian prior w ~ N(0, I_D), i.e. ridge
  regression with penalty = noise variance on the examples so far (0 at the first step);
  Bayes-optimal on fresh tasks, and the regret reference of every agent;
* ``dmmse``: the posterior mean when w is one of the M tasks of the run's training pool,
  each a priori equally likely (the ``task_pool`` of the environment; the pool of the
  baseline's seed, the one every architecture of that seed trained on): weights
  proportional to prod_(j < k) N(y_j; w_m . x_j, noise variance), prediction the
  weighted mean of w_m . x_k.  Bayes-optimal on the pool's own tasks; a model that
  memorised its pool and locates the current task behaves like it.  Without a pool
  (unlimited tasks) it is not defined, and the plan skips it.  Under the probe's
  ``project_inputs`` it still assumes untransformed pool tasks: the predictor that
  can only locate tasks it memorised, no longer optimal there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mesaprobe.baselines.base import Baseline
from mesaprobe.envs.linear_regression import REAL, ridge_predict
from mesaprobe.errors import UserError

#: Elements of one (episodes, steps, pool tasks) block of the dmmse posterior (bounds its memory).
POOL_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class RidgeConfig:
    """No settings: the penalty is the environment's noise variance (the Bayes posterior mean)."""

    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class DiscreteMMSEConfig:
    """No settings: the tasks are the training pool of the baseline's seed."""

    def validate(self) -> None:
        pass


class RegressionBaseline(Baseline):
    """Shared body: checks that the environment is a regression environment."""

    serves: ClassVar[tuple[str, ...]] = ("regression",)

    def __init__(self, config=None, environment=None):
        self.config = self.Config() if config is None else config
        if environment is not None:
            self.check(environment)
        self.environment = environment

    def predict(self, environment, tasks, examples) -> Tensor:
        raise NotImplementedError


class RidgePredictor(RegressionBaseline):
    """Ridge regression with penalty = noise variance: the exact posterior mean for w ~ N(0, I)."""

    Config: ClassVar[type] = RidgeConfig
    optimal_for: ClassVar[tuple[str, ...]] = ("regression",)

    def predict(self, environment, tasks, examples) -> Tensor:
        return ridge_predict(examples.inputs, examples.targets, environment.noise_variance)


def pool_posterior_predict(
    inputs: Tensor,
    targets: Tensor,
    pool: Tensor,
    noise_variance: float,
    block_elements: int = POOL_BLOCK_ELEMENTS,
) -> Tensor:
    """(B, K) float64 posterior mean of y_k when w is uniform over the rows of ``pool`` (M, D).

    The log weight of pool task m at step k is -sum_(j < k) (y_j - w_m . x_j)^2 / (2 noise
    variance); the softmax over m is accumulated block by block of pool tasks with a
    running maximum (a streaming log-sum-exp), so memory stays bounded for M up to 2**20.
    Time grows like B x K x M: about 5 s for 1000 episodes of K = 16, D = 8 against
    M = 2**14 tasks on one CPU core, so minutes for the largest pools.
    """
    inputs, targets, pool = inputs.to(REAL), targets.to(REAL), pool.to(REAL).to(inputs.device)
    batch, steps, _ = inputs.shape
    block = max(1, block_elements // (batch * steps))
    top = inputs.new_full((batch, steps), -torch.inf)  # running max of the log weights
    total = inputs.new_zeros(batch, steps)  # sum of exp(log weight - top)
    weighted = inputs.new_zeros(batch, steps)  # the same, times each task's prediction
    for tasks in pool.split(block):
        means = inputs @ tasks.T  # (B, K, m): every pool task's prediction at every step
        squared = (targets[..., None] - means).pow(2)
        before = torch.cat([torch.zeros_like(squared[:, :1]), squared[:, :-1].cumsum(dim=1)], dim=1)
        log_weights = -before / (2 * noise_variance)  # (B, K, m): examples before step k only
        new_top = torch.maximum(top, log_weights.amax(dim=2))
        rescale = torch.exp(top - new_top)  # 0 on the first block (top = -inf)
        weights = torch.exp(log_weights - new_top[..., None])
        total = total * rescale + weights.sum(dim=2)
        weighted = weighted * rescale + (weights * means).sum(dim=2)
        top = new_top
    return weighted / total


class DiscreteMMSEPredictor(RegressionBaseline):
    """The exact posterior mean for a uniform prior over the training pool's tasks (see the module docstring)."""

    Config: ClassVar[type] = DiscreteMMSEConfig
    optimal_for_pool: ClassVar[tuple[str, ...]] = ("regression",)
    #: Built with ``pool=``: the tasks of the seed's training pool (see :func:`mesaprobe.jobs.baseline_job`).
    needs_task_pool: ClassVar[bool] = True
    #: Why the plan skips it on an environment without a ``task_pool``.
    without_task_pool: ClassVar[str] = (
        "dmmse is the Bayes-optimal predictor for a finite pool of training tasks, and this "
        "environment has no task_pool (unlimited tasks; ridge is Bayes-optimal there)"
    )

    def __init__(self, config=None, environment=None, pool=None):
        super().__init__(config, environment)
        if pool is None:
            raise UserError(f"dmmse: {self.without_task_pool}")
        self.pool = pool.weights  # (M, D)

    def predict(self, environment, tasks, examples) -> Tensor:
        return pool_posterior_predict(
            examples.inputs, examples.targets, self.pool, environment.noise_variance
        )
