"""The Q-learning models of the fitted-learner probe, and the learning rates they are read by.

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

Bayes' learning rates (:func:`bayes_learning_rates`) are the reference the fitted curve
alpha_n is read against.

Speed.  The Q-learning values are computed once per batch of parameters by a recursion
over pull counts on the flat list of (episode, arm, pull) entries, and the softmax
likelihood (:class:`SoftmaxChoiceLoss`) streams over blocks of episodes with a
hand-written gradient, so nothing of size replicates x episodes x steps is kept.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.functional import softplus

from mesaprobe.probes.learner_choices import Choices, other_arms

#: Lowest softmax temperature of the Q-learning models (see the module docstring).
TEMPERATURE_FLOOR: float = 1e-3


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
        self.other_index = value_index.gather(2, other_arms(choices.actions, arms))  # (E, T, K - 1)

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
