# Helpers shared by the rules: the study, its plan, and paths (no science here).

import sys
from pathlib import Path

from mesaprobe.errors import UserError
from mesaprobe.spec import load_study, make_plan

SPEC = config.get("spec", "specs/quickstart.yaml")
RESULTS_ROOT = config.get("results_root", "results")
TRAIN_THREADS = int(config.get("train_threads", 1))

try:
    STUDY = load_study(SPEC)
    PLAN = make_plan(STUDY)
except UserError as error:
    print(f"mesaprobe: error: {error}", file=sys.stderr)
    sys.exit(2)

OUT = f"{RESULTS_ROOT}/{STUDY.name}"
# The package's command line, run by the interpreter that runs Snakemake (no PATH needed).
MESAPROBE = f"{sys.executable} -m mesaprobe"

RUN_IDS = [run.id for run in PLAN.runs]


def train_resources(wildcards):
    """GPU jobs ask the scheduler for one GPU; CPU studies never do."""
    run = PLAN.run(wildcards.run)
    return 1 if run.training.device.startswith("cuda") else 0


def table_inputs():
    return [f"{OUT}/{path}" for path in PLAN.table_inputs]


def chart_outputs():
    from mesaprobe.analysis.charts import chart_files

    names = chart_files([env.label for env in STUDY.environments], [probe.label for probe in STUDY.probes])
    return [f"{OUT}/charts/{name}" for name in names]


def chart_reports():
    """Every chart file, as a report entry with the caption of its chart kind."""
    entries = []
    for path in chart_outputs():
        kind = next(k for k in ("cumulative_regret", "total_reward", "regret") if f"/{k}_" in path)
        if path.endswith(".html"):
            caption = f"../report/{kind}.rst"
            labels = {"chart": Path(path).stem}
            entries.append(report(path, caption=caption, category="Charts", labels=labels))
        else:
            entries.append(path)
    return entries


wildcard_constraints:
    run="|".join(RUN_IDS) or "no-runs",
