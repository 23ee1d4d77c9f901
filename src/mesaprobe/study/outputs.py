"""Every chart of a study, named once: :func:`chart_outputs` gives each chart and its files.

The workflow asks it which chart files the ``chart`` rule promises
(``workflow/rules/common.smk``), and ``mesaprobe chart`` asks it which charts to draw
(:func:`mesaprobe.analysis.charts.make_charts`), so the two cannot disagree.  A chart is
known from the study alone: each environment's kind picks its metric family
(:data:`mesaprobe.metrics.METRIC_FAMILIES`), the plan says which probes play it and what
they write (:func:`mesaprobe.study.plan.probes`, :func:`mesaprobe.study.plan.probe_writes`),
and :func:`mesaprobe.study.sweeps.study_sweeps` finds its task-pool and window sweeps.

File names (without suffix; every chart is written as each of :data:`CHART_FORMATS`),
environment and probe labels made safe for file names by :func:`slugify`:

* ``<metric>_<environment>_<probe>``: one chart of each kind the metric family of an
  environment declares (:attr:`mesaprobe.metrics.MetricFamily.charts`) per probe writing
  curves that plays it, named by the plotted metric, e.g. ``total_reward_bandit2_adaptation``
  or ``regret_bits_markov_prediction`` (:func:`chart_stem`);
* ``overview_<kind>_<probe>``: every episode metric of a per-episode family (the
  commitment game) across all its environments, per probe (:func:`overview_stem`);
* ``transition_<total>_<environment>``: the family total against the task-pool size M of
  a task-pool sweep (:func:`transition_stem`);
* ``window_<total>_<environment>``: the family total against the memory window w, per
  environment a window sweep serves (:func:`window_stem`);
* ``<chart>_<environment>_<probe>``: each chart an inside probe kind declares (its
  ``charts``), per environment it plays (:func:`inside_chart_stem`);
* ``trial_<episode regret>_<environment>_<probe>``: in trials of K episodes
  (``trial_episodes``), the regret summed over each episode of the trial against its
  position, per probe writing curves (:func:`trial_stem`, :func:`trial_charts`);
* ``learning_curve_<environment>``: the training statistics of every run on an environment
  against env steps (:func:`learning_curve_stem`), per environment some architecture trains on,
  drawn from the collected training histories (:mod:`mesaprobe.analysis.training_charts`).
* ``ladder_<axis>_<environment>_<probe>``, in studies with ``ladder_charts: true``: each
  architecture's cumulative regret against its ``state_floats`` and against its
  ``flops_per_step`` (the axes of :data:`LADDER_AXES`), per environment of a family scored per
  step and probe writing curves (:func:`ladder_stem`, :func:`ladder_charts`).

Agents of every grid variant share the charts of their environment (their names carry
the variant, e.g. ``gru[lr=0.001]``), so baselines always appear next to every trained model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.errors import UserError
from mesaprobe.metrics import METRIC_FAMILIES, REGRET_RATIO, MetricFamily
from mesaprobe.probes import PROBES
from mesaprobe.study.load import Study
from mesaprobe.study.plan import Plan, make_plan, probe_writes, probes
from mesaprobe.study.sweeps import PoolSweep, Sweeps, WindowSweep, study_sweeps

#: File formats written for every chart: self-contained HTML and a static SVG.
CHART_FORMATS = ("html", "svg")

#: What a trial chart plots (its caption is ``workflow/report/trial_episodes.rst``).
TRIAL_EPISODES = "trial_episodes"

#: What a learning-curve chart plots (its caption is ``workflow/report/learning_curve.rst``).
LEARNING_CURVE = "learning_curve"

#: One (environment label, probe label, chart kinds) per inside probe that plays an environment.
InsideView = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class Chart:
    """One chart of a study: what it draws, from which rows, and the files it is written to."""

    stem: str
    """File name without suffix, e.g. ``regret_bandit2_adaptation``."""
    plots: str
    """What it plots, which names its report caption ``workflow/report/<plots>.rst``: the
    metric (``regret_bits``, ``total_reward``), ``overview``, ``transition``, ``window``, or
    the inside chart kind (``readout_r2``), or ``learning_curve``."""
    chart: str
    """Its kind: a key of the metric family's charts (``regret``, ``cumulative_regret``,
    ``total``, ``success``, ...), ``overview``, ``transition``, ``window``, an inside
    chart kind (``readout_r2``), or ``learning_curve``."""
    kind: str
    """The kind of its environments, which picks the metric family."""
    environment: str | None = None
    """The environment label; for a transition chart the sweep's label without the pool size;
    None for an overview (every environment of the kind)."""
    probe: str | None = None
    """The probe label; None for a sweep chart (it draws the probes of its sweep)."""
    sweep: PoolSweep | tuple[WindowSweep, ...] | None = None
    """The task-pool sweep of a transition chart; the window sweeps of a window chart."""
    inside: bool = False
    """Drawn from the inside summary (``inside.parquet``), else from the curve bands and summary."""
    optimum: str | None = None
    """The agent that is the exact optimum on these tasks, drawn as a reference where it plays
    (:attr:`mesaprobe.study.plan.Plan.references`)."""

    @property
    def family(self) -> MetricFamily:
        """The metric family of its environments."""
        return METRIC_FAMILIES[self.kind]

    @property
    def files(self) -> tuple[str, ...]:
        """Its file names, one per :data:`CHART_FORMATS`."""
        return tuple(f"{self.stem}.{file_format}" for file_format in CHART_FORMATS)


def slugify(text: str) -> str:
    """``text`` reduced to letters, digits, ``.``, ``_`` and ``-`` (other runs become ``-``).

    >>> slugify("training.lr=0.001")
    'training.lr-0.001'
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return slug or "unnamed"


