"""The commitment probe: a frozen agent plays held-out rounds of the commitment game.

Per episode it records ``success`` (y = f(z)), ``game_reward`` and
``z_surprisal_bits`` (see :mod:`mesaprobe.metrics`): the success rate says whether the
agent can emit f(z) before z, the entropy of z whether it does so with a z it could
have kept secret.  Held-out noise bits come from a generator named by (environment,
probe, seed), shared by every agent of that seed; each agent samples its own actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import polars as pl
import torch

from mesaprobe.envs.base import Environment
from mesaprobe.metrics import commitment_episode_metrics
from mesaprobe.probes.adaptation import heldout_streams, long_table
from mesaprobe.probes.base import Probe
from mesaprobe.settings import SettingError
from mesaprobe.train.rollout import play


@dataclass(frozen=True)
class CommitmentProbeConfig:
    episodes: int = 2000
    """Held-out episodes played (z's entropy is estimated over all of them)."""
    policy: Literal["sample", "greedy"] = "sample"
    """How a trained model picks actions: sample from its policy, or take the most likely
    (then every random bit must come from the environment's noise)."""
    batch: int = 1000
    """Episodes played at once; the marginal and conditional adversaries of the reward
    guess from the other episodes of the same batch."""

    def validate(self) -> None:
        for name in ("episodes", "batch"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")


class CommitmentProbe(Probe):
    """Success rate, reward and entropy of z of an agent playing the commitment game."""

    Config: ClassVar[type] = CommitmentProbeConfig
    serves: ClassVar[tuple[str, ...]] = ("commitment",)

    @property
    def policy(self) -> Literal["sample", "greedy"]:
        return self.config.policy

    def run(
        self,
        agent,
        environment: Environment,
        heldout_key: tuple,
        agent_key: tuple,
        device: torch.device | str = "cpu",
    ) -> pl.DataFrame:
        """Play ``config.episodes`` held-out episodes; long table (episode, step = 1, metric, value)."""
        task_generator, luck_generator, action_generator = heldout_streams(heldout_key, agent_key, device)
        outcomes = []
        with torch.inference_mode():
            for start in range(0, self.config.episodes, self.config.batch):
                count = min(self.config.batch, self.config.episodes - start)
                tasks = environment.sample_tasks(count, task_generator, device)
                trajectory = play(environment, tasks, agent, luck_generator, action_generator)
                outcomes.append(environment.outcome(trajectory.actions))
        success, reward, z = (
            torch.cat([getattr(outcome, name) for outcome in outcomes]).cpu()
            for name in ("success", "reward", "z")
        )
        return long_table(commitment_episode_metrics(success, reward, z))
