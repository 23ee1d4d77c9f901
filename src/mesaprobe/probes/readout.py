"""The read-out probe: can the exact Bayes posterior's sufficient statistics be read linearly
from a frozen model's hidden states? (Mikulik et al. 2020, "Meta-trained agents implement
Bayes-optimal agents".)

The frozen model plays (bandits, through its own policy) or reads (prediction: tokens
sampled from held-out tasks) ``episodes`` held-out episodes; one forward pass with
``return_hidden=True`` gives every layer's representation at every step.  For the same
episodes :mod:`mesaprobe.probes.posterior_statistics` computes the exact posterior's
statistics, aligned so that the representation at step t and the statistic at step t
are conditioned on the same inputs (step 1: the prior).

A read-out is a ridge regression from one layer's state at one step to one statistic
column at that step, fitted separately for every (layer, statistic, column, step):

* episodes are split by order, fixed: the first ``round(fit_fraction * episodes)`` fit,
  the rest test; the fit episodes' last :data:`VALIDATION_FRACTION` is the validation slice;
* features are divided by their standard deviation over the fit episodes (a feature whose
  spread is below :data:`CONSTANT_FEATURE` is dropped: a dead unit, or step 1 where every
  episode has the same input); each ridge centres features and target on the episodes it
  is fitted to, so the intercept is not penalised, and minimises
  mean squared error + penalty * ||w||^2 (penalties are relative to unit-variance features);
* the penalty is the one of ``penalties`` with the smallest squared error on the validation
  slice when fitted to the rest of the fit episodes; the read-out is then refitted to all
  fit episodes with it;
* R^2 is measured on the test episodes, pooled over the statistic's columns (arms,
  symbols, contexts): 1 - (squared error summed over columns) / (total sum of squares
  summed over columns), so each (layer, statistic) is one row per step.

Replicates 1..R resample the test episodes (:func:`episode_bootstrap_weights`, the same
resamples for the trained and the untrained model, named by the held-out key) with the
read-outs held fixed: R^2_r = 1 - sum w (y - yhat)^2 / sum w (y - weighted mean of y)^2.

A step where a statistic is (nearly) constant over the test episodes has no R^2 (every
count is 0 at step 1, a change is certain at step 2): its rows are left out.  "Nearly"
means the weighted variance, pooled over columns, is at most :data:`CONSTANT_TARGET`
times the statistic's largest over the steps, in replicate 0 or in any resample.

With an ``untrained`` model (a freshly initialised one of the same architecture) the same
read-outs are fitted to its hidden states on the very same inputs: ``readout_r2_untrained``,
what random features make readable without training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import polars as pl
import torch
from torch import Tensor

from mesaprobe.envs.base import Environment
from mesaprobe.errors import UserError
from mesaprobe.probes.adaptation import heldout_streams
from mesaprobe.probes.inside import INSIDE_ROW_COLUMNS, InsideProbe, episode_bootstrap_weights, rows_frame
from mesaprobe.probes.posterior_statistics import (
    BANDIT_STATISTICS,
    PREDICTION_STATISTICS,
    bandit_offered,
    bandit_statistics,
    prediction_offered,
    prediction_statistics,
)
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError
from mesaprobe.train.rollout import play

#: Share of the fit episodes (the last ones) that choose the penalty.
VALIDATION_FRACTION = 0.2
#: A feature whose standard deviation over the fit episodes is at most this times (1 + |mean|)
#: is constant (float32 hidden states agree to about 1e-7 relative).
CONSTANT_FEATURE = 1e-6
#: A step whose pooled test variance is at most this times the statistic's largest has no R^2.
CONSTANT_TARGET = 1e-8
#: Statistics per environment kind.
STATISTICS: dict[str, dict[str, str]] = {"bandit": BANDIT_STATISTICS, "prediction": PREDICTION_STATISTICS}


@dataclass(frozen=True)
class ReadoutConfig:
    episodes: int = 2000
    """Held-out tasks played, one episode each (split into fit and test episodes)."""
    replicates: int = 200
    """Episode-bootstrap replicates of the test episodes computed per seed (the interval of
    the study's summary); the read-outs stay fitted to the fit episodes."""
    batch: int = 1000
    """Episodes played and run through the model at once (a memory bound; the hidden states of
    all episodes are kept, float32, for the fits)."""
    fit_fraction: float = 0.5
    """Share of the episodes (the first ones) the read-outs are fitted to; the rest are test
    episodes, where R^2 is measured."""
    penalties: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    """Ridge penalties tried (on features of unit variance, with the mean squared error): each
    read-out takes the one with the least error on the last fifth of the fit episodes."""
    statistics: tuple[str, ...] | None = None
    """Posterior statistics read out; None: every one the environment's family offers.
    bandit: successes, failures, posterior_mean. prediction: counts, bayes_prediction,
    transition_counts (markov, vom), run_length (switching, drifting, streak),
    change_probability (switching, drifting); a family that lacks a named one skips it."""

    def validate(self) -> None:
        for name in ("episodes", "batch"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        if self.replicates < 0:
            raise SettingError("replicates", f"expected 0 or more, got {self.replicates}")
        if not 0.0 < self.fit_fraction < 1.0:
            raise SettingError("fit_fraction", f"expected a fraction in (0, 1), got {self.fit_fraction}")
        fit = self.fit_episodes
        if fit - validation_episodes(fit) < 1 or self.episodes - fit < 2:
            raise SettingError(
                "fit_fraction",
                f"{self.episodes} episodes split at {self.fit_fraction} leave {fit} fit and "
                f"{self.episodes - fit} test episodes; need at least 2 of each",
            )
        if not self.penalties or not all(penalty > 0 for penalty in self.penalties):
            raise SettingError("penalties", f"expected positive ridge penalties, got {list(self.penalties)}")
        if self.statistics is not None:
            known = {name for names in STATISTICS.values() for name in names}
            unknown = [name for name in self.statistics if name not in known]
            if unknown:
                raise SettingError(
                    "statistics",
                    f"unknown statistic {unknown[0]!r}; expected some of: {', '.join(sorted(known))}",
                )
            if not self.statistics or len(set(self.statistics)) != len(self.statistics):
                raise SettingError("statistics", f"expected distinct statistics, got {list(self.statistics)}")

    @property
    def fit_episodes(self) -> int:
        """Episodes (the first ones) the read-outs are fitted to."""
        return round(self.episodes * self.fit_fraction)


def validation_episodes(fit_episodes: int) -> int:
    """How many of the fit episodes (the last ones) choose the penalty."""
    return max(1, round(VALIDATION_FRACTION * fit_episodes))


class ReadoutProbe(InsideProbe):
    """R^2 of ridge read-outs of the Bayes posterior's sufficient statistics from each layer."""

    Config: ClassVar[type] = ReadoutConfig
    serves: ClassVar[tuple[str, ...]] = ("bandit", "prediction")
    plays_baselines: ClassVar[bool] = False  # baselines have no hidden states
    charts: ClassVar[tuple[str, ...]] = ("readout_r2",)
    task: ClassVar[str] = "readout probe reads hidden states of bandit and prediction models"

    @classmethod
    def not_applicable(cls, config: ReadoutConfig, kind: str) -> str | None:
        """Why these settings cannot probe an environment of ``kind`` (None: they can)."""
        reason = super().not_applicable(config, kind)
        if reason is not None:
            return reason
        if config.statistics is not None:
            foreign = [name for name in config.statistics if name not in STATISTICS[kind]]
            if foreign:
                return (
                    f"statistics {', '.join(foreign)} do not apply to {kind} environments "
                    f"(they offer {', '.join(STATISTICS[kind])})"
                )
        return None

    def statistic_names(self, environment) -> tuple[str, ...]:
        """The statistics read out on ``environment``: those asked for that its family offers."""
        offered = (
            bandit_offered(environment) if environment.kind == "bandit" else prediction_offered(environment)
        )
        if self.config.statistics is None:
            return offered
        names = tuple(name for name in self.config.statistics if name in offered)
        if not names:
            raise UserError(
                f"readout probe: {type(environment).__name__} offers none of the statistics "
                f"{list(self.config.statistics)}; it offers {list(offered)}"
            )
        return names

    def run(
        self,
        agent,
        environment: Environment,
        heldout_key: tuple,
        agent_key: tuple,
        device: torch.device | str = "cpu",
        untrained=None,
    ) -> pl.DataFrame:
        """Inside rows (INSIDE_ROW_COLUMNS): readout_r2 per (layer, statistic, step), and
        readout_r2_untrained when an ``untrained`` model is given."""
        config = self.config
        reason = self.not_applicable(config, environment.kind)
        if reason is not None:
            raise UserError(f"probe settings: {reason}")
        names = self.statistic_names(environment)
        models = {"readout_r2": agent.model}
        if untrained is not None:
            models["readout_r2_untrained"] = untrained
        task_generator, luck_generator, action_generator = heldout_streams(heldout_key, agent_key, device)
        hidden: dict[str, dict[str, list[Tensor]]] = {quantity: {} for quantity in models}
        statistics: dict[str, list[Tensor]] = {name: [] for name in names}
        with torch.inference_mode():
            for start in range(0, config.episodes, config.batch):
                count = min(config.batch, config.episodes - start)
                tasks = environment.sample_tasks(count, task_generator, device)
                if environment.kind == "bandit":
                    trajectory = play(environment, tasks, agent, luck_generator, action_generator)
                    inputs = trajectory.observations  # (B, T, I)
                    batch_statistics = bandit_statistics(
                        environment, trajectory.actions, trajectory.rewards, names
                    )
                else:
                    tokens = environment.sample(tasks, luck_generator)  # (B, T)
                    inputs = environment.observation(tokens)  # (B, T, K + 1)
                    batch_statistics = prediction_statistics(environment, tokens, names)
                for name in names:
                    statistics[name].append(batch_statistics[name])
                for quantity, model in models.items():
                    _, layers = model(inputs.to(model.device), return_hidden=True)  # {name: (B, T, H)}
                    for layer, states in layers.items():
                        hidden[quantity].setdefault(layer, []).append(states.float())
        targets = {name: torch.cat(parts) for name, parts in statistics.items()}  # (E, T, C)
        generator = make_generator("readout-bootstrap", *heldout_key)
        test_weights = episode_bootstrap_weights(
            config.episodes - config.fit_episodes, config.replicates, generator
        )
        frames = []
        for quantity, layers in hidden.items():
            for layer, parts in layers.items():
                features = torch.cat(parts)  # (E, T, H)
                scores = readout_scores(
                    features, targets, config.fit_episodes, config.penalties, test_weights
                )
                for name, (values, steps) in scores.items():
                    frames.append(rows_frame(quantity, values, steps.tolist(), layer=layer, target=name))
        if not frames:
            return pl.DataFrame(schema=INSIDE_ROW_COLUMNS)
        return pl.concat(frames)


# ---------------------------------------------------------------- ridge read-outs


@dataclass(frozen=True)
class RidgeReadout:
    """Ridge read-outs of C target columns from H features at each of T steps, float64."""

    mean: Tensor
    """(T, H) feature means over the fit episodes."""
    scale: Tensor
    """(T, H) feature standard deviations over the fit episodes (inf where constant: dropped)."""
    weights: Tensor
    """(T, H, C) coefficients of the standardised features."""
    intercept: Tensor
    """(T, C) prediction at the fit episodes' mean features."""
    penalty: Tensor
    """(T, C) the penalty chosen for each read-out."""

    def predict(self, features: Tensor) -> Tensor:
        """(n, T, C) predictions from features (n, T, H)."""
        standardised = (features.to(self.mean.dtype) - self.mean) / self.scale  # (n, T, H)
        return torch.einsum("nth,thc->ntc", standardised, self.weights) + self.intercept


@dataclass(frozen=True)
class RidgeSystem:
    """A ridge problem solved for every penalty at once through the eigenvectors of its Gram matrix."""

    feature_mean: Tensor
    """(T, H) mean of the features it was built from."""
    target_mean: Tensor
    """(T, C) mean of the targets."""
    eigenvalues: Tensor
    """(T, H) of the Gram matrix X_c^T X_c / n of the centred features."""
    eigenvectors: Tensor
    """(T, H, H) columns are the eigenvectors."""
    rotated: Tensor
    """(T, H, C) eigenvectors^T X_c^T y_c / n."""

    @classmethod
    def build(cls, features: Tensor, targets: Tensor) -> RidgeSystem:
        """From features (n, T, H) and targets (n, T, C)."""
        count = features.shape[0]
        feature_mean, target_mean = features.mean(dim=0), targets.mean(dim=0)
        centred = features - feature_mean  # (n, T, H)
        gram = torch.einsum("nth,ntg->thg", centred, centred) / count  # (T, H, H)
        cross = torch.einsum("nth,ntc->thc", centred, targets - target_mean) / count  # (T, H, C)
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        rotated = eigenvectors.transpose(1, 2) @ cross  # (T, H, C)
        return cls(feature_mean, target_mean, eigenvalues.clamp_min(0.0), eigenvectors, rotated)

    def rotated_weights(self, penalty: Tensor | float) -> Tensor:
        """(T, H, C) coefficients in the eigenbasis for a penalty (a number, or (T, C))."""
        if not isinstance(penalty, Tensor):
            penalty = torch.full_like(self.target_mean, float(penalty))
        return self.rotated / (self.eigenvalues[:, :, None] + penalty[:, None, :])

    def weights(self, penalty: Tensor | float) -> Tensor:
        """(T, H, C) coefficients minimising mean squared error + penalty * ||w||^2."""
        return self.eigenvectors @ self.rotated_weights(penalty)


def standardisation(features: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, scale), each (T, H), of features (n, T, H); scale is inf for constant features."""
    mean = features.mean(dim=0)
    spread = features.std(dim=0, correction=0)
    constant = spread <= CONSTANT_FEATURE * (1.0 + mean.abs())
    return mean, torch.where(constant, torch.inf, spread)


def fit_ridge_readout(
    features: Tensor, targets: Tensor, penalties: tuple[float, ...], validation: int
) -> RidgeReadout:
    """Read-outs fitted to features (n, T, H) and targets (n, T, C), float64, the penalty of
    each (step, column) chosen on the last ``validation`` episodes (see the module docstring)."""
    features, targets = features.to(torch.float64), targets.to(torch.float64)
    count = features.shape[0]
    assert 1 <= validation < count, (validation, count)
    mean, scale = standardisation(features)
    standardised = (features - mean) / scale  # (n, T, H)
    penalty_grid = torch.tensor(penalties, dtype=torch.float64, device=features.device)
    if len(penalties) == 1:
        chosen = penalty_grid[0].expand_as(targets[0]).clone()  # (T, C)
    else:
        inner = count - validation
        system = RidgeSystem.build(standardised[:inner], targets[:inner])
        held = torch.einsum(
            "vth,thg->vtg", standardised[inner:] - system.feature_mean, system.eigenvectors
        )  # (v, T, H) validation features in the eigenbasis
        errors = torch.stack(
            [
                (
                    torch.einsum("vth,thc->vtc", held, system.rotated_weights(penalty))
                    + system.target_mean
                    - targets[inner:]
                )
                .square()
                .sum(dim=0)
                for penalty in penalties
            ]
        )  # (P, T, C)
        chosen = penalty_grid[errors.argmin(dim=0)]  # (T, C), the smallest penalty among ties
    system = RidgeSystem.build(standardised, targets)
    weights = system.weights(chosen).masked_fill(torch.isinf(scale)[:, :, None], 0.0)  # (T, H, C)
    intercept = system.target_mean - torch.einsum("th,thc->tc", system.feature_mean, weights)
    return RidgeReadout(mean=mean, scale=scale, weights=weights, intercept=intercept, penalty=chosen)


def pooled_r2(targets: Tensor, predictions: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted R^2 pooled over columns, and which steps have one.

    ``targets``, ``predictions``: (n, T, C) on the test episodes; ``weights`` (R + 1, n)
    episode weights.  Returns (R^2 (R + 1, T), kept (T,) bool): R^2_r = 1 - sum_c sum_n w
    (y - yhat)^2 / sum_c sum_n w (y - ybar_w)^2, and kept is false at steps where the pooled
    variance is (nearly) zero in some replicate (their R^2 there is meaningless).
    """
    targets, predictions = targets.to(torch.float64), predictions.to(torch.float64)
    weights = weights.to(targets.device, torch.float64)
    centred = targets - targets.mean(dim=0)  # (n, T, C), for a stable sum of squares
    squared_error = torch.einsum("rn,ntc->rt", weights, (targets - predictions).square())  # (R + 1, T)
    total_weight = weights.sum(dim=1)[:, None, None]  # (R + 1, 1, 1)
    weighted_sum = torch.einsum("rn,ntc->rtc", weights, centred)  # (R + 1, T, C)
    total_squares = (
        torch.einsum("rn,ntc->rtc", weights, centred.square()) - weighted_sum.square() / total_weight
    )
    total_squares = total_squares.clamp_min(0.0).sum(dim=2)  # (R + 1, T)
    variance = total_squares / total_weight[:, :, 0]
    kept = (variance > CONSTANT_TARGET * variance[0].max()).all(dim=0)  # (T,)
    r2 = 1.0 - squared_error / torch.where(kept, total_squares, 1.0)
    return torch.where(kept, r2, torch.nan), kept


def readout_scores(
    features: Tensor,
    targets: dict[str, Tensor],
    fit_episodes: int,
    penalties: tuple[float, ...],
    test_weights: Tensor,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per statistic, (R^2 (R + 1, S), steps (S,)) of read-outs from ``features`` (E, T, H).

    ``targets`` maps each statistic to (E, T, C); the first ``fit_episodes`` fit, the rest
    are scored under ``test_weights`` (R + 1, E - fit_episodes).  Steps are 1-based and
    only those with an R^2 (see :func:`pooled_r2`) are returned.
    """
    names = list(targets)
    widths = [targets[name].shape[2] for name in names]
    stacked = torch.cat([targets[name] for name in names], dim=2).to(
        features.device, torch.float64
    )  # (E, T, C)
    readout = fit_ridge_readout(
        features[:fit_episodes], stacked[:fit_episodes], penalties, validation_episodes(fit_episodes)
    )
    predictions = readout.predict(features[fit_episodes:])  # (n, T, C)
    scores = {}
    for name, columns in zip(names, torch.arange(sum(widths)).split(widths), strict=True):
        columns = columns.to(features.device)
        r2, kept = pooled_r2(stacked[fit_episodes:, :, columns], predictions[:, :, columns], test_weights)
        steps = torch.nonzero(kept).squeeze(1)
        scores[name] = (r2[:, steps], steps + 1)
    return scores
