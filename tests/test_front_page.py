"""The report's front page: the question, the headline table with intervals, the chart inline;
and the charts' colour families, legend dashes and the optimum's reference line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import docutils.core
import pytest

from mesaprobe.analysis.charts import make_charts
from mesaprobe.analysis.front_page import write_front_page
from mesaprobe.study import load_study, make_plan
from mesaprobe.study.outputs import chart_outputs
from tests.conftest import TINY_STUDY, run_all_jobs

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = (
    TINY_STUDY.replace("study: tiny\n", "study: tiny\nquestion: Does a frozen GRU keep learning?\n")
    .replace("baselines: [random, thompson]", "baselines: [random, thompson, bayes_optimal]")
    .replace("seeds: [0, 1]", "seeds: [0, 1, 2]")
)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    directory = tmp_path_factory.mktemp("front")
    spec = directory / "tiny.yaml"
    spec.write_text(textwrap.dedent(STUDY))
    study = load_study(spec)
    plan = make_plan(study)
    results = directory / "results"
    run_all_jobs(plan, results, resamples=20)
    charts = chart_outputs(study, plan)
    make_charts(results / "tables", results / "charts", charts)
    page = write_front_page(study, results / "tables", results / "charts", charts, results / "front.rst")
    return study, results, charts, page.read_text()


def test_front_page_states_the_question_and_the_headline_table(drawn):
    _, _, _, text = drawn
    assert "**Does a frozen GRU keep learning?**" in text
    for agent in ("gru", "transformer", "memoryless", "random", "thompson", "bayes_optimal"):
        assert f"   * - {agent}" in text
    assert "regret_ratio" in text and "P(better)" in text and "vs bayes_optimal" in text
    assert "<svg" in text and "{% raw %}" in text  # the regret-ratio chart, inline and safe from Jinja


def test_front_page_is_valid_restructured_text(drawn):
    _, _, _, text = drawn
    body = text.replace("{% raw %}", "").replace("{% endraw %}", "")
    html = docutils.core.publish_parts(body, writer="html", settings_overrides={"report_level": 2})
    assert "<table" in html["html_body"] and "<svg" in html["html_body"]
    assert "System Message" not in html["html_body"]


def chart_spec(path: Path) -> dict:
    for line in path.read_text().splitlines():
        if line.strip().startswith("const spec = "):
            return json.loads(line.strip().removeprefix("const spec = ").removesuffix(";"))
    raise AssertionError(f"no spec in {path}")


def test_architectures_and_baselines_have_colour_families_and_the_legend_shows_dashes(drawn):
    _, results, _, _ = drawn
    spec = chart_spec(results / "charts" / "regret_bandit2_adaptation.html")
    line = spec["layer"][1]["encoding"]
    colours = dict(zip(line["color"]["scale"]["domain"], line["color"]["scale"]["range"], strict=True))
    dashes = dict(
        zip(line["strokeDash"]["scale"]["domain"], line["strokeDash"]["scale"]["range"], strict=True)
    )
    assert line["strokeDash"]["field"] == line["color"]["field"] == "agent"  # one legend: colour and dash
    assert dashes["gru"] == [1, 0] and dashes["thompson"] == [6, 3]
    saturated = {"#1f77b4", "#d62728", "#2ca02c"}
    assert {colours["gru"], colours["memoryless"], colours["transformer"]} <= saturated
    assert colours["thompson"] not in saturated and colours["random"] not in saturated


def test_total_chart_is_zoomed_and_draws_the_optimum(drawn):
    _, results, _, _ = drawn
    spec = chart_spec(results / "charts" / "total_reward_bandit2_adaptation.html")
    bars, _, rule, label = spec["layer"]
    assert bars["encoding"]["x"]["scale"] == {"zero": False}
    assert rule["mark"]["type"] == "rule" and label["mark"]["type"] == "text"
    assert "exact optimum (bayes_optimal)" in json.dumps(spec["datasets"])
