"""Bandit meta-RL training throughput of sb3-contrib RecurrentPPO beside mesaprobe's A2C.

    pip install -e '.[bench]'
    python benchmarks/sb3_comparison.py --threads 1

The task is the one of ``train_throughput.py``: 2-armed Bernoulli bandits with arm
probabilities U(0, 1) drawn afresh every episode, 100 pulls per episode, and the RL^2
observation (one-hot previous action, previous reward, pulls so far / 100).  sb3 plays
it through a gymnasium environment (one episode = 100 pulls of a fresh task) stepped
by a ``DummyVecEnv`` in this process, with ``MlpLstmPolicy`` and LSTM hidden size 64,
at three settings:

* ``defaults``: sb3's PPO defaults (8 environments x 128 steps per rollout, minibatches
  of 128 steps, 10 epochs);
* ``a2c_like``: mesaprobe's update shape (64 environments x 100 steps = 64 whole
  episodes per rollout, one epoch of one full-batch gradient step);
* ``a2c_like_shared_lstm``: the same with one LSTM shared by actor and critic and linear
  heads on it, mesaprobe's model layout (sb3's default has an actor LSTM and a critic
  LSTM, each followed by a 64-64 MLP).

Each setting is timed over whole ``learn`` calls (rollout collection and gradient
steps) after one warm-up rollout; mesaprobe's LSTM-64 and GRU-64 are timed over whole
A2C updates of 64 episodes by ``train_throughput.measure``.  Prints markdown tables
(env-steps/s and the ratio mesaprobe / sb3) and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from train_throughput import measure, write_json

from mesaprobe.device import resolve_device, set_threads

try:
    import gymnasium
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.vec_env import DummyVecEnv
except ImportError as error:
    raise SystemExit(
        f"sb3_comparison.py needs sb3-contrib and gymnasium ({error.name} is not installed): "
        "pip install -e '.[bench]'"
    ) from None

#: mesaprobe models compared (names of ``train_throughput.MODELS``), trained on batches of 64 episodes.
MESAPROBE_MODELS = ("lstm-64", "gru-64")
MESAPROBE_BATCH = 64


class BanditEpisodes(gymnasium.Env):
    """One episode = ``horizon`` pulls of a fresh Bernoulli bandit whose arms pay with U(0, 1) probabilities.

    Observations are mesaprobe's ``BernoulliBandit.observation``: one-hot previous action
    (zeros before the first pull), previous reward, pulls so far / horizon.
    """

    def __init__(self, arms: int = 2, horizon: int = 100):
        self.arms, self.horizon = arms, horizon
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, shape=(arms + 2,), dtype=np.float32)
        self.action_space = gymnasium.spaces.Discrete(arms)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds self.np_random, the only source of randomness
        self.probs = self.np_random.random(self.arms)
        self.pulls = 0
        return np.zeros(self.arms + 2, dtype=np.float32), {}

    def step(self, action):
        reward = float(self.np_random.random() < self.probs[action])
        self.pulls += 1
        observation = np.zeros(self.arms + 2, dtype=np.float32)
        observation[action] = 1.0
        observation[self.arms] = reward
        observation[self.arms + 1] = self.pulls / self.horizon
        return observation, reward, self.pulls >= self.horizon, False, {}


@dataclass(frozen=True)
class RecurrentPPOSetting:
    envs: int
    """Environments stepped in lockstep by a DummyVecEnv (in this process)."""
    n_steps: int
    """Steps per environment per rollout."""
    batch_size: int
    """Env steps per minibatch (one gradient step each)."""
    n_epochs: int
    """Passes over each rollout."""
    rollouts: int
    """Rollouts timed after the warm-up (13 to 72 s of training on one CPU thread on the 2-core VM)."""
    shared_lstm: bool = False
    """One LSTM for actor and critic with linear heads on it (mesaprobe's layout); False is
    sb3's default of separate actor and critic LSTMs, each followed by a 64-64 MLP."""

    @property
    def rollout_steps(self) -> int:
        return self.envs * self.n_steps

    def policy_kwargs(self) -> dict:
        if self.shared_lstm:
            return {"lstm_hidden_size": 64, "shared_lstm": True, "enable_critic_lstm": False, "net_arch": []}
        return {"lstm_hidden_size": 64}


SETTINGS = {
    "defaults": RecurrentPPOSetting(envs=8, n_steps=128, batch_size=128, n_epochs=10, rollouts=20),
    "a2c_like": RecurrentPPOSetting(envs=64, n_steps=100, batch_size=6400, n_epochs=1, rollouts=100),
    "a2c_like_shared_lstm": RecurrentPPOSetting(
        envs=64, n_steps=100, batch_size=6400, n_epochs=1, rollouts=100, shared_lstm=True
    ),
}


def measure_recurrent_ppo(
    name: str, device: torch.device, rollouts: int | None, warmup_rollouts: int
) -> dict:
    """Env-steps/s of RecurrentPPO training at setting ``name`` over ``rollouts`` (default: the setting's)."""
    setting = SETTINGS[name]
    model = RecurrentPPO(
        "MlpLstmPolicy",
        DummyVecEnv([BanditEpisodes] * setting.envs),
        n_steps=setting.n_steps,
        batch_size=setting.batch_size,
        n_epochs=setting.n_epochs,
        policy_kwargs=setting.policy_kwargs(),
        device=device,
        seed=0,  # sb3 seeds the global random/numpy/torch RNGs; mesaprobe uses its own generators
        verbose=0,
    )
    model.learn(total_timesteps=warmup_rollouts * setting.rollout_steps)
    rollouts = rollouts or setting.rollouts
    before = model.num_timesteps
    started = time.perf_counter()
    # Continues from the warm-up (no environment reset); learns exactly `rollouts` more rollouts.
    model.learn(total_timesteps=rollouts * setting.rollout_steps, reset_num_timesteps=False)
    seconds = time.perf_counter() - started
    steps = model.num_timesteps - before
    return {
        "trainer": "sb3-contrib RecurrentPPO",
        "setting": name,
        **asdict(setting),
        "parameters": sum(parameter.numel() for parameter in model.policy.parameters()),
        "env_steps": steps,
        "seconds": seconds,
        "env_steps_per_second": steps / seconds,
    }


def describe(setting: RecurrentPPOSetting) -> str:
    layout = "shared LSTM, linear heads" if setting.shared_lstm else "actor + critic LSTMs, 64-64 MLPs"
    return (
        f"{setting.envs} envs x {setting.n_steps} steps, minibatch {setting.batch_size}, "
        f"{setting.n_epochs} epoch{'s' if setting.n_epochs > 1 else ''}; {layout}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--sb3-rollouts",
        type=int,
        default=None,
        help="timed rollouts per sb3 setting (default: the setting's)",
    )
    parser.add_argument("--warmup-rollouts", type=int, default=1, help="untimed sb3 rollouts first")
    parser.add_argument("--updates", type=int, default=50, help="timed mesaprobe updates")
    parser.add_argument("--warmup", type=int, default=1, help="untimed mesaprobe updates first")
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[1],
        help="mesaprobe seeds per process (training.seeds_per_job), each with 64 episodes per update",
    )
    parser.add_argument("--json", type=Path, default=Path("benchmarks/sb3_comparison.json"))
    arguments = parser.parse_args()
    set_threads(arguments.threads)
    device = resolve_device(arguments.device)
    load_before = os.getloadavg()[0]

    sb3_rows = [
        measure_recurrent_ppo(name, device, arguments.sb3_rollouts, arguments.warmup_rollouts)
        for name in arguments.settings
    ]
    mesaprobe_rows = [
        {"trainer": "mesaprobe A2C" + (f", {seeds} seeds per process" if seeds > 1 else "")}
        | measure(name, MESAPROBE_BATCH, device, arguments.updates, arguments.warmup, seeds)
        for seeds in arguments.seeds
        for name in MESAPROBE_MODELS
    ]
    ratios = {
        row["model"] + (f" x {row['seeds']} seeds" if row["seeds"] > 1 else ""): {
            sb3["setting"]: row["env_steps_per_second"] / sb3["env_steps_per_second"] for sb3 in sb3_rows
        }
        for row in mesaprobe_rows
    }

    print(f"device={device} threads={torch.get_num_threads()}\n")
    print("| trainer | model | setting | parameters | env-steps/s |\n|---|---|---|---|---|")
    for row in sb3_rows:
        print(
            f"| {row['trainer']} | MlpLstmPolicy, LSTM-64 | {row['setting']}: "
            f"{describe(SETTINGS[row['setting']])} | {row['parameters']:,} | {row['env_steps_per_second']:,.0f} |"
        )
    for row in mesaprobe_rows:
        print(
            f"| {row['trainer']} | {row['model']} | {row['batch']} episodes x 100 steps per seed, one full-batch step "
            f"| {row['parameters']:,} | {row['env_steps_per_second']:,.0f} |"
        )
    print("\n| mesaprobe / sb3 | " + " | ".join(row["setting"] for row in sb3_rows) + " |")
    print("|---" * (len(sb3_rows) + 1) + "|")
    for model, by_setting in ratios.items():
        print(f"| {model} | " + " | ".join(f"{ratio:,.1f}x" for ratio in by_setting.values()) + " |")

    write_json(
        arguments.json,
        sb3_rows + mesaprobe_rows,
        device,
        ratios_mesaprobe_over_sb3=ratios,
        load_average_1min={"before": load_before, "after": os.getloadavg()[0]},
        bench_versions={
            name: metadata.version(name) for name in ("sb3-contrib", "stable-baselines3", "gymnasium")
        },
    )


if __name__ == "__main__":
    main()
