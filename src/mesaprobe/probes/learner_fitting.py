"""Maximum-likelihood fitting of the fitted-learner probe's learning models, every
episode-bootstrap replicate at once.

A model (:class:`~mesaprobe.probes.learner_q_learning.QLearningModel`,
:class:`~mesaprobe.probes.learner_thompson.ThompsonModel`) offers its ``choices``, a grid of
``starting_points()``, ``prepare(weights)`` and ``negative_log_likelihood(raw, prepared)``
of (B, P) unconstrained parameters.  The fits add a weak prior on the unconstrained
parameters (:data:`RAW_PRIOR_SD`) that only matters where the choices leave a parameter
undetermined.

Replicate 0 fits all episodes; replicates 1..R refit on episode-bootstrap resamples, each
by maximising its weighted log-likelihood.  All replicates are one optimisation:
:func:`fit_model` runs ``torch.optim.LBFGS`` (float64) on the (R + 1, P) tensor of
parameters, whose loss is the sum of the replicates' weighted negative log-likelihoods,
so each replicate's optimum is its own.  How (see :func:`fit_model`):

1. replicate 0 alone, from several starting points: every point of a coarse grid of
   parameters is scored, the best 3 are refined by LBFGS, and the best of those is polished
   by whitened LBFGS as in step 2.  On the baselines tried (Thompson, optimistic Thompson,
   greedy, epsilon-greedy, UCB1, random; 1000 episodes of 100 pulls) the 8 best starts all
   reached the same fit, or points of equal likelihood along a ridge where the learning-rate
   curve is the same (kappa near 0, where beta does nothing): no separate modes;
2. the Hessian H of replicate 0's negative log-likelihood at its optimum (central
   differences of the gradient) preconditions the batch: parameters are
   ``theta_r = theta_0 + M phi_r`` with ``M^T H M = I`` (directions of near-zero curvature
   clamped), and phi starts at one Newton step from theta_0 on each replicate's own
   gradient.  A resample moves the optimum by about one standard error, where H is nearly
   each replicate's own Hessian, so LBFGS on phi converges in a few iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Standard deviation of the weak Gaussian prior on every unconstrained parameter u that the
#: fits add to the negative log-likelihood (u^2 / (2 * 10^2) per parameter).  Where the choices
#: determine a parameter it moves the fit by about (standard error of u)^2 * u / 100, a few
#: thousandths of a standard error or less at the default sizes; where they do not (an agent
#: that does not learn leaves alpha_0, kappa and beta free, and its temperature wants to be
#: infinite) it keeps the fit finite instead of letting it run to overflow.  The price: such
#: an agent's surprisal can come out a little above log2(K), by up to about
#: 0.1 nats / (choices ln 2), 0.001 bits on 400 choices.
RAW_PRIOR_SD: float = 10.0


@dataclass(frozen=True)
class Fit:
    """A model fitted to every replicate."""

    raw: Tensor
    """(R + 1, P) unconstrained parameters; row 0 fits all episodes."""
    negative_log_likelihood: Tensor
    """(R + 1,) weighted negative log-likelihood (nats) at the fitted parameters."""
    choices: Tensor
    """(R + 1,) weighted number of choices (the surprisal per choice divides by it)."""
    gradient_norm: Tensor
    """(R + 1,) norm of each replicate's gradient at the end, in standard errors of replicate 0
    (the preconditioned coordinates): 0 at an exact optimum."""

    @property
    def surprisal_bits(self) -> Tensor:
        """(R + 1,) -log2 likelihood per choice."""
        return self.negative_log_likelihood / self.choices / math.log(2.0)


def _lbfgs(parameters: Tensor, closure_loss, max_iter: int, tolerance_grad: float) -> None:
    """Minimise ``closure_loss(parameters)`` (a scalar, nats) in place with torch.optim.LBFGS.

    It stops when no gradient component exceeds ``tolerance_grad``, or when an iteration
    lowers the loss by less than 1e-4 nats or moves no parameter by more than 1e-4 (a fit
    whose optimum lies at infinity, such as the temperature of a deterministic agent, stops
    there), or after ``max_iter`` iterations.  Near an optimum an iteration gains about the
    remaining excess, so a replicate's excess is then of order 1e-4 nats: its parameters are
    within about 0.01 standard errors of its optimum.
    """
    optimizer = torch.optim.LBFGS(
        [parameters],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tolerance_grad,
        tolerance_change=1e-4,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = closure_loss(parameters)
        loss.backward()
        return loss

    optimizer.step(closure)


def _objective(model, raw: Tensor, prepared: Tensor) -> Tensor:
    """(B,) what the fits minimise: each row's negative log-likelihood plus the weak prior
    sum(u^2) / (2 RAW_PRIOR_SD^2) on its unconstrained parameters u."""
    return model.negative_log_likelihood(raw, prepared) + raw.square().sum(dim=1) / (2 * RAW_PRIOR_SD**2)


def _gradients(model, raw: Tensor, prepared: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) losses and (B, P) gradients of each parameter row (rows are independent)."""
    raw = raw.detach().requires_grad_()
    loss = _objective(model, raw, prepared)
    (gradient,) = torch.autograd.grad(loss.sum(), raw)
    return loss.detach(), gradient


