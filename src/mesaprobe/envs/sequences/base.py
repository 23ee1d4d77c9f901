"""What every sequence-prediction family provides, and the loops they share.

A prediction environment emits tokens from an alphabet of ``symbols`` values
(``0`` = sun and ``1`` = rain in the binary weather world of the seed essay).  A
*task* is one draw of the family's hidden parameters; an episode is ``horizon``
tokens generated from it.  Every family provides::

    sample_tasks(n, generator, device) -> tasks      # frozen dataclass, batch first
    sample(tasks, generator) -> tokens               # (B, T) long, T = horizon
    bayes_predict(tokens) -> probs                   # (B, T, K) exact posterior predictive
    oracle_predict(tasks, tokens) -> probs           # (B, T, K) predictive given the task
    observation(tokens) -> inputs                    # (B, T, K + 1) for a sequence model

Row ``t`` of ``bayes_predict`` is P(x_t = k | x_<t) under the family's prior (row 0 is
the prior predictive); row ``t`` of ``oracle_predict`` is P(x_t = k | x_<t, task).

Both predictors are *filters* that move through time with the whole batch in
lockstep, and a family writes each as three small functions:

    prior_state(batch, device) -> state     posterior_predictive(state) -> (B, K)
    posterior_update(state, token) -> state
    oracle_state(tasks) -> state            oracle_predictive(state) -> (B, K)
    oracle_update(state, token) -> state

This base class turns them into ``bayes_predict``, ``oracle_predict`` and ``sample``
(which draws each token from the oracle predictive, so the sampler and the oracle
cannot disagree).  Filter states are frozen dataclasses of tensors with the batch
first, so :mod:`~mesaprobe.envs.sequences.drifting` can stack, restart and select
the filters of other families row by row.  Probabilities are float64 throughout:
the Bayes predictors are exact, and tests hold them to 1e-9.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from mesaprobe.envs.base import Environment
from mesaprobe.settings import SettingError

#: dtype of every probability (tasks, filters, predictions).
PROBABILITY = torch.float64


class PredictionEnvironment(Environment):
    """Base of the sequence-prediction families; see the module docstring for the contract."""

    kind: ClassVar[str] = "prediction"

    def __init__(self, config):
        config.validate()
        super().__init__(config)
        self.symbols: int = config.symbols
        self.observation_size: int = config.symbols + 1  # one-hot previous token, time fraction

    # Filters every family writes (see the module docstring).
    def prior_state(self, batch: int, device: torch.device | str) -> Any:
        raise NotImplementedError

    def posterior_predictive(self, state) -> Tensor:
        raise NotImplementedError

    def posterior_update(self, state, token: Tensor) -> Any:
        raise NotImplementedError

    def oracle_state(self, tasks) -> Any:
        raise NotImplementedError

    def oracle_predictive(self, state) -> Tensor:
        raise NotImplementedError

    def oracle_update(self, state, token: Tensor) -> Any:
        raise NotImplementedError

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> Any:
        raise NotImplementedError

    # Shared loops over time.
    def sample(self, tasks, generator: torch.Generator) -> Tensor:
        """Tokens (B, T) drawn from ``tasks``, one inverse-CDF uniform per episode per step."""
        reference = first_tensor(tasks)
        batch, device = reference.shape[0], reference.device
        tokens = torch.empty((batch, self.horizon), dtype=torch.long, device=device)
        state = self.oracle_state(tasks)
        for t in range(self.horizon):
            probs = self.oracle_predictive(state)  # (B, K)
            tokens[:, t] = draw_categorical(probs, generator)
            state = self.oracle_update(state, tokens[:, t])
        return tokens

    def bayes_predict(self, tokens: Tensor) -> Tensor:
        """Exact P(x_t = k | x_<t) under the family's prior, (B, T, K) float64."""
        return self.run_filter(self.prior_state(tokens.shape[0], tokens.device), tokens, bayes=True)

    def oracle_predict(self, tasks, tokens: Tensor) -> Tensor:
        """P(x_t = k | x_<t, task) for the true task of each episode, (B, T, K) float64."""
        return self.run_filter(self.oracle_state(tasks), tokens, bayes=False)

    def bayes_predict_with_segments(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`bayes_predict` and, from the same filter, the change-point posterior after x_<t,
        for families with change points (they define ``filtered_run_lengths(state)``: the
        posterior (B, t + 1), given the token x_t just seen, of the run length r before it, r = 0
        when x_t started a segment, read from the state that x_t produced).

        Returns (probs (B, T, K), run_length (B, T), change_probability (B, T)), float64; row t
        is conditioned on the t tokens x_0 .. x_{t-1}: ``run_length`` is the posterior mean
        number of them that belong to the current segment (counting the one that started it),
        ``change_probability`` the posterior probability that the latest, x_{t-1}, started a
        segment.  Both are 0 at t = 0 (nothing seen yet).  One filter pass gives all three.
        """
        batch, steps = tokens.shape
        probs = torch.empty((batch, steps, self.symbols), dtype=PROBABILITY, device=tokens.device)
        run_length = torch.zeros((batch, steps), dtype=PROBABILITY, device=tokens.device)
        change_probability = torch.zeros_like(run_length)
        state = self.prior_state(batch, tokens.device)
        for t in range(steps):
            probs[:, t] = self.posterior_predictive(state)
            if t + 1 < steps:
                state = self.posterior_update(state, tokens[:, t])
                filtered = self.filtered_run_lengths(state)  # (B, t + 1): run length r = 0 .. t
                in_segment = torch.arange(1, t + 2, dtype=PROBABILITY, device=tokens.device)  # r + 1
                run_length[:, t + 1] = filtered @ in_segment
                change_probability[:, t + 1] = filtered[:, 0]
        return probs, run_length, change_probability

    def run_filter(self, state, tokens: Tensor, *, bayes: bool) -> Tensor:
        predictive = self.posterior_predictive if bayes else self.oracle_predictive
        update = self.posterior_update if bayes else self.oracle_update
        batch, steps = tokens.shape
        probs = torch.empty((batch, steps, self.symbols), dtype=PROBABILITY, device=tokens.device)
        for t in range(steps):
            probs[:, t] = predictive(state)
            if t + 1 < steps:
                state = update(state, tokens[:, t])
        return probs

    def observation(self, tokens: Tensor) -> Tensor:
        """Model inputs (B, T, K + 1) for predicting token t: one-hot x_{t-1} (zeros at t = 0), t / horizon."""
        return prediction_inputs(tokens, self.symbols, self.horizon)


def prediction_inputs(tokens: Tensor, symbols: int, time_horizon: int) -> Tensor:
    """(B, T, K + 1) inputs for predicting each token: one-hot previous token (zeros at t = 0), t / time_horizon."""
    batch, steps = tokens.shape
    previous = torch.nn.functional.one_hot(tokens[:, :-1], symbols).float()  # (B, T - 1, K)
    previous = torch.cat([previous.new_zeros(batch, 1, symbols), previous], dim=1)  # (B, T, K)
    time = torch.arange(steps, device=tokens.device, dtype=torch.float32) / time_horizon
    return torch.cat([previous, time[None, :, None].expand(batch, steps, 1)], dim=2)


# Settings shared by several families.
def check_alphabet(config) -> None:
    """Validate the ``symbols`` and ``horizon`` fields every family has."""
    if config.symbols < 2:
        raise SettingError("symbols", f"expected at least 2 symbols, got {config.symbols}")
    if config.horizon < 1:
        raise SettingError("horizon", f"expected a positive horizon, got {config.horizon}")


def check_prior_counts(config, key: str = "prior_counts") -> None:
    """Validate a Dirichlet concentration given as one value or one value per symbol."""
    counts = getattr(config, key)
    if len(counts) not in (1, config.symbols):
        raise SettingError(key, f"expected 1 or {config.symbols} (= symbols) values, got {len(counts)}")
    if not all(count > 0 for count in counts):
        raise SettingError(key, f"expected positive Dirichlet concentrations, got {list(counts)}")


def check_probability(config, key: str) -> None:
    value = getattr(config, key)
    if not 0.0 <= value <= 1.0:
        raise SettingError(key, f"expected a probability in [0, 1], got {value}")


def dirichlet_concentration(counts: tuple[float, ...], symbols: int, device) -> Tensor:
    """The (K,) concentration vector of a ``prior_counts`` setting (one value means all equal)."""
    if len(counts) == 1:
        counts = counts * symbols
    return torch.tensor(counts, dtype=PROBABILITY, device=device)


# Random draws from an explicit generator.
def uniform_open(shape: tuple[int, ...], generator: torch.Generator, device) -> Tensor:
    """Uniforms on (0, 1] in float64 (never exactly 0, so logs and inverse CDFs are safe)."""
    return 1.0 - torch.rand(shape, generator=generator, device=device, dtype=PROBABILITY)


def sample_dirichlet(concentration: Tensor, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Dirichlet(concentration) draws of shape ``shape + (K,)``, float64.

    Gamma(a) = Gamma(a + 1) * U^(1/a) is computed in logs and normalised with a
    softmax, so tiny concentrations (whose Gamma draws underflow to 0) stay exact.
    """
    alpha = concentration.expand(*shape, concentration.shape[0])
    log_gamma = torch._standard_gamma(alpha + 1.0, generator=generator).log()
    log_gamma = log_gamma + uniform_open(alpha.shape, generator, alpha.device).log() / alpha
    return torch.softmax(log_gamma, dim=-1)


def draw_categorical(probs: Tensor, generator: torch.Generator) -> Tensor:
    """One draw per row of ``probs`` (B, K) by inverse CDF, (B,) long."""
    u = uniform_open((probs.shape[0],), generator, probs.device)
    below = (probs.cumsum(dim=1) < u[:, None]).sum(dim=1)
    return below.clamp(max=probs.shape[1] - 1)


def normalise(weights: Tensor, dim: int | tuple[int, ...] = -1) -> Tensor:
    """``weights`` divided by their sum over ``dim``; all-zero slices (impossible histories) stay zero."""
    total = weights.sum(dim=dim, keepdim=True)
    return weights / total.clamp_min(torch.finfo(weights.dtype).tiny)


# Row-wise operations on states and tasks (frozen dataclasses of batch-first tensors).
def combine(function: Callable[..., Tensor], first, *others):
    """Apply ``function`` to matching tensors of dataclasses/tuples of the same structure.

    Non-tensor fields (step counters) are taken from ``first``.
    """
    if isinstance(first, Tensor):
        return function(first, *others)
    if dataclasses.is_dataclass(first):
        return dataclasses.replace(
            first,
            **{
                field.name: combine(
                    function, getattr(first, field.name), *(getattr(other, field.name) for other in others)
                )
                for field in dataclasses.fields(first)
            },
        )
    if isinstance(first, tuple):
        return tuple(combine(function, *items) for items in zip(first, *others, strict=True))
    return first


def first_tensor(data) -> Tensor:
    """The first tensor found in a dataclass/tuple tree (gives the batch size and device)."""
    found: list[Tensor] = []

    def visit(tensor: Tensor) -> Tensor:
        found.append(tensor)
        return tensor

    combine(visit, data)
    return found[0]


def where_rows(mask: Tensor, new, old):
    """Rows of ``new`` where ``mask`` (B,) is true, rows of ``old`` elsewhere."""
    return combine(lambda a, b: torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b), new, old)


def cat_rows(first, second):
    """Stack the rows of two states or tasks of the same family."""
    return combine(lambda a, b: torch.cat([a, b], dim=0), first, second)
