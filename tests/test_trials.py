"""Trials: K episodes of one task as one sequence, memory carried (or reset) across boundaries."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from mesaprobe.analysis.charts import make_charts
from mesaprobe.analysis.collect import collect
from mesaprobe.analysis.tables import TRIAL_EPISODES_COLUMNS, write_probe_table
from mesaprobe.baselines import build_baseline
from mesaprobe.envs.bernoulli_bandit import BernoulliBandit, BernoulliBanditConfig
from mesaprobe.envs.tabular_mdp import TabularMDP, TabularMDPConfig
from mesaprobe.kinds import kind_of
from mesaprobe.metrics import episodes_in_trial
from mesaprobe.models import ARCHITECTURES, build_model
from mesaprobe.probes.adaptation import AdaptationConfig, AdaptationProbe, MemoryResetAtEpisodes
from mesaprobe.seeding import make_generator
from mesaprobe.study import load_study, make_plan
from mesaprobe.study.outputs import TRIAL_EPISODES, Chart, chart_outputs
from mesaprobe.train import ALGORITHMS
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.state import TrainingState
from tests.conftest import REPO, TINY_STUDY
from tests.test_analysis import probe_frame

pytestmark = pytest.mark.usefixtures("one_thread")


def observations(environment, steps: int) -> list[torch.Tensor]:
    tasks = environment.sample_tasks(2, make_generator("tasks"), "cpu")
    state, observation = environment.reset(tasks)
    seen = [observation]
    luck = make_generator("luck")
    for t in range(steps):
        state, observation, _, done = environment.step(state, torch.full((2,), t % 2), luck)
        seen.append(observation)
    assert done
    return seen


def test_one_episode_per_trial_is_the_bandit_as_before():
    bandit = BernoulliBandit(BernoulliBanditConfig(arms=2, horizon=4))
    assert (bandit.horizon, bandit.episode_length, bandit.observation_size) == (4, 4, 4)
    seen = observations(bandit, 4)
    assert [float(o[0, 3]) for o in seen] == [0.0, 0.25, 0.5, 0.75, 1.0]  # t / horizon


def test_bandit_trials_restart_the_time_input_and_flag_each_boundary():
    bandit = BernoulliBandit(BernoulliBanditConfig(arms=2, horizon=3, trial_episodes=3))
    assert (bandit.horizon, bandit.episode_length, bandit.observation_size) == (9, 3, 5)
    seen = observations(bandit, 9)
    time = [round(float(o[0, 3]) * 3) for o in seen[:-1]]
    done = [float(o[0, 4]) for o in seen[:-1]]
    assert time == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert done == [0, 0, 0, 1, 0, 0, 1, 0, 0]
    # The boundary's observation still carries the last pull of the previous episode.
    assert float(seen[3][0, :2].sum()) == 1.0


def test_mdp_trials_restart_the_state():
    mdp = TabularMDP(TabularMDPConfig(states=4, actions=2, horizon=3, trial_episodes=2))
    seen = observations(mdp, 6)
    assert all(int(o[0, :4].argmax()) == 0 for o in (seen[0], seen[3]))
    assert [float(o[0, -1]) for o in seen[:-1]] == [0, 0, 0, 1, 0, 0]


def test_episodes_in_trial_sums_each_episode():
    values = torch.arange(12.0).reshape(2, 6)
    assert episodes_in_trial(values, 3).tolist() == [[3.0, 12.0], [21.0, 30.0]]


def test_memory_reset_restarts_a_baseline_at_every_boundary():
    bandit = BernoulliBandit(BernoulliBanditConfig(arms=3, horizon=4, trial_episodes=3))
    agent = MemoryResetAtEpisodes(build_baseline("thompson", None, bandit), bandit)
    tasks = bandit.sample_tasks(5, make_generator("tasks"), "cpu")
    state, observation = bandit.reset(tasks)
    agent_state = agent.initial_state(5, bandit.horizon, "cpu")
    luck, actions = make_generator("luck"), make_generator("actions")
    for t in range(bandit.horizon):
        agent_state, action = agent.act(agent_state, observation, actions)
        # Pulls counted so far: those of this episode before this step.
        assert torch.equal(agent_state.inner.pulls.sum(dim=1), torch.full((5,), float(t % 4)))
        state, observation, _, _ = bandit.step(state, action, luck)


def play_probe(environment, baseline: str, carry_memory: bool, episodes: int = 300):
    probe = AdaptationProbe(AdaptationConfig(episodes=episodes, batch=episodes, carry_memory=carry_memory))
    played = probe.environment(environment)
    table = probe.run(build_baseline(baseline, None, played), played, ("trials", 0), (baseline, "trials"))
    regret = table.filter(table["metric"] == "value_regret").sort("episode", "step")["value"].to_numpy()
    return torch.tensor(regret).reshape(episodes, environment.horizon)


def test_carrying_memory_across_episodes_is_what_psrl_learns_from():
    mdp = TabularMDP(TabularMDPConfig(states=4, actions=3, horizon=5, trial_episodes=6))
    carried = episodes_in_trial(play_probe(mdp, "psrl", True), 5)  # (E, K)
    reset = episodes_in_trial(play_probe(mdp, "psrl", False), 5)
    # Both play the same tasks with the same luck; the first episode of a trial is the same game.
    assert torch.allclose(carried[:, 0], reset[:, 0])
    # With memory the last episode is far better than the first; reset, it is no better
    # (mean differences over 300 trials against 5 standard errors).
    for regrets, improves in ((carried, True), (reset, False)):
        gain = regrets[:, 0] - regrets[:, -1]
        bound = 5 * float(gain.std()) / len(gain) ** 0.5
        assert (float(gain.mean()) > bound) == improves


def spec_with(tmp_path, change):
    data = yaml.safe_load(TINY_STUDY)
    change(data)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return make_plan(load_study(path))


def test_settings_at_their_default_leave_ids_unchanged(tmp_path):
    before = spec_with(tmp_path, lambda data: None)

    def explicit_defaults(data):
        data["environments"]["bandit2"]["trial_episodes"] = 1
        data["probes"]["adaptation"]["carry_memory"] = True

    after = spec_with(tmp_path, explicit_defaults)
    assert [run.id for run in before.runs] == [run.id for run in after.runs]
    assert [job.probe.id for job in before.baseline_jobs] == [job.probe.id for job in after.baseline_jobs]

    def trials(data):
        data["environments"]["bandit2"]["trial_episodes"] = 2

    assert {run.id for run in spec_with(tmp_path, trials).runs}.isdisjoint(run.id for run in before.runs)


def test_a2c_trains_on_whole_trials():
    mdp = TabularMDP(TabularMDPConfig(states=3, actions=2, horizon=3, trial_episodes=2))
    torch.manual_seed(0)
    model = build_model(
        "gru",
        ARCHITECTURES.get("gru").Config(hidden=8),
        mdp.observation_size,
        kind_of(mdp).output_size(mdp),
        0,
    )
    config = TrainingConfig(algorithm="a2c", batch=4, env_steps=48)
    state = TrainingState(
        model, torch.optim.Adam(model.parameters(), lr=config.lr), make_generator("t"), make_generator("a")
    )
    before = [parameter.detach().clone() for parameter in model.parameters()]
    statistics = ALGORITHMS.get("a2c").update(mdp, state, config, 4)
    assert all(torch.isfinite(torch.as_tensor(value)) for value in statistics.values())
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters(), strict=True))


def test_the_trial_table_has_each_episode_of_a_trial_by_hand(tmp_path):
    """Trials of 2 episodes of 2 steps: per episode, the reward and regret summed over it and the
    cumulative regret at its end, averaged over trials; nothing for an environment without trials."""

    # Two trials (rows) of 4 steps; the best arm pays 1.  Regret per step: [[1, 0.5, 0, 0], [0.5, 0.5, 0.5, 0]].
    expected_rewards = np.array([[0.0, 0.5, 1.0, 1.0], [0.5, 0.5, 0.5, 1.0]])
    best = np.ones(2)
    paths = [
        write_probe_table(
            probe_frame(expected_rewards, best, agent="psrl", agent_kind="baseline", environment=environment),
            tmp_path / "probes" / f"{environment}.parquet",
        )
        for environment in ("k2", "plain")
    ]
    written = collect(paths, tmp_path / "tables", trial_episodes={"k2": 2, "plain": 1})
    trials = pl.read_parquet(written["trial_episodes"])
    assert trials.schema == pl.Schema(TRIAL_EPISODES_COLUMNS)
    assert set(trials["environment"]) == {"k2"}  # `plain` plays no trials
    by_metric = {
        metric: part.sort("episode_in_trial")["mean"].to_list()
        for (metric,), part in trials.group_by("metric")
    }
    assert by_metric == {
        "total_reward": [(0.5 + 1.0) / 2, (2.0 + 1.5) / 2],
        "episode_regret": [(1.5 + 1.0) / 2, (0.0 + 0.5) / 2],
        "cumulative_regret": [(1.5 + 1.0) / 2, (1.5 + 1.5) / 2],
    }
    assert set(trials["interval"]) == {"episodes (Student t)"} and set(trials["episodes"]) == {2}
    assert pl.read_csv(written["trial_episodes_csv"], schema=TRIAL_EPISODES_COLUMNS).equals(trials)


def test_a_trial_chart_per_environment_with_trials_and_probe(tmp_path):
    charts = chart_outputs(load_study(REPO / "specs" / "bandits_trials.yaml"))
    trial = sorted(chart.stem for chart in charts if chart.plots == TRIAL_EPISODES)
    assert trial == [
        f"trial_episode_regret_{environment}_{probe}"
        for environment in ("k10", "k25")
        for probe in ("adaptation", "no_memory")
    ]  # k1, one episode per trial, has none
    mdp = chart_outputs(load_study(REPO / "specs" / "mdp_rl2_reduced.yaml"))
    assert "trial_episode_value_regret_k10_adaptation" in {chart.stem for chart in mdp}


def test_the_trial_chart_is_drawn_from_the_trial_table(tmp_path):
    expected_rewards = np.array([[0.0, 0.5, 1.0, 1.0], [0.5, 0.5, 0.5, 1.0]])
    frame = probe_frame(expected_rewards, np.ones(2), agent="psrl", agent_kind="baseline", environment="k2")
    path = write_probe_table(frame, tmp_path / "probes" / "k2.parquet")
    collect([path], tmp_path / "tables", trial_episodes={"k2": 2})
    chart = Chart(
        "trial_episode_regret_k2_adaptation", TRIAL_EPISODES, TRIAL_EPISODES, "bandit", "k2", "adaptation"
    )
    written = make_charts(tmp_path / "tables", tmp_path / "charts", [chart])
    assert [file.name for file in written] == list(chart.files)
    svg = (tmp_path / "charts" / "trial_episode_regret_k2_adaptation.svg").read_text()
    assert "Episode regret per episode of a trial: k2, probe adaptation" in svg
    assert "episode of the trial" in svg
