"""Paired comparisons on shared tasks, and the distance to the exact optimum as a ratio.

Every agent of a study plays the same held-out tasks with the same luck at each seed (the
task and luck streams are named by environment, probe and seed only), so two agents are
compared *episode by episode*: for seed ``s`` the difference ``d_s`` is the mean over the
seed's episodes of (agent's episode metric - reference's), and

* ``mean_difference`` is the mean of ``d_s`` over the seeds both played;
* its interval is :func:`mesaprobe.analysis.stats.interval` on the ``d_s`` (Student t over
  training seeds; none with fewer than :data:`~mesaprobe.analysis.stats.MIN_SEEDS_FOR_INTERVAL`
  seeds) when either side is a trained architecture, and a Student-t interval over the paired
  episodes when both are baselines (which have no training seed);
* ``p_better`` is the probability of improvement: the share of (agent seed, reference seed)
  pairs in which the agent's seed mean beats the reference's (ties count one half; "beats"
  follows the metric's direction), i.e. P(agent > reference) over training seeds.

:func:`difference_rows` compares every agent with the reference of its environment and
probe (the study's exact optimum where one plays the same tasks, see
:attr:`mesaprobe.study.plan.Plan.references`; otherwise the best baseline by the family's
total), and every pair of architectures with each other.

:func:`regret_ratio_rows` states each agent's distance to the optimum as a ratio
(:data:`mesaprobe.metrics.REGRET_RATIO`, 1 = optimal): per seed the ratio of sums over the
seed's episodes, then the same intervals as above (over seeds for architectures; for a
baseline the ratio of sums over all episodes, its interval from the linearised ratio
``(A_e - r O_e) / mean(O)`` over episodes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from mesaprobe.analysis.stats import (
    MIN_SEEDS_FOR_INTERVAL,
    OVER_EPISODES,
    OVER_SEEDS,
    episode_interval,
    intervals,
    probability_of_improvement,
)
from mesaprobe.analysis.tables import DIFFERENCES_COLUMNS, GROUP_COLUMNS, SUMMARY_COLUMNS
from mesaprobe.metrics import REGRET_RATIO, MetricFamily
from mesaprobe.study.references import Reference


@dataclass(frozen=True)
class EpisodeScores:
    """One agent group's episode metrics, episode by episode (what comparisons pair)."""

    key: tuple  # values of GROUP_COLUMNS
    family: MetricFamily
    seeds: np.ndarray  # (S,) ascending
    episodes_per_seed: np.ndarray  # (S,)
    episode_ids: np.ndarray  # (E,) ids within each seed, seeds contiguous
    values: np.ndarray  # (E, 3): the family's episode metrics, in family order

    @property
    def named(self) -> dict[str, str]:
        return dict(zip(GROUP_COLUMNS, self.key, strict=True))

    @property
    def trained(self) -> bool:
        """A trained architecture: its seeds are training seeds."""
        return self.named["agent_kind"] == "architecture"

    def by_seed(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """seed -> (episode ids, values (E_s, 3))."""
        edges = np.cumsum([0, *self.episodes_per_seed])
        return {
            int(seed): (self.episode_ids[start:stop], self.values[start:stop])
            for seed, start, stop in zip(self.seeds, edges[:-1], edges[1:], strict=True)
        }


@dataclass(frozen=True)
class Paired:
    """Two agents' values on the episodes both played, seed by seed."""

    seeds: list[int]
    agent: list[np.ndarray]  # per seed (E_s, 3)
    reference: list[np.ndarray]


def paired(agent: EpisodeScores, reference: EpisodeScores) -> Paired:
    """The episodes (same seed, same episode id: the same task and luck) both agents played."""
    mine, theirs = agent.by_seed(), reference.by_seed()
    seeds, agent_values, reference_values = [], [], []
    for seed in sorted(set(mine) & set(theirs)):
        ids, values = mine[seed]
        other_ids, other_values = theirs[seed]
        common, here, there = np.intersect1d(ids, other_ids, return_indices=True)
        if common.size:
            seeds.append(seed)
            agent_values.append(values[here])
            reference_values.append(other_values[there])
    return Paired(seeds, agent_values, reference_values)


def _interval_of(
    seed_values: np.ndarray, episode_values: np.ndarray, over_seeds: bool, level: float
) -> tuple[float, float, float, str, str]:
    """(mean, low, high, interval, note) of one column: over seeds (``seed_values`` (S,)) or over
    episodes (``episode_values`` (E,))."""
    if over_seeds:
        mean = float(seed_values.mean())
        if seed_values.size < MIN_SEEDS_FOR_INTERVAL:
            note = f"{seed_values.size} training seeds; an interval needs at least {MIN_SEEDS_FOR_INTERVAL}"
            return mean, float("nan"), float("nan"), OVER_SEEDS, note
        low, high = intervals(seed_values[:, None], level)
        return mean, float(low[0]), float(high[0]), OVER_SEEDS, ""
    mean = float(episode_values.mean())
    if episode_values.size < 2:
        return mean, float("nan"), float("nan"), OVER_EPISODES, "one episode; no interval"
    low, high = episode_interval(episode_values[:, None], level)
    return mean, float(low[0]), float(high[0]), OVER_EPISODES, ""


def _null_nan(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("ci_low", "ci_high").fill_nan(None))


def reference_of(groups: Sequence[EpisodeScores], reference: Reference | None) -> EpisodeScores | None:
    """The agent every other is compared with: the exact optimum if it played, otherwise the best
    baseline by the family's total (its first episode metric)."""
    if reference is not None and reference.optimum is not None:
        optimum = [
            group for group in groups if not group.trained and group.named["agent"] == reference.optimum
        ]
        if optimum:
            return optimum[0]
    baselines = [group for group in groups if not group.trained]
    if not baselines:
        return None
    sign = 1.0 if baselines[0].family.higher_is_better[0] else -1.0
    return max(baselines, key=lambda group: sign * float(group.values[:, 0].mean()))


def _difference_row(agent: EpisodeScores, reference: EpisodeScores, level: float) -> list[dict]:
    pair = paired(agent, reference)
    if not pair.seeds:
        return []
    over_seeds = agent.trained or reference.trained
    differences = [a - b for a, b in zip(pair.agent, pair.reference, strict=True)]  # per seed (E_s, 3)
    seed_differences = np.stack([d.mean(axis=0) for d in differences])  # (S, 3)
    episode_differences = np.concatenate(differences)  # (E, 3)
    agent_seed_means = np.stack([a.mean(axis=0) for a in pair.agent])
    reference_seed_means = np.stack([b.mean(axis=0) for b in pair.reference])
    rows = []
    for position, metric in enumerate(agent.family.episode_metrics):
        mean, low, high, kind, note = _interval_of(
            seed_differences[:, position], episode_differences[:, position], over_seeds, level
        )
        rows.append(
            {
                "study": agent.named["study"],
                "environment": agent.named["environment"],
                "variant": agent.named["variant"],
                "probe": agent.named["probe"],
                "metric": metric,
                "agent": agent.named["agent"],
                "reference": reference.named["agent"],
                "mean_difference": mean,
                "ci_low": low,
                "ci_high": high,
                "p_better": probability_of_improvement(
                    agent_seed_means[:, position],
                    reference_seed_means[:, position],
                    agent.family.higher_is_better[position],
                ),
                "seeds": len(pair.seeds),
                "episodes": int(episode_differences.shape[0]),
                "interval": kind,
                "interval_note": note,
            }
        )
    return rows


def _settings(groups: Sequence[EpisodeScores]) -> dict[tuple[str, str], list[EpisodeScores]]:
    by_setting: dict[tuple[str, str], list[EpisodeScores]] = {}
    for group in groups:
        by_setting.setdefault((group.named["environment"], group.named["probe"]), []).append(group)
    return by_setting


def difference_rows(
    groups: Sequence[EpisodeScores], references: Mapping[tuple[str, str], Reference], level: float
) -> pl.DataFrame:
    """Every agent against its setting's reference, and every pair of architectures (see the
    module docstring), in table order."""
    rows: list[dict] = []
    for key, members in _settings(groups).items():
        reference = reference_of(members, references.get(key))
        if reference is not None:
            for agent in members:
                if agent is not reference:
                    rows += _difference_row(agent, reference, level)
        architectures = [group for group in members if group.trained]
        for first, agent in enumerate(architectures):
            for other in architectures[first + 1 :]:
                rows += _difference_row(agent, other, level)
    if not rows:
        return pl.DataFrame(schema=DIFFERENCES_COLUMNS)
    return _null_nan(pl.DataFrame(rows, schema=DIFFERENCES_COLUMNS))


def _ratio_row(
    group: EpisodeScores, numerators: list[np.ndarray], denominators: list[np.ndarray], level: float
):
    """A regret-ratio summary row from per-seed (E_s,) numerators and denominators."""
    named = group.named
    seeds = len(numerators)
    sums = np.array([[a.sum(), b.sum()] for a, b in zip(numerators, denominators, strict=True)])
    if np.any(sums[:, 1] <= 0):
        return None  # the optimum has no regret (loss) to compare with
    if group.trained:
        mean, low, high, kind, note = _interval_of(sums[:, 0] / sums[:, 1], np.empty(0), True, level)
    else:
        a, b = np.concatenate(numerators), np.concatenate(denominators)
        ratio = a.sum() / b.sum()
        linear = (a - ratio * b) / b.mean()  # the ratio's first-order error, episode by episode
        _, low, high, kind, note = _interval_of(np.empty(0), linear, False, level)
        mean, low, high = float(ratio), ratio + low, ratio + high
    return {
        **named,
        "metric": REGRET_RATIO,
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "seeds": seeds,
        "episodes": int(sum(a.size for a in numerators)),
        "interval": kind,
        "interval_note": note,
    }


def regret_ratio_rows(
    groups: Sequence[EpisodeScores], references: Mapping[tuple[str, str], Reference], level: float
) -> pl.DataFrame:
    """Summary rows of :data:`~mesaprobe.metrics.REGRET_RATIO` for every agent whose setting has an
    exact reference on the same tasks (see the module docstring)."""
    rows = []
    for key, members in _settings(groups).items():
        reference = references.get(key)
        if reference is None or reference.regret_ratio is None:
            continue
        for group in members:
            if reference.regret_ratio == "own":
                # Total loss (episode metric 0) and the exact Bayes predictor's on the same
                # sequences: the loss minus the cumulative regret (episode metric 1).
                per_seed = list(group.by_seed().values())
                numerators = [values[:, 0] for _, values in per_seed]
                denominators = [values[:, 0] - values[:, 1] for _, values in per_seed]
            else:
                optimum = reference_of(members, reference)
                if optimum is None or optimum.named["agent"] != reference.optimum:
                    continue
                pair = paired(group, optimum)
                numerators = [values[:, 1] for values in pair.agent]  # cumulative regret
                denominators = [values[:, 1] for values in pair.reference]
            if numerators and (row := _ratio_row(group, numerators, denominators, level)) is not None:
                rows.append(row)
    if not rows:
        return pl.DataFrame(schema=SUMMARY_COLUMNS)
    return _null_nan(pl.DataFrame(rows, schema=SUMMARY_COLUMNS))