def chart_metric(chart: str, family: MetricFamily) -> str:
    """The metric a chart kind plots for one metric family, e.g. ``regret_bits``."""
    if chart not in family.charts:
        raise ValueError(f"unknown chart {chart!r}; expected one of: {', '.join(family.charts)}")
    return family.charts[chart]


def chart_stem(chart: str, environment: str, probe: str, kind: str) -> str:
    """File name (without suffix) of one chart of an environment of this kind.

    >>> chart_stem("regret", "bandit2", "adaptation", "bandit")
    'regret_bandit2_adaptation'
    >>> chart_stem("total", "markov", "prediction", "prediction")
    'total_logloss_bits_markov_prediction'
    """
    if kind not in METRIC_FAMILIES:
        raise ValueError(f"unknown environment kind {kind!r}; expected one of: {', '.join(METRIC_FAMILIES)}")
    return "_".join([chart_metric(chart, METRIC_FAMILIES[kind]), slugify(environment), slugify(probe)])


def regret_ratio_stem(environment: str, probe: str) -> str:
    """File name (without suffix) of the regret-ratio chart of one environment and probe.

    >>> regret_ratio_stem("bandit2", "adaptation")
    'regret_ratio_bandit2_adaptation'
    """
    return "_".join([REGRET_RATIO, slugify(environment), slugify(probe)])


def overview_stem(family: MetricFamily, probe: str) -> str:
    """File name (without suffix) of a per-episode family's overview of one probe."""
    return "_".join(["overview", family.kind, slugify(probe)])


def transition_stem(family: MetricFamily, environment: str) -> str:
    """File name (without suffix) of the transition chart of a task-pool sweep.

    >>> from mesaprobe.metrics import BANDIT_METRICS
    >>> transition_stem(BANDIT_METRICS, "bandit2")
    'transition_total_reward_bandit2'
    """
    return "_".join(["transition", family.total, slugify(environment)])


def window_stem(family: MetricFamily, environment: str) -> str:
    """File name (without suffix) of the window chart of one environment.

    >>> from mesaprobe.metrics import PREDICTION_METRICS
    >>> window_stem(PREDICTION_METRICS, "markov")
    'window_total_logloss_bits_markov'
    """
    return "_".join(["window", family.total, slugify(environment)])


def inside_chart_stem(chart: str, environment: str, probe: str) -> str:
    """File name (without suffix) of one inside chart.

    >>> inside_chart_stem("readout_r2", "bandit2", "readout")
    'readout_r2_bandit2_readout'
    """
    return "_".join([chart, slugify(environment), slugify(probe)])


