"""Study files: the schema, typed settings, grids, ids, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mesaprobe.errors import SpecError
from mesaprobe.study import load_study, make_plan, study_schema
from mesaprobe.study.references import Reference
from mesaprobe.train.config import TrainingConfig
from tests.conftest import REPO, TINY_STUDY


def write(tmp_path: Path, text: str | bytes, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def mutated(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(TINY_STUDY)
    change(data)
    return write(tmp_path, yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("spec", sorted((REPO / "specs").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_study_is_valid(spec):
    plan = make_plan(load_study(spec))
    assert plan.runs or plan.baseline_jobs


def test_quickstart_plan():
    plan = make_plan(load_study(REPO / "specs" / "quickstart.yaml"))
    assert len(plan.runs) == 12  # 4 architectures x 3 seeds
    assert len(plan.probe_jobs) == 12
    assert len(plan.baseline_jobs) == 6 * 3  # 6 baselines x 3 seeds
    # The exact optimum plays the same tasks, so regret is also a ratio to the optimum's.
    assert plan.references[("bandit2", "adaptation")] == Reference("bayes_optimal", "optimum")
    assert {run.agent for run in plan.runs} == {"gru", "lstm", "transformer", "memoryless"}


def test_schema_training_keys_match_the_dataclass():
    documented = set(study_schema()["properties"]["training"]["properties"])
    assert documented == {field.name for field in dataclasses.fields(TrainingConfig)}


def test_every_setting_is_documented():
    from mesaprobe.baselines import BASELINES
    from mesaprobe.envs import ENVIRONMENTS
    from mesaprobe.models import ARCHITECTURES
    from mesaprobe.probes import PROBES
    from mesaprobe.settings import field_docs

    classes = [TrainingConfig] + [
        registry.get(name).Config
        for registry in (ENVIRONMENTS, ARCHITECTURES, PROBES, BASELINES)
        for name in registry
    ]
    for cls in classes:
        undocumented = {field.name for field in dataclasses.fields(cls)} - set(field_docs(cls))
        assert not undocumented, f"{cls.__name__}: document {undocumented}"


def test_run_ids_are_stable_and_depend_on_settings(tmp_path):
    first = make_plan(load_study(write(tmp_path, TINY_STUDY, "a.yaml")))
    again = make_plan(load_study(write(tmp_path, TINY_STUDY, "b.yaml")))
    assert [run.id for run in first.runs] == [run.id for run in again.runs]
    assert first.runs[0].id.startswith("bandit2-gru-") and first.runs[0].id.endswith("-s0")
    changed = make_plan(load_study(mutated(tmp_path, lambda d: d["architectures"]["gru"].update(hidden=9))))
    gru_ids = {run.id for run in changed.runs if run.architecture.name == "gru"}
    assert gru_ids.isdisjoint(run.id for run in first.runs)
    others = {run.id for run in changed.runs if run.architecture.name != "gru"}
    assert others <= {run.id for run in first.runs}


def test_operational_settings_do_not_change_ids(tmp_path):
    first = make_plan(load_study(write(tmp_path, TINY_STUDY)))
    moved = make_plan(
        load_study(mutated(tmp_path, lambda d: d["training"].update(device="cpu", checkpoint_every=7)))
    )
    assert {run.id for run in first.runs} == {run.id for run in moved.runs}


def test_grid_expands_as_a_product_and_shares_identical_runs(tmp_path):
    def add_grid(data):
        data["grid"] = {"training.lr": [1e-3, 3e-3], "architectures.gru.hidden": [4, 8]}

    plan = make_plan(load_study(mutated(tmp_path, add_grid)))
    agents = sorted({run.agent for run in plan.runs})
    # gru: 2 lr x 2 hidden; transformer overrides lr itself, so both lr points are one run
    assert [a for a in agents if a.startswith("gru")] == [
        "gru[hidden=4,lr=0.001]",
        "gru[hidden=4,lr=0.003]",
        "gru[hidden=8,lr=0.001]",
        "gru[hidden=8,lr=0.003]",
    ]
    assert len([run for run in plan.runs if run.architecture.name == "gru"]) == 4 * 2
    assert len({run.id for run in plan.runs}) == len(plan.runs)


def test_architecture_training_override(tmp_path):
    plan = make_plan(load_study(write(tmp_path, TINY_STUDY)))
    rates = {run.architecture.name: run.training.lr for run in plan.runs}
    default = TrainingConfig().lr
    assert rates == {"gru": default, "transformer": 1e-3, "memoryless": default}


def test_environment_training_override(tmp_path):
    """A study with bandits and prediction: each environment's block sets its own algorithm."""

    def add_markov(data):
        data["environments"]["markov"] = {
            "family": "markov",
            "horizon": 8,
            "training": {"algorithm": "predict", "lr": 5e-3, "env_steps": 128},
        }

    plan = make_plan(load_study(mutated(tmp_path, add_markov)))
    settings = {
        (run.environment.name, run.architecture.name): (
            run.training.algorithm,
            run.training.lr,
            run.training.env_steps,
        )
        for run in plan.runs
    }
    default = TrainingConfig().lr
    assert settings == {
        ("bandit2", "gru"): ("a2c", default, 256),
        ("bandit2", "transformer"): ("a2c", 1e-3, 256),
        ("bandit2", "memoryless"): ("a2c", default, 256),
        ("markov", "gru"): ("predict", 5e-3, 128),
        ("markov", "transformer"): ("predict", 1e-3, 128),  # the architecture's block wins
        ("markov", "memoryless"): ("predict", 5e-3, 128),
    }
    # Bandit runs keep their ids: the environment block only changes the runs it applies to.
    alone = make_plan(load_study(write(tmp_path, TINY_STUDY, "alone.yaml")))
    assert {run.id for run in alone.runs} == {
        run.id for run in plan.runs if run.environment.name == "bandit2"
    }
    assert all(
        run.environment.id.startswith("markov-") for run in plan.runs if run.environment.name == "markov"
    )


