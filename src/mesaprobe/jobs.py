"""The jobs of a study, one function per pipeline step; the command line calls these.

Each job takes the loaded :class:`~mesaprobe.study.Plan`, finds its own piece of work
by id, and writes its outputs under ``results/<study>/`` atomically.  Nothing here
knows about Snakemake: every step can be run by hand through ``mesaprobe <step>``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

from mesaprobe.analysis.inside import INSIDE_COLUMNS, write_inside_table
from mesaprobe.analysis.tables import PROBE_COLUMNS, write_probe_table
from mesaprobe.artifacts import sha256_file, write_json
from mesaprobe.baselines import BASELINES
from mesaprobe.device import resolve_device
from mesaprobe.envs import ENVIRONMENTS, Environment
from mesaprobe.envs.task_pool import TaskPool
from mesaprobe.errors import ArtifactError, UserError
from mesaprobe.frozen import Expected, check_cut_from, freeze, inside, load_frozen, non_finite
from mesaprobe.kinds import kind_of
from mesaprobe.manifests import (
    FrozenManifest,
    HistoryEntry,
    Provenance,
    ResolvedSettings,
    TrainingManifest,
    TrainingSummary,
)
from mesaprobe.models import build_model
from mesaprobe.models.stacked import stack_models
from mesaprobe.probes import PROBES, Probe
from mesaprobe.seeding import SeedGenerators, derive_seed, make_generator
from mesaprobe.study import Component, Plan, Run, settings_hash
from mesaprobe.study.plan import ProbeJob
from mesaprobe.train import algorithm_of
from mesaprobe.train.loop import load_checkpoint, mean_of_last, save_checkpoints, train
from mesaprobe.train.stacked import SeedEnvironments
from mesaprobe.train.state import TrainingState

CHECKPOINT = "checkpoint.pt"
PARTIAL = "partial.pt"
TRAIN_MANIFEST = "train.json"
RESOLVED = "resolved.json"
FROZEN_WEIGHTS = "frozen.safetensors"
FROZEN_MANIFEST = "frozen.json"


def make_environment(component: Component, seed: int | None = None) -> Environment:
    """The environment of a study block; with a ``task_pool`` and a seed, tasks come from that seed's pool.

    The pool is named by (environment id, seed): every architecture trained at one seed
    shares it, and each seed is an independent replicate (see :mod:`mesaprobe.envs.task_pool`).
    """
    environment = ENVIRONMENTS.get(component.family)(component.config)
    if component.task_pool is None or seed is None:
        return environment
    return TaskPool(environment, component.task_pool, key=(component.id, seed))


def probed_environment(probe_kind: Probe, environment: Component, seed: int) -> Environment:
    """The environment a probe plays at ``seed``: fresh tasks from the prior, or the
    run's training pool when the probe asks for ``tasks: pool`` (architectures and
    baselines alike, so both face the same tasks)."""
    return probe_kind.environment(make_environment(environment, seed if probe_kind.plays_pool else None))


def heldout_environment_id(probe_kind: Probe, environment: Component) -> str:
    """The environment's name for held-out task streams: pool tasks are named by the
    environment (and so its pool), fresh tasks by the prior alone, so every pool size of
    a task-diversity sweep is probed on the same fresh tasks."""
    return environment.id if probe_kind.plays_pool else environment.prior_id


def heldout_id(probe: Component) -> str:
    """The probe's name for its held-out task, luck and action streams.

    Its id, except that settings its kind marks ``task_neutral`` are left out: every
    window of one window probe then plays the same tasks with the same luck.
    """
    neutral = PROBES.get(probe.family).task_neutral
    if not neutral:
        return probe.id
    resolved = {key: value for key, value in probe.resolved.items() if key not in neutral}
    return f"{probe.name}-{settings_hash(resolved)}"


def find_run(plan: Plan, run_id: str) -> Run:
    try:
        return plan.run(run_id)
    except KeyError:
        known = ", ".join(run.id for run in plan.runs[:5]) + (" ..." if len(plan.runs) > 5 else "")
        raise UserError(
            f"{plan.study.file}: no run {run_id!r} in this study (runs: {known or 'none'})"
        ) from None


def output_size(environment: Environment) -> int:
    """Model outputs: policy logits and a value (acting kinds), next-token logits (prediction),
    or the predicted target (regression)."""
    return kind_of(environment).output_size(environment)


def new_model(run: Run, environment: Environment):
    """The run's freshly initialised model (initial weights depend on run settings and seed only)."""
    with torch.random.fork_rng(devices=[]):  # leave the global RNG as it was
        torch.manual_seed(derive_seed("init", run.config_hash, run.seed))
        return build_model(
            run.architecture.family,
            run.architecture.config,
            environment.observation_size,
            output_size(environment),
            environment.private_size,
        )


