"""Bernoulli bandit invariants: priors, observations, rewards, common random numbers."""

from __future__ import annotations

import pytest
import torch

from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.envs.bernoulli_bandit import BernoulliBandit, BernoulliBanditConfig
from mesaprobe.seeding import make_generator


def bandit(**settings) -> BernoulliBandit:
    config = BernoulliBanditConfig(**settings)
    config.validate()
    return BernoulliBandit(config)


def test_registry_lists_valid_names_for_unknown_family():
    with pytest.raises(KeyError, match="bernoulli_bandit"):
        ENVIRONMENTS.get("no_such_family")


@pytest.mark.parametrize("arms", [2, 3, 7])
def test_uniform_prior_moments(arms):
    tasks = bandit(arms=arms).sample_tasks(20_000, make_generator("test"), "cpu")
    assert tasks.probs.shape == (20_000, arms)
    assert ((tasks.probs >= 0) & (tasks.probs <= 1)).all()
    # U(0,1): mean 1/2, sd 1/sqrt(12); the mean of 20000*arms draws has sd < 0.0021 -> 5 sigma.
    assert abs(tasks.probs.mean().item() - 0.5) < 5 * (1 / 12) ** 0.5 / (20_000 * arms) ** 0.5


def test_beta_prior_mean():
    tasks = bandit(prior="beta", prior_alpha=2.0, prior_beta=6.0).sample_tasks(
        40_000, make_generator("b"), "cpu"
    )
    # Beta(2, 6): mean 0.25, variance 2*6/(64*9) = 0.0208; 80000 draws -> sd of mean 0.00051.
    assert abs(tasks.probs.mean().item() - 0.25) < 5 * 0.0208**0.5 / 80_000**0.5


@pytest.mark.parametrize(
    "prior,levels",
    [("dependent_easy", (0.1, 0.9)), ("dependent_medium", (0.25, 0.75)), ("dependent_hard", (0.4, 0.6))],
)
def test_dependent_discrete_priors(prior, levels):
    probs = bandit(prior=prior).sample_tasks(4000, make_generator(prior), "cpu").probs
    assert torch.allclose(probs.sum(dim=1), torch.ones(4000))
    assert set(torch.round(probs[:, 0] * 100).int().tolist()) == {round(level * 100) for level in levels}
    # p is high or low with probability 1/2: 4000 draws, sd 0.0079 -> 5 sigma.
    assert abs((probs[:, 0] > 0.5).float().mean().item() - 0.5) < 5 * 0.5 / 4000**0.5


def test_dependent_uniform_prior_pays_p_and_one_minus_p():
    probs = bandit(prior="dependent_uniform").sample_tasks(1000, make_generator("du"), "cpu").probs
    assert torch.allclose(probs[:, 0] + probs[:, 1], torch.ones(1000))
    assert probs[:, 0].min() < 0.05 and probs[:, 0].max() > 0.95


def test_observation_is_rl2_input():
    environment = bandit(arms=3, horizon=4)
    tasks = environment.sample_tasks(5, make_generator("t"), "cpu")
    state, observation = environment.reset(tasks)
    assert observation.shape == (5, 5) and (observation == 0).all()
    action = torch.tensor([0, 1, 2, 1, 0])
    state, observation, reward, done = environment.step(state, action, make_generator("r"))
    assert torch.equal(observation[:, :3], torch.nn.functional.one_hot(action, 3).float())
    assert torch.equal(observation[:, 3], reward)
    assert torch.allclose(observation[:, 4], torch.full((5,), 0.25))
    assert not done
    decoded_action, decoded_reward, has_previous = BernoulliBandit.decode_observation(observation, 3)
    assert torch.equal(decoded_action, action) and torch.equal(decoded_reward, reward) and has_previous.all()
    for _ in range(3):
        state, observation, reward, done = environment.step(state, action, make_generator("r"))
    assert done and state.t == 4


def test_rewards_follow_arm_probabilities():
    environment = bandit(arms=2, horizon=1)
    tasks = environment.sample_tasks(50_000, make_generator("p"), "cpu")
    state, _ = environment.reset(tasks)
    action = torch.zeros(50_000, dtype=torch.long)
    _, _, reward, _ = environment.step(state, action, make_generator("luck"))
    # E[reward - p] = 0 with sd <= 0.5/sqrt(50000) = 0.0022 -> 5 sigma.
    assert abs((reward - tasks.probs[:, 0]).mean().item()) < 5 * 0.5 / 50_000**0.5
    assert torch.equal(environment.expected_reward(state, action), tasks.probs[:, 0])
    assert torch.equal(environment.best_expected_reward(state), tasks.probs.max(dim=1).values)


