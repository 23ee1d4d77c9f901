# Helpers shared by the rules: the study, its plan, and paths (no science here).

import atexit
import gc
import sys
from pathlib import Path

from mesaprobe.errors import UserError
from mesaprobe.study import load_study, make_plan, select

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
except UserError as error:
    print(f"mesaprobe: error: {error}", file=sys.stderr)
    sys.exit(2)

for skip in PLAN.skipped:
    print(f"mesaprobe: note: {skip}", file=sys.stderr)

OUT = f"{RESULTS_ROOT}/{STUDY.name}"
SELECTION = " ".join(
    f"--{axis} {config[axis]}" for axis in ("environments", "architectures", "probes") if config.get(axis)
)
# The package's command line, run by the interpreter that runs Snakemake (no PATH needed).
# SPEC, RESULTS_ROOT and MESAPROBE are used in shell commands directly rather than as
# params (snakemake --lint suggests params): every output path already carries a hash of
# the settings it depends on, and as params a renamed spec file or a moved virtual
# environment would make Snakemake retrain every run.
MESAPROBE = f"{sys.executable} -m mesaprobe"


def gpus(run):
    """GPU jobs ask the scheduler for one GPU; CPU studies never do."""
    return 1 if run.training.device.startswith("cuda") else 0


def train_resources(wildcards):
    return gpus(PLAN.run(wildcards.run))


def table_inputs():
    return [f"{OUT}/{path}" for path in (*PLAN.table_inputs, *PLAN.inside_inputs)]


def chart_views():
    """(environment label, kind) per environment, the probes that play each, and the study's sweeps."""
    from mesaprobe.analysis.sweeps import study_sweeps
    from mesaprobe.envs import ENVIRONMENTS
    from mesaprobe.study.plan import probe_writes, probes

    views = [(env.label, ENVIRONMENTS.get(env.family).kind) for env in STUDY.environments]
    played = {
        env.label: [probe.label for probe in probes(STUDY, env) if probe_writes(probe) == "curves"]
        for env in STUDY.environments
    }
    return views, played, study_sweeps(STUDY)


def inside_chart_stems():
    """Charts of the inside probes (read-outs, fitted learners, in-weights learning): stem -> chart kind."""
    from mesaprobe.analysis.inside_charts import inside_chart_stems as stems, inside_views

    return stems(inside_views(STUDY))


def chart_outputs():
    """Every chart file; each environment's kind picks its metric family and file names."""
    from mesaprobe.analysis.charts import CHART_FORMATS, chart_files

    inside = [f"{stem}.{suffix}" for stem in inside_chart_stems() for suffix in CHART_FORMATS]
    return [f"{OUT}/charts/{name}" for name in (*chart_files(*chart_views()), *inside)]


def chart_reports():
    """Every chart file, as a report entry with the caption of its plotted metric.

    Captions are workflow/report/<metric>.rst, e.g. regret.rst or regret_bits.rst
    (transition.rst and window.rst for the sweep charts).
    """
    from mesaprobe.analysis.charts import chart_stems

    metric_of_stem = {**chart_stems(*chart_views()), **inside_chart_stems()}
    entries = []
    for path in chart_outputs():
        if path.endswith(".html"):
            caption = f"../report/{metric_of_stem[Path(path).stem]}.rst"
            labels = {"chart": Path(path).stem}
            entries.append(report(path, caption=caption, category="Charts", labels=labels))
        else:
            entries.append(path)
    return entries


wildcard_constraints:
    run=r"[^/]+",
