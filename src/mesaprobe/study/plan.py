"""The plan of a study: every run, probe and baseline job, with stable ids and output paths.

Ids are readable names plus a hash of the resolved settings (64 bits, see
:data:`~mesaprobe.study.load.HASH_DIGITS`), so changing a setting gives new ids (and new
output paths) while an unchanged job keeps its outputs.  Paths are relative to
``results/<study>/``; the Snakefile and the command line both take them from here, so they
cannot disagree.

The plan refuses what would lose or break a job silently: two different runs (or two
probe or baseline jobs) with one id, a study in which no probe plays any environment,
more than :data:`MAX_JOBS` jobs, and a job whose memory estimate
(:mod:`mesaprobe.study.resources`) cannot fit a machine.  A probe or baseline that plays
no environment of the study is left out with a note.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mesaprobe.baselines import BASELINES, Baseline
from mesaprobe.envs import ENVIRONMENTS, Environment
from mesaprobe.errors import SpecError
from mesaprobe.probes import PROBES, Probe
from mesaprobe.settings import SettingError, as_dict
from mesaprobe.study import resources, results
from mesaprobe.study.load import HASH_DIGITS, Component, Grid, Study, render_grid, settings_hash
from mesaprobe.study.references import Reference, find_references
from mesaprobe.train import ALGORITHMS, algorithm_of, check_training
from mesaprobe.train.config import TrainingConfig

#: Training settings that change where or how often work happens, not what is learned.
#: A name a study gives (``study.schema.yaml``), a settings hash, and the ids made of them:
#: what the workflow's wildcards may match, so no other text reaches a job's command line.
NAME_PATTERN = r"[a-z][a-z0-9_]{0,39}"
HASH_PATTERN = rf"[0-9a-f]{{{HASH_DIGITS}}}"
COMPONENT_ID_PATTERN = rf"{NAME_PATTERN}-{HASH_PATTERN}"
RUN_ID_PATTERN = rf"{NAME_PATTERN}-{NAME_PATTERN}-{HASH_PATTERN}-s[0-9]+"
#: Most jobs (runs, probe and baseline jobs together) a plan may have; counted while the plan
#: is built, so a study of millions is refused before it is built. The DAG of 10,000 runs
#: (30,002 jobs) builds in seconds; Snakemake itself slows down well before this many.
MAX_JOBS = 200_000
OPERATIONAL_TRAINING_KEYS = ("device", "checkpoint_every", "seeds_per_job", "tensorboard")


@dataclass(frozen=True)
class Run:
    """One trained model: environment x architecture x training settings x seed."""

    environment: Component
    architecture: Component
    training: TrainingConfig
    training_grid: Grid
    seed: int

    @functools.cached_property
    def resolved(self) -> dict[str, Any]:
        # Settings added after results were recorded leave ids unchanged at their default.
        defaults = TrainingConfig()
        training = {
            key: value
            for key, value in as_dict(self.training).items()
            if key not in OPERATIONAL_TRAINING_KEYS
            and not (key in TrainingConfig.id_neutral_defaults and value == getattr(defaults, key))
        }
        return {
            "environment": self.environment.resolved,
            "architecture": self.architecture.resolved,
            "training": training,
        }

    @functools.cached_property
    def config_hash(self) -> str:
        """Hash of everything but the seed: runs differing only by seed share it."""
        return settings_hash(self.resolved)

    @functools.cached_property
    def id(self) -> str:
        return f"{self.environment.name}-{self.architecture.name}-{self.config_hash}-s{self.seed}"

    def with_seed(self, seed: int) -> Run:
        """The same run with another seed, sharing its resolved settings and their hash.

        Runs differing only by seed have equal settings, so a study's runs hash them once
        per setting rather than once per seed (a grid of 10,000 runs builds in a fraction
        of the time).
        """
        run = Run(self.environment, self.architecture, self.training, self.training_grid, seed)
        run.__dict__.update(resolved=self.resolved, config_hash=self.config_hash)
        return run

    @property
    def agent(self) -> str:
        """The agent's name in tables: architecture name plus its grid values."""
        variant = render_grid(self.architecture.grid, self.training_grid)
        return f"{self.architecture.name}[{variant}]" if variant else self.architecture.name

    @property
    def variant(self) -> str:
        return render_grid(self.environment.grid, self.architecture.grid, self.training_grid)

    @property
    def directory(self) -> str:
        return f"runs/{self.id}"