@pytest.mark.parametrize(
    ("training", "key", "expected"),
    [
        ({"lr": -1.0}, "environments.markov.training.lr", "positive"),
        ({"algorithm": "a2c"}, "environments.markov.training.algorithm", "predict"),
        ({"learning_rate": 1.0}, "environments.markov.training.learning_rate", "unknown"),
    ],
)
def test_bad_environment_training_names_its_block(tmp_path, training, key, expected):
    def add_markov(data):
        data["training"]["algorithm"] = "predict"
        data["environments"] = {"markov": {"family": "markov", "horizon": 8, "training": training}}
        data["baselines"] = []

    with pytest.raises(SpecError) as raised:
        make_plan(load_study(mutated(tmp_path, add_markov)))
    assert f": {key}: " in str(raised.value) and expected in str(raised.value)


def test_baselines_only_study(tmp_path):
    plan = make_plan(load_study(mutated(tmp_path, lambda d: d.update(architectures={}))))
    assert not plan.runs and len(plan.baseline_jobs) == 2 * 2


BAD_STUDIES = [
    (lambda d: d.update(colour="blue"), "colour", "unknown key"),
    (lambda d: d["environments"]["bandit2"].update(horizon=-5), "environments.bandit2.horizon", "positive"),
    (
        lambda d: d["environments"]["bandit2"].update(horizon="long"),
        "environments.bandit2.horizon",
        "integer",
    ),
    (
        lambda d: d["environments"]["bandit2"].update(family="casino"),
        "environments.bandit2.family",
        "bernoulli_bandit",
    ),
    (lambda d: d["environments"]["bandit2"].update(arms=2.5), "environments.bandit2.arms", "integer"),
    (lambda d: d["architectures"]["gru"].update(family="rnn9000"), "architectures.gru.family", "gru"),
    (lambda d: d["architectures"]["gru"].update(hidden_size=3), "architectures.gru.hidden_size", "hidden"),
    (
        lambda d: (
            d["architectures"]["gru"]["training"].update(lr=-1)
            if "training" in d["architectures"]["gru"]
            else d["architectures"]["gru"].update(training={"lr": -1.0})
        ),
        "architectures.gru.training.lr",
        "positive",
    ),
    (lambda d: d["training"].update(env_steps="3e6"), "training.env_steps", "integer"),
    (lambda d: d["training"].update(gamma=1.5), "training.gamma", "expected at most 1, got 1.5"),
    (lambda d: d["training"].update(algorithm="predict"), "training.algorithm", "a2c, ppo"),
    (lambda d: d.update(seeds=[]), "seeds", "expected a list of at least 1 value, got a list []"),
    (lambda d: d.update(seeds=[0, 0]), "seeds", "expected each value once, got a list [0, 0]"),
    (lambda d: d.update(baselines=["oracle_of_delphi"]), "baselines.oracle_of_delphi.family", "thompson"),
    (lambda d: d["probes"]["adaptation"].update(episodes=0), "probes.adaptation.episodes", "positive"),
    (lambda d: d["probes"]["adaptation"].update(kind="xray"), "probes.adaptation.kind", "adaptation"),
    (
        lambda d: d.update(grid={"training.lr": []}),
        "grid.training.lr",
        "expected a list of at least 1 value, got a list []",
    ),
    (
        lambda d: d.update(grid={"environments.nowhere.horizon": [3]}),
        "grid.environments.nowhere.horizon",
        "block",
    ),
    (lambda d: d.update(study="Has Spaces"), "study", "expected a name: lowercase letters, digits and"),
    (lambda d: d.pop("environments"), "environments", "missing"),
]


