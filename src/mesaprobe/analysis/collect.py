"""Probe tables in, study tables out: per-seed curves, curve bands and the summary.

:func:`collect` reads all the probe tables of a study (:mod:`mesaprobe.analysis.tables`)
and writes, atomically, into the study's ``tables/`` folder:

* ``curves.parquet`` (:data:`~mesaprobe.analysis.tables.CURVES_COLUMNS`): per seed,
  each step metric averaged over that seed's episodes;
* ``curve_bands.parquet`` (:data:`~mesaprobe.analysis.tables.CURVE_BANDS_COLUMNS`):
  the mean over seeds of those per-seed curves, with a confidence interval
  (:mod:`mesaprobe.analysis.stats`): over training seeds for an architecture (Student t on
  the per-seed means; none with fewer than 3 seeds, the reason in ``interval_note``), over
  episodes for a baseline; the ``interval`` column says which;
* ``summary.parquet`` and ``summary.csv`` (:data:`~mesaprobe.analysis.tables.SUMMARY_COLUMNS`):
  the episode metrics of each group's metric family, summarised the same way, and its
  ``regret_ratio`` where an exact reference plays the same tasks;
* ``differences.parquet`` and ``differences.csv``
  (:data:`~mesaprobe.analysis.tables.DIFFERENCES_COLUMNS`): paired differences on shared
  tasks (:mod:`mesaprobe.analysis.differences`);
* ``trial_episodes.parquet`` and ``trial_episodes.csv``
  (:data:`~mesaprobe.analysis.tables.TRIAL_EPISODES_COLUMNS`): for environments played in
  trials of K episodes (``trial_episodes``), each agent's total, regret and cumulative regret
  per episode of the trial, summarised like the curve bands (what learning across episodes
  looks like; empty without trials);
* ``total_reward_table.csv``: every agent's family total (``total_reward`` for
  bandits, ``total_logloss_bits`` for sequence prediction) per environment and probe;
* ``inside.parquet`` and ``inside.csv``: the summary of the study's inside tables
  (read-outs, fitted learners, in-weights learning; :mod:`mesaprobe.analysis.inside`),
  empty when the study has no such probe;
* ``training.parquet``: every run's training history, from its ``train.json``
  (:mod:`mesaprobe.analysis.training`; empty without ``training_runs``), for the learning curves;
* ``tables.json``: provenance (inputs with sha256, interval settings, versions).

The summary ends with each architecture's parameters, state floats and FLOPs per step, from
its runs' frozen manifests (``frozen_paths``; :mod:`mesaprobe.analysis.costs`), null for
baselines.

Each probe table holds the three step metrics of exactly one metric family
(:mod:`mesaprobe.metrics`), so each agent group has one family; a study may mix
families (bandit and prediction environments), and each group is summarised with its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mesaprobe.analysis.costs import with_model_costs
from mesaprobe.analysis.differences import EpisodeScores, difference_rows, regret_ratio_rows
from mesaprobe.analysis.inside import INSIDE_SUMMARY_COLUMNS, summarise
from mesaprobe.analysis.stats import (
    MIN_SEEDS_FOR_INTERVAL,
    OVER_EPISODES,
    OVER_SEEDS,
    episode_interval,
    intervals,
    seed_means,
)
from mesaprobe.analysis.tables import (
    AGENT_KINDS,
    CURVE_BANDS_COLUMNS,
    CURVES_COLUMNS,
    GROUP_COLUMNS,
    SUMMARY_COLUMNS,
    TABLE_FILES,
    TRIAL_EPISODES_COLUMNS,
    read_probe_table,
)
from mesaprobe.analysis.training import TrainedRun, write_training_table
from mesaprobe.artifacts import atomic_path, provenance, sha256_file, write_json
from mesaprobe.errors import ArtifactError, UserError
from mesaprobe.metrics import METRIC_FAMILIES, MetricFamily, adaptation_window, family_of_metric
from mesaprobe.study.outputs import trial_metric
from mesaprobe.study.references import Reference


def episode_metric_values(step_values: np.ndarray, family: MetricFamily) -> np.ndarray:
    """Episode metrics (E, 3) from one family's step metrics (E, 3, T), both in family order.

    A per-episode family (T = 1) keeps its values as they are.

    The total sums the score (step metric 0) over steps, the cumulative regret is the
    value of step metric 2 at the last step, and adaptation is the mean per-step
    regret (step metric 1) over the first ``adaptation_window(T)`` steps minus the
    mean over the last as many steps.
    """
    assert step_values.shape[1] == len(family.step_metrics), step_values.shape
    if family.per_episode:
        return step_values[:, :, 0]
    horizon = step_values.shape[2]
    window = adaptation_window(horizon)
    score, regret, cumulative_regret = (step_values[:, position] for position in range(3))  # (E, T) each
    total = score.sum(axis=1)
    final_cumulative_regret = cumulative_regret[:, -1]
    adaptation = regret[:, :window].mean(axis=1) - regret[:, horizon - window :].mean(axis=1)
    return np.stack([total, final_cumulative_regret, adaptation], axis=1)


@dataclass
class _SeedBlock:
    """The episodes of one (agent group, seed) found in one probe table."""

    source: int  # position of the probe table in collect's sorted inputs
    family: MetricFamily  # the metric family of the probe table
    episodes: np.ndarray  # (E_s,) episode ids, ascending
    step_values: np.ndarray  # (E_s, 3, T): the family's step metrics in family order


def _seed_blocks_of_file(path: Path, source: int) -> dict[tuple, _SeedBlock]:
    """Read one probe table into dense arrays, keyed by (*agent group, seed).

    The table's metric family comes from its metric names (:func:`read_probe_table`
    checks that they are one family's three).  One polars pass groups the rows by
    episode and orders each episode's values by (metric in family order, step); an
    episode that lacks a (metric, step), repeats one, or mixes runs is an error naming
    the file.
    """
    frame = read_probe_table(path)
    family = family_of_metric(frame["metric"][0])
    metric_count = len(family.step_metrics)
    metric_position = pl.col("metric").replace_strict(
        {name: position for position, name in enumerate(family.step_metrics)}, return_dtype=pl.Int64
    )
    episodes = (
        frame.lazy()
        .with_columns(metric_position=metric_position)
        .group_by([*GROUP_COLUMNS, "seed", "episode"])
        .agg(
            rows=pl.len(),
            horizon=pl.col("step").max(),
            distinct_cells=(pl.col("metric_position") * (1 << 32) + pl.col("step")).n_unique(),
            runs=pl.col("run").unique().sort(),
            values=pl.col("value").sort_by(["metric_position", "step"]),
        )
        .sort([*GROUP_COLUMNS, "seed", "episode"])
        .collect()
    )
    del frame
    studies = episodes["study"].unique().sort().to_list()
    if len(studies) > 1:
        raise ArtifactError(path, f"holds several studies {studies}; a probe table belongs to one")
    incomplete = episodes.filter(
        (pl.col("rows") != metric_count * pl.col("horizon")) | (pl.col("distinct_cells") != pl.col("rows"))
    )
    if incomplete.height:
        row = incomplete.row(0, named=True)
        raise ArtifactError(
            path,
            f"agent {row['agent']!r} seed {row['seed']} episode {row['episode']} has {row['rows']} rows; "
            f"expected one per metric ({', '.join(family.step_metrics)}) and step 1..{row['horizon']}",
        )
    blocks = {}
    for key, part in episodes.partition_by(
        [*GROUP_COLUMNS, "seed"], as_dict=True, maintain_order=True
    ).items():
        runs = part["runs"].explode().unique().sort().to_list()
        if len(runs) > 1:
            raise ArtifactError(
                path,
                f"agent {part['agent'][0]!r} seed {key[-1]} mixes runs {runs}; each seed is one run",
            )
        horizons = part["horizon"].unique().sort().to_list()
        if len(horizons) > 1:
            raise ArtifactError(
                path,
                f"agent {part['agent'][0]!r} seed {key[-1]} has episodes of horizons {horizons}",
            )
        step_values = part["values"].explode().to_numpy()
        blocks[key] = _SeedBlock(
            source=source,
            family=family,
            episodes=part["episode"].to_numpy(),
            step_values=step_values.reshape(part.height, metric_count, horizons[0]),  # (E_s, M, T)
        )
    return blocks


def _agent_of(key: tuple) -> str:
    """The agent name in a key that starts with the GROUP_COLUMNS values."""
    return key[list(GROUP_COLUMNS).index("agent")]


def _group_sort_key(group: tuple) -> tuple:
    """Table order: environment, variant, probe, architectures first, agent."""
    named = dict(zip(GROUP_COLUMNS, group, strict=True))
    return (
        named["environment"],
        named["variant"],
        named["probe"],
        AGENT_KINDS.index(named["agent_kind"]),
        named["agent"],
    )


@dataclass
class _AgentGroup:
    """The episodes of one agent group as dense arrays, seeds contiguous and ascending."""

    key: tuple  # values of GROUP_COLUMNS
    family: MetricFamily  # the metric family of the group's probe tables
    seeds: np.ndarray  # (S,)
    episodes_per_seed: np.ndarray  # (S,)
    episode_ids: np.ndarray  # (E,): each seed's episode ids, ascending
    step_values: np.ndarray  # (E, 3, T): the family's step metrics in family order

    @property
    def trained(self) -> bool:
        """A trained architecture (its seeds are training seeds), not a baseline."""
        return dict(zip(GROUP_COLUMNS, self.key, strict=True))["agent_kind"] == "architecture"

    def features(self) -> np.ndarray:
        """Everything the tables summarise: flattened step values, then episode metrics."""
        episodes = self.step_values.shape[0]
        flat = self.step_values.reshape(episodes, -1)  # (E, M * T)
        return np.concatenate([flat, episode_metric_values(self.step_values, self.family)], axis=1)

    def scores(self) -> EpisodeScores:
        """Its episode metrics, episode by episode, for paired comparisons."""
        return EpisodeScores(
            key=self.key,
            family=self.family,
            seeds=self.seeds,
            episodes_per_seed=self.episodes_per_seed,
            episode_ids=self.episode_ids,
            values=episode_metric_values(self.step_values, self.family),
        )


def _merge_seed_blocks(blocks: list[_SeedBlock], key: tuple, paths: Sequence[Path]) -> _SeedBlock:
    """One block from the blocks of one (agent group, seed) spread over several files."""
    if len(blocks) == 1:
        return blocks[0]
    episodes = np.concatenate([block.episodes for block in blocks])
    unique, counts = np.unique(episodes, return_counts=True)
    if np.any(counts > 1):
        repeated = unique[counts > 1][0]
        sources = [block.source for block in blocks if repeated in block.episodes]
        raise ArtifactError(
            paths[sources[1]],
            f"agent {_agent_of(key)!r} seed {key[-1]} episode {repeated} "
            f"is also in {paths[sources[0]]}; each episode must be collected once",
        )
    horizons = sorted({block.step_values.shape[2] for block in blocks})
    if len(horizons) > 1:
        raise ArtifactError(paths[blocks[-1].source], f"seed {key[-1]} has horizons {horizons} across files")
    order = np.argsort(episodes, kind="stable")
    step_values = np.concatenate([block.step_values for block in blocks])[order]
    return _SeedBlock(
        source=blocks[0].source, family=blocks[0].family, episodes=episodes[order], step_values=step_values
    )


def _agent_groups(blocks_by_file: list[dict[tuple, _SeedBlock]], paths: Sequence[Path]) -> list[_AgentGroup]:
    """Gather the seed blocks of all files into one dense array per agent group, in table order."""
    by_group: dict[tuple, dict[int, list[_SeedBlock]]] = {}
    for blocks in blocks_by_file:
        for (*group, seed), block in blocks.items():
            by_group.setdefault(tuple(group), {}).setdefault(seed, []).append(block)
    groups = []
    for key in sorted(by_group, key=_group_sort_key):
        seeds = sorted(by_group[key])
        blocks = [block for seed in seeds for block in by_group[key][seed]]
        families = sorted({block.family.kind for block in blocks})
        if len(families) > 1:
            raise ArtifactError(
                paths[max(block.source for block in blocks)],
                f"agent {_agent_of(key)!r} has probe tables of the metric families {families}; "
                "one agent group has one family",
            )
        merged = [_merge_seed_blocks(by_group[key][seed], (*key, seed), paths) for seed in seeds]
        horizons = sorted({block.step_values.shape[2] for block in merged})
        if len(horizons) > 1:
            raise ArtifactError(
                paths[merged[-1].source],
                f"agent {_agent_of(key)!r} has seeds of horizons {horizons}; "
                "one agent group needs one horizon",
            )
        groups.append(
            _AgentGroup(
                key=key,
                family=blocks[0].family,
                seeds=np.asarray(seeds, dtype=np.int64),
                episodes_per_seed=np.asarray([block.episodes.size for block in merged], dtype=np.int64),
                episode_ids=np.concatenate([block.episodes for block in merged]),
                step_values=np.concatenate([block.step_values for block in merged]),
            )
        )
    return groups


def _group_columns(key: tuple, rows: int) -> dict[str, list[str]]:
    return {name: [value] * rows for name, value in zip(GROUP_COLUMNS, key, strict=True)}


def _curves(group: _AgentGroup) -> pl.DataFrame:
    """Per-seed mean curves of one group, ordered by seed, metric, step."""
    seed_count = group.seeds.size
    _, metric_count, horizon = group.step_values.shape
    starts = np.concatenate(([0], np.cumsum(group.episodes_per_seed)[:-1]))
    seed_sums = np.add.reduceat(group.step_values, starts, axis=0)  # (S, M, T)
    seed_means = seed_sums / group.episodes_per_seed[:, None, None]
    cells = seed_count * metric_count * horizon
    return pl.DataFrame(
        {
            **_group_columns(group.key, cells),
            "seed": np.repeat(group.seeds, metric_count * horizon),
            "step": np.tile(np.arange(1, horizon + 1), seed_count * metric_count),
            "metric": np.tile(np.repeat(group.family.step_metrics, horizon), seed_count),
            "value": seed_means.ravel(),
            "episodes": np.repeat(group.episodes_per_seed, metric_count * horizon),
        },
        schema=CURVES_COLUMNS,
    )


@dataclass(frozen=True)
class GroupInterval:
    """Means and intervals of every feature of one group (each (features,)), and what the
    interval is over (:data:`~mesaprobe.analysis.tables.INTERVAL_KINDS`) or why there is none."""

    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    interval: str
    note: str


def group_interval(group: _AgentGroup, level: float) -> GroupInterval:
    """The mean over seeds of the per-seed means of every feature, with its interval: Student t
    over training seeds for an architecture (none with fewer than MIN_SEEDS_FOR_INTERVAL seeds),
    Student t over all episodes for a baseline (centred on the same mean)."""
    features = group.features()  # (E, F)
    per_seed = seed_means(features, group.episodes_per_seed)  # (S, F)
    mean = per_seed.mean(axis=0)
    if group.trained:
        if group.seeds.size < MIN_SEEDS_FOR_INTERVAL:
            nothing = np.full_like(mean, np.nan)
            note = f"{group.seeds.size} training seeds; an interval needs at least {MIN_SEEDS_FOR_INTERVAL}"
            return GroupInterval(mean, nothing, nothing, OVER_SEEDS, note)
        low, high = intervals(per_seed, level)
        return GroupInterval(mean, low, high, OVER_SEEDS, "")
    if features.shape[0] < 2:
        nothing = np.full_like(mean, np.nan)
        return GroupInterval(mean, nothing, nothing, OVER_EPISODES, "one episode; no interval")
    low, high = episode_interval(features, level)
    half_width = (high - low) / 2.0
    return GroupInterval(mean, mean - half_width, mean + half_width, OVER_EPISODES, "")


def _bands_and_summary(group: _AgentGroup, interval: GroupInterval) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Curve bands (ordered by metric, step) and summary rows of one group."""
    _, metric_count, horizon = group.step_values.shape
    step_cells = metric_count * horizon
    seeds, episodes = group.seeds.size, int(group.episodes_per_seed.sum())
    bands = pl.DataFrame(
        {
            **_group_columns(group.key, step_cells),
            "step": np.tile(np.arange(1, horizon + 1), metric_count),
            "metric": np.repeat(group.family.step_metrics, horizon),
            "mean": interval.mean[:step_cells],
            "ci_low": interval.ci_low[:step_cells],
            "ci_high": interval.ci_high[:step_cells],
            "seeds": [seeds] * step_cells,
            "episodes": [episodes] * step_cells,
            "interval": [interval.interval] * step_cells,
            "interval_note": [interval.note] * step_cells,
        },
        schema=CURVE_BANDS_COLUMNS,
    )
    summary_cells = len(group.family.episode_metrics)
    summary = pl.DataFrame(
        {
            **_group_columns(group.key, summary_cells),
            "metric": list(group.family.episode_metrics),
            "mean": interval.mean[step_cells:],
            "ci_low": interval.ci_low[step_cells:],
            "ci_high": interval.ci_high[step_cells:],
            "seeds": [seeds] * summary_cells,
            "episodes": [episodes] * summary_cells,
            "interval": [interval.interval] * summary_cells,
            "interval_note": [interval.note] * summary_cells,
        },
        schema=SUMMARY_COLUMNS,
    )
    nulls = pl.col("ci_low", "ci_high").fill_nan(None)
    return bands.with_columns(nulls), summary.with_columns(nulls)


