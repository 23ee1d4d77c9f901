"""A newcomer's first hour: the install the README gives, what a run shows on screen and at its
end, live training metrics and learning curves, packaging, and what a rerun promises."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import polars as pl
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mesaprobe import jobs
from mesaprobe.analysis.headline import (
    compare_summaries,
    headline_groups,
    headline_text,
    read_summary_csv,
)
from mesaprobe.analysis.training import TrainedRun, training_table
from mesaprobe.analysis.training_charts import POINTS_PER_RUN, binned, learning_curve_chart
from mesaprobe.artifacts import instruction_set, processor_model
from mesaprobe.cli import main
from mesaprobe.errors import UserError
from mesaprobe.manifests import Provenance, TrainingManifest
from mesaprobe.study import load_study, make_plan
from mesaprobe.study.outputs import chart_outputs
from mesaprobe.train.metrics_log import (
    METRICS_FILE,
    MetricsLog,
    StatusReporter,
    last_metrics,
    read_metrics,
    status_line,
)
from tests.conftest import REPO, TINY_STUDY, preempted_during

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- install and packaging


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_plain_install_brings_what_the_report_needs():
    dependencies = pyproject()["project"]["dependencies"]
    assert any(re.fullmatch(r"snakemake\[reports\]>=9\.0", dependency) for dependency in dependencies)
    reports = [
        requirement
        for requirement in metadata.requires("snakemake") or []
        if 'extra == "reports"' in requirement
    ]
    assert any(requirement.startswith("pygments") for requirement in reports)


def plain_install_distributions() -> set[str]:
    """The distributions ``pip install -e .`` brings (no extras): pyproject's dependencies and,
    recursively, theirs with the extras they name (canonical names; uninstalled ones left out)."""
    seen: dict[str, frozenset[str]] = {}
    wanted = [("mesaprobe", frozenset())]
    while wanted:
        name, extras = wanted.pop()
        key = canonicalize_name(name)
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, frozenset()) | extras
        try:
            requires = (
                pyproject()["project"]["dependencies"] if key == "mesaprobe" else metadata.requires(name)
            )
        except metadata.PackageNotFoundError:
            continue
        for text in requires or []:
            requirement = Requirement(text)
            markers = [{"extra": extra} for extra in ("", *seen[key])]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in markers):
                wanted.append((requirement.name, frozenset(requirement.extras)))
    return set(seen)


def modules_outside_the_plain_install() -> list[str]:
    """Top-level modules installed here that only distributions outside the plain install provide."""
    plain = plain_install_distributions()
    return sorted(
        module
        for module, distributions in metadata.packages_distributions().items()
        if not any(canonicalize_name(distribution) in plain for distribution in distributions)
    )


def test_the_plain_install_has_the_reports_packages_and_not_the_test_extras():
    plain = plain_install_distributions()
    assert {"snakemake", "pygments", "torch", "altair"} <= plain
    assert not {"pytest", "hypothesis", "gymnasium"} & plain
    assert {"pytest", "hypothesis"} <= set(modules_outside_the_plain_install())


#: Runs Snakemake as the plain install sees it: the modules named in $HIDDEN_MODULES (a JSON
#: list) are neither importable nor found by Snakemake's plugin discovery.
PLAIN_SNAKEMAKE = """\
import json, os, pkgutil, sys
hidden = set(json.loads(os.environ["HIDDEN_MODULES"]))
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
iter_modules = pkgutil.iter_modules
pkgutil.iter_modules = lambda path=None, prefix="": (
    module for module in iter_modules(path, prefix) if path is not None or module.name not in hidden
)
from snakemake.cli import main
sys.argv[0] = "snakemake"
sys.exit(main())
"""


def test_license_and_metadata():
    project = pyproject()["project"]
    license_text = (REPO / "LICENSE").read_text()
    assert project["license"] == "MIT" and license_text.startswith("MIT License")
    assert "Copyright (c) 2026 the mesaprobe authors" in license_text
    assert project["license-files"] == ["LICENSE"]
    assert project["authors"] == [{"name": "the mesaprobe authors"}]
    assert "Intended Audience :: Science/Research" in project["classifiers"]
    assert "urls" not in project  # no project address exists to point at
    assert project["optional-dependencies"]["gym"] == ["gymnasium>=1.0"]
    assert "gymnasium>=1.0" in project["optional-dependencies"]["test"]


#: PyPI names of the dependencies whose conda-forge package is named otherwise.
CONDA_NAMES = {"torch": "pytorch"}


def test_the_conda_environment_has_every_dependency_from_live_channels():
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    assert environment["channels"] == ["conda-forge", "bioconda"]  # pytorch's channel is frozen at 2.5
    listed = {re.split(r"[<>=\s]", item)[0] for item in environment["dependencies"] if isinstance(item, str)}
    for dependency in pyproject()["project"]["dependencies"]:
        name = re.split(r"[<>=\[;\s]", dependency)[0]
        assert CONDA_NAMES.get(name, name) in listed, name
    assert {"pygments", "ruff", "gymnasium", "snakemake-executor-plugin-slurm", "pip"} <= listed
    assert {"-e ."} == set(
        next(item for item in environment["dependencies"] if isinstance(item, dict))["pip"]
    )


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_the_readme_has_two_set_up_commands_with_the_cpu_build_first():
    commands = re.findall(r"```bash\n(.*?)\n```", readme_section("Two commands"), re.S)
    assert len(commands) == 2 and all("\n" not in command for command in commands)
    cpu = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    for command, install, last in zip(
        commands,
        ("pip install -e .", "pip install -e '.[test]'"),
        ("snakemake --cores all", "pytest"),
        strict=True,
    ):
        steps = [step.strip() for step in command.split("&&")]
        assert steps[:2] == ["python -m venv .venv", ". .venv/bin/activate"]
        assert steps[2:] == [cpu, install, last], command
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[test]'" in ci and re.search(r"^pytest \|\| status=\$\?$", ci, re.M)


def test_every_results_page_shows_every_chart_of_its_study():
    results = REPO / "docs" / "results"
    shown = set()
    for page in results.glob("*.md"):
        text = page.read_text()
        links = re.findall(r"!\[[^\]]+\]\(([^)]+\.svg)\)", text)
        for link in links:
            assert (results / link).is_file(), f"{page.name} shows {link}, which does not exist"
        shown |= {(results / link).resolve() for link in links}
        assert not re.search(r"`[^`]*\.svg`", text), f"{page.name} names a chart as code text"
    assert shown == {path.resolve() for path in results.rglob("*.svg")}


# --------------------------------------------------------------------------- provenance


def test_the_processor_is_read_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC  7B13\nflags\t: avx2\n")
    assert processor_model(x86) == "AMD EPYC 7B13"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n")
    assert processor_model(arm) == "implementer 0x41 part 0xd0c"
    assert processor_model(tmp_path / "missing")  # platform's answer, never empty
    machine, _, capability = instruction_set().partition("/")
    assert machine and capability and capability == capability.lower()


def test_manifests_without_a_processor_stay_readable(tmp_path):
    current = Provenance.current("cpu")
    assert current.processor and current.instruction_set
    data = {
        key: value for key, value in current.__dict__.items() if key not in ("processor", "instruction_set")
    }
    older = Provenance(**data)
    assert older.processor is None and older.instruction_set is None


# --------------------------------------------------------------------------- headline and rerun check

SUMMARY_HEADER = (
    "study,environment,variant,probe,agent,agent_kind,metric,mean,ci_low,ci_high,seeds,episodes\n"
)


def summary_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(SUMMARY_HEADER + "".join(row + "\n" for row in rows))
    return path


STORED = [
    'q,bandit2,"",adaptation,gru,architecture,total_reward,63.7,62.9,64.5,3,6000',
    'q,bandit2,"",adaptation,gru,architecture,cumulative_regret,3.25,2.95,3.60,3,6000',
    'q,bandit2,"",adaptation,gru,architecture,adaptation,0.06,0.05,0.07,3,6000',
    'q,bandit2,"",adaptation,greedy,baseline,total_reward,64.3,63.6,65.1,3,6000',
    'q,bandit2,"",adaptation,greedy,baseline,cumulative_regret,2.64,2.40,2.91,3,6000',
    'q,bandit2,"",adaptation,greedy,baseline,adaptation,0.05,0.04,0.05,3,6000',
    'q,bandit2,"",adaptation,memoryless,architecture,total_reward,56.8,,,1,2000',
    'q,bandit2,"",adaptation,memoryless,architecture,cumulative_regret,10.2,,,1,2000',
    'q,bandit2,"",adaptation,memoryless,architecture,adaptation,0.01,,,1,2000',
]


def test_the_headline_puts_the_best_first_with_its_interval(tmp_path):
    summary = read_summary_csv(summary_csv(tmp_path / "summary.csv", STORED))
    (group,) = headline_groups(summary)
    assert group.family.total == "total_reward" and group.rows["agent"].to_list() == [
        "greedy",
        "gru",
        "memoryless",
    ]
    text = headline_text(summary, 0.95)
    assert "total_reward, bandit2, probe adaptation (mean over seeds [95% interval], best first):" in text
    assert re.search(r"greedy +baseline +64\.30 +\[63\.60, 65\.10\]", text)
    assert re.search(r"memoryless +architecture +56\.80 +\(no interval: one seed\)", text)


def test_lower_is_better_for_a_loss(tmp_path):
    rows = [
        f'q,markov,"",adaptation,{agent},{kind},{metric},{value},{value - 1},{value + 1},3,300'
        for agent, kind, total in (("gru", "architecture", 70.0), ("bayes_optimal", "baseline", 60.0))
        for metric, value in (
            ("total_logloss_bits", total),
            ("cumulative_regret_bits", total - 60),
            ("adaptation", 0.1),
        )
    ]
    (group,) = headline_groups(read_summary_csv(summary_csv(tmp_path / "summary.csv", rows)))
    assert group.family.total == "total_logloss_bits"
    assert group.rows["agent"].to_list() == ["bayes_optimal", "gru"]


def test_a_rerun_inside_every_interval_passes(tmp_path, capsys):
    stored = summary_csv(tmp_path / "stored.csv", STORED)
    rerun = [row.replace(",3.25,", ",3.06,") for row in STORED]  # the GRU on another processor
    new = summary_csv(
        tmp_path / "new.csv", [*rerun, 'q,bandit2,"",adaptation,ucb1,baseline,total_reward,61,60,62,3,6000']
    )
    assert main(["compare", str(new), str(stored)]) == 0
    out = capsys.readouterr().out
    assert (
        "inside   bandit2, probe adaptation, agent gru: cumulative_regret: rerun 3.06, stored 3.25 [2.95, 3.60]"
        in out
    )
    assert "same     bandit2, probe adaptation, agent memoryless: total_reward" in out
    assert out.rstrip().endswith(
        "9 of 9 stored rows reproduced within their intervals (1 rerun rows have no stored counterpart)"
    )


def test_a_rerun_outside_an_interval_or_missing_a_row_fails(tmp_path, capsys):
    stored = summary_csv(tmp_path / "stored.csv", STORED)
    rerun = [row.replace(",3.25,", ",3.70,").replace(",56.8,", ",57.0,") for row in STORED[:-1]]
    new = summary_csv(tmp_path / "new.csv", rerun)
    assert main(["compare", str(new), str(stored)]) == 1
    out = capsys.readouterr().out
    assert "OUTSIDE  bandit2, probe adaptation, agent gru: cumulative_regret: rerun 3.70" in out
    assert "DIFFERS  bandit2, probe adaptation, agent memoryless: total_reward: rerun 57.00" in out
    assert "MISSING  bandit2, probe adaptation, agent memoryless: adaptation: rerun -" in out
    assert "6 of 9 stored rows reproduced within their intervals; 3 not" in out
    checks = compare_summaries(read_summary_csv(new), read_summary_csv(stored))
    assert [check.verdict for check in checks].count("inside") == 5


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "file not found"),
        ("study,environment\nq,bandit2\n", "missing column 'variant'"),
        (SUMMARY_HEADER + 'q,b,"",p,gru,architecture,total_reward,abc,1,2,3,4\n', "not a summary table"),
        (
            SUMMARY_HEADER + 'q,b,"",p,gru,architecture,total_reward,,1,2,3,4\n',
            "row 2: column 'mean' has no number",
        ),
        (SUMMARY_HEADER + STORED[0] + "\n" + STORED[0] + "\n", "appears more than once"),
    ],
)
def test_a_bad_summary_is_one_line_and_status_2(tmp_path, capsys, content, problem):
    bad = tmp_path / "bad.csv"
    if content is not None:
        bad.write_text(content)
    good = summary_csv(tmp_path / "good.csv", STORED)
    assert main(["compare", str(good), str(bad)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"mesaprobe: error: {bad}: ") and problem in error and error.count("\n") == 1


def test_summary_says_where_the_results_are_and_how_to_build_the_report(tmp_path, tiny_spec, capsys):
    results = tmp_path / "out"
    assert main(["summary", str(tiny_spec), "--results-root", str(results)]) == 0
    assert "no " in capsys.readouterr().out  # not collected yet: said so, status 0
    (results / "tiny" / "tables").mkdir(parents=True)
    summary_csv(results / "tiny" / "tables" / "summary.csv", STORED)
    assert main(["summary", str(tiny_spec), "--results-root", str(results), "--architectures", "gru"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"study tiny: results in {results / 'tiny'}/")
    assert "greedy" in out and "best first" in out
    assert out.rstrip().endswith(
        f"snakemake --report {results / 'tiny' / 'report.html'} --config spec={tiny_spec} "
        f"results_root={results} architectures=gru"
    )


# --------------------------------------------------------------------------- live training metrics


@pytest.fixture
def tiny_plan(tiny_spec):
    return make_plan(load_study(tiny_spec))


def test_training_writes_its_history_as_it_goes(tiny_plan, tmp_path):
    run = tiny_plan.runs[0]
    results = tmp_path / "results"
    jobs.train_job(tiny_plan, run.id, results, progress=False)
    lines = read_metrics(results / run.directory / METRICS_FILE)
    manifest = TrainingManifest.read(results / run.directory / jobs.TRAIN_MANIFEST)
    assert [line["update"] for line in lines] == [entry.update for entry in manifest.history] == [1, 2]
    for line, entry in zip(lines, manifest.history, strict=True):
        assert line["env_steps"] == entry.env_steps and line["total_updates"] == 2
        assert {name: line[name] for name in entry.metrics} == entry.metrics
        assert line["env_steps_per_second"] == pytest.approx(
            line["env_steps"] / line["wall_seconds"], rel=1e-2
        )
    assert lines[1]["wall_seconds"] >= lines[0]["wall_seconds"] > 0


def test_a_resumed_run_continues_its_metrics_without_repeats(tiny_spec, tmp_path, monkeypatch):
    spec = tiny_spec.with_name("longer.yaml")
    spec.write_text(tiny_spec.read_text().replace("env_steps: 256", "env_steps: 768"))
    plan = make_plan(load_study(spec))
    run = plan.runs[0]
    results = tmp_path / "results"
    metrics = results / run.directory / METRICS_FILE
    with preempted_during(monkeypatch, update=2), pytest.raises(UserError, match="stopped by signal"):
        jobs.train_job(plan, run.id, results, progress=False)
    assert [line["update"] for line in read_metrics(metrics)] == [1, 2, 3]
    # A session that died after its checkpoint at update 3 had written more; and a line cut short.
    with open(metrics, "a") as stream:
        stream.write(json.dumps({"update": 4, "total_updates": 6, "env_steps": 512}) + '\n{"update": 5, "tot')
    jobs.train_job(plan, run.id, results, progress=False)
    lines = read_metrics(metrics)
    manifest = TrainingManifest.read(results / run.directory / jobs.TRAIN_MANIFEST)
    assert (
        [line["update"] for line in lines]
        == [entry.update for entry in manifest.history]
        == list(range(1, 7))
    )
    assert all(
        line["reward_per_step"] == entry.metrics["reward_per_step"]
        for line, entry in zip(lines, manifest.history, strict=True)
    )
    assert metrics.read_text().endswith("}\n") and last_metrics(metrics)["update"] == 6


def test_a_fresh_start_empties_an_old_metrics_file(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"update": 7}\n')
    log = MetricsLog(path, resume_update=0, total_updates=3)
    log.write(1, 10, 0.5, {"loss": 1.5})
    assert json.loads(path.read_text()) == {
        "update": 1,
        "total_updates": 3,
        "env_steps": 10,
        "wall_seconds": 0.5,
        "env_steps_per_second": 20.0,
        "loss": 1.5,
    }  # flushed before close: `tail -f` sees it
    log.close()


def test_tensorboard_when_asked_and_a_clear_error_without_it(tmp_path, monkeypatch):
    written = []

    class SummaryWriter:  # stands in for torch.utils.tensorboard's, which needs the tensorboard package
        def __init__(self, directory, purge_step=None):
            written.append(("open", Path(directory).name, purge_step))

        def add_scalar(self, name, value, step):
            written.append((name, value, step))

        def close(self):
            written.append(("close",))

    module = type(sys)("torch.utils.tensorboard")
    module.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    path = tmp_path / METRICS_FILE
    log = MetricsLog(path, resume_update=4, total_updates=9, tensorboard=True)
    log.write(5, 50, 2.0, {"reward_per_step": 0.5})
    log.close()
    assert written == [
        ("open", "tensorboard", 5),  # a resumed run purges what the stopped session wrote after update 4
        ("train/reward_per_step", 0.5, 5),
        ("train/env_steps_per_second", 25.0, 5),
        ("train/env_steps", 50, 5),
        ("close",),
    ]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    with pytest.raises(UserError, match=r"training.tensorboard: true needs the tensorboard package"):
        MetricsLog(path, resume_update=0, total_updates=9, tensorboard=True)


def test_the_status_line_counts_steps_speed_and_time_left():
    entry = {
        "update": 25,
        "total_updates": 100,
        "env_steps": 2_500_000,
        "wall_seconds": 50.0,
        "env_steps_per_second": 50_000.0,
    }
    assert status_line("run-s0", entry) == "run-s0: 2.50M/10.00M env steps (25%), 50.0k steps/s, ETA 2m30s"
    earlier = entry | {"update": 20, "env_steps": 2_000_000, "wall_seconds": 40.0}
    assert status_line("run-s0", entry, earlier).endswith("50.0k steps/s, ETA 2m30s")
    done = entry | {"update": 100, "env_steps": 10_000_000, "wall_seconds": 200.0}
    assert status_line("run-s0", done) == "run-s0: trained, 10.00M env steps in 3m20s"


def test_the_status_reporter_prints_while_training_runs(tmp_path):
    path = tmp_path / METRICS_FILE

    class Lines(list):
        def write(self, text):
            self.extend(line for line in text.splitlines() if line)

        def flush(self):
            pass

    lines = Lines()
    log = MetricsLog(path, resume_update=0, total_updates=3)
    with StatusReporter(path, "run-s0", every_seconds=0.05, stream=lines):
        for update in (1, 2, 3):
            log.write(update, 100 * update, 0.1 * update, {"loss": 1.0})
            time.sleep(0.12)
    log.close()
    assert lines[0] == f"run-s0: training (live metrics: {path})"
    assert any(
        re.fullmatch(r"run-s0: \d+/300 env steps \(\d+%\), .* steps/s, ETA .*", line) for line in lines
    )
    assert lines[-1] == "run-s0: trained, 300 env steps in 0s"


# --------------------------------------------------------------------------- learning curves


def test_the_training_table_and_its_learning_curve(tiny_plan, tmp_path):
    results = tmp_path / "results"
    runs = [run for run in tiny_plan.runs if run.architecture.name in ("gru", "memoryless")]
    for run in runs:
        jobs.train_job(tiny_plan, run.id, results, progress=False)
    table = training_table(
        TrainedRun(
            results / run.directory / jobs.TRAIN_MANIFEST, run.environment.label, run.variant, run.agent
        )
        for run in runs
    )
    assert table.height == len(runs) * 2 * 4  # runs x updates x A2C's four statistics
    assert set(table["agent"]) == {"gru", "memoryless"} and set(table["seed"]) == {0, 1}
    first = table.filter((pl.col("run") == runs[0].id) & (pl.col("update") == 1))
    manifest = TrainingManifest.read(results / runs[0].directory / jobs.TRAIN_MANIFEST)
    assert dict(zip(first["statistic"], first["value"], strict=True)) == manifest.history[0].metrics
    spec = learning_curve_chart(table, ["gru", "memoryless"], "Training curves: bandit2").to_dict()
    assert spec["facet"]["sort"][:2] == ["reward_per_step", "regret_per_step"]
    assert spec["spec"]["encoding"]["detail"]["field"] == "run"  # one line per run


def test_long_histories_are_binned_to_about_a_hundred_points():
    updates = 1563
    rows = pl.DataFrame(
        {
            "agent": ["gru"] * updates,
            "run": ["r"] * updates,
            "seed": [0] * updates,
            "statistic": ["reward_per_step"] * updates,
            "update": list(range(1, updates + 1)),
            "env_steps": [6400 * update for update in range(1, updates + 1)],
            "value": [float(update) for update in range(1, updates + 1)],
        }
    )
    points = binned(rows)
    assert points.height == POINTS_PER_RUN
    assert points["env_steps"][-1] == 6400 * updates and points["value"][0] == pytest.approx(
        8.5
    )  # mean of 1..16


def test_a_study_charts_a_learning_curve_per_trained_environment(tiny_spec):
    study = load_study(tiny_spec)
    learning = [chart for chart in chart_outputs(study) if chart.chart == "learning_curve"]
    assert [(chart.stem, chart.plots, chart.environment) for chart in learning] == [
        ("learning_curve_bandit2", "learning_curve", "bandit2")
    ]
    assert (REPO / "workflow" / "report" / "learning_curve.rst").is_file()
    baselines_only = tiny_spec.with_name("baselines.yaml")
    baselines_only.write_text(
        TINY_STUDY.replace(
            TINY_STUDY[TINY_STUDY.index("architectures:") : TINY_STUDY.index("\ntraining:")],
            "architectures: {}",
        )
    )
    assert not [
        chart for chart in chart_outputs(load_study(baselines_only)) if chart.chart == "learning_curve"
    ]


# --------------------------------------------------------------------------- a run through Snakemake

SCREEN_STUDY = """\
study: screen
seeds: [0]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 6}
architectures:
  gru: {family: gru, hidden: 8}
