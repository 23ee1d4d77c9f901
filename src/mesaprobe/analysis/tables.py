"""Probe tables in, study tables out: per-seed curves, curve bands and the summary.

Every probe or baseline job writes one *probe table* (:data:`PROBE_COLUMNS`): long
form, one row per (episode, step, metric).  :func:`collect` reads all the probe
tables of a study and writes, atomically, into the study's ``tables/`` folder:

* ``curves.parquet`` (:data:`CURVES_COLUMNS`): per seed, each step metric averaged
  over that seed's episodes;
* ``curve_bands.parquet`` (:data:`CURVE_BANDS_COLUMNS`): the mean over seeds of
  those per-seed curves, with a two-level bootstrap confidence interval;
* ``summary.parquet`` and ``summary.csv`` (:data:`SUMMARY_COLUMNS`): the episode
  metrics of each group's metric family, summarised the same way;
* ``total_reward_table.csv``: every agent's family total (``total_reward`` for
  bandits, ``total_logloss_bits`` for sequence prediction) per environment and probe;
* ``inside.parquet`` and ``inside.csv``: the summary of the study's inside tables
  (read-outs, fitted learners, in-weights learning; :mod:`mesaprobe.analysis.inside`),
  empty when the study has no such probe;
* ``tables.json``: provenance (inputs with sha256, bootstrap settings, versions).

An *agent group* is one curve of the study: (study, environment, variant, probe,
agent, agent_kind).  Its seeds are the independent replicates (training seeds of an
architecture, or seeds of a baseline); its episodes are tasks drawn within a seed.

Each probe table holds the three step metrics of exactly one metric family
(:mod:`mesaprobe.metrics`), so each group has one family; a study may mix families
(bandit and prediction environments), and each group is summarised with its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mesaprobe.artifacts import atomic_path, provenance, sha256_file, write_json
from mesaprobe.errors import ArtifactError, UserError
from mesaprobe.metrics import (
    METRIC_FAMILIES,
    STEP_METRICS,
    MetricFamily,
    adaptation_window,
    family_of_metric,
)

#: What kind of agent a row belongs to; architectures sort before baselines.
AGENT_KINDS = ("architecture", "baseline")

#: Columns that name one curve of a study (an agent group), in table order.
GROUP_COLUMNS: dict[str, pl.DataType] = {
    "study": pl.String(),  # the spec's study name
    "environment": pl.String(),  # the environment's name in the study, e.g. "bandit2"
    "variant": pl.String(),  # "" unless the study has a grid, e.g. "training.lr=0.001"
    "probe": pl.String(),  # the probe's name, e.g. "adaptation"
    "agent": pl.String(),  # architecture or baseline name, e.g. "gru", "thompson"
    "agent_kind": pl.String(),  # one of AGENT_KINDS
}

#: Schema of a probe table: one row per (episode, step, metric) of one probe or baseline job.
PROBE_COLUMNS: dict[str, pl.DataType] = {
    **GROUP_COLUMNS,
    "run": pl.String(),  # run id (architectures) or baseline id
    "seed": pl.Int64(),  # the run's or baseline's seed: one independent replicate
    "episode": pl.Int64(),  # 0-based episode (task) index within the seed
    "step": pl.Int64(),  # 1-based step within the episode, 1..horizon
    "metric": pl.String(),  # a step metric of the table's one family (mesaprobe.metrics)
    "value": pl.Float64(),  # the metric's value (expected, not sampled)
}

#: Schema of ``curves.parquet``: one row per (agent group, seed, metric, step).
CURVES_COLUMNS: dict[str, pl.DataType] = {
    **GROUP_COLUMNS,
    "seed": pl.Int64(),
    "step": pl.Int64(),
    "metric": pl.String(),  # a step metric of the group's family
    "value": pl.Float64(),  # mean over the seed's episodes
    "episodes": pl.Int64(),  # number of episodes averaged
}

#: Schema of ``curve_bands.parquet``: one row per (agent group, metric, step).
CURVE_BANDS_COLUMNS: dict[str, pl.DataType] = {
    **GROUP_COLUMNS,
    "step": pl.Int64(),
    "metric": pl.String(),  # a step metric of the group's family
    "mean": pl.Float64(),  # mean over seeds of the per-seed episode means
    "ci_low": pl.Float64(),  # two-level bootstrap percentile interval
    "ci_high": pl.Float64(),
    "seeds": pl.Int64(),  # number of seeds
    "episodes": pl.Int64(),  # total episodes over all seeds
}

#: Schema of ``summary.parquet`` / ``summary.csv``: one row per (agent group, episode metric).
SUMMARY_COLUMNS: dict[str, pl.DataType] = {
    **GROUP_COLUMNS,
    "metric": pl.String(),  # an episode metric of the group's family (one of EPISODE_METRICS)
    "mean": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "seeds": pl.Int64(),
    "episodes": pl.Int64(),
}

#: File names written by :func:`collect`, by the key of its returned dict.
TABLE_FILES = {
    "curves": "curves.parquet",
    "curve_bands": "curve_bands.parquet",
    "summary": "summary.parquet",
    "summary_csv": "summary.csv",
    "total_reward_table": "total_reward_table.csv",  # each family's total (total_table)
    "inside": "inside.parquet",  # summary of the inside tables (mesaprobe.analysis.inside)
    "inside_csv": "inside.csv",
    "provenance": "tables.json",
}

# Upper bound on the elements of one block of bootstrap weights (64 MiB of float64).
_WEIGHT_BLOCK_ELEMENTS = 1 << 23


# --------------------------------------------------------------------------- probe tables


def _schema_problem(schema: pl.Schema | dict, expected: dict[str, pl.DataType]) -> str | None:
    """The first column of ``expected`` that is missing or of another type in ``schema``."""
    for name, dtype in expected.items():
        if name not in schema:
            return f"missing column {name!r} (expected columns: {', '.join(expected)})"
        if schema[name] != dtype:
            return f"column {name!r} has type {schema[name]}, expected {dtype}"
    return None


def rows_problem(frame: pl.DataFrame) -> str | None:
    """What every table of rows must not be: empty, or with missing values."""
    if frame.height == 0:
        return "has no rows"
    for name, nulls in zip(frame.columns, frame.null_count().row(0), strict=True):
        if nulls:
            return f"column {name!r} has {nulls} null values"
    return None


def _probe_content_problem(frame: pl.DataFrame) -> str | None:
    """The first value in a probe table (with the right schema) that no probe can write."""
    if (problem := rows_problem(frame)) is not None:
        return problem
    checks = frame.select(
        unknown_metrics=pl.col("metric")
        .filter(~pl.col("metric").is_in(STEP_METRICS))
        .unique()
        .sort()
        .implode(),
        unknown_kinds=pl.col("agent_kind")
        .filter(~pl.col("agent_kind").is_in(AGENT_KINDS))
        .unique()
        .sort()
        .implode(),
        first_step=pl.col("step").min(),
        first_episode=pl.col("episode").min(),
        non_finite=(~pl.col("value").is_finite()).sum(),
    )
    unknown_metrics = checks["unknown_metrics"][0].to_list()
    if unknown_metrics:
        return f"unknown metric {unknown_metrics[0]!r}; expected one of: {', '.join(STEP_METRICS)}"
    metrics = frame["metric"].unique().sort().to_list()
    families = sorted({family_of_metric(name).kind for name in metrics})
    if len(families) > 1:
        return (
            f"mixes the metric families {families} (metrics {metrics}); "
            "a probe table holds the step metrics of one family"
        )
    family = METRIC_FAMILIES[families[0]]
    missing = [name for name in family.step_metrics if name not in metrics]
    if missing:
        return (
            f"lacks metric {missing[0]!r}; a {family.kind} probe table holds {', '.join(family.step_metrics)}"
        )
    unknown_kinds = checks["unknown_kinds"][0].to_list()
    if unknown_kinds:
        return f"unknown agent_kind {unknown_kinds[0]!r}; expected one of: {', '.join(AGENT_KINDS)}"
    if checks["first_step"][0] < 1:
        return f"step {checks['first_step'][0]} found; steps are 1-based"
    if checks["first_episode"][0] < 0:
        return f"episode {checks['first_episode'][0]} found; episodes are 0-based"
    if checks["non_finite"][0]:
        return f"column 'value' has {checks['non_finite'][0]} NaN or infinite values"
    return None


def write_probe_table(frame: pl.DataFrame, path: str | Path) -> Path:
    """Validate ``frame`` against :data:`PROBE_COLUMNS` and write it as parquet, atomically.

    Raises ``ValueError`` (a bug in the probe, not user input) for a missing, extra or
    wrong-typed column, a null, an unknown metric or agent kind, metrics that are not
    exactly one family's three step metrics, or a non-finite value.
    Columns are written in :data:`PROBE_COLUMNS` order.
    """
    return write_validated(frame, path, PROBE_COLUMNS, _probe_content_problem, "probe table")


def write_validated(frame: pl.DataFrame, path: str | Path, columns: dict, content_problem, what: str) -> Path:
    """Write ``frame`` as parquet atomically, in ``columns`` order, if it has exactly those
    columns and ``content_problem(frame)`` finds nothing; else ``ValueError`` naming ``what``."""
    problem = _schema_problem(frame.schema, columns)
    extra = [name for name in frame.columns if name not in columns]
    if problem is None and extra:
        problem = f"unexpected columns {extra}; expected exactly: {', '.join(columns)}"
    if problem is None:
        problem = content_problem(frame)
    if problem is not None:
        raise ValueError(f"{what} for {path}: {problem}")
    path = Path(path)
    with atomic_path(path) as temporary:
        frame.select(list(columns)).write_parquet(temporary)
    return path


def read_table(path: str | Path, columns: dict[str, pl.DataType], content_problem=None) -> pl.DataFrame:
    """Read the ``columns`` of a parquet file, or raise :class:`ArtifactError` saying why not.

    Extra columns in the file are ignored; a missing file, an unreadable file, a missing or
    wrong-typed column and whatever ``content_problem(frame)`` finds (if given) each raise
    with one clear problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(path, "file not found")
    try:
        # glob=False: a path is a file name, even with brackets (grid labels such as gru[lr=0.1]).
        schema = pl.scan_parquet(path, glob=False).collect_schema()
    except (pl.exceptions.PolarsError, OSError) as error:
        raise ArtifactError(path, f"not a readable parquet file ({error})") from None
    problem = _schema_problem(schema, columns)
    if problem is not None:
        raise ArtifactError(path, problem)
    try:
        frame = pl.read_parquet(path, columns=list(columns), glob=False)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise ArtifactError(path, f"not a readable parquet file ({error})") from None
    problem = None if content_problem is None else content_problem(frame)
    if problem is not None:
        raise ArtifactError(path, problem)
    return frame


