"""The ``mesaprobe`` command line: validate and plan studies, and run each pipeline step.

Every Snakemake rule is one of these commands, so each step can be run by hand::

    mesaprobe validate specs/quickstart.yaml
    mesaprobe plan specs/quickstart.yaml --json
    mesaprobe train specs/quickstart.yaml --run bandit2-gru-1a2b3c4d-s0
    mesaprobe freeze specs/quickstart.yaml --run bandit2-gru-1a2b3c4d-s0
    mesaprobe probe specs/quickstart.yaml --run bandit2-gru-1a2b3c4d-s0 --probe adaptation
    mesaprobe baseline specs/quickstart.yaml --environment bandit2 --probe adaptation --baseline ucb1 --seed 0
    mesaprobe collect specs/quickstart.yaml
    mesaprobe chart specs/quickstart.yaml
    mesaprobe summary specs/quickstart.yaml
    mesaprobe compare results/quickstart/tables/summary.csv docs/results/quickstart/summary.csv
    mesaprobe list architectures gru

Input errors print one line (file, key, what was expected) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mesaprobe import __version__
from mesaprobe.errors import UserError


def integer_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, with a one-line error otherwise."""
    words = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {words}, got {value}")
        return value

    return parse


positive_int = integer_at_least(1)
non_negative_int = integer_at_least(0)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mesaprobe", description=__doc__.split("\n\n")[0])
    top.add_argument("--version", action="version", version=f"mesaprobe {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("spec", type=Path, help="study file (YAML), e.g. specs/quickstart.yaml")
        for axis in ("environments", "architectures", "probes"):
            sub.add_argument(
                f"--{axis}", default=None, help=f"only these {axis} of the study (comma-separated names)"
            )
        return sub

    def with_results(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--results-root",
            type=Path,
            default=Path("results"),
            help="outputs go to RESULTS_ROOT/<study>/ (default: results)",
        )
        sub.add_argument("--threads", type=positive_int, default=None, help="CPU threads torch may use")

    command("validate", "check a study file and print what it would run")
    sub = command("plan", "list the runs, probes and baselines of a study")
    sub.add_argument("--json", action="store_true", help="print the plan as JSON")

    sub = command("train", "train one run, or seeds of one run together (resumes from partial.pt if present)")
    sub.add_argument(
        "--run",
        required=True,
        action="append",
        help="run id (see `mesaprobe plan`); repeat it to train seeds of one run in one process",
    )
    sub.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_argument(
        "--status-every",
        type=non_negative_int,
        default=0,
        metavar="SECONDS",
        help="also print one compact progress line (env steps, steps/s, time left) to stdout "
        "every SECONDS, e.g. while the progress bar goes to a log file (default 0: never)",
    )
    with_results(sub)

    sub = command("freeze", "turn a trained run into frozen.safetensors + frozen.json")
    sub.add_argument("--run", required=True, help="run id")
    with_results(sub)

    sub = command("probe", "probe one frozen run")
    sub.add_argument("--run", required=True, help="run id")
    sub.add_argument("--probe", required=True, help="probe name in the study")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    with_results(sub)

    sub = command("baseline", "play one baseline on the held-out tasks of one seed")
    sub.add_argument("--environment", required=True, help="environment name in the study")
    sub.add_argument("--probe", required=True, help="probe name in the study")
    sub.add_argument("--baseline", required=True, help="baseline name in the study")
    sub.add_argument("--seed", required=True, type=non_negative_int, help="seed whose held-out tasks to play")
    with_results(sub)

    sub = command("collect", "gather every probe table into the study's curves and summary tables")
    sub.add_argument(
        "--resamples",
        type=positive_int,
        default=1000,
        help="bootstrap resamples of the inside tables (default 1000)",
    )
    with_results(sub)

    sub = command(
        "chart", "draw the study's charts (HTML with inline Vega + SVG) and the report's front page"
    )
    with_results(sub)
    sub.add_argument("--log-steps", action="store_true", help="draw curves against a log-scaled step axis")

    sub = command("summary", "where a study's results are, its headline numbers and the report command")
    sub.add_argument(
        "--results-root", type=Path, default=Path("results"), help="results are in RESULTS_ROOT/<study>/"
    )

    help_text = (
        "check a rerun against a stored summary: is each stored row's mean reproduced within its "
        "interval? (exit status 1 if not)"
    )
    sub = commands.add_parser("compare", help=help_text, description=help_text)
    sub.add_argument(
        "new", type=Path, help="the rerun's summary.csv, e.g. results/quickstart/tables/summary.csv"
    )
    sub.add_argument(
        "stored", type=Path, help="the stored summary.csv, e.g. docs/results/quickstart/summary.csv"
    )

    help_text = "the study format: every axis and name, or one's settings (type, default, meaning)"
    sub = commands.add_parser("list", help=help_text, description=help_text)
    sub.add_argument("axis", nargs="?", help="environments, architectures, probes, baselines or training")
    sub.add_argument("name", nargs="?", help="a registered name of the axis, e.g. gru")
    sub.add_argument("--json", action="store_true", help="print it as JSON")
    return top


def run_command(arguments: argparse.Namespace) -> int:
    if arguments.command == "list":
        from mesaprobe.study.reference import reference, render  # imports every registry (torch)

        data = reference(arguments.axis, arguments.name)
        print(json.dumps(data, indent=2) if arguments.json else render(data))
        return 0
    if arguments.command == "compare":
        return compare_command(arguments.new, arguments.stored)
    # Imported here, not at the top: `mesaprobe --help` and argument errors answer without torch.
    from mesaprobe.study import load_study, make_plan, results_directory, select
    from mesaprobe.study.outputs import chart_outputs

    study = select(
        load_study(arguments.spec),
        environments=arguments.environments,
        architectures=arguments.architectures,
        probes=arguments.probes,
    )
    plan = make_plan(study)
    if arguments.command == "validate":
        print(
            f"{arguments.spec}: study {study.name!r} is valid: {len(plan.runs)} runs, "
            f"{len(plan.probe_jobs)} probe jobs, {len(plan.baseline_jobs)} baseline jobs"
        )
        for skip in plan.skipped:
            print(f"note: {skip}")
        return 0
    if arguments.command == "plan":
        if arguments.json:
            json.dump(plan.to_json(), sys.stdout, indent=2)
            print()
        else:
            print(f"study {study.name} ({study.file}, spec hash {study.spec_hash})")
            for run in plan.runs:
                print(
                    f"run   {run.id}  environment={run.environment.label} agent={run.agent} seed={run.seed}"
                )
            for group in plan.seed_groups:
                if len(group) > 1:
                    print(f"train {' '.join(run.id for run in group)}  (seeds trained in one job)")
            for job in plan.probe_jobs:
                print(f"probe {job.output}")
            for job in plan.baseline_jobs:
                print(f"base  {job.output}")
            for skip in plan.skipped:
                print(f"skip  {skip}")
        return 0
    if arguments.command == "summary":
        chart_files = [name for chart in chart_outputs(study, plan) for name in chart.files]
        return summary_command(arguments, study, chart_files)

    # The steps' modules load torch, polars and every registry: only for a step that runs.
    from mesaprobe import jobs
    from mesaprobe.device import set_threads

    set_threads(arguments.threads)
    results = results_directory(study, arguments.results_root)
    if arguments.command == "train":
        from mesaprobe.train.metrics_log import METRICS_FILE, StatusReporter  # torch: for a step that runs

        first = jobs.find_run(plan, arguments.run[0])
        others = len(arguments.run) - 1
        label = first.id + (f" (and {others} more seeds)" if others else "")
        with StatusReporter(results / first.directory / METRICS_FILE, label, arguments.status_every):
            checkpoints = jobs.train_seeds_job(plan, arguments.run, results, progress=not arguments.quiet)
        for checkpoint in checkpoints:
            print(checkpoint)
    elif arguments.command == "freeze":
        print(jobs.freeze_job(plan, arguments.run, results))
    elif arguments.command == "probe":
        print(jobs.probe_job(plan, arguments.run, arguments.probe, results, arguments.device))
    elif arguments.command == "baseline":
        print(
            jobs.baseline_job(
                plan, arguments.environment, arguments.probe, arguments.baseline, arguments.seed, results
            )
        )
    elif arguments.command == "collect":
        from mesaprobe.analysis.collect import collect  # scipy and the tables: for the collect step only

        inputs = [*plan.table_inputs, *plan.inside_inputs]
        missing = [path for path in inputs if not (results / path).exists()]
        if missing:
            raise UserError(
                f"{results / missing[0]}: probe table not found ({len(missing)} missing); run its job first"
            )
        from mesaprobe.analysis.training import TrainedRun  # polars: for the collect step only

        trained = [
            TrainedRun(
                results / run.directory / jobs.TRAIN_MANIFEST, run.environment.label, run.variant, run.agent
            )
            for run in plan.runs
        ]
        unrecorded = [run.manifest for run in trained if not run.manifest.exists()]
        if unrecorded:
            raise UserError(
                f"{unrecorded[0]}: training manifest not found ({len(unrecorded)} missing); "
                "run its training job first"
            )
        written = collect(
            [results / path for path in plan.table_inputs],
            results / "tables",
            resamples=arguments.resamples,
            inside_paths=[results / path for path in plan.inside_inputs],
            # the runs' costs (parameters, state floats, FLOPs per step) for the summary
            frozen_paths=sorted(
                {results / job.run.directory / jobs.FROZEN_MANIFEST for job in plan.probe_jobs}, key=str
            ),
            references=plan.references,
            training_runs=trained,
            trial_episodes=plan.trial_episodes,
        )
        print("\n".join(str(path) for path in written.values()))
    elif arguments.command == "chart":
        from mesaprobe.analysis.charts import make_charts  # altair: for the chart step only
        from mesaprobe.analysis.front_page import FRONT_PAGE, write_front_page  # polars: the chart step

        charts = chart_outputs(study, plan)
        written = make_charts(results / "tables", results / "charts", charts, log_steps=arguments.log_steps)
        written.append(
            write_front_page(
                study, results / "tables", results / "charts", charts, results / "report" / FRONT_PAGE
            )
        )
        print("\n".join(str(path) for path in written))
    return 0


def summary_command(arguments: argparse.Namespace, study, chart_files: list[str]) -> int:
    """Print where a study's results are, its headline numbers and the command that builds its
    report (what a finished ``snakemake`` run ends with); a study not collected yet says so."""
    # Here, not at the top: polars, for this command only.
    from mesaprobe.analysis.headline import headline_text, read_summary_csv
    from mesaprobe.artifacts import read_json
    from mesaprobe.study import results_directory

    results = results_directory(study, arguments.results_root)
    summary_csv = results / "tables" / "summary.csv"
    print(f"study {study.name}: results in {results}/")
    if not summary_csv.exists():
        print(f"  no {summary_csv} yet: the collect step writes it once every probe has run")
        return 0
    charts = [name for name in chart_files if (results / "charts" / name).exists()]
    print(f"  tables  {results / 'tables'}/ (summary.csv: every agent's metrics with intervals)")
    print(f"  charts  {results / 'charts'}/ ({len(charts)} files, HTML and SVG)")
    print(f"  runs    {results / 'runs'}/<run>/ (checkpoints, frozen weights, metrics.jsonl)")
    print(f"  logs    {results / 'logs'}/")
    tables_json = results / "tables" / "tables.json"
    settings = read_json(tables_json) if tables_json.exists() else {}
    confidence = settings.get("confidence") if isinstance(settings, dict) else None
    print()
    print(headline_text(read_summary_csv(summary_csv), confidence if isinstance(confidence, float) else None))
    config = [f"spec={arguments.spec}"]
    if arguments.results_root != Path("results"):
        config.append(f"results_root={arguments.results_root}")
    config += [
        f"{axis}={getattr(arguments, axis)}"
        for axis in ("environments", "architectures", "probes")
        if getattr(arguments, axis)
    ]
    print()
    print("report (charts and tables in one offline HTML file):")
    print(f"  snakemake --report {results / 'report.html'} --config {' '.join(config)}")
    return 0


def compare_command(new: Path, stored: Path) -> int:
    """Check the rerun summary ``new`` against ``stored``; 0 if every stored row is reproduced
    within its interval, else 1."""
    # Here, not at the top: polars, for this command only.
    from mesaprobe.analysis.headline import (
        compare_summaries,
        comparison_text,
        extra_row_count,
        read_summary_csv,
    )

    new_rows, stored_rows = read_summary_csv(new), read_summary_csv(stored)
    if stored_rows.height == 0:
        raise UserError(f"{stored}: the stored summary has no rows to compare with")
    checks = compare_summaries(new_rows, stored_rows)
    print(comparison_text(checks, extra_row_count(new_rows, stored_rows)))
    return 0 if all(check.inside for check in checks) else 1


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        return run_command(arguments)
    except UserError as error:
        print(f"mesaprobe: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("mesaprobe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
