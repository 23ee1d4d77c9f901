"""Studies: loading, validation, grid expansion, ids and the plan of jobs."""

from mesaprobe.study.load import (
    Component,
    Study,
    load_study,
    select,
    settings_hash,
    study_schema,
)
from mesaprobe.study.plan import BaselineJob, Plan, ProbeJob, Run, make_plan, results_directory

__all__ = [
    "BaselineJob",
    "Component",
    "Plan",
    "ProbeJob",
    "Run",
    "Study",
    "load_study",
    "make_plan",
    "results_directory",
    "select",
    "settings_hash",
    "study_schema",
]