def read_probe_table(path: str | Path) -> pl.DataFrame:
    """Read and validate one probe table (:data:`PROBE_COLUMNS`), raising :class:`ArtifactError`."""
    return read_table(path, PROBE_COLUMNS, _probe_content_problem)


# --------------------------------------------------------------------------- bootstrap


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


# --------------------------------------------------------------------------- collect


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
    step_values: np.ndarray  # (E, 3, T): the family's step metrics in family order

    def features(self) -> np.ndarray:
        """Everything the bootstrap summarises: flattened step values, then episode metrics."""
        episodes = self.step_values.shape[0]
        flat = self.step_values.reshape(episodes, -1)  # (E, M * T)
        return np.concatenate([flat, episode_metric_values(self.step_values, self.family)], axis=1)


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


def _bands_and_summary(group: _AgentGroup, interval: BootstrapInterval) -> tuple[pl.DataFrame, pl.DataFrame]:
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
        },
        schema=SUMMARY_COLUMNS,
    )
    return bands, summary


def _bootstrap_groups(
    groups: Sequence[_AgentGroup], resamples: int, confidence: float, seed: int
) -> list[BootstrapInterval]:
    """Intervals of every group.

    Groups of one metric family with equal episode counts share one matrix product.
    The generator depends only on the seed and the counts, so a group's interval is
    the same whether or not groups of other families are in the study.
    """
    by_counts: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for position, group in enumerate(groups):
        counts = tuple(int(n) for n in group.episodes_per_seed)
        by_counts.setdefault((group.family.kind, counts), []).append(position)
    intervals: list[BootstrapInterval | None] = [None] * len(groups)
    for (_, counts), positions in by_counts.items():
        step_cells = [groups[position].step_values[0].size for position in positions]
        widths = [
            cells + len(groups[position].family.episode_metrics)
            for position, cells in zip(positions, step_cells, strict=True)
        ]
        edges = np.cumsum([0, *widths])
        features = np.empty((sum(counts), edges[-1]), dtype=np.float64)  # (E, all groups' features)
        for position, start, stop in zip(positions, edges[:-1], edges[1:], strict=True):
            features[:, start:stop] = groups[position].features()
        joint = two_level_bootstrap(
            features, counts, resamples, confidence, bootstrap_generator(seed, counts)
        )
        for position, start, stop in zip(positions, edges[:-1], edges[1:], strict=True):
            intervals[position] = BootstrapInterval(
                joint.mean[start:stop], joint.ci_low[start:stop], joint.ci_high[start:stop]
            )
    return intervals  # type: ignore[return-value]