def test_common_random_numbers_make_better_arm_pay_at_least_as_often():
    environment = bandit(arms=2, horizon=1)
    tasks = environment.sample_tasks(1000, make_generator("c"), "cpu")
    state, _ = environment.reset(tasks)
    rewards = {}
    for arm in (0, 1):
        action = torch.full((1000,), arm)
        _, _, rewards[arm], _ = environment.step(state, action, make_generator("same-luck"))
    better = tasks.probs[:, 0] >= tasks.probs[:, 1]
    assert (rewards[0][better] >= rewards[1][better]).all()
    assert (rewards[1][~better] >= rewards[0][~better]).all()


@pytest.mark.parametrize(
    "settings,key",
    [
        ({"arms": 1}, "arms"),
        ({"horizon": 0}, "horizon"),
        ({"prior": "dependent_easy", "arms": 3}, "prior"),
        ({"prior": "beta", "prior_alpha": 0.0}, "prior_alpha"),
    ],
)
def test_invalid_settings_name_their_key(settings, key):
    from mesaprobe.settings import SettingError

    with pytest.raises(SettingError) as error:
        BernoulliBanditConfig(**settings).validate()
    assert error.value.key == key


def play_constant_arm(environment, tasks, arm: int = 0):
    from mesaprobe.train.rollout import play

    class Constant:
        def initial_state(self, batch, horizon, device):
            return None

        def act(self, state, observation, generator):
            return None, torch.full((observation.shape[0],), arm)

    return play(environment, tasks, Constant(), make_generator("luck"), make_generator("actions"))


def test_longer_horizon_keeps_the_trained_time_scale():
    from mesaprobe.envs.bernoulli_bandit import BanditTransform

    environment = bandit(arms=2, horizon=10).transformed(BanditTransform(horizon_factor=3))
    assert environment.horizon == 30
    trajectory = play_constant_arm(environment, environment.sample_tasks(4, make_generator("t"), "cpu"))
    assert trajectory.actions.shape == (4, 30)
    torch.testing.assert_close(trajectory.observations[0, 1:, -1], torch.arange(1, 30) / 10)


def test_squeezed_and_shifted_priors():
    from mesaprobe.envs.bernoulli_bandit import BanditTransform

    squeezed = bandit().transformed(BanditTransform(squeeze=(0.4, 0.6)))
    probs = squeezed.sample_tasks(5000, make_generator("s"), "cpu").probs
    assert probs.min() >= 0.4 and probs.max() <= 0.6
    shifted = bandit().transformed(BanditTransform(prior_alpha=0.5, prior_beta=0.5))
    assert shifted.prior == (0.5, 0.5)
    probs = shifted.sample_tasks(20_000, make_generator("b"), "cpu").probs
    # Beta(1/2, 1/2): P(p < 0.1) = (2/pi) asin(sqrt(0.1)) = 0.2048; 40000 draws -> sd 0.002.
    assert abs((probs < 0.1).float().mean().item() - 0.2048) < 5 * 0.002


def test_restless_switch_changes_the_best_arm_mid_episode():
    from mesaprobe.envs.bernoulli_bandit import BanditTransform

    environment = bandit(arms=2, horizon=10).transformed(BanditTransform(switch_at=0.5))
    tasks = environment.sample_tasks(1000, make_generator("r"), "cpu")
    assert tasks.switch_step == 5
    trajectory = play_constant_arm(environment, tasks)
    torch.testing.assert_close(trajectory.expected_rewards[:, :5], tasks.probs[:, :1].expand(-1, 5))
    torch.testing.assert_close(
        trajectory.expected_rewards[:, 5:], tasks.probs_after_switch[:, :1].expand(-1, 5)
    )
    torch.testing.assert_close(
        trajectory.best_expected_rewards[:, 5:], tasks.probs_after_switch.max(1).values[:, None].expand(-1, 5)
    )


def test_permuted_labels_move_the_arms_together():
    from mesaprobe.envs.bernoulli_bandit import BanditTransform

    base = bandit(arms=5, prior="beta", prior_alpha=1.0, prior_beta=1.0)
    plain = base.sample_tasks(3, make_generator("p"), "cpu").probs
    permuted = (
        base.transformed(BanditTransform(permute_labels=True))
        .sample_tasks(3, make_generator("p"), "cpu")
        .probs
    )
    assert not torch.equal(plain, permuted)
    assert torch.equal(plain.sort(dim=1).values, permuted.sort(dim=1).values)
