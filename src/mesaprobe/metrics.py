"""Every metric mesaprobe reports, defined once.

Each kind of environment has one *metric family*: three per-step metrics written by
probes and baselines (one value per episode and step) and three episode metrics
summarised with bootstrap CIs.  Both families have the same shape: a per-step
score that is summed over the episode, a per-step regret against the best possible
agent, and that regret's running sum.

Bandits (``kind = "bandit"``):

* ``expected_reward``: the chosen arm's success probability (expected, not sampled);
* ``regret``: the best arm's probability minus the chosen arm's;
* ``cumulative_regret``: regret summed from the first step to this one;
* episode metrics ``total_reward`` (expected reward summed over the episode),
  ``cumulative_regret`` (at the last step) and ``adaptation``.

Sequence prediction (``kind = "prediction"``):

* ``logloss_bits``: -log2 of the probability the predictor gave the actual next token;
* ``regret_bits``: the predictor's log-loss minus the exact Bayes-optimal predictor's
  on the same sequence (zero for ``bayes_optimal``; the oracle that knows the task
  parameters can go below zero);
* ``cumulative_regret_bits``: regret_bits summed from the first step to this one;
* episode metrics ``total_logloss_bits``, ``cumulative_regret_bits`` (at the last
  step) and ``adaptation``.

In-context linear regression (``kind = "regression"``):

* ``mse_per_dim``: the squared error of the prediction of the target, (y_hat - y)^2 / D
  (D the input dimension; Raventós et al. 2023 report MSE / D);
* ``regret_mse``: mse_per_dim minus ridge's on the same examples (ridge with the noise
  variance as penalty is the exact Bayes predictor for the Gaussian prior; zero for
  ``ridge``; ``dmmse`` on its own pool's tasks and the oracle can go below zero);
* ``cumulative_regret_mse``: regret_mse summed from the first step to this one;
* episode metrics ``total_mse_per_dim``, ``cumulative_regret_mse`` (at the last step)
  and ``adaptation``.

Tabular MDPs (``kind = "mdp"``; see :mod:`mesaprobe.envs.tabular_mdp`):

* ``mean_reward``: the mean reward of the chosen action in the current state (expected,
  not sampled);
* ``value_regret``: V*_t(s_t) - Q*_t(s_t, a_t), the optimal value of the current state
  minus the optimal value of the chosen action in it (t the step within the episode,
  values of the true MDP by finite-horizon value iteration): what the action gives up
  against the oracle, >= 0, zero for the oracle; its expected sum over an episode is the
  optimal return minus the agent's expected return (performance-difference lemma);
* ``cumulative_value_regret``: value_regret summed from the first step to this one;
* episode metrics ``total_mean_reward``, ``cumulative_value_regret`` (at the last step)
  and ``adaptation``.

In trials (``trial_episodes: K``) a probe's episode is the whole trial of K episodes: the
steps run over all K x episode_length steps, so the curves per step cover the trial, the
episode metrics are per trial, and :func:`episodes_in_trial` sums a step metric per episode
within the trial.

``adaptation`` is the mean per-step regret over the first tenth of the episode minus
the mean over the last tenth: positive when the agent improves within the episode.

The commitment game (``kind = "commitment"``) is scored once per episode (a
*per-episode* family: its probe tables hold step 1 only, and each episode metric is
the step metric of the same name):

* ``success``: 1 if the agent's y equals f(z), else 0 (mean: the success rate);
* ``game_reward``: the reward, success minus the predictability penalty;
* ``z_surprisal_bits``: -log2 of the empirical frequency of the episode's z among the
  probe's episodes; its mean over episodes is the plug-in entropy of z (bits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MetricFamily:
    """The metrics of one kind of environment (see the module docstring)."""

    kind: str
    """Environment kind these metrics measure."""
    step_metrics: tuple[str, str, str]
    """(summed score, per-step regret, cumulative regret), in the order probes write them."""
    episode_metrics: tuple[str, str, str]
    """(total of the score, cumulative regret at the last step, adaptation)."""
    higher_is_better: tuple[bool, bool, bool]
    """Whether a larger value of each episode metric is better."""
    step_titles: tuple[str, str, str]
    """Axis titles of the step metrics, with units."""
    chart_titles: tuple[str, str, str]
    """Title of each chart, in the order of :attr:`charts` (followed by environment and probe)."""
    bar_axis_titles: tuple[str, ...]
    """Axis title of each bar chart, in the order of :attr:`bar_metrics`; ``{horizon}`` stands
    for the number of steps the metric is summed over."""
    per_episode: bool = False
    """True: scored once per episode (step 1 only); the episode metrics are the step metrics."""

    def __post_init__(self) -> None:
        assert len(self.chart_titles) == len(self.charts), (self.kind, self.chart_titles)
        assert len(self.bar_axis_titles) == len(self.bar_metrics), (self.kind, self.bar_axis_titles)

    @property
    def charts(self) -> dict[str, str]:
        """Chart kind -> the metric it plots.  Step families: curves of the per-step and
        cumulative regret and bars of the total; per-episode families: bars of each metric."""
        if self.per_episode:
            return {name: name for name in self.episode_metrics}
        return {"regret": self.regret, "cumulative_regret": self.cumulative_regret, "total": self.total}

    def is_curve(self, chart: str) -> bool:
        """Whether a chart kind of this family is a curve over steps (else bars of an episode metric)."""
        return not self.per_episode and chart != "total"

    @property
    def bar_metrics(self) -> tuple[str, ...]:
        """The episode metrics drawn as bars: the total, or every metric of a per-episode family."""
        return tuple(metric for chart, metric in self.charts.items() if not self.is_curve(chart))

    def chart_title(self, metric: str) -> str:
        """Title of the chart of a metric this family plots, e.g. ``Total reward per episode``."""
        return dict(zip(self.charts.values(), self.chart_titles, strict=True))[metric]

    def bar_axis_title(self, metric: str, horizon: int | str) -> str:
        """Axis title of the bars of an episode metric summed over ``horizon`` steps."""
        titles = dict(zip(self.bar_metrics, self.bar_axis_titles, strict=True))
        return titles[metric].format(horizon=horizon)

    @property
    def score(self) -> str:
        return self.step_metrics[0]

    @property
    def regret(self) -> str:
        return self.step_metrics[1]

    @property
    def cumulative_regret(self) -> str:
        return self.step_metrics[2]

    @property
    def total(self) -> str:
        return self.episode_metrics[0]


BANDIT_METRICS = MetricFamily(
    kind="bandit",
    step_metrics=("expected_reward", "regret", "cumulative_regret"),
    episode_metrics=("total_reward", "cumulative_regret", "adaptation"),
    higher_is_better=(True, False, True),
    step_titles=("expected reward per step", "regret per step (expected)", "cumulative regret (expected)"),
    chart_titles=("Regret per step", "Cumulative regret", "Total reward per episode"),
    bar_axis_titles=("total reward per episode (expected, sum over {horizon} steps)",),
)

PREDICTION_METRICS = MetricFamily(
    kind="prediction",
    step_metrics=("logloss_bits", "regret_bits", "cumulative_regret_bits"),
    episode_metrics=("total_logloss_bits", "cumulative_regret_bits", "adaptation"),
    higher_is_better=(False, False, True),
    step_titles=(
        "log-loss per step (bits)",
        "regret per step vs Bayes (bits)",
        "cumulative regret vs Bayes (bits)",
    ),
    chart_titles=(
        "Regret per step vs Bayes-optimal (bits)",
        "Cumulative regret vs Bayes-optimal (bits)",
        "Total log-loss per episode (bits)",
    ),
    bar_axis_titles=("total log-loss per episode (bits, sum over {horizon} steps)",),
)

REGRESSION_METRICS = MetricFamily(
    kind="regression",
    step_metrics=("mse_per_dim", "regret_mse", "cumulative_regret_mse"),
    episode_metrics=("total_mse_per_dim", "cumulative_regret_mse", "adaptation"),
    higher_is_better=(False, False, True),
    step_titles=(
        "squared error per step / D",
        "regret per step vs ridge (squared error / D)",
        "cumulative regret vs ridge (squared error / D)",
    ),
    chart_titles=(
        "Regret per step vs ridge (squared error / D)",
        "Cumulative regret vs ridge (squared error / D)",
        "Total squared error / D per episode",
    ),
    bar_axis_titles=("total squared error / D per episode (sum over {horizon} examples)",),
)

MDP_METRICS = MetricFamily(
    kind="mdp",
    step_metrics=("mean_reward", "value_regret", "cumulative_value_regret"),
    episode_metrics=("total_mean_reward", "cumulative_value_regret", "adaptation"),
    higher_is_better=(True, False, True),
    step_titles=(
        "mean reward per step (expected)",
        "value regret per step (V* - Q* of the action)",
        "cumulative value regret",
    ),
    chart_titles=("Value regret per step", "Cumulative value regret", "Total mean reward per trial"),
    bar_axis_titles=("total mean reward per trial (expected, sum over {horizon} steps)",),
)

COMMITMENT_METRICS = MetricFamily(
    kind="commitment",
    step_metrics=("success", "game_reward", "z_surprisal_bits"),
    episode_metrics=("success", "game_reward", "z_surprisal_bits"),
    higher_is_better=(True, True, True),
    step_titles=("success (y = f(z))", "reward (success - penalty)", "surprisal of z (bits)"),
    chart_titles=(
        "Success rate (y = f(z))",
        "Reward per episode (success - predictability penalty)",
        "Entropy of z (bits, plug-in)",
    ),
    bar_axis_titles=(
        "fraction of episodes with y = f(z)",
        "reward per episode (success - predictability penalty)",
        "entropy of z over the probe's episodes (bits)",
    ),
    per_episode=True,
)

#: Every metric family, by environment kind.
METRIC_FAMILIES = {
    family.kind: family
    for family in (BANDIT_METRICS, PREDICTION_METRICS, REGRESSION_METRICS, COMMITMENT_METRICS, MDP_METRICS)
}

#: Every per-step metric any probe writes.
STEP_METRICS = tuple(
    dict.fromkeys(name for family in METRIC_FAMILIES.values() for name in family.step_metrics)
)

#: Every episode metric of the summary tables.
EPISODE_METRICS = tuple(
    dict.fromkeys(name for family in METRIC_FAMILIES.values() for name in family.episode_metrics)
)

#: Distance to the exact optimum as a ratio, a summary row of every agent where an exact
#: reference plays the same tasks (:mod:`mesaprobe.analysis.differences`).  Bandits: the
#: agent's cumulative regret divided by the Bayes-optimal agent's on the same tasks.
#: Prediction and regression: the agent's total log-loss (squared error) divided by the exact
#: Bayes predictor's (ridge's) on the same sequences.  1 is the optimum; 1.25 is 25% more
#: regret (or loss) than the optimum.
REGRET_RATIO = "regret_ratio"

#: Fraction of the episode at each end compared by ``adaptation``.
ADAPTATION_FRACTION = 0.1


def family_of_metric(name: str) -> MetricFamily:
    """The family a step metric belongs to."""
    for family in METRIC_FAMILIES.values():
        if name in family.step_metrics:
            return family
    raise KeyError(name)


def bandit_step_metrics(expected_rewards: Tensor, best_expected_rewards: Tensor) -> dict[str, Tensor]:
    """Bandit per-step metrics (each (B, T)) from chosen and best arms' expected rewards (B, T)."""
    regret = best_expected_rewards - expected_rewards  # (B, T)
    return {"expected_reward": expected_rewards, "regret": regret, "cumulative_regret": regret.cumsum(dim=1)}


