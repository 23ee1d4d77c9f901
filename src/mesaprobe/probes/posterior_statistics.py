"""Sufficient statistics of the exact Bayes posterior, aligned with what a sequence model has seen.

The read-out probe (:mod:`mesaprobe.probes.readout`) asks whether these can be read
linearly from a frozen model's hidden states.  Every statistic is a (B, T, C) float64
tensor, C columns (arms, symbols, contexts) that the probe pools into one R^2, and row
t (0-based; step t + 1 in tables) is conditioned on exactly what the model's inputs at
positions 0 .. t carry:

* bandits: observation 0 is all zeros and observation t holds the action and reward of
  pull t - 1 (see :meth:`BernoulliBandit.step` and :func:`mesaprobe.train.rollout.play`),
  so row t is the posterior after pulls 0 .. t - 1, and row 0 is the prior;
* prediction: input t holds the one-hot token x_{t-1} (zeros at t = 0, see
  :func:`mesaprobe.envs.sequences.base.prediction_inputs`), so row t is the posterior
  after tokens x_0 .. x_{t-1}, the one whose predictive is row t of ``bayes_predict``.

With two symbols a per-symbol statistic (``counts``, ``bayes_prediction``) keeps the
column of symbol 1 (rain) only: the other column is a per-step constant minus it (the
tokens seen so far, or 1), so a read-out of either has the same R^2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mesaprobe.baselines.bayes_optimal import dependent_mean
from mesaprobe.envs.bernoulli_bandit import DEPENDENT_LEVELS, BanditTransform, BernoulliBandit
from mesaprobe.envs.sequences.base import PROBABILITY
from mesaprobe.envs.sequences.drifting import Drifting
from mesaprobe.envs.sequences.markov import Markov
from mesaprobe.envs.sequences.streak import Streak
from mesaprobe.envs.sequences.switching import Switching
from mesaprobe.envs.sequences.vom import VariableOrderMarkov

#: Statistics of bandit posteriors: name -> what it is (columns: one per arm).
BANDIT_STATISTICS: dict[str, str] = {
    "successes": "per arm, pulls so far that paid 1",
    "failures": "per arm, pulls so far that paid 0",
    "posterior_mean": (
        "per arm, posterior mean of its success probability: (alpha + successes) / (alpha + beta + "
        "pulls) under independent Beta(alpha, beta) arms, the exact posterior mean of p and 1 - p "
        "under the dependent two-armed priors; not offered where arms are squeezed or restless"
    ),
}

#: Statistics of sequence-prediction posteriors: name -> what it is (and which families offer it).
PREDICTION_STATISTICS: dict[str, str] = {
    "counts": "every family: per symbol, tokens so far equal to it",
    "bayes_prediction": "every family: the exact Bayes predictor's probability of each symbol next",
    "transition_counts": (
        "markov: per (context, symbol), how often the symbol followed the context (order-k counts, "
        "sun-padded); vom: the same for the deepest contexts of the tree (depth-D counts, from "
        "which every shallower node's counts are sums)"
    ),
    "run_length": (
        "switching, drifting: posterior mean number of the tokens so far that belong to the current "
        "segment (since the last change, counting the token that started it); streak: length of "
        "the current run of equal tokens (observed, so the posterior is sure of it)"
    ),
    "change_probability": (
        "switching, drifting: posterior probability that the latest token started a new segment"
    ),
}


# ---------------------------------------------------------------- bandits


def bandit_offered(environment: BernoulliBandit) -> tuple[str, ...]:
    """The bandit statistics exact for ``environment``'s tasks as played."""
    names = ["successes", "failures"]
    if posterior_mean_prior(environment) is not None:
        names.append("posterior_mean")
    return tuple(names)


def posterior_mean_prior(environment: BernoulliBandit) -> tuple[float, float] | str | None:
    """(alpha, beta) of independent Beta arms, a dependent prior's name, or None when the
    posterior is neither (squeezed or restless arms, relabelled dependent arms)."""
    transform = getattr(environment, "transform", BanditTransform())
    if transform.switch_at is not None or transform.squeeze is not None:
        return None
    if environment.prior is not None:
        return environment.prior
    if transform == BanditTransform() and environment.config.prior in (
        "dependent_uniform",
        *DEPENDENT_LEVELS,
    ):
        return environment.config.prior
    return None


def counts_before(one_hot: Tensor) -> Tensor:
    """(B, T, C) sums of ``one_hot`` (B, T, C) over the steps strictly before each step."""
    total = one_hot.cumsum(dim=1)
    return torch.cat([torch.zeros_like(total[:, :1]), total[:, :-1]], dim=1)


