"""The fitted-learner probe: which inner learning algorithm a frozen agent's choices follow.

The agent (a frozen model, or a baseline such as Thompson sampling) plays ``episodes``
held-out bandit tasks.  Learning models are then fitted to its choices by maximum
likelihood: the probability of every choice given the actions and rewards of the same
episode before it (the first choice of an episode counts too).  The fits add a weak prior
on the unconstrained parameters (:data:`RAW_PRIOR_SD`) that only matters where the
choices leave a parameter undetermined.

* ``q_learning``: Rescorla-Wagner / Q-learning with a decaying learning rate.  Each arm's
  value Q starts at the prior mean a / (a + b); the n-th pull of an arm (n = 1, 2, ...,
  counting that pull) moves it by ``Q <- Q + alpha_n (r - Q)`` with
  ``alpha_n = alpha_0 / (1 + kappa (n - 1))^beta``; the agent picks arm k with probability
  softmax(Q / temperature).  Bayes' posterior mean is this learner with
  ``alpha_n = 1 / (n + a + b)`` (alpha_0 = 1 / (1 + a + b), kappa = alpha_0, beta = 1), so
  the fitted curve alpha_n says how far the agent's inner learner is from Bayes'.
  Parameters: alpha_0 = sigmoid(u), kappa = softplus(u), beta = softplus(u),
  temperature = TEMPERATURE_FLOOR + exp(u), with u unconstrained.  No lapse: a softmax
  already gives every arm some probability, and a lapse would not help the one degenerate
  case, an agent exactly greedy on such values (the greedy baseline is greedy on Bayes'
  posterior mean), whose fit wants temperature 0: the floor stops it at 0.001 (value gaps
  finer than that are not resolved), with alpha_n exactly Bayes'.
* ``q_learning_constant``: the same with kappa = 0 (one learning rate alpha_0 for every
  pull): how much the decay explains.
* ``thompson``: Thompson sampling from Beta(a + c s_k, b + c f_k) posteriors (s_k, f_k
  the successes and failures of arm k so far), mixed with a uniformly random choice with
  probability epsilon (the lapse).  Its choice probability is the probability that arm k's
  draw is the largest, ``P(k) = integral of f_k(x) prod_{j != k} F_j(x) dx`` (f density,
  F distribution function), by quadrature (:func:`thompson_choice_probabilities`).
  The evidence scale c (1: exact posterior sampling; larger: greedier, smaller: more
  random) is bounded to ``EVIDENCE_SCALE_RANGE``; epsilon = sin^2(u).  Two parameters,
  half of q_learning's four.

Every fit also has its ``choice_surprisal_bits``: -log2 likelihood per choice, lower
fits better, log2(K) for a uniform guess.  ``learning_rate`` rows give q_learning's
alpha_n at n = 1..max_pulls, and Bayes' 1 / (n + a + b) as the reference (target
``bayes``, written for independent Beta priors only).  Dependent priors (arms paying p
and 1 - p) have no per-arm Beta posterior: there Q starts at 1/2, every arm's prior
mean, and the Thompson model uses Beta(1, 1) per arm, as the Thompson baseline does.

Replicates.  Replicate 0 fits all episodes; replicates 1..R refit on episode-bootstrap
resamples (:func:`mesaprobe.analysis.inside.episode_bootstrap_weights`, named by the
held-out key, so replicate r resamples the same episodes for every agent at one seed),
each by maximising its weighted log-likelihood.  All replicates are one optimisation:
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

Speed.  The Q-learning values are computed once per batch of parameters by a recursion
over pull counts on the flat list of (episode, arm, pull) entries, and the softmax
likelihood (:class:`SoftmaxChoiceLoss`) streams over blocks of episodes with a
hand-written gradient, so nothing of size replicates x episodes x steps is kept.  The
Thompson probabilities do not depend on the replicate: they are computed at
``EVIDENCE_SCALE_NODES`` Chebyshev nodes of log c and interpolated (polynomial in log c),
so a replicate's likelihood costs a matrix product.  Measured with the defaults (1000
episodes of 100 pulls, 100 replicates, all three models) on one thread of a shared, busy
2-core machine: 15 to 20 s for the Thompson, greedy and Gittins baselines (q_learning
7-12 s of it); 45 to 60 s for an untrained GRU, whose choices ignore its history, so that
the likelihood is flat in several directions and the batch runs to its iteration cap.

Sanity checks (same sizes): the Thompson baseline's fitted evidence scale is 1.00 (bootstrap
standard deviation 0.01) with lapse 0, and the thompson model fits it better than
q_learning (0.40 against 0.42 bits per choice); the greedy baseline, greedy on Bayes'
posterior mean, gets q_learning's alpha_n = 1 / (n + 2) to 0.001.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import polars as pl
import torch
from torch import Tensor
from torch.nn.functional import softplus

from mesaprobe.envs.base import Environment
from mesaprobe.probes.adaptation import heldout_streams
from mesaprobe.probes.inside import InsideProbe, episode_bootstrap_weights, rows_frame
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError
from mesaprobe.train.rollout import play

ModelName = Literal["q_learning", "q_learning_constant", "thompson"]
MODELS: tuple[str, ...] = ("q_learning", "q_learning_constant", "thompson")

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
#: Standard deviation of the weak Gaussian prior on every unconstrained parameter u that the
#: fits add to the negative log-likelihood (u^2 / (2 * 10^2) per parameter).  Where the choices
#: determine a parameter it moves the fit by about (standard error of u)^2 * u / 100, a few
#: thousandths of a standard error or less at the default sizes; where they do not (an agent
#: that does not learn leaves alpha_0, kappa and beta free, and its temperature wants to be
#: infinite) it keeps the fit finite instead of letting it run to overflow.  The price: such
#: an agent's surprisal can come out a little above log2(K), by up to about
#: 0.1 nats / (choices ln 2), 0.001 bits on 400 choices.
RAW_PRIOR_SD: float = 10.0
#: Lowest softmax temperature of the Q-learning models (see the module docstring).
TEMPERATURE_FLOOR: float = 1e-3
#: Probabilities below this count as this (a floor far below any lapse that matters), so that
#: interpolation and quadrature errors around 0 never reach a logarithm.
PROBABILITY_FLOOR: float = 1e-12


@dataclass(frozen=True)
class FittedLearnerConfig:
    episodes: int = 1000
    """Held-out tasks played, one episode each; every choice of every episode is fitted."""
    replicates: int = 100
    """Episode-bootstrap replicates computed per seed (the interval of the study's summary):
    each is a refit on a resample of the episodes."""
    max_pulls: int | None = None
    """learning_rate rows are written for pull counts n = 1..max_pulls (default: the horizon)."""
    batch: int = 1000
    """Episodes played at once (a memory bound)."""
    models: tuple[ModelName, ...] = MODELS
    """Learning models fitted to the choices: q_learning (decaying learning rate),
    q_learning_constant (one learning rate), thompson (Thompson sampling with an evidence
    scale and a lapse)."""
    policy: Literal["sample", "greedy"] = "sample"
    """How a trained model picks actions: sample from its policy, or take the most likely."""

    def validate(self) -> None:
        for name in ("episodes", "batch"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        if self.replicates < 0:
            raise SettingError("replicates", f"expected a non-negative integer, got {self.replicates}")
        if self.max_pulls is not None and self.max_pulls < 1:
            raise SettingError("max_pulls", f"expected a positive integer, got {self.max_pulls}")
        models = list(self.models)
        if not models or len(set(models)) != len(models) or not set(models) <= set(MODELS):
            raise SettingError("models", f"expected distinct models among {', '.join(MODELS)}, got {models}")


# --------------------------------------------------------------------------------------
# What the agent did


@dataclass(frozen=True)
class Choices:
    """One agent's play: the data every learning model is fitted to."""

    actions: Tensor
    """(E, T) int64 arm pulled at each step."""
    rewards: Tensor
    """(E, T) float64 reward of each pull (0 or 1)."""
    arms: int
    """Number of arms K."""

    @property
    def episodes(self) -> int:
        return self.actions.shape[0]

    @property
    def horizon(self) -> int:
        return self.actions.shape[1]

    def counts_before(self) -> tuple[Tensor, Tensor]:
        """(pulls, successes), each (E, T, K) int64: of each arm before each step's choice."""
        pulled = torch.nn.functional.one_hot(self.actions, self.arms)  # (E, T, K)
        paid = pulled * self.rewards.round().long()[..., None]  # (E, T, K)
        return pulled.cumsum(1) - pulled, paid.cumsum(1) - paid


def prior_of(environment: Environment) -> tuple[float, float]:
    """(a, b) of each arm's Beta prior: the environment's independent prior, else Beta(1, 1)."""
    return getattr(environment, "prior", None) or (1.0, 1.0)


# --------------------------------------------------------------------------------------
# Q-learning


def decaying_learning_rates(alpha_0: Tensor, kappa: Tensor, beta: Tensor, pulls: int) -> Tensor:
    """(B, pulls) alpha_n = alpha_0 / (1 + kappa (n - 1))^beta for n = 1..pulls, from (B,) parameters."""
    n = torch.arange(1, pulls + 1, dtype=alpha_0.dtype, device=alpha_0.device)  # (N,)
    return alpha_0[:, None] * torch.exp(-beta[:, None] * torch.log1p(kappa[:, None] * (n - 1)))


def bayes_learning_rates(prior: tuple[float, float], pulls: int) -> Tensor:
    """(pulls,) float64 1 / (n + a + b): the posterior mean's step towards the n-th reward."""
    a, b = prior
    return 1.0 / (torch.arange(1, pulls + 1, dtype=torch.float64) + a + b)


class SoftmaxChoiceLoss(torch.autograd.Function):
    """Weighted negative log-likelihood of softmax choices, per replicate, streamed over episodes.

    ``values`` (F, B) holds every value the choices read, one column per parameter vector
    (the values of one entry side by side, so a choice reads contiguous memory).  The
    choice at (episode e, step t) has value ``values[chosen_index[e, t]]`` against the other
    arms' ``values[other_index[e, t, :]]``; its negative log-probability is
    ``log(1 + sum_j exp((q_j - q_chosen) / temperature))``, and the loss of column b is the
    sum over choices, each weighted by its episode's ``weights[e, b]``.  One pass over blocks
    of ``block`` episodes computes the loss and, when asked for, its gradient (kept for
    backward), so no (E, T, B) tensor is ever held.
    """

    @staticmethod
    def forward(ctx, values, inverse_temperature, weights, chosen_index, other_index, block):
        # values (F, B), inverse_temperature (B,), weights (E, B), chosen_index (E, T),
        # other_index (E, T, K - 1)
        wants_gradient = any(ctx.needs_input_grad[:2])
        batch = values.shape[1]
        loss = values.new_zeros(batch)  # (B,)
        grad_values = torch.zeros_like(values) if wants_gradient else None  # (F, B)
        grad_inverse = torch.zeros_like(inverse_temperature)  # (B,)
        for start in range(0, chosen_index.shape[0], block):
            episodes = slice(start, start + block)
            chosen, others = chosen_index[episodes], other_index[episodes]
            gaps = _value_gaps(values, chosen, others)  # (e, T, K - 1, B)
            logits = gaps * inverse_temperature
            pairwise = logits.shape[2] == 1
            # log(1 + sum_j exp(logit_j)): the chosen arm has logit 0
            surprise = softplus(logits[:, :, 0] if pairwise else torch.logsumexp(logits, dim=2))  # (e, T, B)
            loss += (surprise.sum(dim=1) * weights[episodes]).sum(dim=0)
            if not wants_gradient:
                continue
            # d surprise / d logit_j: the softmax weight of arm j among {chosen, others}
            share = torch.sigmoid(logits) if pairwise else torch.exp(logits - surprise[:, :, None, :])
            grad_logits = share.mul_(weights[episodes][:, None, None, :])  # (e, T, K - 1, B)
            grad_inverse += (grad_logits * gaps).sum(dim=(0, 1, 2))
            grad_others = grad_logits.mul_(inverse_temperature)
            grad_values.index_add_(0, others.reshape(-1), grad_others.reshape(-1, batch))
            grad_values.index_add_(0, chosen.reshape(-1), grad_others.sum(dim=2).reshape(-1, batch), alpha=-1)
        ctx.save_for_backward(grad_values, grad_inverse)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # grad_loss (B,): column b's loss is scaled by grad_loss[b]
        grad_values, grad_inverse = ctx.saved_tensors
        return grad_values * grad_loss, grad_inverse * grad_loss, None, None, None, None


class RescorlaWagnerValues(torch.autograd.Function):
    """The values of every (episode, arm) after each of its pull counts, by the delta rule.

    Layout (F, B), F = S + sum_n count_n: the first S rows are the initial value of every
    (episode, arm); block n (n = 1..N) holds ``count_n`` rows, the values after the n-th pull
    of the (episode, arm) pulled at least n times, ordered so that block n is a prefix of
    block n - 1: ``V_n = V_(n-1)[:count_n] + alpha_n (r_n - V_(n-1)[:count_n])`` with
    ``rewards`` (sum_n count_n,) the blocks' rewards.  Written in place, with the adjoint
    recursion as backward, so a batch of B learning-rate curves costs a few passes over F x B.
    """

    @staticmethod
    def forward(ctx, rates, initial_value, rewards, counts, segments):
        # rates (N, B): alpha_n of each column; counts: N ints; segments: S
        values = rates.new_empty(segments + sum(counts), rates.shape[1])  # (F, B)
        values[:segments] = initial_value
        previous, offset, reward_offset = values[:segments], segments, 0
        for n, count in enumerate(counts):
            current = values[offset : offset + count]  # (count_n, B)
            torch.sub(rewards[reward_offset : reward_offset + count, None], previous[:count], out=current)
            current.mul_(rates[n]).add_(previous[:count])
            previous, offset, reward_offset = current, offset + count, reward_offset + count
        ctx.save_for_backward(rates, values, rewards)
        ctx.counts, ctx.segments = counts, segments
        return values

    @staticmethod
    def backward(ctx, grad_values):  # grad_values (F, B)
        rates, values, rewards = ctx.saved_tensors
        counts, segments = ctx.counts, ctx.segments
        starts = [segments]  # row where block n + 1 starts
        for count in counts[:-1]:
            starts.append(starts[-1] + count)
        reward_starts = [start - segments for start in starts]
        previous_starts = [0, *starts[:-1]]
        grad_rates = torch.zeros_like(rates)  # (N, B)
        carried = None  # (count_(n+1), B): the gradient V_(n+1) passes back to V_n's prefix
        for n in range(len(counts) - 1, -1, -1):
            count = counts[n]
            total = grad_values[starts[n] : starts[n] + count].clone()  # (count_n, B)
            if carried is not None:
                total[: carried.shape[0]] += carried
            previous = values[previous_starts[n] : previous_starts[n] + count]
            step = rewards[reward_starts[n] : reward_starts[n] + count, None] - previous  # r_n - V_(n-1)
            grad_rates[n] = (total * step).sum(dim=0)
            carried = total.mul_(1.0 - rates[n])
        return grad_rates, None, None, None, None


def _value_gaps(values: Tensor, chosen_index: Tensor, other_index: Tensor) -> Tensor:
    """(e, T, K - 1, B) q_other - q_chosen for a block of episodes, from values (F, B)."""
    batch = values.shape[1]
    chosen = values.index_select(0, chosen_index.reshape(-1)).reshape(*chosen_index.shape, 1, batch)
    others = values.index_select(0, other_index.reshape(-1)).reshape(*other_index.shape, batch)
    return others - chosen


class QLearningModel:
    """Q-learning with learning rate alpha_n = alpha_0 / (1 + kappa (n - 1))^beta and softmax
    choice (``decaying``), or with one learning rate alpha_0 (kappa = 0, ``decaying=False``).

    The values an arm takes are laid out flat: block n (n = 0..N) holds the value of every
    (episode, arm) pulled at least n times, after its n-th pull, with those (episode, arm)
    sorted by pull count, longest first, so that block n is a prefix of block n - 1 and
    the recursion over n is one vectorised update of shrinking slices.  Each choice reads
    its arms' values after the pulls before it.
    """

    def __init__(self, choices: Choices, initial_value: float, decaying: bool = True):
        self.decaying = decaying
        self.parameter_names = (
            ("alpha_0", "kappa", "beta", "temperature") if decaying else ("alpha_0", "temperature")
        )
        self.initial_value = initial_value
        self.choices = choices
        episodes, horizon, arms = choices.episodes, choices.horizon, choices.arms
        pulls_before, _ = choices.counts_before()  # (E, T, K)
        pulls_total = torch.nn.functional.one_hot(choices.actions, arms).sum(dim=1).reshape(-1)  # (E K,)
        order = torch.argsort(pulls_total, descending=True, stable=True)  # (E K,) longest first
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        self.max_pulls = int(pulls_total.max())
        # counts[n - 1]: (episode, arm) pairs pulled at least n times
        self.counts = [int((pulls_total >= n).sum()) for n in range(1, self.max_pulls + 1)]
        block_starts = torch.tensor([0, *self.counts], dtype=torch.long).cumsum(0)  # (N + 1,)
        segments = episodes * arms
        value_offset = torch.cat([torch.zeros(1, dtype=torch.long), segments + block_starts[:-1]])  # (N + 1,)
        segment = torch.arange(episodes)[:, None, None] * arms + torch.arange(arms)  # (E, 1, K)
        value_index = value_offset[pulls_before] + rank[segment]  # (E, T, K)
        # The reward of each pull, at its place in the block of its pull count.
        chosen_segment = torch.arange(episodes)[:, None] * arms + choices.actions  # (E, T)
        pull_number = pulls_before.gather(2, choices.actions[..., None])[..., 0] + 1  # (E, T)
        place = block_starts[pull_number - 1] + rank[chosen_segment]  # (E, T)
        rewards = torch.empty(episodes * horizon, dtype=torch.float64)
        rewards[place.reshape(-1)] = choices.rewards.reshape(-1)
        self.rewards_by_pull = rewards  # (E T,) block n: the rewards of n-th pulls
        self.chosen_index = value_index.gather(2, choices.actions[..., None])[..., 0]  # (E, T)
        self.other_index = value_index.gather(2, _other_arms(choices.actions, arms))  # (E, T, K - 1)

    def natural(self, raw: Tensor) -> dict[str, Tensor]:
        """Named (B,) parameters from unconstrained (B, P) ones."""
        named = {
            "alpha_0": torch.sigmoid(raw[:, 0]),
            "temperature": TEMPERATURE_FLOOR + torch.exp(raw[:, -1]),
        }
        if self.decaying:
            named["kappa"] = softplus(raw[:, 1])
            named["beta"] = softplus(raw[:, 2])
        return {name: named[name] for name in self.parameter_names}

    def raw(self, **natural: float) -> list[float]:
        """Unconstrained parameters of the named values (inverse of :meth:`natural`)."""
        values = [math.log(natural["alpha_0"] / (1.0 - natural["alpha_0"]))]
        if self.decaying:
            values += [_inverse_softplus(natural["kappa"]), _inverse_softplus(natural["beta"])]
        return [*values, math.log(natural["temperature"] - TEMPERATURE_FLOOR)]

    def learning_rates(self, raw: Tensor, pulls: int) -> Tensor:
        """(B, pulls) alpha_n at n = 1..pulls."""
        named = self.natural(raw)
        if not self.decaying:
            return named["alpha_0"][:, None].expand(-1, pulls)
        return decaying_learning_rates(named["alpha_0"], named["kappa"], named["beta"], pulls)

    def starting_points(self) -> Tensor:
        """(S, P) unconstrained parameters of a coarse grid covering plausible learners."""
        temperatures = (0.03, 0.1, 0.3, 1.0)
        if self.decaying:
            points = [
                self.raw(alpha_0=alpha_0, kappa=kappa, beta=beta, temperature=temperature)
                for alpha_0 in (0.05, 0.15, 0.4, 0.8)
                for kappa in (0.01, 0.3, 3.0)
                for beta in (0.5, 1.0, 2.0)
                for temperature in temperatures
            ]
        else:
            points = [
                self.raw(alpha_0=alpha_0, temperature=temperature)
                for alpha_0 in (0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 0.9)
                for temperature in temperatures
            ]
        return torch.tensor(points, dtype=torch.float64)

    def values(self, raw: Tensor) -> Tensor:
        """(F, B) every arm value of every episode, after each of its pull counts, laid out flat."""
        rates = self.learning_rates(raw, self.max_pulls).T.contiguous()  # (N, B)
        segments = self.choices.episodes * self.choices.arms
        return RescorlaWagnerValues.apply(
            rates, self.initial_value, self.rewards_by_pull, self.counts, segments
        )

    def prepare(self, weights: Tensor) -> Tensor:
        """Episode weights (B, E) in the layout the likelihood reads: (E, B)."""
        return weights.T.contiguous()

    def negative_log_likelihood(self, raw: Tensor, prepared: Tensor) -> Tensor:
        """(B,) weighted negative log-likelihood (nats) of all choices under each parameter row
        (``prepared``: :meth:`prepare` of the (B, E) episode weights)."""
        values = self.values(raw)
        inverse_temperature = 1.0 / (TEMPERATURE_FLOOR + torch.exp(raw[:, -1]))
        # Blocks of episodes of about 2^17 numbers keep the streamed tensors in cache.
        block = max(1, 2**17 // (raw.shape[0] * self.choices.horizon * (self.choices.arms - 1)))
        return SoftmaxChoiceLoss.apply(
            values, inverse_temperature, prepared, self.chosen_index, self.other_index, block
        )


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


# --------------------------------------------------------------------------------------
# Thompson sampling


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


def _other_arms(actions: Tensor, arms: int) -> Tensor:
    """(..., K - 1) the arms other than ``actions`` (...), in order."""
    every = torch.arange(arms, device=actions.device).expand(*actions.shape, arms)
    return every[every != actions[..., None]].reshape(*actions.shape, arms - 1)


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
        others = arm_states.gather(1, _other_arms(chosen, arms))  # (M, K - 1)
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
            [state_of.gather(1, actions), state_of.gather(1, _other_arms(actions[:, 0], self.arms))], dim=1
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


# --------------------------------------------------------------------------------------
# Fitting


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


# --------------------------------------------------------------------------------------
# The probe


def play_choices(
    agent, environment: Environment, episodes: int, batch: int, heldout_key: tuple, agent_key: tuple, device
) -> Choices:
    """The agent plays ``episodes`` held-out tasks (in batches); its actions and rewards on CPU."""
    task_generator, luck_generator, action_generator = heldout_streams(heldout_key, agent_key, device)
    actions, rewards = [], []
    with torch.inference_mode():
        for start in range(0, episodes, batch):
            tasks = environment.sample_tasks(min(batch, episodes - start), task_generator, device)
            trajectory = play(environment, tasks, agent, luck_generator, action_generator)
            actions.append(trajectory.actions.cpu())
            rewards.append(trajectory.rewards.cpu())
    # Concatenated outside inference mode: ordinary tensors, which the fits may differentiate through.
    return Choices(
        actions=torch.cat(actions),
        rewards=torch.cat(rewards).to(torch.float64),
        arms=environment.action_count,
    )


def build_model_of(name: str, choices: Choices, prior: tuple[float, float]):
    """The learning model ``name`` (one of MODELS) ready to be fitted to ``choices``."""
    a, b = prior
    if name == "q_learning":
        return QLearningModel(choices, a / (a + b), decaying=True)
    if name == "q_learning_constant":
        return QLearningModel(choices, a / (a + b), decaying=False)
    if name == "thompson":
        return ThompsonModel(choices, prior)
    raise ValueError(f"unknown learning model {name!r}; known: {', '.join(MODELS)}")


def fitted_rows(
    choices: Choices,
    weights: Tensor,
    models: tuple[str, ...],
    prior: tuple[float, float],
    max_pulls: int,
    bayes_reference: bool,
) -> tuple[pl.DataFrame, dict[str, Fit]]:
    """Inside rows of every model fitted to ``choices`` under episode ``weights`` (R + 1, E)."""
    frames, fits = [], {}
    pulls = list(range(1, max_pulls + 1))
    for name in models:
        model = build_model_of(name, choices, prior)
        fit = fit_model(model, weights)
        fits[name] = fit
        frames.append(rows_frame("choice_surprisal_bits", fit.surprisal_bits[:, None], [0], target=name))
        if name == "q_learning_constant":
            continue  # its parameters share q_learning's names: only its fit is written
        for parameter, values in model.natural(fit.raw).items():
            frames.append(rows_frame("fitted_parameter", values[:, None], [0], target=parameter))
        if name == "q_learning":
            frames.append(
                rows_frame(
                    "learning_rate", model.learning_rates(fit.raw, max_pulls), pulls, target="q_learning"
                )
            )
    if bayes_reference:
        bayes = bayes_learning_rates(prior, max_pulls).expand(weights.shape[0], -1)
        frames.append(rows_frame("learning_rate", bayes, pulls, target="bayes"))
    return pl.concat(frames), fits


class FittedLearnerProbe(InsideProbe):
    """Learning models fitted by maximum likelihood to a frozen agent's choices: the fitted
    Q-learning learning rate per pull against Bayes', and how well each model predicts the choices."""

    Config: ClassVar[type] = FittedLearnerConfig
    serves: ClassVar[tuple[str, ...]] = ("bandit",)
    charts: ClassVar[tuple[str, ...]] = ("learning_rate", "choice_surprisal_bits")
    task: ClassVar[str] = "fitted-learner probe fits learning models to bandit choices"

    def run(
        self,
        agent,
        environment: Environment,
        heldout_key: tuple,
        agent_key: tuple,
        device: torch.device | str = "cpu",
        untrained=None,
    ) -> pl.DataFrame:
        """Inside rows (:data:`mesaprobe.analysis.inside.INSIDE_ROW_COLUMNS`) of learning_rate,
        fitted_parameter and choice_surprisal_bits.

        The agent plays on ``device``; the fits run on the CPU in float64.  ``untrained`` is
        not used: Bayes' learning rate and the baselines are this probe's references.
        """
        config = self.config
        choices = play_choices(
            agent, environment, config.episodes, config.batch, heldout_key, agent_key, device
        )
        weights = episode_bootstrap_weights(
            config.episodes, config.replicates, make_generator("fitted-learner-bootstrap", *heldout_key)
        )  # (R + 1, E)
        independent_prior = getattr(environment, "prior", None)
        rows, _ = fitted_rows(
            choices,
            weights,
            tuple(config.models),
            prior_of(environment),
            config.max_pulls or environment.horizon,
            bayes_reference=independent_prior is not None,
        )
        return rows