def learning_curve_stem(environment: str) -> str:
    """File name (without suffix) of the learning-curve chart of one environment.

    >>> learning_curve_stem("bandit2")
    'learning_curve_bandit2'
    """
    return "_".join([LEARNING_CURVE, slugify(environment)])


def summary_charts(
    views: list[tuple[str, str]],
    probes: list[str] | dict[str, list[str]],
    sweeps: Sweeps | None = None,
    ratios: Iterable[tuple[str, str]] = (),
    optima: Mapping[tuple[str, str], str] | None = None,
) -> list[Chart]:
    """The charts of the curve bands and summary of these environments, probes and sweeps.

    ``views`` lists each environment as (label, kind), the kind selecting its metric family.
    ``probes`` lists the labels of the probes writing curves, or maps each environment label
    to those that play it (a study's plan leaves out probes that do not serve or apply to an
    environment).  ``sweeps`` (:func:`mesaprobe.study.sweeps.study_sweeps`) adds a transition
    chart per task-pool sweep and a window chart per environment a window sweep serves.
    ``ratios`` lists the (environment, probe) pairs with a regret ratio
    (:attr:`mesaprobe.study.plan.Plan.references`), each of which gets a regret-ratio chart;
    ``optima`` names the exact optimum of an (environment, probe), a reference line in its charts.
    """
    probes_of = probes if isinstance(probes, dict) else {environment: probes for environment, _ in views}
    ratios = set(ratios)
    charts = []
    for environment, kind in views:
        family = METRIC_FAMILIES[kind]
        for probe in probes_of.get(environment, []):
            optimum = (optima or {}).get((environment, probe))
            charts += [
                Chart(
                    chart_stem(chart, environment, probe, kind),
                    metric,
                    chart,
                    kind,
                    environment,
                    probe,
                    optimum=optimum,
                )
                for chart, metric in family.charts.items()
            ]
            if (environment, probe) in ratios:
                stem = regret_ratio_stem(environment, probe)
                charts.append(Chart(stem, REGRET_RATIO, REGRET_RATIO, kind, environment, probe))
    for kind in dict.fromkeys(kind for _, kind in views):
        family = METRIC_FAMILIES[kind]
        if family.per_episode:
            played = [probes_of.get(environment, []) for environment, k in views if k == kind]
            for probe in dict.fromkeys(probe for labels in played for probe in labels):
                charts.append(Chart(overview_stem(family, probe), "overview", "overview", kind, probe=probe))
    sweeps = sweeps or Sweeps()
    for sweep in sweeps.pools:
        stem = transition_stem(METRIC_FAMILIES[sweep.kind], sweep.environment)
        charts.append(Chart(stem, "transition", "transition", sweep.kind, sweep.environment, sweep=sweep))
    for environment, kind in views:
        if served := sweeps.window_sweeps_of(kind):
            stem = window_stem(METRIC_FAMILIES[kind], environment)
            charts.append(Chart(stem, "window", "window", kind, environment, sweep=served))
    return _named_once(charts)


def inside_views(study: Study) -> list[InsideView]:
    """The inside probes of a study, per environment they play, with the chart kinds each draws."""
    return [
        (environment.label, probe.label, PROBES.get(probe.family).charts)
        for environment in study.environments
        for probe in probes(study, environment)
        if probe_writes(probe) == "inside"
    ]


def inside_charts(study: Study) -> list[Chart]:
    """The charts of the inside probes of a study (read-outs, fitted learners, in-weights learning)."""
    kinds = {
        environment.label: ENVIRONMENTS.get(environment.family).kind for environment in study.environments
    }
    return _named_once(
        [
            Chart(
                inside_chart_stem(chart, environment, probe),
                chart,
                chart,
                kinds[environment],
                environment,
                probe,
                inside=True,
            )
            for environment, probe, charts in inside_views(study)
            for chart in charts
        ]
    )


def learning_curve_charts(study: Study) -> list[Chart]:
    """A learning-curve chart per environment of the study that some architecture trains on."""
    trained = [
        environment
        for environment in study.environments
        if any(
            environment.name in study.architecture_environments.get(architecture.label, (environment.name,))
            for architecture in study.architectures
        )
    ]
    return [
        Chart(
            learning_curve_stem(environment.label),
            LEARNING_CURVE,
            LEARNING_CURVE,
            ENVIRONMENTS.get(environment.family).kind,
            environment.label,
        )
        for environment in trained
    ]


