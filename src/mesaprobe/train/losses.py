"""Actor-critic losses on whole episodes (A2C; PPO shares the advantage estimate)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mesaprobe.agents import policy_and_value


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
) -> LossParts:
    """The A2C loss: policy gradient with a learned baseline, value regression, entropy bonus."""
    logits, values = policy_and_value(outputs, outputs.shape[-1] - 1)
    log_probs = F.log_softmax(logits, dim=-1)  # (B, T, A)
    chosen = log_probs.gather(-1, actions[..., None]).squeeze(-1)  # (B, T)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    policy = -(chosen * advantages).mean()
    value = 0.5 * (returns - values).pow(2).mean()
    return LossParts(policy + value_coef * value - entropy_coef * entropy, policy, value, entropy)