def _whitening(model, raw: Tensor, weights: Tensor, step: float = 1e-4) -> Tensor:
    """(B, P, P) for each row of ``raw`` (B, P) a matrix M with M^T H M = I, H the Hessian there
    of the loss under episode ``weights`` (E,) (central differences of the gradient).

    Eigenvalues of H enter by their absolute values, floored at 1e-9 of the largest, so a
    saddle or a flat direction (kappa and beta trading off) gives a finite, safe scale.
    """
    rows, size = raw.shape
    shifts = step * torch.eye(size, dtype=raw.dtype)  # (P, P)
    points = torch.stack([raw[:, None] + shifts, raw[:, None] - shifts], dim=1)  # (B, 2, P, P)
    _, gradients = _gradients(
        model, points.reshape(-1, size), model.prepare(weights.expand(2 * rows * size, -1))
    )
    # gradients[b, sign, j, i]: d loss / d raw_i at raw_b + sign step e_j
    gradients = gradients.reshape(rows, 2, size, size)
    hessian = (gradients[:, 0] - gradients[:, 1]) / (2 * step)  # (B, P, P)
    eigenvalues, eigenvectors = torch.linalg.eigh((hessian + hessian.mT) / 2)
    floor = 1e-9 * eigenvalues.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
    return eigenvectors / eigenvalues.abs().clamp_min(floor).sqrt()[:, None, :]


def _minimise(
    model, centres: Tensor, transforms: Tensor, phi: Tensor, prepared: Tensor, max_iter: int
) -> Tensor:
    """(B, P) parameters minimising each row's loss, found by one LBFGS run in the coordinates
    phi of theta_b = centres_b + transforms_b phi_b, starting at ``phi`` (B, P)."""
    phi = phi.detach().clone().requires_grad_()

    def parameters(phi: Tensor) -> Tensor:
        return centres + torch.einsum("bij,bj->bi", transforms, phi)

    _lbfgs(phi, lambda phi: _objective(model, parameters(phi), prepared).sum(), max_iter, 1e-4)
    return parameters(phi.detach())


def fit_model(model, weights: Tensor, polished_starts: int = 3) -> Fit:
    """Fit ``model`` to every replicate of episode ``weights`` (R + 1, E) at once (row 0: all ones).

    1. Replicate 0 from several starting points: the model's grid of starting points is
       scored, the ``polished_starts`` best are refined together by LBFGS (at most 40
       iterations), and the best of them is polished twice by LBFGS in coordinates whitened
       by the Hessian where it stands (:func:`_whitening`), from one Newton step.  That is
       theta_0.  (Whitening the far starts themselves did not save iterations: far from the
       optimum the Hessian says little about the way there.)
    2. With M the whitening at theta_0 (M^T H M = I, H replicate 0's Hessian), replicate r
       is theta_r = theta_0 + M phi_r, phi_r starting at one Newton step -M^T g_r(theta_0)
       on its own gradient g_r, and one LBFGS run (at most 30 iterations; see :func:`_lbfgs`
       for when it stops) over the (R + 1, P) tensor phi minimises the sum of the
       replicates' objectives.
    """
    replicates = weights.shape[0]
    starts = model.starting_points()  # (S, P)
    with torch.no_grad():
        scores = _objective(model, starts, model.prepare(weights[:1].expand(starts.shape[0], -1)))
    candidates = starts[torch.argsort(scores)[:polished_starts]].clone().requires_grad_()  # (S', P)
    candidate_weights = model.prepare(weights[:1].expand(candidates.shape[0], -1))
    _lbfgs(candidates, lambda raw: _objective(model, raw, candidate_weights).sum(), 40, 1e-4)
    candidates = candidates.detach()
    with torch.no_grad():
        scores = _objective(model, candidates, candidate_weights)
    best = candidates[torch.argmin(scores)][None]  # (1, P)
    full = model.prepare(weights[:1])
    for _ in range(2):
        transform = _whitening(model, best, weights[0])  # (1, P, P)
        _, gradient = _gradients(model, best, full)
        newton_step = -torch.einsum("bi,bij->bj", gradient, transform)  # phi = -M^T g
        best = _minimise(model, best, transform, newton_step, full, max_iter=50)
    best = best[0]  # (P,)

    transform = _whitening(model, best[None], weights[0])[0]  # (P, P)
    prepared = model.prepare(weights)
    _, gradient = _gradients(model, best.expand(replicates, -1), prepared)  # (R + 1, P)
    raw = _minimise(
        model,
        best.expand(replicates, -1),
        transform.expand(replicates, -1, -1),
        -gradient @ transform,  # one Newton step: phi = -M^T g
        prepared,
        max_iter=30,
    )
    _, gradient = _gradients(model, raw, prepared)
    with torch.no_grad():
        loss = model.negative_log_likelihood(raw, prepared)
    return Fit(
        raw=raw,
        negative_log_likelihood=loss,
        choices=weights.sum(dim=1) * model.choices.horizon,
        gradient_norm=(gradient @ transform).norm(dim=1),
    )