def identity(plan: Plan, run: Run) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the run's settings and seed."""
    return {"run": run.id, "resolved": run.resolved, "seed": run.seed}


def train_job(plan: Plan, run_id: str, results: Path, progress: bool = True) -> Path:
    """Train one run to ``runs/<run>/checkpoint.pt`` (resuming from ``partial.pt`` if present)."""
    return train_seeds_job(plan, [run_id], results, progress)[0]


def train_seeds_job(plan: Plan, run_ids: list[str], results: Path, progress: bool = True) -> list[Path]:
    """Train runs that differ only by seed in one process (``training.seeds_per_job``).

    Every run gets exactly the files it would get trained alone (checkpoints, partial
    checkpoints, manifest); see :mod:`mesaprobe.train.stacked`.  Runs whose partial
    checkpoints stopped at different updates (an earlier job grouped them otherwise)
    each resume alone.
    """
    runs = [find_run(plan, run_id) for run_id in run_ids]
    check_seed_group(plan, runs)
    directories = [results / run.directory for run in runs]
    environments = [make_environment(run.environment, run.seed) for run in runs]  # a pool per seed
    identities = [identity(plan, run) for run in runs]
    partials = [directory / PARTIAL for directory in directories]
    resumed = [
        load_checkpoint(partial, expected) if partial.exists() else None
        for partial, expected in zip(partials, identities, strict=True)
    ]
    if len({None if checkpoint is None else checkpoint["update"] for checkpoint in resumed}) > 1:
        print(f"{runs[0].id}: its seeds stopped at different updates; each resumes alone", flush=True)
        return [train_job(plan, run.id, results, progress) for run in runs]
    training = runs[0].training
    device = resolve_device(training.device)
    models = [new_model(run, environment) for run, environment in zip(runs, environments, strict=True)]
    task_generators = [
        make_generator("train-tasks", run.config_hash, run.seed, device=device) for run in runs
    ]
    action_generators = [
        make_generator("train-actions", run.config_hash, run.seed, device=device) for run in runs
    ]
    if len(runs) == 1:
        environment, model = environments[0], models[0].to(device)
        task_generator, action_generator = task_generators[0], action_generators[0]
    else:
        environment, model = SeedEnvironments(environments), stack_models(models).to(device)
        task_generator, action_generator = SeedGenerators(task_generators), SeedGenerators(action_generators)
    state = TrainingState(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=training.lr),
        task_generator=task_generator,
        action_generator=action_generator,
    )
    if resumed[0] is not None:
        state.load_member_checkpoints(resumed)
        print(f"{', '.join(run_ids)}: resuming from {PARTIAL} at update {state.update}", flush=True)
    for run, directory in zip(runs, directories, strict=True):
        directory.mkdir(parents=True, exist_ok=True)
        write_json(
            directory / RESOLVED, {"run": run.id, "seed": run.seed, "study": plan.study.name, **run.resolved}
        )
    description = runs[0].id if len(runs) == 1 else f"{runs[0].id} and {len(runs) - 1} more seeds"
    started = time.perf_counter()
    train(environment, state, training, partials, identities, progress=progress, description=description)
    session_seconds = time.perf_counter() - started
    checkpoints = [directory / CHECKPOINT for directory in directories]
    members = save_checkpoints(state, checkpoints, identities)
    speed = state.env_steps / max(state.wall_seconds, 1e-9)  # of each run
    for run, directory, member, checkpoint in zip(runs, directories, members, checkpoints, strict=True):
        TrainingManifest(
            run=run.id,
            study=plan.study.name,
            spec_hash=plan.study.spec_hash,
            seed=run.seed,
            updates=state.update,
            env_steps=state.env_steps,
            wall_seconds=state.wall_seconds,
            env_steps_per_second=speed,
            # For prediction environments an env step is one token.
            tokens_per_second=speed if environments[0].kind == "prediction" else None,
            # Several seeds per job: the job's throughput is theirs together.
            seeds_in_job=len(runs),
            job_env_steps_per_second=speed * len(runs),
            session_seconds=session_seconds,
            final_metrics=mean_of_last(member["history"]),
            history=tuple(HistoryEntry.of(entry) for entry in member["history"]),
            provenance=Provenance.current(str(device)),
            checkpoint_sha256=sha256_file(checkpoint),
        ).write(directory / TRAIN_MANIFEST)
    for partial in partials:
        partial.unlink(missing_ok=True)
    return checkpoints


def check_seed_group(plan: Plan, runs: list[Run]) -> None:
    """Runs trained in one job must differ by seed only."""
    first = runs[0]
    for run in runs[1:]:
        if (run.environment.name, run.architecture.name, run.config_hash) != (
            first.environment.name,
            first.architecture.name,
            first.config_hash,
        ):
            raise UserError(
                f"{plan.study.file}: runs {first.id} and {run.id} differ by more than their seed; "
                "only seeds of one run train in one job"
            )
    seeds = [run.seed for run in runs]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{plan.study.file}: run {first.id} is named twice for one job (seeds {seeds})")