training: {env_steps: 192, batch: 16}
probes:
  adaptation: {kind: adaptation, episodes: 30}
baselines: [random]
"""


@pytest.mark.slow
def test_a_run_shows_its_training_and_ends_with_results_numbers_and_the_report_command(tmp_path):
    spec = tmp_path / "screen.yaml"
    spec.write_text(SCREEN_STUDY)
    executable = Path(sys.executable).with_name("snakemake")
    snakemake = str(executable) if executable.exists() else shutil.which("snakemake") or "snakemake"
    result = subprocess.run(
        [
            snakemake,
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "--cores",
            "2",
            "--config",
            f"spec={spec}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    screen = result.stdout + result.stderr
    run = next((tmp_path / "results" / "screen" / "runs").iterdir())
    assert f"{run.name}: training (live metrics: results/screen/runs/{run.name}/{METRICS_FILE})" in screen
    assert f"{run.name}: trained, 192 env steps in" in screen
    assert "study screen: results in results/screen/" in screen
    assert re.search(r"total_reward, bandit2, probe adaptation .*best first", screen)
    assert f"snakemake --report results/screen/report.html --config spec={spec}" in screen
    log = (tmp_path / "results" / "screen" / "logs" / "train" / f"{run.name}.log").read_text()
    assert "100%" in log  # the progress bar stays in the log
    assert (tmp_path / "results" / "screen" / "charts" / "learning_curve_bandit2.svg").is_file()
    table = pl.read_parquet(tmp_path / "results" / "screen" / "tables" / "training.parquet")
    assert set(table["run"]) == {run.name} and table["update"].max() == 2

    # The report builds with nothing but what `pip install -e .` installs (no test extras).
    report = tmp_path / "report.html"
    hidden = modules_outside_the_plain_install()
    arguments = ["-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--config", f"spec={spec}"]
    made = subprocess.run(
        [sys.executable, "-c", PLAIN_SNAKEMAKE, *arguments, "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"HIDDEN_MODULES": json.dumps(hidden)},
    )
    assert made.returncode == 0, made.stderr[-3000:]
    assert "learning_curve_bandit2" in report.read_text(errors="replace")
    # Without pygments (the dependency the plain install once lacked) it would not.
    without = subprocess.run(
        [sys.executable, "-c", PLAIN_SNAKEMAKE, *arguments, "--report", str(tmp_path / "none.html")],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"HIDDEN_MODULES": json.dumps([*hidden, "pygments"])},
    )
    assert without.returncode != 0 and "pygments must be installed" in without.stderr
