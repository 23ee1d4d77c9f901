"""Intervals of the study tables: over training seeds, over episodes, and paired.

A trained architecture's result varies from one training seed to the next far more than
from one batch of held-out episodes to the next, so the interval of an architecture's
mean is made over its seeds: :func:`interval` is a Student-t interval on the per-seed
means (each seed's mean over its episodes; episode noise enters through it).  It is the
one function that makes every interval over training seeds.  Simulated (tests/test_stats.py,
4000 trials each, 95% level): coverage 0.95 for normal seed-level variation at 3, 5 and 10
seeds and at least 0.94 for skewness up to about 0.5-0.7; it falls below the level for
strongly skewed variation (skewness 1: about 0.93; exponential, skewness 2: about 0.88 at
3 seeds), as every interval from so few seeds must.  With fewer than
:data:`MIN_SEEDS_FOR_INTERVAL` seeds the tables give no interval (null) and say why.

Baselines have no training seed: their seeds are only batches of held-out tasks, so
their interval is over episodes (:func:`episode_interval`, Student t on all episodes).

Paired comparisons (:mod:`mesaprobe.analysis.differences`) use the same two functions on
differences computed episode by episode on shared tasks.

:func:`two_level_replicate_bootstrap` makes the intervals of the inside tables, whose
estimates are not episode means and come with episode-bootstrap replicates computed by
the probe (:mod:`mesaprobe.analysis.inside`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

#: Fewest training seeds an interval over seeds is made from; fewer give none (null).
MIN_SEEDS_FOR_INTERVAL = 3

#: What an interval is made over, as the tables' ``interval`` column says.
OVER_SEEDS = "training seeds (Student t)"
OVER_EPISODES = "episodes (Student t)"


def interval(seed_means: np.ndarray | Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t ``level`` interval of the mean of ``seed_means`` (one value per training seed).

    ``mean +- t_{(1 + level) / 2, S - 1} * sd / sqrt(S)`` (``scipy.stats.t``).  Needs at least
    two values; equal values give a zero-width interval.  Use :func:`intervals` for many
    columns at once.
    """
    low, high = intervals(np.asarray(seed_means, dtype=np.float64)[:, None], level)
    return float(low[0]), float(high[0])


def intervals(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student-t ``level`` intervals of the column means of ``values`` (rows, columns): rows are
    independent replicates (training seeds, or episodes).  Returns (low, high), each (columns,)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"an interval needs at least 2 replicates (rows), got shape {values.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rows = values.shape[0]
    mean = values.mean(axis=0)
    half_width = stats.t.ppf((1.0 + level) / 2.0, rows - 1) * values.std(axis=0, ddof=1) / np.sqrt(rows)
    return mean - half_width, mean + half_width


def episode_interval(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The interval of a baseline's episode means: Student t over all its episodes (rows)."""
    return intervals(values, level)


def seed_means(values: np.ndarray, episodes_per_seed: Sequence[int]) -> np.ndarray:
    """(S, F) per-seed means of ``values`` (E, F), whose rows are grouped by seed in order."""
    counts = np.asarray(episodes_per_seed, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return np.add.reduceat(np.asarray(values, dtype=np.float64), starts, axis=0) / counts[:, None]


def probability_of_improvement(scores: np.ndarray, reference: np.ndarray, higher_is_better: bool) -> float:
    """The share of (seed, reference seed) pairs in which ``scores`` beats ``reference`` (ties
    count one half): P(X > Y) over independent seeds, as in Agarwal et al. (2021)."""
    a, b = np.asarray(scores, dtype=np.float64)[:, None], np.asarray(reference, dtype=np.float64)[None, :]
    better = (a > b) if higher_is_better else (a < b)
    return float((better + 0.5 * (a == b)).mean())


def two_level_replicate_bootstrap(
    estimates: np.ndarray,
    replicates: np.ndarray,
    resamples: int,
    confidence: float,
    generator: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and its two-level percentile interval, per cell.

    ``estimates`` (S, F): each seed's estimate on all its episodes; ``replicates``
    (S, R, F): its episode-bootstrap replicates.  A resample draws S seeds with
    replacement and one replicate of each drawn seed uniformly; its statistic is the
    mean of those replicates.  Returns (mean, ci_low, ci_high), each (F,).
    """
    seeds, count, _ = replicates.shape
    seed_draws = generator.integers(0, seeds, size=(resamples, seeds))
    replicate_draws = generator.integers(0, count, size=(resamples, seeds))
    statistics = replicates[seed_draws, replicate_draws].mean(axis=1)  # (resamples, F)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(statistics, [tail, 1.0 - tail], axis=0)
    return estimates.mean(axis=0), low, high