@dataclass(frozen=True)
class ProbeJob:
    """A probe of one frozen run."""

    run: Run
    probe: Component

    @property
    def output(self) -> str:
        return f"probes/{self.run.id}/{self.probe.id}.parquet"

    @property
    def writes(self) -> str:
        return probe_writes(self.probe)


@dataclass(frozen=True)
class BaselineJob:
    """A baseline played on one environment and probe, with the held-out tasks of one seed."""

    environment: Component
    probe: Component
    baseline: Component
    seed: int

    @property
    def output(self) -> str:
        return f"baselines/{self.environment.id}/{self.probe.id}/{self.baseline.id}-s{self.seed}.parquet"

    @property
    def writes(self) -> str:
        return probe_writes(self.probe)


@dataclass(frozen=True)
class SkippedBaseline:
    """A baseline that cannot play one environment and probe (e.g. an exact DP too large, or
    dmmse, the Bayes predictor of a finite task pool, on an environment without a task_pool)."""

    environment: str
    probe: str
    baseline: str
    reason: str

    def __str__(self) -> str:
        return f"{self.baseline} skipped on {self.environment}/{self.probe}: {self.reason}"


@dataclass(frozen=True)
class SkippedProbe:
    """A probe whose settings do not apply to one environment's kind (e.g. relabelled arms on
    a regression environment): no probe or baseline jobs for the pair."""

    environment: str
    probe: str
    reason: str

    def __str__(self) -> str:
        return f"probe {self.probe} skipped on {self.environment}: {self.reason}"


@dataclass(frozen=True)
class Unplayed:
    """A probe or baseline of the study that plays none of its environments (its kind serves
    other kinds of environment): it has no jobs."""

    axis: Literal["probe", "baseline"]
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.axis} {self.name} plays no environment of this study: {self.reason}"


@dataclass(frozen=True)
class Plan:
    study: Study
    runs: tuple[Run, ...]
    probe_jobs: tuple[ProbeJob, ...]
    baseline_jobs: tuple[BaselineJob, ...]
    skipped: tuple[SkippedBaseline | SkippedProbe | Unplayed, ...] = ()

    @functools.cached_property
    def runs_by_id(self) -> dict[str, Run]:
        return {run.id: run for run in self.runs}

    def run(self, run_id: str) -> Run:
        return self.runs_by_id[run_id]

    @functools.cached_property
    def seed_groups(self) -> tuple[tuple[Run, ...], ...]:
        """Runs trained together, one job per group: the seeds of each run, in seed order, in
        groups of ``training.seeds_per_job`` (resolved for this machine's device)."""
        by_setting: dict[tuple[str, str, str], list[Run]] = {}
        for run in self.runs:
            key = (run.environment.name, run.architecture.name, run.config_hash)
            by_setting.setdefault(key, []).append(run)
        groups = []
        for runs in by_setting.values():
            size = algorithm_of(runs[0].training).seeds_in_job(runs[0].training)
            runs = sorted(runs, key=lambda run: run.seed)
            groups.extend(tuple(runs[start : start + size]) for start in range(0, len(runs), size))
        return tuple(groups)

    @functools.cached_property
    def trial_episodes(self) -> dict[str, int]:
        """Environment label -> episodes of its trials (1 without trials), for every environment
        a probe or baseline plays; the collect step tabulates trials per episode."""
        played = [
            *(job.run.environment for job in self.probe_jobs),
            *(job.environment for job in self.baseline_jobs),
        ]
        return {
            environment.label: ENVIRONMENTS.get(environment.family)(environment.config).trial_episodes
            for environment in played
        }

    @functools.cached_property
    def references(self) -> dict[tuple[str, str], Reference]:
        """(environment label, probe label) -> the exact optimum there, for regret ratios and
        paired differences (:func:`mesaprobe.study.references.find_references`)."""
        return find_references(self.probe_jobs, self.baseline_jobs)

    @property
    def table_inputs(self) -> list[str]:
        """Every probe and baseline table of curves (adaptation-like probes) the collect step reads."""
        return [job.output for job in (*self.probe_jobs, *self.baseline_jobs) if job.writes == "curves"]

    @property
    def inside_inputs(self) -> list[str]:
        """Every inside table (:mod:`mesaprobe.analysis.inside`) the collect step reads."""
        return [job.output for job in (*self.probe_jobs, *self.baseline_jobs) if job.writes == "inside"]

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study.name,
            "spec": self.study.file,
            "spec_hash": self.study.spec_hash,
            "runs": [
                {
                    "id": run.id,
                    "environment": run.environment.label,
                    "agent": run.agent,
                    "seed": run.seed,
                    "variant": run.variant,
                    "resolved": run.resolved,
                }
                for run in self.runs
            ],
            "probes": [
                {"run": job.run.id, "probe": job.probe.label, "output": job.output} for job in self.probe_jobs
            ],
            "skipped": [str(skip) for skip in self.skipped],
            "baselines": [
                {
                    "environment": job.environment.label,
                    "probe": job.probe.label,
                    "baseline": job.baseline.label,
                    "seed": job.seed,
                    "output": job.output,
                }
                for job in self.baseline_jobs
            ],
        }