def trial_episode_values(step_values: np.ndarray, family: MetricFamily, trial_episodes: int) -> np.ndarray:
    """(E, 3, K) per-episode values of trials from a family's step metrics (E, 3, K x L): the
    score summed over each episode, the regret summed over each episode, and the cumulative
    regret at each episode's last step."""
    trials, metric_count, horizon = step_values.shape
    assert metric_count == 3 and not family.per_episode and horizon % trial_episodes == 0, (
        step_values.shape,
        trial_episodes,
    )
    episodes = step_values.reshape(trials, metric_count, trial_episodes, horizon // trial_episodes)
    return np.stack([episodes[:, 0].sum(axis=2), episodes[:, 1].sum(axis=2), episodes[:, 2, :, -1]], axis=1)


def trial_episode_metrics(family: MetricFamily) -> tuple[str, str, str]:
    """Names of :func:`trial_episode_values`' three values, e.g. total_reward, episode_regret,
    cumulative_regret."""
    return (family.episode_metrics[0], trial_metric(family), family.episode_metrics[1])


def _trial_episodes(group: _AgentGroup, trial_episodes: int, confidence: float) -> pl.DataFrame:
    """The trial-episode rows of one group (ordered by metric, episode of the trial)."""
    per_episode = _AgentGroup(
        key=group.key,
        family=group.family,
        seeds=group.seeds,
        episodes_per_seed=group.episodes_per_seed,
        episode_ids=group.episode_ids,
        step_values=trial_episode_values(group.step_values, group.family, trial_episodes),
    )
    bands, _ = _bands_and_summary(per_episode, group_interval(per_episode, confidence))
    names = dict(zip(group.family.step_metrics, trial_episode_metrics(group.family), strict=True))
    return bands.rename({"step": "episode_in_trial"}).with_columns(pl.col("metric").replace_strict(names))


def _with_ratios(summary: pl.DataFrame, ratios: pl.DataFrame) -> pl.DataFrame:
    """The summary with each group's regret-ratio row after its episode metrics."""
    if ratios.height == 0:
        return summary
    order = pl.int_range(pl.len()).alias("_order")
    groups = list(GROUP_COLUMNS)
    first = summary.with_columns(order).group_by(groups).agg(pl.col("_order").max())
    placed = ratios.join(first, on=groups, how="left").with_columns(pl.col("_order") + 0.5)
    return (
        pl.concat(
            [
                summary.with_columns(order.cast(pl.Float64)),
                placed.with_columns(pl.col("_order").cast(pl.Float64)),
            ]
        )
        .sort("_order", maintain_order=True)
        .drop("_order")
    )


def paper_table(summary: pl.DataFrame, metric: str) -> pl.DataFrame:
    """One row per (environment, probe), one column per agent: ``metric``'s mean with its CI.

    Laid out like the tables of Duan et al. (2016): settings down, agents across,
    baselines first (in the study's order) then architectures; cells read
    ``mean [ci_low, ci_high]``, or ``mean [no interval]`` (fewer than 3 training seeds).
    """
    return _agents_across(summary.filter(pl.col("metric") == metric), ["environment", "probe"])


def total_table(summary: pl.DataFrame) -> pl.DataFrame:
    """Like :func:`paper_table`, with each setting's family total: what ``total_reward_table.csv`` holds.

    One row per (environment, probe); column ``metric`` (after ``probe``) names the
    total shown, ``total_reward`` for bandits and ``total_logloss_bits`` for sequence
    prediction, so a study mixing families gets one table.
    """
    totals = [family.total for family in METRIC_FAMILIES.values()]
    return _agents_across(summary.filter(pl.col("metric").is_in(totals)), ["environment", "probe", "metric"])


def _agents_across(rows: pl.DataFrame, index: list[str]) -> pl.DataFrame:
    """Summary ``rows`` pivoted to one row per ``index`` value and one ``mean [ci]`` column per agent."""
    cells = rows.with_columns(
        pl.when(pl.col("ci_low").is_null())
        .then(pl.format("{} [no interval]", pl.col("mean").round(2)))
        .otherwise(
            pl.format(
                "{} [{}, {}]", pl.col("mean").round(2), pl.col("ci_low").round(2), pl.col("ci_high").round(2)
            )
        )
        .alias("cell")
    )
    order = (
        rows.select("agent", "agent_kind")
        .unique(maintain_order=True)
        .sort(pl.col("agent_kind") == "architecture", maintain_order=True)["agent"]
        .to_list()
    )
    wide = cells.pivot(on="agent", index=index, values="cell", aggregate_function="first")
    return wide.select(*index, *[agent for agent in order if agent in wide.columns])


def collect(
    probe_paths: Iterable[str | Path],
    out_dir: str | Path,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    inside_paths: Iterable[str | Path] = (),
    references: Mapping[tuple[str, str], Reference] | None = None,
    training_runs: Iterable[TrainedRun] = (),
    frozen_paths: Iterable[str | Path] = (),
    trial_episodes: Mapping[str, int] | None = None,
) -> dict[str, Path]:
    """Read the probe tables of one study and write its curves, curve bands, summary and paired
    differences, and the summary of its inside tables (``inside_paths``).

    ``references`` (:attr:`mesaprobe.study.plan.Plan.references`) names the exact optimum of
    each (environment, probe) and how its regret ratio is made; without it comparisons use the
    best baseline and no regret ratio is stated.  ``confidence`` is the level of every interval;
    ``resamples`` and ``seed`` are the inside tables' bootstrap's.

    ``training_runs`` are the runs whose training histories go into ``training.parquet``.
    ``trial_episodes`` maps an environment (its label, as the probe tables name it) to the
    episodes of its trials; those with more than one get rows in ``trial_episodes.parquet``.

    Returns the written paths by :data:`TABLE_FILES` key.  Same inputs and settings
    give bit-identical tables.  Raises :class:`ArtifactError` for an unreadable or
    inconsistent probe table (naming the file) and :class:`UserError` for no inputs.
    """
    paths = sorted({Path(path) for path in probe_paths}, key=str)
    inside_paths = sorted({Path(path) for path in inside_paths}, key=str)
    if not paths and not inside_paths:
        raise UserError("collect: no probe tables given")
    if resamples < 1:
        raise UserError(f"collect: resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise UserError(f"collect: confidence must be in (0, 1), got {confidence}")
    if seed < 0:
        raise UserError(f"collect: seed must be a non-negative integer, got {seed}")
    blocks_by_file = [_seed_blocks_of_file(path, source) for source, path in enumerate(paths)]
    studies = [next(iter(blocks))[0] for blocks in blocks_by_file]
    for path, study in zip(paths, studies, strict=True):
        if study != studies[0]:
            raise ArtifactError(path, f"belongs to study {study!r}, but {paths[0]} to {studies[0]!r}")
    groups = _agent_groups(blocks_by_file, paths)
    del blocks_by_file
    group_intervals = [group_interval(group, confidence) for group in groups]
    scores = [group.scores() for group in groups]
    references = dict(references or {})
    ratios = regret_ratio_rows(scores, references, confidence)
    differences = difference_rows(scores, references, confidence)

    curves = (
        pl.concat([_curves(group) for group in groups]) if groups else pl.DataFrame(schema=CURVES_COLUMNS)
    )
    bands_and_summaries = [
        _bands_and_summary(group, interval) for group, interval in zip(groups, group_intervals, strict=True)
    ]
    curve_bands = (
        pl.concat([bands for bands, _ in bands_and_summaries])
        if groups
        else pl.DataFrame(schema=CURVE_BANDS_COLUMNS)
    )
    summary = (
        pl.concat([summary for _, summary in bands_and_summaries])
        if groups
        else pl.DataFrame(schema=SUMMARY_COLUMNS)
    )
    summary = _with_ratios(summary, ratios)
    trial_episodes = dict(trial_episodes or {})
    trial_rows = [
        _trial_episodes(group, trial_episodes[environment], confidence)
        for group in groups
        if (environment := dict(zip(GROUP_COLUMNS, group.key, strict=True))["environment"]) in trial_episodes
        and trial_episodes[environment] > 1
        and not group.family.per_episode
    ]
    trials = pl.concat(trial_rows) if trial_rows else pl.DataFrame(schema=TRIAL_EPISODES_COLUMNS)
    inside = (
        summarise(inside_paths, resamples, confidence, seed)
        if inside_paths
        else pl.DataFrame(schema=INSIDE_SUMMARY_COLUMNS)
    )
    if not studies:
        studies = inside["study"].unique().to_list()

    summary = with_model_costs(summary, frozen_paths)  # the architectures' costs, last
    out_dir = Path(out_dir)
    written = {key: out_dir / name for key, name in TABLE_FILES.items()}
    for key, frame in (("curves", curves), ("curve_bands", curve_bands), ("summary", summary)):
        with atomic_path(written[key]) as temporary:
            frame.write_parquet(temporary)
    with atomic_path(written["summary_csv"]) as temporary:
        summary.write_csv(temporary)
    with atomic_path(written["differences"]) as temporary:
        differences.write_parquet(temporary)
    with atomic_path(written["differences_csv"]) as temporary:
        differences.write_csv(temporary)
    with atomic_path(written["trial_episodes"]) as temporary:
        trials.write_parquet(temporary)
    with atomic_path(written["trial_episodes_csv"]) as temporary:
        trials.write_csv(temporary)
    with atomic_path(written["total_reward_table"]) as temporary:
        total_table(summary).write_csv(temporary)
    with atomic_path(written["inside"]) as temporary:
        inside.write_parquet(temporary)
    with atomic_path(written["inside_csv"]) as temporary:
        inside.write_csv(temporary)
    write_training_table(training_runs, written["training"])
    write_json(
        written["provenance"],
        {
            "study": studies[0],
            "inputs": [{"path": str(path), "sha256": sha256_file(path)} for path in [*paths, *inside_paths]],
            "confidence": confidence,
            "intervals": {
                "architectures": f"Student t over training seeds (none with fewer than {MIN_SEEDS_FOR_INTERVAL})",
                "baselines": "Student t over episodes",
                "differences": "paired on shared tasks; see mesaprobe.analysis.differences",
            },
            "inside_bootstrap": {"resamples": resamples, "seed": seed},
            "tables": {key: name for key, name in TABLE_FILES.items() if key != "provenance"},
            "provenance": provenance(),
        },
    )
    return written
