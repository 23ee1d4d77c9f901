"""The Thompson model of the fitted-learner probe, and the quadrature of its choice probabilities.

* ``thompson``: Thompson sampling from Beta(a + c s_k, b + c f_k) posteriors (s_k, f_k
  the successes and failures of arm k so far), mixed with a uniformly random choice with
  probability epsilon (the lapse).  Its choice probability is the probability that arm k's
  draw is the largest, ``P(k) = integral of f_k(x) prod_{j != k} F_j(x) dx`` (f density,
  F distribution function), by quadrature (:func:`thompson_choice_probabilities`).
  The evidence scale c (1: exact posterior sampling; larger: greedier, smaller: more
  random) is bounded to ``EVIDENCE_SCALE_RANGE``; epsilon = sin^2(u).  Two parameters,
  half of q_learning's four.

Speed.  The Thompson probabilities do not depend on the replicate: they are computed at
``EVIDENCE_SCALE_NODES`` Chebyshev nodes of log c and interpolated (polynomial in log c),
so a replicate's likelihood costs a matrix product.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mesaprobe.probes.learner_choices import Choices, other_arms

#: Bounds (low, high) of the Thompson model's evidence scale c.  At c = 16 a horizon of 100
#: pulls weighs as 1600: practically greedy on the posterior mean; at 1/16 as about 6: nearly
#: random.  A fitted c at a bound means the agent is greedier (or more random) than that.
EVIDENCE_SCALE_RANGE: tuple[float, float] = (1.0 / 16.0, 16.0)
#: Chebyshev nodes of log c at which the Thompson probabilities are computed by quadrature;
#: between them they are the interpolating polynomial.  Measured against the quadrature at 41
#: scales across the range (Thompson agent, 1000 episodes of 100 pulls), the largest error of
#: any choice probability is 5e-4 with 12 nodes, 6e-5 with 16, 6e-6 with 20, 7e-7 with 24;
#: 20 matches the quadrature's own error (:data:`POINTS_PER_ROOT_COUNT`).
EVIDENCE_SCALE_NODES: int = 20
#: Quadrature points in the arcsine coordinate (a multiple of 3, see
#: :func:`beta_quadrature_tables`): with Richardson extrapolation the Thompson probability of
#: two Beta(800, 800)-like arms is within 2e-5 of exact, of Beta(50, 50)-like arms within 1e-7.
QUADRATURE_POINTS: int = 384
#: The Thompson model's quadrature at evidence scale c uses 12 sqrt(a + b + c max_pulls)
#: points (at least 96): the grid spacing is then about a quarter of the standard deviation,
#: 1 / (pi sqrt(n)) in the arcsine coordinate, of the narrowest posterior it meets.  Measured
#: on Thompson and greedy agents (1000 episodes of 100 pulls, c from 1/16 to 16): every
#: choice probability within 1.3e-5 of a grid twice as fine, within 2e-6 for c >= 2.
POINTS_PER_ROOT_COUNT: float = 12.0
#: Probabilities below this count as this (a floor far below any lapse that matters), so that
#: interpolation and quadrature errors around 0 never reach a logarithm.
PROBABILITY_FLOOR: float = 1e-12


def beta_quadrature_tables(
    alpha: Tensor, beta: Tensor, points: int = QUADRATURE_POINTS
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Quadrature weights of Beta(alpha, beta) densities and their distribution functions.

    The grid is uniform in the arcsine coordinate u, x = sin^2(pi u / 2), which spreads a
    Beta posterior over about the same number of points wherever its mean lies (it is the
    variance-stabilising transform of a binomial count), at the midpoints
    u_i = (i + 1/2) / points.  For each distribution (a row): ``mass`` (U, points), the
    density times the cell width, normalised to sum to 1, and ``cdf`` (U, points), the mass
    of the cells before u_i plus half of its own (the distribution function at u_i with an
    error of order 1/points^2, whose leading term Richardson extrapolation removes).  Returns
    these for the fine grid and for the grid of every third point (the midpoints of cells
    3 times wider: ``points`` must be a multiple of 3).  A parameter below 1 (a prior below 1
    with no observation yet) makes the density non-smooth at an end of the grid: errors then
    grow to about 1e-5 (Beta(3.5, 0.7) with 384 points).
    """
    assert points % 3 == 0, f"the coarse grid takes every third point: {points} is not a multiple of 3"
    u = (torch.arange(points, dtype=torch.float64, device=alpha.device) + 0.5) / points  # (G,)
    log_sin, log_cos = torch.log(torch.sin(math.pi * u / 2)), torch.log(torch.cos(math.pi * u / 2))
    a, b = alpha[:, None], beta[:, None]  # (U, 1)
    # density in u: x^(a-1) (1-x)^(b-1) / B(a, b) * dx/du, dx/du = pi sin(pi u / 2) cos(pi u / 2)
    log_density = (
        (2 * a - 1) * log_sin
        + (2 * b - 1) * log_cos
        - torch.lgamma(a)
        - torch.lgamma(b)
        + torch.lgamma(a + b)
    )
    density = torch.exp(log_density - log_density.max(dim=1, keepdim=True).values)  # (U, G), max 1
    tables = []
    for step in (1, 3):
        mass = density[:, (step - 1) // 2 :: step]  # (U, G / step)
        mass = mass / mass.sum(dim=1, keepdim=True)
        tables.append((mass, mass.cumsum(dim=1) - 0.5 * mass))
    return tables[0], tables[1]


def _winning_probability(tables, chosen_states: Tensor, other_states: Tensor) -> Tensor:
    """(M,) probability that the chosen arm's draw is the largest, for rows of arm states:
    the sum over the grid of mass[chosen] * prod cdf[others].

    ``chosen_states`` (M,) and ``other_states`` (M, K - 1) index the rows of the tables.
    Richardson extrapolation of the fine and coarse grids: (9 P_fine - P_coarse) / 8.
    """
    estimates = []
    for mass, cdf in tables:
        integrand = mass[chosen_states]  # (M, G)
        for other in other_states.unbind(dim=1):
            integrand = integrand * cdf[other]
        estimates.append(integrand.sum(dim=1))
    return ((9.0 * estimates[0] - estimates[1]) / 8.0).clamp(0.0, 1.0)


def thompson_choice_probabilities(
    successes: Tensor, failures: Tensor, prior: tuple[float, float], points: int = QUADRATURE_POINTS
) -> Tensor:
    """(..., K) probability that Thompson sampling from Beta(a + successes, b + failures)
    posteriors picks each arm: that its draw is the largest of the K independent draws.

    ``successes`` and ``failures`` (..., K) may be any non-negative numbers (scaled
    counts).  The integral of f_k(x) prod_{j != k} F_j(x) dx is computed on the grid of
    :func:`beta_quadrature_tables`, with Richardson extrapolation, for every row at once.
    """
    a, b = prior
    shape = successes.shape
    arms = shape[-1]
    flat_alpha = (a + successes.double()).reshape(-1)
    flat_beta = (b + failures.double()).reshape(-1)
    tables = beta_quadrature_tables(flat_alpha, flat_beta, points)
    rows = flat_alpha.numel() // arms
    arm_states = torch.arange(rows * arms, device=successes.device).reshape(rows, arms)  # (M, K)
    columns = []
    for arm in range(arms):
        chosen = torch.full((rows,), arm, dtype=torch.long, device=successes.device)
        others = arm_states.gather(1, other_arms(chosen, arms))  # (M, K - 1)
        columns.append(_winning_probability(tables, arm_states[:, arm], others))
    return torch.stack(columns, dim=1).reshape(shape)


def quadrature_points(prior: tuple[float, float], scaled_pulls: float) -> int:
    """Points of the arcsine grid for posteriors of up to ``scaled_pulls`` (scaled) observations:
    :data:`POINTS_PER_ROOT_COUNT` sqrt(a + b + scaled_pulls), a multiple of 3, at least 96."""
    wanted = POINTS_PER_ROOT_COUNT * math.sqrt(sum(prior) + scaled_pulls)
    return max(96, 3 * math.ceil(wanted / 3))


def _lapse(raw: Tensor) -> Tensor:
    """epsilon = sin^2(u): both ends are reached at finite u, 0 (an exactly Thompson agent) at
    u = 0 and 1 (an agent that ignores its history) at u = pi / 2, so such fits converge instead
    of drifting towards an infinite u, and the weak prior on u barely touches them."""
    return torch.sin(raw).square()


def chebyshev_basis(x: Tensor, degree: int) -> Tensor:
    """(B, degree + 1) Chebyshev polynomials T_0..T_degree at x (B,) in [-1, 1] (differentiable)."""
    columns = [torch.ones_like(x), x]
    for _ in range(degree - 1):
        columns.append(2 * x * columns[-1] - columns[-2])
    return torch.stack(columns[: degree + 1], dim=1)


def chebyshev_nodes(count: int) -> Tensor:
    """(count,) float64 Chebyshev points of the first kind cos(pi (j + 1/2) / count)."""
    return torch.cos(math.pi * (torch.arange(count, dtype=torch.float64) + 0.5) / count)


def chebyshev_coefficients(count: int) -> Tensor:
    """(count, count) matrix taking values at :func:`chebyshev_nodes` to the coefficients of
    their interpolating polynomial in the basis T_0..T_(count - 1)."""
    k = torch.arange(count, dtype=torch.float64)[:, None]
    j = torch.arange(count, dtype=torch.float64)[None, :]
    matrix = 2.0 / count * torch.cos(math.pi * k * (j + 0.5) / count)
    matrix[0] /= 2
    return matrix


class LapseMixtureLoss(torch.autograd.Function):
    """Weighted negative log-likelihood of choices whose probabilities are interpolated in one
    variable and mixed with a uniform lapse, per replicate, streamed over rows.

    Row m's probability under column b is ``P = clamp(sum_c basis[b, c] coefficients[c, m])``
    (clamped to [PROBABILITY_FLOOR, 1]), mixed as ``(1 - lapse_b) P + lapse_b / arms``; the
    loss of column b is ``-sum_m row_weights[m, b] log(mixture)``.  One pass over blocks of
    rows computes the loss and, when asked for, its gradient, so no (M, B) tensor is held.
    """

    @staticmethod
    def forward(ctx, basis, lapse, coefficients, row_weights, arms):
        # basis (B, C), lapse (B,), coefficients (C, M), row_weights (M, B)
        wants_gradient = any(ctx.needs_input_grad[:2])
        loss = basis.new_zeros(basis.shape[0])  # (B,)
        grad_basis, grad_lapse = torch.zeros_like(basis), torch.zeros_like(lapse)
        block = max(1, 2**17 // basis.shape[0])
        for start in range(0, coefficients.shape[1], block):
            rows = slice(start, start + block)
            interpolated = coefficients[:, rows].T @ basis.T  # (m, B)
            sampled = interpolated.clamp(PROBABILITY_FLOOR, 1.0)
            mixture = (1.0 - lapse) * sampled + lapse / arms  # (m, B)
            loss -= (row_weights[rows] * torch.log(mixture)).sum(dim=0)
            if not wants_gradient:
                continue
            grad_mixture = -row_weights[rows] / mixture  # (m, B)
            grad_lapse += (grad_mixture * (1.0 / arms - sampled)).sum(dim=0)
            grad_sampled = grad_mixture * (1.0 - lapse) * (sampled == interpolated)  # no slope where clamped
            grad_basis += (coefficients[:, rows] @ grad_sampled).T  # (B, C)
        ctx.save_for_backward(grad_basis, grad_lapse)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # grad_loss (B,)
        grad_basis, grad_lapse = ctx.saved_tensors
        return grad_basis * grad_loss[:, None], grad_lapse * grad_loss, None, None, None


class ThompsonModel:
    """Thompson sampling with evidence scale c and lapse epsilon:
    P(k) = (1 - epsilon) P_c(k is the largest draw) + epsilon / K, with arm posteriors
    Beta(a + c s_k, b + c f_k).

    The choices are reduced to their distinct rows (the chosen arm's (s, f) counts, then the
    other arms'); each row's probability is computed at Chebyshev nodes of log c, and the
    likelihood at any c in ``EVIDENCE_SCALE_RANGE`` uses the interpolating polynomial.
    Unconstrained parameters: log c = middle + half tanh(u_0), epsilon = sin^2(u_1).
    """

    parameter_names = ("thompson_evidence_scale", "thompson_lapse")

    def __init__(self, choices: Choices, prior: tuple[float, float], nodes: int = EVIDENCE_SCALE_NODES):
        self.choices = choices
        self.arms = choices.arms
        self.nodes = nodes
        low, high = EVIDENCE_SCALE_RANGE
        self.log_scale_middle = (math.log(high) + math.log(low)) / 2
        self.log_scale_half = (math.log(high) - math.log(low)) / 2
        pulls, successes = choices.counts_before()  # (E, T, K)
        states = torch.stack([successes, pulls - successes], dim=-1).reshape(-1, 2)  # (E T K, 2)
        arm_states, state_of = torch.unique(states, dim=0, return_inverse=True)  # (U, 2), (E T K,)
        state_of = state_of.reshape(-1, self.arms)  # (E T, K)
        actions = choices.actions.reshape(-1, 1)  # (E T, 1)
        # A row: the chosen arm's state, then the other arms' states in order.
        rows = torch.cat(
            [state_of.gather(1, actions), state_of.gather(1, other_arms(actions[:, 0], self.arms))], dim=1
        )
        rows, self.row_of = torch.unique(rows, dim=0, return_inverse=True)  # (M, K), (E T,)
        self.episode_of = torch.arange(choices.episodes).repeat_interleave(choices.horizon)  # (E T,)
        node_scales = torch.exp(self.log_scale_middle + self.log_scale_half * chebyshev_nodes(nodes))  # (C,)
        most_pulls = float(arm_states.sum(dim=1).max())
        at_nodes = torch.stack(
            [
                self._probabilities(
                    arm_states.double(),
                    rows,
                    float(c),
                    prior,
                    quadrature_points(prior, float(c) * most_pulls),
                )
                for c in node_scales
            ]
        )  # (C, M)
        self.coefficients = chebyshev_coefficients(nodes) @ at_nodes  # (C, M) in the basis T_0..T_(C-1)

    @staticmethod
    def _probabilities(arm_states: Tensor, rows: Tensor, scale: float, prior, points) -> Tensor:
        """(M,) probability of each row's choice (rows: the chosen arm's state, then the others')
        under Thompson sampling with evidence ``scale``."""
        a, b = prior
        tables = beta_quadrature_tables(a + scale * arm_states[:, 0], b + scale * arm_states[:, 1], points)
        block = max(1, 2**17 // points)
        return torch.cat(
            [
                _winning_probability(tables, rows[start : start + block, 0], rows[start : start + block, 1:])
                for start in range(0, rows.shape[0], block)
            ]
        )

    def natural(self, raw: Tensor) -> dict[str, Tensor]:
        log_scale = self.log_scale_middle + self.log_scale_half * torch.tanh(raw[:, 0])
        return {"thompson_evidence_scale": torch.exp(log_scale), "thompson_lapse": _lapse(raw[:, 1])}

    def raw(self, thompson_evidence_scale: float, thompson_lapse: float) -> list[float]:
        x = (math.log(thompson_evidence_scale) - self.log_scale_middle) / self.log_scale_half
        return [math.atanh(x), math.asin(math.sqrt(thompson_lapse))]

    def starting_points(self) -> Tensor:
        points = [
            self.raw(float(c), lapse)
            for c in torch.exp(self.log_scale_middle + self.log_scale_half * torch.linspace(-0.9, 0.9, 9))
            for lapse in (0.001, 0.01, 0.05, 0.2, 0.5)
        ]
        return torch.tensor(points, dtype=torch.float64)

    def choice_probabilities(self, raw: Tensor) -> Tensor:
        """(M, B) probability of every distinct row's choice under each parameter row (lapse included)."""
        basis = chebyshev_basis(torch.tanh(raw[:, 0]), self.nodes - 1)  # (B, C)
        sampled = (self.coefficients.T @ basis.T).clamp(PROBABILITY_FLOOR, 1.0)  # (M, B)
        lapse = _lapse(raw[:, 1])  # (B,)
        return (1.0 - lapse) * sampled + lapse / self.arms

    def prepare(self, weights: Tensor) -> Tensor:
        """(M, B) each distinct row's weight: the sum of the (B, E) weights of the episodes it occurs in."""
        row_weights = weights.new_zeros(self.coefficients.shape[1], weights.shape[0])
        return row_weights.index_add_(0, self.row_of, weights.T[self.episode_of])

    def negative_log_likelihood(self, raw: Tensor, prepared: Tensor) -> Tensor:
        """(B,) weighted negative log-likelihood (nats) of all choices under each parameter row
        (``prepared``: :meth:`prepare` of the (B, E) episode weights)."""
        basis = chebyshev_basis(torch.tanh(raw[:, 0]), self.nodes - 1)  # (B, C)
        return LapseMixtureLoss.apply(basis, _lapse(raw[:, 1]), self.coefficients, prepared, self.arms)