def probe_writes(probe: Component) -> str:
    """What a probe's jobs write: ``curves`` (per-episode step metrics, :mod:`mesaprobe.analysis.tables`)
    or ``inside`` (read-outs and fitted models, :mod:`mesaprobe.analysis.inside`)."""
    return PROBES.get(probe.family).writes


def serves(component_class: type[Probe] | type[Baseline], environment_class: type[Environment]) -> bool:
    return environment_class.kind in component_class.serves


def probe_plan(study: Study, environment: Component) -> tuple[list[Component], list[SkippedProbe]]:
    """The study's probes that play ``environment``, and a note for each probe that serves its
    kind but whose settings do not apply to it (e.g. relabelled arms on a regression environment)."""
    environment_class = ENVIRONMENTS.get(environment.family)
    played, skipped = [], []
    for probe in study.probes:
        probe_class = PROBES.get(probe.family)
        if not serves(probe_class, environment_class):
            continue
        reason = probe_class.not_applicable(probe.config, environment_class.kind)
        if reason is None:
            played.append(probe)
        else:
            skipped.append(SkippedProbe(environment.label, probe.label, reason))
    return played, skipped


def probes(study: Study, environment: Component) -> list[Component]:
    """The study's probes that serve and apply to ``environment``."""
    return probe_plan(study, environment)[0]


