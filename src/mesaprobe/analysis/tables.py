"""Probe tables and study tables: their schemas, and reading and writing them validated.

Every probe or baseline job writes one *probe table* (:data:`PROBE_COLUMNS`): long
form, one row per (episode, step, metric), holding the three step metrics of exactly
one metric family (:mod:`mesaprobe.metrics`).  :func:`write_probe_table` refuses a
frame that no probe can write; :func:`read_probe_table` and :func:`read_table` raise
:class:`~mesaprobe.errors.ArtifactError` naming the file and its one problem.

:func:`mesaprobe.analysis.collect.collect` turns the probe tables of a study into the
study tables whose schemas are defined here too (:data:`CURVES_COLUMNS`,
:data:`CURVE_BANDS_COLUMNS`, :data:`SUMMARY_COLUMNS`), written under the names of
:data:`TABLE_FILES`.  An *agent group* is one curve of the study: (study, environment,
variant, probe, agent, agent_kind) (:data:`GROUP_COLUMNS`).  Its seeds are the
independent replicates (training seeds of an architecture, or seeds of a baseline);
its episodes are tasks drawn within a seed.

This module imports polars and the metric names only, so that probes writing their
tables pay for nothing else.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mesaprobe.artifacts import atomic_path
from mesaprobe.errors import ArtifactError
from mesaprobe.metrics import METRIC_FAMILIES, STEP_METRICS, family_of_metric

#: What an interval is over: the training seeds of an architecture, or the episodes of a
#: baseline (which has no training seed); see :mod:`mesaprobe.analysis.stats`.
INTERVAL_KINDS = ("training seeds (Student t)", "episodes (Student t)")

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
    "ci_low": pl.Float64(),  # the interval named in `interval` (null: see `interval_note`)
    "ci_high": pl.Float64(),
    "seeds": pl.Int64(),  # number of seeds
    "episodes": pl.Int64(),  # total episodes over all seeds
    "interval": pl.String(),  # what the interval is over: INTERVAL_KINDS
    "interval_note": pl.String(),  # why there is no interval ("" when there is one)
}

#: Schema of ``trial_episodes.parquet`` / ``.csv``: in trials of K episodes (``trial_episodes``), one
#: row per (agent group, metric, episode of the trial): the family's total over that episode,
#: the regret summed over that episode (``episode_<regret step metric>``) and the cumulative
#: regret from the trial's start to that episode's end, each the mean over seeds of the
#: per-seed episode means with its interval (as in the curve bands).  Empty without trials.
TRIAL_EPISODES_COLUMNS: dict[str, pl.DataType] = {
    **GROUP_COLUMNS,
    "episode_in_trial": pl.Int64(),  # 1..K
    "metric": pl.String(),
    "mean": pl.Float64(),
    "ci_low": pl.Float64(),  # the interval named in `interval` (null: see `interval_note`)
    "ci_high": pl.Float64(),
    "seeds": pl.Int64(),
    "episodes": pl.Int64(),  # trials over all seeds
    "interval": pl.String(),  # what the interval is over: INTERVAL_KINDS
    "interval_note": pl.String(),  # why there is no interval ("" when there is one)
}

#: Schema of ``summary.parquet`` / ``summary.csv``: one row per (agent group, episode metric).
SUMMARY_COLUMNS: dict[str, pl.DataType] = {
    **GROUP_COLUMNS,
    "metric": pl.String(),  # an episode metric of the group's family (EPISODE_METRICS) or regret_ratio
    "mean": pl.Float64(),
    "ci_low": pl.Float64(),  # the interval named in `interval` (null: see `interval_note`)
    "ci_high": pl.Float64(),
    "seeds": pl.Int64(),
    "episodes": pl.Int64(),
    "interval": pl.String(),  # what the interval is over: INTERVAL_KINDS
    "interval_note": pl.String(),  # why there is no interval ("" when there is one)
}

#: Schema of ``differences.parquet`` / ``differences.csv``: one row per paired comparison of an
#: agent with a reference on the same tasks (:mod:`mesaprobe.analysis.differences`).
DIFFERENCES_COLUMNS: dict[str, pl.DataType] = {
    "study": pl.String(),
    "environment": pl.String(),
    "variant": pl.String(),  # the agent's variant
    "probe": pl.String(),
    "metric": pl.String(),  # an episode metric of the family
    "agent": pl.String(),
    "reference": pl.String(),  # the exact optimum, the best baseline, or another architecture
    "mean_difference": pl.Float64(),  # agent minus reference, in the metric's unit
    "ci_low": pl.Float64(),  # the interval named in `interval` (null: see `interval_note`)
    "ci_high": pl.Float64(),
    "p_better": pl.Float64(),  # share of (agent seed, reference seed) pairs the agent wins
    "seeds": pl.Int64(),  # seeds paired (seed s of each on the same tasks)
    "episodes": pl.Int64(),  # episodes paired
    "interval": pl.String(),  # what the interval is over: INTERVAL_KINDS
    "interval_note": pl.String(),  # why there is no interval ("" when there is one)
}

#: File names written by :func:`collect`, by the key of its returned dict.
TABLE_FILES = {
    "curves": "curves.parquet",
    "curve_bands": "curve_bands.parquet",
    "summary": "summary.parquet",
    "summary_csv": "summary.csv",
    "differences": "differences.parquet",  # paired differences (mesaprobe.analysis.differences)
    "differences_csv": "differences.csv",
    "total_reward_table": "total_reward_table.csv",  # each family's total (total_table)
    "trial_episodes": "trial_episodes.parquet",  # per episode within a trial (TRIAL_EPISODES_COLUMNS)
    "trial_episodes_csv": "trial_episodes.csv",
    "inside": "inside.parquet",  # summary of the inside tables (mesaprobe.analysis.inside)
    "inside_csv": "inside.csv",
    "training": "training.parquet",  # every run's training history (mesaprobe.analysis.training)
    "provenance": "tables.json",
}


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
        raise ArtifactError(path, f"not a readable parquet file ({one_line(error)})") from None
    problem = _schema_problem(schema, columns)
    if problem is not None:
        raise ArtifactError(path, problem)
    try:
        frame = pl.read_parquet(path, columns=list(columns), glob=False)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise ArtifactError(path, f"not a readable parquet file ({one_line(error)})") from None
    problem = None if content_problem is None else content_problem(frame)
    if problem is not None:
        raise ArtifactError(path, problem)
    return frame


def one_line(error: Exception) -> str:
    """An exception's message on one line, cut to 200 characters (polars' span several)."""
    return " ".join(str(error).split())[:200]


def read_probe_table(path: str | Path) -> pl.DataFrame:
    """Read and validate one probe table (:data:`PROBE_COLUMNS`), raising :class:`ArtifactError`.

    A damaged table's message says to delete it: Snakemake makes a missing table again (it
    keeps a damaged one, whose time stamp is newer than its inputs')."""
    try:
        return read_table(path, PROBE_COLUMNS, _probe_content_problem)
    except ArtifactError as error:
        if not Path(path).is_file():
            raise
        problem = str(error).removeprefix(f"{path}: ")
        raise ArtifactError(path, f"{problem}; delete it and run snakemake again to make it anew") from None
