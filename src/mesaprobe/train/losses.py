"""Actor-critic losses on whole episodes (A2C; PPO shares the advantage estimate)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mesaprobe.agents import policy_and_value
from mesaprobe.train.stacked import per_seed_mean


def generalized_advantages(
    rewards: Tensor, values: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """GAE(gamma, lambda) over episodes that all end after the last step.

    ``rewards`` and ``values`` are (B, T); returns (advantages, returns), both (B, T),
    with returns = advantages + values as the value target.
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])  # the episode ends: nothing follows
    for t in range(rewards.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, advantages + values


@dataclass(frozen=True)
class LossParts:
    total: Tensor
    policy: Tensor
    value: Tensor
    entropy: Tensor


def actor_critic_loss(
    outputs: Tensor,
    actions: Tensor,
    advantages: Tensor,
    returns: Tensor,
    value_coef: float,
    entropy_coef: float,
    old_log_probs: Tensor | None = None,
    clip: float = 0.2,
    seeds: int = 1,
) -> LossParts:
    """Policy gradient with a learned baseline, value regression and an entropy bonus.

    Without ``old_log_probs`` the policy term is A2C's ``-A log pi(a)``; with them it is
    PPO's clipped surrogate ``-min(r A, clip(r, 1 - clip, 1 + clip) A)`` with
    ``r = pi(a) / pi_old(a)`` (equal gradients at r = 1).

    With several ``seeds`` trained together every part is a mean over each seed's own block
    of episodes, shape (seeds,) (:mod:`mesaprobe.train.stacked`).
    """
    logits, values = policy_and_value(outputs, outputs.shape[-1] - 1)
    log_probs = F.log_softmax(logits, dim=-1)  # (B, T, A)
    chosen = log_probs.gather(-1, actions[..., None]).squeeze(-1)  # (B, T)
    entropy = per_seed_mean(-(log_probs.exp() * log_probs).sum(-1), seeds)
    if old_log_probs is None:
        policy = per_seed_mean(-(chosen * advantages), seeds)
    else:
        ratio = (chosen - old_log_probs).exp()
        surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
        policy = per_seed_mean(-surrogate, seeds)
    value = per_seed_mean(0.5 * (returns - values).pow(2), seeds)
    return LossParts(policy + value_coef * value - entropy_coef * entropy, policy, value, entropy)


def normalized(advantages: Tensor, seeds: int = 1) -> Tensor:
    """Standardised advantages; with several seeds, within each seed's own block of episodes."""
    if seeds == 1:
        return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    blocks = advantages.reshape(seeds, -1)
    mean, std = blocks.mean(dim=1, keepdim=True), blocks.std(dim=1, keepdim=True)
    return ((blocks - mean) / (std + 1e-8)).reshape(advantages.shape)