def training_blocks(
    study: Study, architecture: Component, environment: Component | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(study key, settings) of the training blocks that override the study's for a run.

    The environment's, then the architecture's: where both set a key, the architecture's wins.
    """
    blocks = []
    if environment is not None:
        blocks.append(
            (
                f"environments.{environment.name}.training",
                study.environment_training_overrides.get(environment.label) or {},
            )
        )
    blocks.append(
        (
            f"architectures.{architecture.name}.training",
            study.training_overrides.get(architecture.label) or {},
        )
    )
    return blocks


def setting_owner(blocks: list[tuple[str, dict[str, Any]]], name: str) -> str:
    """The study key of the block whose value of the training setting ``name`` applies."""
    return next((key for key, override in reversed(blocks) if name in override), "training")


def with_overrides(
    study: Study, architecture: Component, training: TrainingConfig, environment: Component | None = None
) -> TrainingConfig:
    """The study's training settings with the environment's, then the architecture's overrides applied."""
    blocks = training_blocks(study, architecture, environment)
    override = {name: value for _, block in blocks for name, value in block.items()}
    if not override:
        return training
    merged = dataclasses.replace(training, **override)
    try:
        merged.validate()
        check_training(merged)
    except SettingError as error:
        key = f"{setting_owner(blocks, error.key)}.{error.key}"
        raise SpecError(study.file, key, error.problem) from None
    return merged


class JobCounter:
    """Counts a plan's jobs as they are made; refuses the study beyond :data:`MAX_JOBS`."""

    def __init__(self, study: Study):
        self.study = study
        self.count = 0

    def add(self, jobs: int, key: str) -> None:
        self.count += jobs
        if self.count > MAX_JOBS:
            raise SpecError(
                self.study.file,
                key,
                f"the study makes more than {MAX_JOBS:,} jobs (runs, probes and baselines); "
                "split it into studies or sweep fewer values",
            )


def unplayed_note(study: Study, axis: Literal["probe", "baseline"], name: str, serves: tuple[str, ...]):
    """The note for a probe or baseline whose kind serves none of the study's environments."""
    kinds = sorted({ENVIRONMENTS.get(environment.family).kind for environment in study.environments})
    return Unplayed(
        axis,
        name,
        f"it plays {' and '.join(serves)} environments; this study has {' and '.join(kinds)} environments",
    )


def check_training_memory(
    study: Study, run: Run, environment: Environment, blocks: list[tuple[str, dict[str, Any]]]
) -> None:
    """Refuse a run whose training job cannot fit a machine (see :mod:`mesaprobe.study.resources`)."""
    training = run.training
    algorithm = algorithm_of(training)

    def key(name: str) -> str:
        return f"{setting_owner(blocks, name)}.{name}"

    episodes_per_update = algorithm.env_steps_per_update(training, environment.horizon) // environment.horizon
    updates = algorithm.updates(training, environment.horizon)
    seeds = resources.Factor(
        min(algorithm.seeds_in_job(training), len(study.seeds)), key("seeds_per_job"), "seeds"
    )
    architecture = (run.architecture.name, run.architecture.family, run.architecture.config)
    terms = resources.training_terms(
        run.environment.name,
        environment,
        *architecture,
        batch=resources.Factor(episodes_per_update, key("batch"), "batch"),
        updates=resources.Factor(updates, key("env_steps"), "updates"),
        seeds=seeds,
    )
    job = f"training {run.environment.name}-{run.architecture.name}"
    resources.check_memory(job, terms, study.file)  # before the model is built to count its parameters
    terms.append(
        resources.parameter_term(run.environment.name, environment, *architecture, seeds, study.file)
    )
    resources.check_memory(job, terms, study.file)


def check_unique_outputs(study: Study, jobs: list[ProbeJob | BaselineJob]) -> None:
    """Refuse two jobs that would write one file (two settings sharing a hash)."""
    writers: dict[str, ProbeJob | BaselineJob] = {}
    for job in jobs:
        other = writers.setdefault(job.output, job)
        if other is job:
            continue
        names = [
            f"{one.run.agent} {one.probe.label}"
            if isinstance(one, ProbeJob)
            else f"{one.baseline.label} {one.probe.label} on {one.environment.label}"
            for one in (other, job)
        ]
        raise SpecError(
            study.file,
            f"probes.{job.probe.name}",
            f"{names[0]} and {names[1]} would write one file ({job.output}): two settings share "
            "an id; change a setting of one of them",
        )


def make_plan(study: Study) -> Plan:
    """Expand a study into its jobs (identical runs from different grid points appear once)."""
    counter = JobCounter(study)
    runs: dict[str, Run] = {}
    instances = {
        environment.label: ENVIRONMENTS.get(environment.family)(environment.config)
        for environment in study.environments
    }
    for environment in study.environments:
        kind = ENVIRONMENTS.get(environment.family).kind
        for architecture in study.architectures:
            if environment.name not in study.architecture_environments.get(
                architecture.label, (environment.name,)
            ):
                continue  # architectures.<name>.environments leaves this environment out
            for training, training_grid in study.trainings:
                resolved_training = with_overrides(study, architecture, training, environment)
                algorithm = algorithm_of(resolved_training)
                blocks = training_blocks(study, architecture, environment)
                owner = setting_owner(blocks, "algorithm")
                if kind not in algorithm.serves:
                    trainers = [name for name in ALGORITHMS.names() if kind in ALGORITHMS.get(name).serves]
                    raise SpecError(
                        study.file,
                        f"{owner}.algorithm",
                        f"environment {environment.name!r} ({kind}) is trained with one of: "
                        f"{', '.join(trainers)}; got {resolved_training.algorithm!r}",
                    )
                if algorithm.architectures is not None and architecture.family not in algorithm.architectures:
                    raise SpecError(
                        study.file,
                        f"{owner}.algorithm",
                        f"{resolved_training.algorithm} trains only the {', '.join(algorithm.architectures)} "
                        f"architecture; architecture {architecture.name!r} is {architecture.family}",
                    )
                template = Run(environment, architecture, resolved_training, training_grid, seed=0)
                first = runs.get(template.id)
                if first is not None and first.resolved == template.resolved:
                    continue  # the same run from another grid point: its seeds are planned
                check_training_memory(study, template, instances[environment.label], blocks)
                counter.add(len(study.seeds), "seeds")
                for seed in study.seeds:
                    run = template.with_seed(seed)
                    other = runs.setdefault(run.id, run)
                    if other is not run:  # equal ids of different settings: the hash collided
                        raise SpecError(
                            study.file,
                            f"architectures.{architecture.name}",
                            f"runs {other.agent} and {run.agent} on {environment.label} have different "
                            f"settings but one id {run.id}; change a setting of one of them",
                        )
    plans = {environment.label: probe_plan(study, environment) for environment in study.environments}
    probe_jobs = []
    for run in runs.values():
        played_probes = plans[run.environment.label][0]
        counter.add(len(played_probes), "probes")
        probe_jobs += [ProbeJob(run, probe) for probe in played_probes]
    estimated: set[tuple[str, str, str]] = set()
    for job in probe_jobs:
        pair = (job.run.environment.label, job.run.architecture.label, job.probe.label)
        if pair in estimated:
            continue
        estimated.add(pair)
        trained = instances[job.run.environment.label]
        terms = resources.probe_terms(
            job.probe.name,
            job.probe.config,
            job.run.environment.name,
            trained,
            PROBES.get(job.probe.family)(job.probe.config).environment(trained),
            job.run.architecture.name,
            job.run.architecture.config,
        )
        resources.check_memory(f"probe {job.probe.label} of {job.run.agent}", terms, study.file)
    baseline_jobs = []
    skipped: list[SkippedBaseline | SkippedProbe | Unplayed] = []
    for environment in study.environments:
        environment_class = ENVIRONMENTS.get(environment.family)
        played_probes, skipped_probes = plans[environment.label]
        skipped += skipped_probes
        for probe in played_probes:
            probe_class = PROBES.get(probe.family)
            if not probe_class.plays_baselines:
                continue  # e.g. read-outs of hidden states, which baselines do not have
            played = None
            for baseline in study.baselines:
                baseline_class = BASELINES.get(baseline.family)
                if not serves(baseline_class, environment_class):
                    continue
                if baseline_class.needs_task_pool and environment.task_pool is None:
                    reason = baseline_class.without_task_pool  # dmmse: defined by a finite pool only
                    skipped.append(SkippedBaseline(environment.label, probe.label, baseline.label, reason))
                    continue
                if played is None:  # the environment as this probe plays it
                    played = probe_class(probe.config).environment(instances[environment.label])
                    terms = resources.baseline_terms(
                        probe.name, probe.config, environment.name, instances[environment.label], played
                    )
                    resources.check_memory(f"baselines of probe {probe.label}", terms, study.file)
                reason = baseline_class.skip_reason(baseline.config, played)
                if reason is not None:
                    skipped.append(SkippedBaseline(environment.label, probe.label, baseline.label, reason))
                    continue
                counter.add(len(study.seeds), "seeds")
                baseline_jobs += [BaselineJob(environment, probe, baseline, seed) for seed in study.seeds]
    skipped += unplayed(study)
    if study.probes and not any(plans[environment.label][0] for environment in study.environments):
        raise SpecError(
            study.file,
            "probes",
            "no probe plays an environment of this study ("
            + "; ".join(str(note) for note in skipped if isinstance(note, (Unplayed, SkippedProbe)))
            + ")",
        )
    if not probe_jobs and not baseline_jobs:
        raise SpecError(
            study.file, "baselines", "the study has no probe or baseline job: nothing would be measured"
        )
    check_unique_outputs(study, [*probe_jobs, *baseline_jobs])
    return Plan(study, tuple(runs.values()), tuple(probe_jobs), tuple(baseline_jobs), tuple(skipped))


def unplayed(study: Study) -> list[Unplayed]:
    """Notes for the probes and baselines whose kinds serve none of the study's environments."""
    kinds = {ENVIRONMENTS.get(environment.family).kind for environment in study.environments}
    notes = []
    for axis, components, registry in (
        ("probe", study.probes, PROBES),
        ("baseline", study.baselines, BASELINES),
    ):
        for component in components:
            serves = registry.get(component.family).serves
            if not kinds & set(serves):
                notes.append(unplayed_note(study, axis, component.label, serves))
    return notes


def results_directory(study: Study, root: str | Path = "results") -> Path:
    """``root/<study>``; SpecError if it belongs to another study file of the same name (see
    :mod:`mesaprobe.study.results`; a Snakemake run claims it for its study file)."""
    return results.check_owner(study, root)