def finished_checkpoint(plan: Plan, run: Run, directory: Path, environment: Environment) -> dict[str, Any]:
    """The run's ``checkpoint.pt``, checked before it is frozen: it is the run's (identity), it
    is the file its training finished with (sha256 in ``train.json``), it holds every update
    the run's settings make (not a partial checkpoint put in its place), and its weights are
    finite; ArtifactError saying which, and what to delete to train the run again."""
    path = directory / CHECKPOINT
    checkpoint = load_checkpoint(path, identity(plan, run))
    again = f"delete {CHECKPOINT} to train the run again"
    if not (directory / TRAIN_MANIFEST).is_file():
        raise ArtifactError(
            directory / TRAIN_MANIFEST, f"not found: the run's training did not finish; {again}"
        )
    manifest = TrainingManifest.read(directory / TRAIN_MANIFEST)
    if (manifest.run, manifest.seed) != (run.id, run.seed):
        raise ArtifactError(
            directory / TRAIN_MANIFEST, f"run: belongs to run {manifest.run!r}, not {run.id!r}"
        )
    if sha256_file(path) != manifest.checkpoint_sha256:
        raise ArtifactError(
            path,
            f"differs from the checkpoint training wrote (checkpoint_sha256 in {TRAIN_MANIFEST}); {again}",
        )
    expected_keys = {"model": dict, "update": int, "env_steps": int, "wall_seconds": float, "history": list}
    for key, kind in expected_keys.items():
        value = checkpoint.get(key)
        if not isinstance(value, kind) and not (kind is float and isinstance(value, int)):
            raise ArtifactError(
                path, f"{key}: expected {kind.__name__}, found {type(value).__name__}; {again}"
            )
    history = checkpoint["history"]
    if not all(
        isinstance(entry, dict) and all(isinstance(value, (int, float)) for value in entry.values())
        for entry in history
    ):
        raise ArtifactError(path, f"history: expected a list of statistics per update; {again}")
    updates = algorithm_of(run.training).updates(run.training, environment.horizon)
    if checkpoint["update"] != updates or len(history) != updates:
        raise ArtifactError(
            path,
            f"update: holds {checkpoint['update']} updates ({len(history)} in its history) of the "
            f"{updates} the run's settings make; {again}",
        )
    bad = (
        non_finite(checkpoint["model"])
        if all(isinstance(tensor, torch.Tensor) for tensor in checkpoint["model"].values())
        else "model"
    )
    if bad is not None:
        raise ArtifactError(path, f"model.{bad}: holds NaN or infinite weights; {again}")
    return checkpoint


def freeze_job(plan: Plan, run_id: str, results: Path) -> Path:
    """Turn ``checkpoint.pt`` into ``frozen.safetensors`` + ``frozen.json``, after checking the
    checkpoint (:func:`finished_checkpoint`)."""
    run = find_run(plan, run_id)
    directory = results / run.directory
    environment = make_environment(run.environment)
    model = new_model(run, environment)
    checkpoint = finished_checkpoint(plan, run, directory, environment)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ArtifactError(
            directory / CHECKPOINT,
            f"model: does not fit the run's architecture ({' '.join(str(error).split())[:200]}); "
            f"delete {CHECKPOINT} to train the run again",
        ) from None
    FrozenManifest(
        run=run.id,
        study=plan.study.name,
        spec_hash=plan.study.spec_hash,
        seed=run.seed,
        agent=run.agent,
        environment=run.environment.label,
        variant=run.variant,
        resolved=ResolvedSettings(**run.resolved),
        input_size=environment.observation_size,
        output_size=output_size(environment),
        private_size=environment.private_size,
        training=TrainingSummary(
            updates=checkpoint["update"],
            env_steps=checkpoint["env_steps"],
            wall_seconds=checkpoint["wall_seconds"],
            final_metrics=mean_of_last(checkpoint["history"]),
        ),
        weights=freeze(model, directory / FROZEN_WEIGHTS, run.id),
        checkpoint_sha256=sha256_file(directory / CHECKPOINT),
        provenance=Provenance.current("cpu"),
        parameters=model.parameter_count(),
        state_floats=model.state_floats(environment.horizon),
        flops_per_step=model.flops_per_step(environment.horizon),
    ).write(directory / FROZEN_MANIFEST)
    return directory / FROZEN_MANIFEST


def expected_frozen(plan: Plan, run: Run) -> Expected:
    """What the frozen manifest of ``run`` must say (see :class:`mesaprobe.frozen.Expected`)."""
    environment = make_environment(run.environment)
    return Expected(
        run=run.id,
        study=plan.study.name,
        seed=run.seed,
        resolved=run.resolved,
        input_size=environment.observation_size,
        output_size=output_size(environment),
        private_size=environment.private_size,
    )