@pytest.mark.parametrize("change,key,expected", BAD_STUDIES)
def test_bad_study_names_file_and_key(tmp_path, change, key, expected):
    path = mutated(tmp_path, change)
    with pytest.raises(SpecError) as error:
        make_plan(load_study(path))
    message = str(error.value)
    assert error.value.key == key, message
    assert message.startswith(f"{path}: {key}: "), message
    assert expected and expected in message  # every case names what was expected
    assert "\n" not in message


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"study: [unclosed", "not valid YAML at line"),
        (b"!!python/object/apply:os.system ['echo owned']", "not valid YAML"),
        (b"study: caf\xe9\n", "expected UTF-8"),
        (b"- just\n- a list\n", "expected a mapping"),
        (b"", "expected a mapping"),
    ],
)
def test_unreadable_files(tmp_path, content, expected):
    path = write(tmp_path, content)
    with pytest.raises(SpecError, match="^" + str(path).replace(".", r"\.") + ": ") as error:
        load_study(path)
    assert expected in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_study(tmp_path / "absent.yaml")


def mesaprobe(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mesaprobe", *arguments], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("command", ["validate", "plan", "train", "collect"])
def test_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path, command):
    path = mutated(tmp_path, lambda d: d["environments"]["bandit2"].update(horizon=-1))
    extra = ["--run", "x"] if command == "train" else []
    result = mesaprobe(command, str(path), *extra, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert (
        lines[0]
        == f"mesaprobe: error: {path}: environments.bandit2.horizon: expected a positive horizon, got -1"
    )
    assert not (tmp_path / "results").exists()


def test_cli_unknown_run_and_missing_tables(tmp_path, tiny_spec):
    result = mesaprobe("train", str(tiny_spec), "--run", "no-such-run", cwd=tmp_path)
    assert result.returncode == 2 and "no run 'no-such-run'" in result.stderr
    result = mesaprobe("collect", str(tiny_spec), cwd=tmp_path)
    assert result.returncode == 2 and "probe table not found" in result.stderr
    assert not (tmp_path / "results").exists()


def test_cli_plan_json(tmp_path, tiny_spec):
    result = mesaprobe("plan", str(tiny_spec), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["study"] == "tiny" and len(plan["runs"]) == 6 and len(plan["baselines"]) == 4


def test_plan_skips_baselines_that_cannot_play_and_says_why(tmp_path):
    def five_arms(data):
        data["environments"]["bandit5"] = {"family": "bernoulli_bandit", "arms": 5, "horizon": 100}
        data["probes"]["restless"] = {"kind": "adaptation", "episodes": 10, "switch_at": 0.5}
        data["baselines"] = ["thompson", "bayes_optimal"]

    plan = make_plan(load_study(mutated(tmp_path, five_arms)))
    played = {(job.environment.name, job.probe.name, job.baseline.name) for job in plan.baseline_jobs}
    assert ("bandit2", "adaptation", "bayes_optimal") in played  # 2 arms, 8 pulls: exact DP is small
    assert ("bandit5", "adaptation", "thompson") in played
    skipped = {(skip.environment, skip.probe, skip.baseline): skip.reason for skip in plan.skipped}
    assert "posterior states" in skipped[("bandit5", "adaptation", "bayes_optimal")]
    assert "restless" in skipped[("bandit2", "restless", "bayes_optimal")]


def test_probes_whose_settings_do_not_apply_to_a_kind_are_skipped_with_a_note(tmp_path):
    from mesaprobe.study import make_plan

    spec = tmp_path / "mixed.yaml"
    spec.write_text(
        """\
study: mixed
seeds: [0]
environments:
  bandit2: {family: bernoulli_bandit, arms: 2, horizon: 8}
  regression: {family: linear_regression, dimension: 2, horizon: 4, training: {algorithm: regress}}
architectures:
  gru: {family: gru, hidden: 8}
training: {env_steps: 256, batch: 16}
probes:
  alien: {kind: adaptation, episodes: 8, permute_labels: true}
  projected: {kind: adaptation, episodes: 8, project_inputs: true}
baselines: [random, ridge]
"""
    )
    plan = make_plan(load_study(spec))
    pairs = {(job.run.environment.name, job.probe.name) for job in plan.probe_jobs}
    assert pairs == {("bandit2", "alien"), ("regression", "projected")}
    notes = [str(skip) for skip in plan.skipped]
    assert (
        "probe alien skipped on regression: horizon_factor, prior_alpha, prior_beta, squeeze, permute_labels and switch_at do not apply to regression"
        in notes
    )
    assert (
        "probe projected skipped on bandit2: project_inputs applies to regression environments only" in notes
    )
    assert {(job.environment.name, job.probe.name) for job in plan.baseline_jobs} == pairs
    # The charts the workflow expects are exactly the ones drawn from the tables.
    from mesaprobe.analysis.charts import make_charts
    from mesaprobe.study.outputs import chart_outputs
    from tests.conftest import run_all_jobs

    results = tmp_path / "results"
    run_all_jobs(plan, results, resamples=10)
    charts = chart_outputs(plan.study)
    assert {chart.probe for chart in charts if chart.environment == "regression" and chart.probe} == {
        "projected"
    }
    written = make_charts(results / "tables", results / "charts", charts)
    assert sorted(path.name for path in written) == sorted(name for chart in charts for name in chart.files)


def test_an_architecture_may_play_some_environments_only(tmp_path):
    def restrict(data):
        data["environments"]["bandit3"] = {"family": "bernoulli_bandit", "arms": 3, "horizon": 8}
        data["architectures"]["memoryless"]["environments"] = ["bandit3"]

    plan = make_plan(load_study(mutated(tmp_path, restrict)))
    pairs = {(run.environment.name, run.architecture.name) for run in plan.runs}
    assert ("bandit3", "memoryless") in pairs and ("bandit2", "memoryless") not in pairs
    assert ("bandit2", "gru") in pairs and ("bandit3", "gru") in pairs
    unrestricted = make_plan(load_study(write(tmp_path, TINY_STUDY, "tiny.yaml")))
    kept = {run.id for run in unrestricted.runs if run.environment.name == "bandit2"} - {
        run.id for run in unrestricted.runs if run.architecture.name == "memoryless"
    }
    assert kept <= {run.id for run in plan.runs}  # restricting one architecture changes no other id

    def unknown(data):
        data["architectures"]["gru"]["environments"] = ["bandit9"]

    with pytest.raises(SpecError, match=r"architectures\.gru\.environments: expected a non-empty list"):
        load_study(mutated(tmp_path, unknown))
