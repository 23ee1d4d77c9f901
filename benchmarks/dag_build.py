"""How long Snakemake takes to build the DAG of a large study (dry run, nothing executed).

    python benchmarks/dag_build.py --runs 10000

Generates a study of ``runs`` runs (one environment and architecture, a grid of
learning rates x seeds, one probe, no baselines), then times ``mesaprobe``'s own plan
and ``snakemake -n`` over it.  Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mesaprobe.artifacts import provenance
from mesaprobe.spec import load_study, make_plan

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/dag_build.json"))
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        spec = Path(directory) / "dag_benchmark.yaml"
        spec.write_text(study_text(arguments.runs))
        started = time.perf_counter()
        plan = make_plan(load_study(spec))
        plan_seconds = time.perf_counter() - started
        snakemake = Path(sys.executable).with_name("snakemake")
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
        if result.returncode != 0:
            sys.exit(result.stderr[-2000:])
    row = {
        "runs": len(plan.runs),
        "jobs": 3 * len(plan.runs) + 2,
        "plan_seconds": plan_seconds,
        "snakemake_dry_run_seconds": dry_run_seconds,
    }
    print(f"{'runs':>8}{'jobs':>8}{'plan s':>10}{'snakemake -n s':>16}")
    print(f"{row['runs']:>8}{row['jobs']:>8}{plan_seconds:>10.2f}{dry_run_seconds:>16.2f}")
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(json.dumps({"rows": [row], **provenance("cpu")}, indent=2) + "\n")


if __name__ == "__main__":
    main()