def find_probe_job(plan: Plan, run_id: str, probe: str) -> ProbeJob:
    for job in plan.probe_jobs:
        if job.run.id == run_id and probe in (job.probe.label, job.probe.id):
            return job
    raise UserError(f"{plan.study.file}: no probe {probe!r} of run {run_id!r} in this study")


def identifying_columns(
    plan: Plan,
    environment: Component,
    probe: Component,
    agent: str,
    kind: str,
    run: str,
    seed: int,
    variant: str,
) -> dict[str, Any]:
    return {
        "study": plan.study.name,
        "environment": environment.label,
        "variant": variant,
        "probe": probe.label,
        "agent": agent,
        "agent_kind": kind,
        "run": run,
        "seed": seed,
    }


def write_table(rows: pl.DataFrame, columns: dict[str, Any], path: Path, writes: str = "curves") -> Path:
    """Write a probe's ``rows`` with the job's identifying ``columns``: a probe table of curves,
    or an inside table (read-outs and fitted models) when the probe kind ``writes`` one."""
    schema, write = (
        (INSIDE_COLUMNS, write_inside_table) if writes == "inside" else (PROBE_COLUMNS, write_probe_table)
    )
    frame = rows.with_columns(*(pl.lit(value).alias(name) for name, value in columns.items()))
    frame = frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())
    write(frame, path)
    return path


def probe_job(plan: Plan, run_id: str, probe: str, results: Path, device_name: str = "auto") -> Path:
    """Run one probe of one frozen run; the frozen weights are checked before and after."""
    job = find_probe_job(plan, run_id, probe)
    run = job.run
    device = resolve_device(device_name)
    frozen = load_frozen(
        results / run.directory / FROZEN_MANIFEST, device, expected_frozen(plan, run), within=results
    )
    checkpoint_path = inside(results / run.directory / CHECKPOINT, results)
    check_cut_from(frozen, checkpoint_path, load_checkpoint(checkpoint_path, identity(plan, run)))
    probe_kind = PROBES.get(job.probe.family)(job.probe.config)
    environment = probed_environment(probe_kind, run.environment, run.seed)
    agent = kind_of(environment).agent(frozen.model, environment, probe_kind.policy)
    # Inside probes compare with the run's own initial weights: the same architecture untrained.
    extra = {"untrained": new_model(run, environment).to(device).eval()} if job.writes == "inside" else {}
    rows = probe_kind.run(
        agent,
        environment,
        heldout_key=(heldout_environment_id(probe_kind, run.environment), heldout_id(job.probe), run.seed),
        agent_key=(run.id, heldout_id(job.probe)),
        device=device,
        **extra,
    )
    frozen.check_unchanged()
    columns = identifying_columns(
        plan, run.environment, job.probe, run.agent, "architecture", run.id, run.seed, run.variant
    )
    return write_table(rows, columns, results / job.output, job.writes)


def baseline_job(plan: Plan, environment: str, probe: str, baseline: str, seed: int, results: Path) -> Path:
    """Play one baseline on the held-out tasks that the architectures of ``seed`` face."""
    for job in plan.baseline_jobs:
        if (
            environment in (job.environment.label, job.environment.id)
            and probe in (job.probe.label, job.probe.id)
            and baseline in (job.baseline.label, job.baseline.id)
            and seed == job.seed
        ):
            break
    else:
        raise UserError(
            f"{plan.study.file}: no baseline job ({environment}, {probe}, {baseline}, seed {seed}) in this study"
        )
    probe_kind = PROBES.get(job.probe.family)(job.probe.config)
    env = probed_environment(probe_kind, job.environment, job.seed)
    baseline_class = BASELINES.get(job.baseline.family)
    if baseline_class.needs_task_pool:
        # dmmse: the Bayes predictor of the pool the architectures of this seed trained on,
        # whichever tasks the probe plays (the plan skips it where there is no pool).
        pool = make_environment(job.environment, job.seed).pool()
        agent = baseline_class(job.baseline.config, env, pool=pool)
    else:
        agent = baseline_class(job.baseline.config, env)
    rows = probe_kind.run(
        agent,
        env,
        heldout_key=(heldout_environment_id(probe_kind, job.environment), heldout_id(job.probe), job.seed),
        agent_key=(job.baseline.id, heldout_id(job.probe)),
        device="cpu",
    )
    columns = identifying_columns(
        plan,
        job.environment,
        job.probe,
        job.baseline.label,
        "baseline",
        job.baseline.id,
        job.seed,
        job.environment.variant,
    )
    return write_table(rows, columns, results / job.output, job.writes)
