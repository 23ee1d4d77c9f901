# Helpers shared by the rules: the study, its plan, and paths (no science here).

import atexit
import gc
import shlex
from pathlib import Path
import sys

from mesaprobe.errors import UserError
from mesaprobe.study import load_study, make_plan, select
from mesaprobe.study.plan import COMPONENT_ID_PATTERN, RUN_ID_PATTERN
from mesaprobe.study.outputs import chart_outputs as study_charts

# Garbage collection for large studies; only when unreachable cycles are freed changes.
# With the DAG of 10,000 runs (30,002 jobs) the process holds about two million
# long-lived objects. At Python's default thresholds a full collection rescans them all
# each time their number grows by a quarter while they are built; every 1000th rather
# than every 10th collection of the middle generation may now be full (young objects
# are collected as before). At exit the interpreter's last collection frees them cycle
# by cycle; a dry run, which wrote nothing, leaves them to the operating system instead
# (gc.freeze: the last collection skips them).
gen0_threshold, gen1_threshold, _ = gc.get_threshold()
gc.set_threshold(gen0_threshold, gen1_threshold, 1000)


def skip_last_collection_of_dry_run():
    if getattr(workflow, "dryrun", False):
        gc.freeze()


atexit.register(skip_last_collection_of_dry_run)

SPEC = config.get("spec", "specs/quickstart.yaml")
# Optional: --config environments=a,b (also architectures=..., probes=...) runs part of the study.
RESULTS_ROOT = config.get("results_root", "results")
TRAIN_THREADS = int(config.get("train_threads", 1))

try:
    STUDY = select(
        load_study(SPEC),
        environments=config.get("environments"),
        architectures=config.get("architectures"),
        probes=config.get("probes"),
    )
    PLAN = make_plan(STUDY)
    CHARTS = study_charts(STUDY, PLAN)  # every chart of the study: chart_outputs() and chart_reports()
except UserError as error:
    print(f"mesaprobe: error: {error}", file=sys.stderr)
    sys.exit(2)

for skip in PLAN.skipped:
    print(f"mesaprobe: note: {skip}", file=sys.stderr)

OUT = f"{RESULTS_ROOT}/{STUDY.name}"
SELECTION = " ".join(
    f"--{axis} {config[axis]}" for axis in ("environments", "architectures", "probes") if config.get(axis)
)
# --config log_steps=true draws curves against a log-scaled step axis.
LOG_STEPS = "--log-steps" if str(config.get("log_steps", "")).lower() in ("1", "true", "yes") else ""


def report_if(shown, path, **entry):
    """``path`` as a report entry when ``shown`` (e.g. the study has inside probes), else as a
    plain output: the report leaves out tables that are empty for this study."""
    return report(path, **entry) if shown else path


def front_page():
    """The report's opening text: the study's front page once the chart step wrote it (its
    question, headline table and chart; mesaprobe.analysis.front_page), else the generic one."""
    written = Path(OUT, "report", "front.rst").resolve()
    return str(written) if written.exists() else "workflow/report/workflow.rst"


# The package's command line, run by the interpreter that runs Snakemake (no PATH needed).
# SPEC, RESULTS_ROOT and MESAPROBE are used in shell commands directly rather than as
# params (snakemake --lint suggests params): every output path already carries a hash of
# the settings it depends on, and as params a renamed spec file or a moved virtual
# environment would make Snakemake retrain every run.
MESAPROBE = f"{shlex.quote(sys.executable)} -m mesaprobe"


def gpus(run):
    """GPU jobs ask the scheduler for one GPU; CPU studies never do."""
    return 1 if run.training.device.startswith("cuda") else 0


def train_resources(wildcards):
    return gpus(PLAN.run(wildcards.run))


def requests_of(rule):
    """The memory and time a rule asks for, after --set-resources (what its variants ask too)."""
    return {name: rule.rule.resources[name].value for name in ("mem_mb", "runtime")}


def table_inputs():
    return [f"{OUT}/{path}" for path in (*PLAN.table_inputs, *PLAN.inside_inputs)]


def chart_outputs():
    """Every chart file: what mesaprobe.study.outputs.chart_outputs names, which `mesaprobe chart` draws."""
    return [f"{OUT}/charts/{name}" for chart in CHARTS for name in chart.files]


def chart_reports():
    """Every chart file, the HTML one as a report entry with the caption of what it plots.

    Captions are workflow/report/<plotted>.rst, e.g. regret.rst or regret_bits.rst
    (overview.rst, transition.rst and window.rst for the overview and sweep charts).
    """
    entries = []
    for chart in CHARTS:
        for name in chart.files:
            path = f"{OUT}/charts/{name}"
            if name.endswith(".html"):
                caption = f"../report/{chart.plots}.rst"
                labels = {"chart": chart.stem}
                entries.append(report(path, caption=caption, category="Charts", labels=labels))
            else:
                entries.append(path)
    return entries


# Wildcards match only what the plan's ids can be (names, a hash, a seed), so a crafted
# target matches no rule; every wildcard in a shell command is quoted as well ({...:q}).
wildcard_constraints:
    run=RUN_ID_PATTERN,
    environment=COMPONENT_ID_PATTERN,
    probe=COMPONENT_ID_PATTERN,
    baseline=COMPONENT_ID_PATTERN,
    seed=r"[0-9]+",
