"""The bootstrap of the study tables: seeds, then episodes within each seed.

A study's seeds are its independent replicates and its episodes are tasks drawn
within a seed, so an interval resamples both levels: :func:`two_level_bootstrap` for
means of episode values (curves and episode metrics, :mod:`mesaprobe.analysis.collect`),
:func:`two_level_replicate_bootstrap` for estimates that are not episode means and
come with episode-bootstrap replicates computed by the probe (the inside tables,
:mod:`mesaprobe.analysis.inside`).  Every function takes its generator, so the same
inputs and generator state give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Upper bound on the elements of one block of bootstrap weights (64 MiB of float64).
_WEIGHT_BLOCK_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class BootstrapInterval:
    """Point estimates and percentile interval, each of shape (features,)."""

    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def two_level_weights(
    episodes_per_seed: Sequence[int], resamples: int, generator: np.random.Generator
) -> np.ndarray:
    """Bootstrap weights of shape (resamples, total episodes) for :func:`two_level_bootstrap`.

    Each resample draws ``S`` seeds with replacement; each drawn copy of seed ``s``
    then draws ``n_s`` of that seed's episodes with replacement.  The weight of an
    episode is how often it was drawn in total, so seed ``s`` drawn ``c`` times
    contributes ``c * n_s`` draws.  Summing ``c`` independent uniform draws of
    ``n_s`` episodes is the same as one uniform draw of ``c * n_s`` episodes, which
    is how the weights are sampled: index draws and ``bincount``, no loop over
    resamples or episodes.
    """
    counts = np.asarray(episodes_per_seed, dtype=np.int64)
    seed_count = counts.size
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    resample_index = np.arange(resamples)
    seed_draws = generator.integers(0, seed_count, size=(resamples, seed_count))
    times_drawn = np.bincount(
        (resample_index[:, None] * seed_count + seed_draws).ravel(),
        minlength=resamples * seed_count,
    ).reshape(resamples, seed_count)
    weights = np.empty((resamples, int(counts.sum())), dtype=np.float64)
    for seed_position, (start, episodes) in enumerate(zip(starts, counts, strict=True)):
        draws_per_resample = times_drawn[:, seed_position] * episodes
        resample_of_draw = np.repeat(resample_index, draws_per_resample)
        episode_of_draw = generator.integers(0, episodes, size=resample_of_draw.size)
        weights[:, start : start + episodes] = np.bincount(
            resample_of_draw * episodes + episode_of_draw, minlength=resamples * episodes
        ).reshape(resamples, episodes)
    return weights


def two_level_bootstrap(
    values: np.ndarray,
    episodes_per_seed: Sequence[int],
    resamples: int,
    confidence: float,
    generator: np.random.Generator,
) -> BootstrapInterval:
    """Mean over seeds of per-seed episode means, with a two-level bootstrap percentile CI.

    ``values`` has shape (episodes, features): one row per episode, rows grouped by
    seed in the order of ``episodes_per_seed`` (``n_1, ..., n_S`` rows).  Every
    feature column (a step of a curve, an episode metric) is summarised at once with
    the same resamples.

    The statistic is ``(1/S) * sum_s mean_i values[s, i]``.  Each resample draws S
    seeds with replacement and, within each drawn seed, that seed's episodes with
    replacement (:func:`two_level_weights`); the interval is the ``(1 - confidence)
    / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled statistics.  With
    one seed this is the ordinary episode bootstrap.  When seeds do not differ
    systematically the two levels both count the episode noise, so the interval is
    conservative: its variance is about ``(2 - 1/S)`` times the plain standard error's.

    Resamples are processed in blocks (weights of at most 64 MiB) as one matrix
    product each; results depend only on the inputs and the generator's state.
    """
    values = np.asarray(values, dtype=np.float64)
    counts = np.asarray(episodes_per_seed, dtype=np.int64)
    if values.ndim != 2:
        raise ValueError(f"values must have shape (episodes, features), got {values.shape}")
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 1):
        raise ValueError(f"episodes_per_seed must be positive counts, got {episodes_per_seed}")
    if counts.sum() != values.shape[0]:
        raise ValueError(f"episodes_per_seed sums to {counts.sum()}, values has {values.shape[0]} rows")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    seed_count = counts.size
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    seed_means = np.add.reduceat(values, starts, axis=0) / counts[:, None]  # (S, F)
    # Each row divided by its seed's episode count, so that weights @ scaled sums
    # the resampled per-seed means over the S drawn seeds.
    scaled = values / np.repeat(counts, counts)[:, None]  # (E, F)
    statistics = np.empty((resamples, values.shape[1]), dtype=np.float64)
    block = max(1, _WEIGHT_BLOCK_ELEMENTS // values.shape[0])
    for first in range(0, resamples, block):
        size = min(block, resamples - first)
        weights = two_level_weights(counts, size, generator)  # (size, E)
        statistics[first : first + size] = (weights @ scaled) / seed_count
    tail = (1.0 - confidence) / 2.0
    ci_low, ci_high = np.quantile(statistics, [tail, 1.0 - tail], axis=0)
    return BootstrapInterval(mean=seed_means.mean(axis=0), ci_low=ci_low, ci_high=ci_high)


def bootstrap_generator(seed: int, episodes_per_seed: Sequence[int]) -> np.random.Generator:
    """The generator for agent groups with these episode counts.

    It depends only on ``seed`` and the counts, so a group's interval does not change
    when other agents are added to a study, and groups with the same counts share
    resamples (a paired bootstrap; each group's interval is still exactly its own).
    """
    return np.random.default_rng(np.random.SeedSequence([seed, *map(int, episodes_per_seed)]))


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