#: The cost axes of the architecture-ladder charts: columns of the summary
#: (:data:`mesaprobe.analysis.costs.MODEL_COST_COLUMNS`).
LADDER_AXES = ("state_floats", "flops_per_step")


def trial_metric(family: MetricFamily) -> str:
    """The trial table's regret summed over one episode, e.g. ``episode_regret``
    (:func:`mesaprobe.analysis.collect.trial_episode_metrics`)."""
    return f"episode_{family.step_metrics[1]}"


def trial_stem(family: MetricFamily, environment: str, probe: str) -> str:
    """``trial_<episode regret>_<environment>_<probe>``."""
    return f"trial_{trial_metric(family)}_{slugify(environment)}_{slugify(probe)}"


def trial_charts(study: Study, played: dict[str, list[str]]) -> list[Chart]:
    """A trial chart per environment played in trials of several episodes and probe writing curves."""
    charts = []
    for environment in study.environments:
        family_class = ENVIRONMENTS.get(environment.family)
        family = METRIC_FAMILIES[family_class.kind]
        if family.per_episode or family_class(environment.config).trial_episodes < 2:
            continue
        for probe in played.get(environment.label, []):
            stem = trial_stem(family, environment.label, probe)
            charts.append(Chart(stem, TRIAL_EPISODES, TRIAL_EPISODES, family.kind, environment.label, probe))
    return charts


def ladder_stem(axis: str, environment: str, probe: str) -> str:
    """File name (without suffix) of a ladder chart.

    >>> ladder_stem("state_floats", "bandit2", "adaptation")
    'ladder_state_floats_bandit2_adaptation'
    """
    return "_".join(["ladder", axis, slugify(environment), slugify(probe)])


def ladder_charts(study: Study, views: list[tuple[str, str]], played: dict[str, list[str]]) -> list[Chart]:
    """The architecture-ladder charts of a study that asks for them (``ladder_charts: true``):
    one per cost axis (:data:`LADDER_AXES`), environment and probe writing curves, for the
    environments whose metric family is scored per step (its cumulative regret is the y axis)."""
    if not study.ladder_charts:
        return []
    return [
        Chart(ladder_stem(axis, environment, probe), "ladder", f"ladder_{axis}", kind, environment, probe)
        for environment, kind in views
        if not METRIC_FAMILIES[kind].per_episode
        for probe in played.get(environment, [])
        for axis in LADDER_AXES
    ]


def chart_outputs(study: Study, plan: Plan | None = None) -> list[Chart]:
    """Every chart of a (validated, grid-expanded, possibly selected) study, in the order drawn;
    ``plan`` is the study's (made here when not given).

    Raises :class:`~mesaprobe.errors.UserError` when two charts would get the same file name
    (labels that differ only in characters :func:`slugify` replaces).
    """
    views = [
        (environment.label, ENVIRONMENTS.get(environment.family).kind) for environment in study.environments
    ]
    played = {
        environment.label: [
            probe.label for probe in probes(study, environment) if probe_writes(probe) == "curves"
        ]
        for environment in study.environments
    }
    plan = plan or make_plan(study)
    ratios = [key for key, reference in plan.references.items() if reference.regret_ratio is not None]
    optima = {key: reference.optimum for key, reference in plan.references.items() if reference.optimum}
    return _named_once(
        [
            *summary_charts(views, played, study_sweeps(study), ratios, optima),
            *inside_charts(study),
            *ladder_charts(study, views, played),
            *trial_charts(study, played),
            *learning_curve_charts(study),
        ]
    )


def _named_once(charts: list[Chart]) -> list[Chart]:
    """``charts``, unless two of them have one file name."""
    seen: dict[str, Chart] = {}
    for chart in charts:
        other = seen.setdefault(chart.stem, chart)
        if other is not chart:
            raise UserError(
                f"the charts of {_what(other)} and {_what(chart)} would both be named {chart.stem!r}; "
                "rename one of them"
            )
    return charts


def _what(chart: Chart) -> str:
    return " ".join(
        f"{name} {value!r}"
        for name, value in (("environment", chart.environment), ("probe", chart.probe))
        if value
    ) or repr(chart.stem)
