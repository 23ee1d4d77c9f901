"""The sweeps of a study that get charts of their own: task-pool sizes M and memory windows w.

Charts are drawn from tables; which environments form a task-pool sweep and which
probes are windows of one window probe is read here from the study itself (its
environments' ``task_pool`` and its window probes' ``windows``), not parsed back out of
table labels.  :func:`study_sweeps` describes both; the study's charts
(:func:`mesaprobe.study.outputs.chart_outputs`) hold a *transition chart* per
:class:`PoolSweep` and a *window chart* per environment that a :class:`WindowSweep`
serves.  Without a study (tables only) there are no sweeps, so no sweep charts.

* A task-pool sweep is one environment of the study whose grid varies ``task_pool``
  (``grid: {environments.bandit2.task_pool: [1, 4, 16, null]}``) and nothing else,
  or together with other keys of the same environment, each combination of the other
  keys being a sweep of its own (``bandit2[arms=3]``).  At least two pool sizes, one
  of them finite; ``null`` (no pool: a fresh task every episode) is the unlimited end.
* A window sweep is one window probe (``windows: [1, 2, 4]``), expanded by the study
  into ``window[w=1]``, ``window[w=2]``, ...; its full-context reference is the first
  adaptation probe of the study that plays what the window probe plays (same policy,
  tasks and out-of-distribution settings; episode counts may differ).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.probes import PROBES
from mesaprobe.probes.adaptation import AdaptationConfig, AdaptationProbe
from mesaprobe.probes.window import WindowProbe
from mesaprobe.study.load import Grid, Study, render_grid

#: Adaptation settings that do not change what a probe measures, only how precisely or how fast.
_PRECISION_SETTINGS = ("episodes", "batch")


@dataclass(frozen=True)
class PoolSweep:
    """Environments that differ only by ``task_pool``: one transition chart."""

    environment: str
    """The environment's label without the pool size, e.g. ``bandit2`` or ``bandit2[arms=3]``."""
    kind: str
    """The environment kind, which picks the metric family."""
    pools: tuple[tuple[int | None, str], ...]
    """(M, environment label) per pool size, M ascending, None (no pool) last."""
    probes: tuple[str, ...]
    """Probe labels drawn side by side (every probe that serves the kind, windows excepted)."""


@dataclass(frozen=True)
class WindowSweep:
    """The probes one window probe expands into: a facet of each served environment's window chart."""

    probe: str
    """The window probe's label without the window, e.g. ``window``."""
    windows: tuple[tuple[int, str], ...]
    """(w, probe label) per window, w ascending, e.g. (1, ``window[w=1]``)."""
    reference: str | None
    """Label of the adaptation probe that plays the same tasks with the full context, if any."""
    kinds: tuple[str, ...]
    """Environment kinds the window probe serves."""


@dataclass(frozen=True)
class Sweeps:
    """Every sweep of a study (none for tables charted without a study)."""

    pools: tuple[PoolSweep, ...] = ()
    windows: tuple[WindowSweep, ...] = ()

    def window_sweeps_of(self, kind: str) -> tuple[WindowSweep, ...]:
        """The window sweeps that serve environments of this kind."""
        return tuple(sweep for sweep in self.windows if kind in sweep.kinds)


def without_task_pool(grid: Grid) -> Grid:
    """Grid values without the ``task_pool`` value: ``(("arms", 3), ("task_pool", 16))`` -> ``(("arms", 3),)``."""
    return tuple((key, value) for key, value in grid if key != "task_pool")


def _label(name: str, variant: str) -> str:
    return f"{name}[{variant}]" if variant else name


def _measured_settings(config) -> dict:
    """The adaptation settings of ``config`` that change what is measured."""
    return {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(AdaptationConfig)
        if field.name not in _PRECISION_SETTINGS
    }


def window_sweeps(study: Study) -> tuple[WindowSweep, ...]:
    """The window sweeps of a study, in the order of its probes."""
    windows: dict[str, list[tuple[int, object]]] = {}
    adaptation = []
    for probe in study.probes:
        kind = PROBES.get(probe.family)
        if issubclass(kind, WindowProbe):
            (window,) = probe.config.windows  # the study expanded the list: one window per probe
            base = _label(probe.name, render_grid(tuple((k, v) for k, v in probe.grid if k != "w")))
            windows.setdefault(base, []).append((window, probe))
        elif kind is AdaptationProbe:
            adaptation.append(probe)
    sweeps = []
    for base, members in windows.items():
        members.sort(key=lambda member: member[0])
        measured = _measured_settings(members[0][1].config)
        reference = next(
            (probe.label for probe in adaptation if _measured_settings(probe.config) == measured), None
        )
        sweeps.append(
            WindowSweep(
                probe=base,
                windows=tuple((window, probe.label) for window, probe in members),
                reference=reference,
                kinds=tuple(PROBES.get(members[0][1].family).serves),
            )
        )
    return tuple(sweeps)


def pool_sweeps(study: Study, windows: tuple[WindowSweep, ...] = ()) -> tuple[PoolSweep, ...]:
    """The task-pool sweeps of a study, in the order of its environments.

    ``windows`` (the study's window sweeps) are left out of the probes drawn.
    """
    window_probes = {label for sweep in windows for _, label in sweep.windows}
    groups: dict[str, list] = {}
    for environment in study.environments:
        base = _label(environment.name, render_grid(without_task_pool(environment.grid)))
        groups.setdefault(base, []).append(environment)
    sweeps = []
    for base, members in groups.items():
        sizes = {environment.task_pool for environment in members}
        if len(sizes) < 2 or sizes == {None}:
            continue
        kind = ENVIRONMENTS.get(members[0].family).kind
        probes = tuple(
            probe.label
            for probe in study.probes
            if probe.label not in window_probes and kind in PROBES.get(probe.family).serves
        )
        if not probes:
            continue
        ordered = sorted(members, key=lambda env: (env.task_pool is None, env.task_pool or 0))
        sweeps.append(
            PoolSweep(
                environment=base,
                kind=kind,
                pools=tuple((environment.task_pool, environment.label) for environment in ordered),
                probes=probes,
            )
        )
    return tuple(sweeps)


def study_sweeps(study: Study) -> Sweeps:
    """Every task-pool and window sweep of a (validated, grid-expanded) study."""
    windows = window_sweeps(study)
    return Sweeps(pools=pool_sweeps(study, windows), windows=windows)