def bandit_statistics(
    environment: BernoulliBandit, actions: Tensor, rewards: Tensor, names: tuple[str, ...]
) -> dict[str, Tensor]:
    """Statistics ``names`` (B, T, arms) float64 of the posterior before each pull of a played
    trajectory (``actions``, ``rewards``: (B, T)); row 0 is the prior."""
    pulled = torch.nn.functional.one_hot(actions, environment.arms).to(PROBABILITY)  # (B, T, A)
    paid = rewards.to(PROBABILITY)[:, :, None]  # (B, T, 1)
    successes = counts_before(pulled * paid)  # (B, T, A)
    failures = counts_before(pulled * (1.0 - paid))
    statistics = {"successes": successes, "failures": failures}
    if "posterior_mean" in names:
        prior = posterior_mean_prior(environment)
        if prior is None:
            raise ValueError("posterior_mean is not exact for these arms; see bandit_offered")
        if isinstance(prior, str):
            # Arms pay p and 1 - p: arm 0's successes and arm 1's failures are p-outcomes.
            u = successes[..., 0] + failures[..., 1]  # (B, T)
            v = failures[..., 0] + successes[..., 1]
            mean_p = dependent_mean(prior, u.cpu().numpy(), v.cpu().numpy())
            mean_p = torch.as_tensor(mean_p, dtype=PROBABILITY, device=u.device)
            statistics["posterior_mean"] = torch.stack([mean_p, 1.0 - mean_p], dim=2)
        else:
            alpha, beta = prior
            statistics["posterior_mean"] = (alpha + successes) / (alpha + beta + successes + failures)
    return {name: statistics[name] for name in names}


# ---------------------------------------------------------------- sequence prediction


def prediction_offered(environment) -> tuple[str, ...]:
    """The prediction statistics ``environment``'s family offers (see PREDICTION_STATISTICS)."""
    names = ["counts", "bayes_prediction"]
    if isinstance(environment, (Markov, VariableOrderMarkov)):
        names.append("transition_counts")
    if isinstance(environment, (Switching, Drifting, Streak)):
        names.append("run_length")
    if isinstance(environment, (Switching, Drifting)):
        names.append("change_probability")
    return tuple(names)


def filter_states(environment, tokens: Tensor, read) -> Tensor:
    """``read(state)`` (B, ...) of the family's Bayes filter before each token, stacked (B, T, ...)."""
    batch, steps = tokens.shape
    state = environment.prior_state(batch, tokens.device)
    rows = []
    for t in range(steps):
        rows.append(read(state))
        if t + 1 < steps:
            state = environment.posterior_update(state, tokens[:, t])
    return torch.stack(rows, dim=1)


def symbol_columns(values: Tensor) -> Tensor:
    """(B, T, K) per-symbol values, or (B, T, 1) symbol 1's alone when K = 2 (module docstring)."""
    return values[:, :, 1:] if values.shape[2] == 2 else values


def prediction_statistics(environment, tokens: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
    """Statistics ``names`` (B, T, C) float64 of the posterior after x_<t, for tokens (B, T)."""
    offered = prediction_offered(environment)
    unknown = [name for name in names if name not in offered]
    if unknown:
        raise ValueError(f"{type(environment).__name__} does not offer {unknown}; it offers {list(offered)}")
    statistics: dict[str, Tensor] = {}
    if "counts" in names:
        seen = torch.nn.functional.one_hot(tokens, environment.symbols).to(PROBABILITY)  # (B, T, K)
        statistics["counts"] = symbol_columns(counts_before(seen))
    segmented = isinstance(environment, (Switching, Drifting))
    if segmented and {"bayes_prediction", "run_length", "change_probability"} & set(names):
        probs, run_length, change_probability = environment.bayes_predict_with_segments(tokens)
        statistics["run_length"] = run_length[:, :, None]
        statistics["change_probability"] = change_probability[:, :, None]
    elif "bayes_prediction" in names:
        probs = environment.bayes_predict(tokens)  # (B, T, K)
    if "bayes_prediction" in names:
        statistics["bayes_prediction"] = symbol_columns(probs)
    if "transition_counts" in names:
        if isinstance(environment, Markov):
            table = filter_states(environment, tokens, lambda state: state.counts)  # (B, T, contexts, K)
        else:
            deepest = int(environment.offsets[-1])  # nodes of the deepest level come last
            table = filter_states(environment, tokens, lambda state: state.counts[:, deepest:])
        statistics["transition_counts"] = table.flatten(2)  # (B, T, contexts * K)
    if "run_length" in names and isinstance(environment, Streak):
        lengths = filter_states(environment, tokens, lambda state: state.run.length)  # (B, T)
        statistics["run_length"] = lengths.to(PROBABILITY)[:, :, None]
    return {name: statistics[name] for name in names}
