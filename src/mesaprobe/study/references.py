"""The exact optimum of each environment and probe of a plan: the reference of regret ratios
and paired differences (:mod:`mesaprobe.analysis.differences`).

A baseline says on which environment kinds it is the exact optimum
(:attr:`mesaprobe.baselines.base.Baseline.optimal_for`, and ``optimal_for_pool`` for probes that
replay the training pool); an environment kind says how a regret ratio is made there
(:attr:`mesaprobe.kinds.EnvironmentKind.regret_ratio`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mesaprobe.baselines import BASELINES
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.kinds import KINDS
from mesaprobe.probes import PROBES


@dataclass(frozen=True)
class Reference:
    """The study's exact optimum on one environment and probe."""

    optimum: str | None
    """The label of the baseline that is the exact optimum on these tasks (``bayes_optimal``,
    ``ridge``, ``dmmse`` on a pool, ``commit_optimal``), if the study plays one."""
    regret_ratio: Literal["optimum", "own"] | None
    """How the regret ratio is made here (:attr:`mesaprobe.kinds.EnvironmentKind.regret_ratio`),
    or None where no exact reference plays these tasks."""


def find_references(
    probe_jobs: Sequence[Any], baseline_jobs: Sequence[Any]
) -> dict[tuple[str, str], Reference]:
    """(environment label, probe label) -> its :class:`Reference`, for every pair a probe writing
    curves plays (``probe_jobs`` and ``baseline_jobs`` are a plan's
    :class:`~mesaprobe.study.plan.ProbeJob` and :class:`~mesaprobe.study.plan.BaselineJob`).  Ratios are stated on tasks from the prior only: on a replayed training pool
    the prior's Bayes agent is not the optimum."""
    references: dict[tuple[str, str], Reference] = {}
    for job in probe_jobs:
        key = (job.run.environment.label, job.probe.label)
        if job.writes != "curves" or key in references:
            continue
        kind = KINDS.get(ENVIRONMENTS.get(job.run.environment.family).kind)
        pool = PROBES.get(job.probe.family)(job.probe.config).plays_pool

        def exact(family: str, pool: bool = pool, kind: str = kind.registered_name) -> bool:
            baseline_class = BASELINES.get(family)
            return kind in (baseline_class.optimal_for_pool if pool else baseline_class.optimal_for)

        optimum = next(
            (
                baseline.baseline.label
                for baseline in baseline_jobs
                if (baseline.environment.label, baseline.probe.label) == key
                and exact(baseline.baseline.family)
            ),
            None,
        )
        ratio = kind.regret_ratio
        if pool or (ratio == "optimum" and optimum is None):
            ratio = None
        references[key] = Reference(optimum, ratio)
    return references
