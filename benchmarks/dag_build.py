"""How long Snakemake takes to build the DAG of a large study (dry run, nothing executed).

    python benchmarks/dag_build.py --runs 10000 --repeats 3

Generates a study of ``runs`` runs (one environment and architecture, a grid of
learning rates x seeds, one probe, no baselines), then times ``mesaprobe``'s own plan
and ``snakemake -n`` over it, ``repeats`` times.  Prints a table and writes JSON.

The first plan of a process includes importing the package (torch, polars); ``snakemake -n``
is a fresh process each time, so it includes Snakemake's and the package's imports, parsing
the Snakefile, planning the study, building the DAG and exiting.  Its CPU seconds (user +
system) are reported too: on a machine shared with other work they vary less than wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mesaprobe.artifacts import provenance
from mesaprobe.study import load_study, make_plan

REPO = Path(__file__).resolve().parents[1]


def study_text(runs: int) -> str:
    seeds = min(runs, 100)
    rates = math.ceil(runs / seeds)
    grid = ", ".join(f"{1e-4 * (1 + i):.6g}" for i in range(rates))
    return (
        "study: dag_benchmark\n"
        f"seeds: [{', '.join(str(seed) for seed in range(seeds))}]\n"
        "environments:\n  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 100}\n"
        "architectures:\n  gru: {family: gru, hidden: 64}\n"
        "probes:\n  adaptation: {kind: adaptation}\n"
        f"grid:\n  training.lr: [{grid}]\n"
    )


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(runs: int) -> dict:
    """One repetition in a fresh directory: the plan in this process, then ``snakemake -n``."""
    with tempfile.TemporaryDirectory() as directory:
        spec = Path(directory) / "dag_benchmark.yaml"
        spec.write_text(study_text(runs))
        started = time.perf_counter()
        plan = make_plan(load_study(spec))
        plan_seconds = time.perf_counter() - started
        snakemake = Path(sys.executable).with_name("snakemake")
        load_average_1min = os.getloadavg()[0]
        cpu_before = children_cpu_seconds()
        started = time.perf_counter()
        result = subprocess.run(
            [
                str(snakemake),
                "-s",
                str(REPO / "Snakefile"),
                "-d",
                directory,
                "-n",
                "-q",
                "--cores",
                "1",
                "--config",
                f"spec={spec}",
            ],
            capture_output=True,
            text=True,
        )
        dry_run_seconds = time.perf_counter() - started
        dry_run_cpu_seconds = children_cpu_seconds() - cpu_before
        if result.returncode != 0:
            sys.exit(result.stderr[-2000:])
    return {
        "runs": len(plan.runs),
        "jobs": 3 * len(plan.runs) + 2,
        "plan_seconds": plan_seconds,
        "snakemake_dry_run_seconds": dry_run_seconds,
        "snakemake_dry_run_cpu_seconds": dry_run_cpu_seconds,
        "load_average_1min_before": load_average_1min,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/dag_build.json"))
    arguments = parser.parse_args()
    print(f"{'runs':>8}{'jobs':>8}{'plan s':>10}{'snakemake -n s':>16}{'its CPU s':>11}{'load 1 min':>12}")
    rows = []
    for _ in range(arguments.repeats):
        row = measure(arguments.runs)
        rows.append(row)
        print(
            f"{row['runs']:>8}{row['jobs']:>8}{row['plan_seconds']:>10.2f}"
            f"{row['snakemake_dry_run_seconds']:>16.2f}{row['snakemake_dry_run_cpu_seconds']:>11.2f}"
            f"{row['load_average_1min_before']:>12.2f}"
        )
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps({"rows": rows, **provenance("cpu")}, indent=2) + "\n")


if __name__ == "__main__":
    main()
