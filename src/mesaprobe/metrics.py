"""Every metric mesaprobe reports, defined once.

Per-step metrics (one value per episode and step, written by probes and baselines):

* ``expected_reward``: the chosen arm's success probability (expected, not sampled);
* ``regret``: best arm's probability minus the chosen arm's;
* ``cumulative_regret``: regret summed from the first step to this one.

Episode metrics (one value per episode, summarised with bootstrap CIs):

* ``total_reward``: expected reward summed over the episode;
* ``cumulative_regret``: cumulative regret at the last step;
* ``adaptation``: mean regret over the first tenth of the episode minus the mean
  over the last tenth; positive when the agent improves within the episode.
"""

from __future__ import annotations

import math

from torch import Tensor

#: Per-step metrics written by probes, in the order they are written.
STEP_METRICS = ("expected_reward", "regret", "cumulative_regret")

#: Episode metrics of the summary table, in the order they are reported.
EPISODE_METRICS = ("total_reward", "cumulative_regret", "adaptation")

#: Which direction is better for each episode metric.
HIGHER_IS_BETTER = {"total_reward": True, "cumulative_regret": False, "adaptation": True}

#: Fraction of the episode at each end compared by ``adaptation``.
ADAPTATION_FRACTION = 0.1


def bandit_step_metrics(expected_rewards: Tensor, best_expected_rewards: Tensor) -> dict[str, Tensor]:
    """Per-step metrics (each (B, T)) from the chosen arms' and best arms' expected rewards (B, T)."""
    regret = best_expected_rewards - expected_rewards  # (B, T)
    return {
        "expected_reward": expected_rewards,
        "regret": regret,
        "cumulative_regret": regret.cumsum(dim=1),
    }


def adaptation_window(horizon: int) -> int:
    """Number of steps at each end of an episode compared by ``adaptation`` (at least 1)."""
    return max(1, math.ceil(ADAPTATION_FRACTION * horizon))
