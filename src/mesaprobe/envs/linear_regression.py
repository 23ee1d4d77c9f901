"""In-context linear regression (Raventós et al. 2023): learn a weight vector from K examples.

A task is a weight vector w ~ N(0, I_D).  An episode is ``horizon`` = K examples
(x_k, y_k) with inputs x_k ~ N(0, I_D) and targets y_k = w . x_k + eps_k,
eps_k ~ N(0, noise_variance).  At step k the predictor has seen x_1..x_k and
y_1..y_(k-1) and predicts y_k (one number).  The environment provides::

    sample_tasks(n, generator, device) -> RegressionTasks   # weights (B, D)
    sample(tasks, generator) -> Examples                    # inputs (B, K, D), targets (B, K)
    bayes_predict(examples) -> (B, K)                       # posterior mean of y_k: ridge, exact
    oracle_predict(tasks, examples) -> (B, K)               # w . x_k with the true w
    observation(examples) -> (B, K, 2 D + 2)                # a sequence model's inputs

Model inputs (one row per step k = 1..K, causal): ``[x_k, x_(k-1), y_(k-1), (k - 1) / K]``,
with zeros for x_0 and y_0 at the first step.  Each row carries one complete earlier
example next to the current query, so a recurrent model can fold (x_(k-1), y_(k-1))
into its state and a Transformer reads whole examples from single positions (the
interleaved tokens x_1, y_1, x_2, ... of Raventós et al. carry the same information at
twice the length); the last column is the time input of the prediction families.

The Bayes-optimal predictor under the Gaussian prior is the posterior mean of w,
which is ridge regression with penalty lambda = noise_variance (the prior variance of
each weight is 1): w_hat(k - 1) = (X^T X + lambda I)^(-1) X^T y over the k - 1 earlier
examples, prediction x_k . w_hat (0 at the first step).  :func:`ridge_predict` computes
it in float64; tasks, inputs and targets are float64 too, model inputs float32.

The prior is rotation invariant, so :class:`ProjectedRegression` (every input turned by
one fixed random orthogonal matrix, the adaptation probe's ``project_inputs``) leaves
ridge exact: rotated inputs are again N(0, I), the rotated task Q w is again N(0, I),
and ridge's predictions are unchanged by the rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from mesaprobe.envs.base import Environment
from mesaprobe.seeding import fixed_orthogonal
from mesaprobe.settings import SettingError

#: dtype of tasks, examples and exact predictions.
REAL = torch.float64


@dataclass(frozen=True)
class LinearRegressionConfig:
    dimension: int = 8
    """D: size of every input x and of the task's weight vector w."""
    horizon: int = 16
    """K: examples (x, y) per episode; the predictor predicts each y from the examples before it."""
    noise_variance: float = 0.25
    """Variance of the Gaussian noise on every target y = w . x + noise (0.25: noise scale 0.5,
    as Raventós et al.); ridge's penalty is this value."""

    def validate(self) -> None:
        for name in ("dimension", "horizon"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        if not self.noise_variance > 0:
            raise SettingError(
                "noise_variance",
                f"expected a positive variance (the exact predictors need noise), got {self.noise_variance}",
            )


@dataclass(frozen=True)
class RegressionTasks:
    weights: Tensor
    """(B, D) weight vector w of every task."""


@dataclass(frozen=True)
class Examples:
    """The K examples of every episode of a batch."""

    inputs: Tensor
    """(B, K, D) inputs x_k."""
    targets: Tensor
    """(B, K) targets y_k = w . x_k + noise."""


def ridge_predict(inputs: Tensor, targets: Tensor, penalty: float) -> Tensor:
    """(B, K) float64: x_k . w_hat(k - 1), ridge with ``penalty`` fitted on the examples before k.

    With penalty = noise variance this is the posterior mean of y_k under a N(0, I) prior on w.
    """
    inputs, targets = inputs.to(REAL), targets.to(REAL)
    batch, steps, dimension = inputs.shape
    gram = penalty * torch.eye(dimension, dtype=REAL, device=inputs.device).expand(batch, -1, -1)  # (B, D, D)
    moment = inputs.new_zeros(batch, dimension)  # (B, D): X^T y so far
    predictions = inputs.new_empty(batch, steps)
    for k in range(steps):
        weights = torch.linalg.solve(gram, moment)  # (B, D), zeros before the first example
        predictions[:, k] = (inputs[:, k] * weights).sum(dim=1)
        gram = gram + inputs[:, k, :, None] * inputs[:, k, None, :]
        moment = moment + inputs[:, k] * targets[:, k, None]
    return predictions


def regression_inputs(examples: Examples, time_horizon: int) -> Tensor:
    """(B, K, 2 D + 2) float32 model inputs: x_k, x_(k-1), y_(k-1) (zeros at k = 1), (k - 1) / time_horizon."""
    inputs, targets = examples.inputs.float(), examples.targets.float()
    batch, steps, _ = inputs.shape
    previous_inputs = torch.cat([torch.zeros_like(inputs[:, :1]), inputs[:, :-1]], dim=1)  # (B, K, D)
    previous_targets = torch.cat([torch.zeros_like(targets[:, :1]), targets[:, :-1]], dim=1)  # (B, K)
    time = torch.arange(steps, device=inputs.device, dtype=torch.float32) / time_horizon
    return torch.cat(
        [inputs, previous_inputs, previous_targets[..., None], time[None, :, None].expand(batch, steps, 1)],
        dim=2,
    )


class LinearRegression(Environment):
    """Noisy linear regression tasks with a Gaussian prior; see the module docstring."""

    kind: ClassVar[str] = "regression"
    Config: ClassVar[type] = LinearRegressionConfig

    def __init__(self, config: LinearRegressionConfig):
        config.validate()
        super().__init__(config)
        self.dimension: int = config.dimension
        self.noise_variance: float = config.noise_variance
        self.observation_size: int = 2 * config.dimension + 2

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> RegressionTasks:
        weights = torch.randn((n, self.dimension), generator=generator, device=device, dtype=REAL)
        return RegressionTasks(weights=weights)

    def sample(self, tasks: RegressionTasks, generator: torch.Generator) -> Examples:
        """K examples of every task: inputs N(0, I), targets w . x plus Gaussian noise."""
        batch, device = tasks.weights.shape[0], tasks.weights.device
        inputs = torch.randn(
            (batch, self.horizon, self.dimension), generator=generator, device=device, dtype=REAL
        )
        noise = torch.randn((batch, self.horizon), generator=generator, device=device, dtype=REAL)
        targets = (inputs * tasks.weights[:, None, :]).sum(dim=2) + self.noise_variance**0.5 * noise
        return Examples(inputs=inputs, targets=targets)

    def bayes_predict(self, examples: Examples) -> Tensor:
        """(B, K) posterior mean of each target given the examples before it: ridge, lambda = noise variance."""
        return ridge_predict(examples.inputs, examples.targets, self.noise_variance)

    def oracle_predict(self, tasks: RegressionTasks, examples: Examples) -> Tensor:
        """(B, K) w . x_k with the true w of each episode (its expected squared error is the noise variance)."""
        return (examples.inputs.to(REAL) * tasks.weights.to(REAL)[:, None, :]).sum(dim=2)

    def observation(self, examples: Examples) -> Tensor:
        return regression_inputs(examples, self.horizon)


class ProjectedRegression:
    """A regression environment whose inputs are all turned by one fixed random orthogonal matrix Q.

    The out-of-distribution relabelling of regression (Kirsch et al. 2022): the probed
    tasks are the wrapped environment's (its pool's, under ``tasks: pool``), but every
    input x is shown as Q x, so a task w appears as Q w, a weight vector the model
    never saw in training.  Q is drawn once (:func:`mesaprobe.seeding.fixed_orthogonal`),
    the same for every agent and run.  Ridge stays the exact posterior mean: rotated
    inputs and rotated tasks have the prior's own distribution.
    """

    kind = "regression"

    def __init__(self, base):
        self.base = base
        self.config = base.config
        self.horizon = base.horizon
        self.dimension = base.dimension
        self.noise_variance = base.noise_variance
        self.observation_size = base.observation_size
        self.projection = fixed_orthogonal(base.dimension, "input-projection")  # (D, D) float64

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> Any:
        return self.base.sample_tasks(n, generator, device)

    def sample(self, tasks, generator: torch.Generator) -> Examples:
        examples = self.base.sample(tasks, generator)
        projection = self.projection.to(examples.inputs.device)
        return Examples(inputs=examples.inputs @ projection.T, targets=examples.targets)  # rows Q x_k

    def bayes_predict(self, examples: Examples) -> Tensor:
        return ridge_predict(examples.inputs, examples.targets, self.noise_variance)

    def oracle_predict(self, tasks, examples: Examples) -> Tensor:
        """(B, K) (Q w) . (Q x_k) = w . x_k with the true w."""
        original = examples.inputs @ self.projection.to(examples.inputs.device)  # rows Q^T Q x_k = x_k
        return self.base.oracle_predict(tasks, Examples(inputs=original, targets=examples.targets))

    def observation(self, examples: Examples) -> Tensor:
        return self.base.observation(examples)