def paper_table(summary: pl.DataFrame, metric: str) -> pl.DataFrame:
    """One row per (environment, probe), one column per agent: ``metric``'s mean with its CI.

    Laid out like the tables of Duan et al. (2016): settings down, agents across,
    baselines first (in the study's order) then architectures; cells read
    ``mean [ci_low, ci_high]``.
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
        pl.format(
            "{} [{}, {}]", pl.col("mean").round(2), pl.col("ci_low").round(2), pl.col("ci_high").round(2)
        ).alias("cell")
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
) -> dict[str, Path]:
    """Read the probe tables of one study and write its curves, curve bands and summary,
    and the summary of its inside tables (``inside_paths``).

    Returns the written paths by :data:`TABLE_FILES` key.  Same inputs and settings
    give bit-identical tables.  Raises :class:`ArtifactError` for an unreadable or
    inconsistent probe table (naming the file) and :class:`UserError` for no inputs.
    """
    from mesaprobe.analysis.inside import INSIDE_SUMMARY_COLUMNS, summarise

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
    intervals = _bootstrap_groups(groups, resamples, confidence, seed)

    curves = (
        pl.concat([_curves(group) for group in groups]) if groups else pl.DataFrame(schema=CURVES_COLUMNS)
    )
    bands_and_summaries = [
        _bands_and_summary(group, interval) for group, interval in zip(groups, intervals, strict=True)
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
    inside = (
        summarise(inside_paths, resamples, confidence, seed)
        if inside_paths
        else pl.DataFrame(schema=INSIDE_SUMMARY_COLUMNS)
    )
    if not studies:
        studies = inside["study"].unique().to_list()

    out_dir = Path(out_dir)
    written = {key: out_dir / name for key, name in TABLE_FILES.items()}
    for key, frame in (("curves", curves), ("curve_bands", curve_bands), ("summary", summary)):
        with atomic_path(written[key]) as temporary:
            frame.write_parquet(temporary)
    with atomic_path(written["summary_csv"]) as temporary:
        summary.write_csv(temporary)
    with atomic_path(written["total_reward_table"]) as temporary:
        total_table(summary).write_csv(temporary)
    with atomic_path(written["inside"]) as temporary:
        inside.write_parquet(temporary)
    with atomic_path(written["inside_csv"]) as temporary:
        inside.write_csv(temporary)
    write_json(
        written["provenance"],
        {
            "study": studies[0],
            "inputs": [{"path": str(path), "sha256": sha256_file(path)} for path in [*paths, *inside_paths]],
            "resamples": resamples,
            "confidence": confidence,
            "seed": seed,
            "tables": {key: name for key, name in TABLE_FILES.items() if key != "provenance"},
            "provenance": provenance(),
        },
    )
    return written