def mdp_step_metrics(mean_rewards: Tensor, value_regrets: Tensor) -> dict[str, Tensor]:
    """MDP per-step metrics (each (B, T)) from the chosen actions' mean rewards and value regrets (B, T)."""
    return {
        "mean_reward": mean_rewards,
        "value_regret": value_regrets,
        "cumulative_value_regret": value_regrets.cumsum(dim=1),
    }


def episodes_in_trial(step_values: Tensor, episode_length: int) -> Tensor:
    """(B, K) sums of a per-step metric (B, K x episode_length) over each episode of a trial."""
    batch, steps = step_values.shape
    assert steps % episode_length == 0, (steps, episode_length)
    return step_values.reshape(batch, steps // episode_length, episode_length).sum(dim=2)  # (B, K)


def logloss_bits(probs: Tensor, tokens: Tensor) -> Tensor:
    """(B, T) -log2 of the probability ``probs`` (B, T, K) gave each actual token (B, T)."""
    chosen = probs.gather(-1, tokens[..., None]).squeeze(-1)
    return -torch.log2(chosen.clamp_min(torch.finfo(chosen.dtype).tiny))


def prediction_step_metrics(probs: Tensor, bayes_probs: Tensor, tokens: Tensor) -> dict[str, Tensor]:
    """Prediction per-step metrics (each (B, T)) of ``probs`` against the Bayes predictor's."""
    loss = logloss_bits(probs.double(), tokens)
    regret = loss - logloss_bits(bayes_probs.double(), tokens)
    return {"logloss_bits": loss, "regret_bits": regret, "cumulative_regret_bits": regret.cumsum(dim=1)}


def regression_step_metrics(
    predictions: Tensor, ridge_predictions: Tensor, targets: Tensor, dimension: int
) -> dict[str, Tensor]:
    """Regression per-step metrics (each (B, K)) of ``predictions`` (B, K) against ridge's, for targets (B, K)."""
    targets = targets.double()
    error = (predictions.double() - targets).pow(2) / dimension
    regret = error - (ridge_predictions.double() - targets).pow(2) / dimension
    return {"mse_per_dim": error, "regret_mse": regret, "cumulative_regret_mse": regret.cumsum(dim=1)}


def adaptation_window(horizon: int) -> int:
    """Number of steps at each end of an episode compared by ``adaptation`` (at least 1)."""
    return max(1, math.ceil(ADAPTATION_FRACTION * horizon))


def surprisal_bits(codes: Tensor) -> Tensor:
    """(E,) -log2 of each code's frequency among ``codes`` (E,); the mean is the plug-in entropy."""
    _, inverse, counts = torch.unique(codes, return_inverse=True, return_counts=True)
    return -torch.log2(counts[inverse].double() / codes.numel())


def commitment_episode_metrics(success: Tensor, reward: Tensor, z: Tensor) -> dict[str, Tensor]:
    """Commitment metrics (each (E, 1): one value per episode) from outcomes (E,) and z codes (E,)."""
    return {
        "success": success.double()[:, None],
        "game_reward": reward.double()[:, None],
        "z_surprisal_bits": surprisal_bits(z)[:, None],
    }


# --------------------------------------------------------------------------- inside the frozen learner

#: Quantities of the probes that look inside a frozen learner (``readout``,
#: ``fitted_learner``, ``in_weights``), defined once.  Their tables
#: (:mod:`mesaprobe.analysis.inside`) say per row which representation (``layer``) and
#: which statistic or model (``target``) a value is about, and what its ``index`` counts.
#: Each maps to (description with unit, what ``index`` counts).
INSIDE_QUANTITIES: dict[str, tuple[str, str]] = {
    "readout_r2": (
        "R^2 on held-out episodes of a ridge read-out of a sufficient statistic (target) of the "
        "Bayes posterior from a hidden representation (layer) of the trained model",
        "time step (the representation after the step's input)",
    ),
    "readout_r2_untrained": (
        "readout_r2 of the same architecture with freshly initialised weights (the control: what a "
        "random network's features make linearly readable without training)",
        "time step",
    ),
    "learning_rate": (
        "effective learning rate alpha_n of a learner (target): a fitted Rescorla-Wagner / Q-learning "
        "model alpha_n = alpha_0 / (1 + kappa (n - 1))^beta, or Bayes' 1 / (n + a + b) for a Beta(a, b) "
        "prior (the posterior mean's step towards the n-th reward of an arm; 1 / (n + 2) for a uniform prior)",
        "pulls n of the arm, counting the pull whose reward is learned from (1, 2, ...)",
    ),
    "fitted_parameter": (
        "a fitted parameter (target) of a learning model fitted by maximum likelihood to the agent's choices",
        "none (0)",
    ),
    "choice_surprisal_bits": (
        "-log2 likelihood per choice of the agent's choices under a fitted model (target); lower "
        "fits better, log2(K) is a uniform guess",
        "none (0)",
    ),
    "in_context_regret": (
        "the frozen agent's regret per step over the last tenth of its episodes (the level its "
        "in-context learning reaches), the target the in-weights learner must match",
        "none (0)",
    ),
    "sgd_regret": (
        "expected regret per step of a memoryless policy fine-tuned by SGD on one task's own "
        "experience, after index SGD steps (the outer learner doing the inner job)",
        "SGD steps on the task",
    ),
    "sgd_steps_to_match": (
        "SGD steps the fine-tuned memoryless policy needs to reach the frozen agent's in-context "
        "regret on the same task (censored: max_steps + 1 when never reached)",
        "none (0)",
    ),
    "sgd_matched_fraction": (
        "fraction of tasks on which the fine-tuned policy reached the frozen agent's regret within max_steps",
        "none (0)",
    ),
}
