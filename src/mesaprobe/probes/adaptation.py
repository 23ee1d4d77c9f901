"""The adaptation probe: a frozen agent plays (or predicts) held-out tasks; per-step metrics show learning.

Bandits: the agent acts step by step; metrics expected_reward, regret, cumulative_regret.
Sequence prediction: the model predicts every token of held-out sequences; metrics
logloss_bits, regret_bits (against the exact Bayes predictor on the same tokens) and
cumulative_regret_bits (see :mod:`mesaprobe.metrics`).
In-context regression: the model predicts every target of held-out episodes; metrics
mse_per_dim, regret_mse (against ridge, the exact Bayes predictor, on the same examples)
and cumulative_regret_mse.

Tabular MDPs: the agent acts step by step; metrics mean_reward, value_regret (against the
true MDP's optimal action values) and cumulative_value_regret.

Trials (an environment's ``trial_episodes: K``): an episode of the table is one whole trial
of K episodes of the same task, its steps run over the trial's K x episode_length steps
(per-step curves over the trial; per-episode sums within the trial are
:func:`mesaprobe.metrics.episodes_in_trial` of them; episode metrics per trial).  With
``carry_memory: false`` the agent's memory (a model's recurrent state or context, a
baseline's statistics) is reset at every episode boundary, so each episode is played as if
it were the first of its task: the gap to ``carry_memory: true`` is what learning across
episodes is worth.

Its out-of-distribution settings (longer episodes, shifted or squeezed prior, permuted
arm labels, a mid-episode switch; for regression, inputs turned by a fixed random
orthogonal matrix) transform the environment the agent was trained on; baselines play
the same transformed tasks.

Held-out tasks come from a generator named by (environment, probe, seed), disjoint
from every training stream, and shared by every agent evaluated at that seed, so
architectures and baselines face the same tasks and the same reward luck (common
random numbers); only each agent's own action sampling differs.

Task location or task learning: with ``tasks: fresh`` (the default) the held-out tasks
are new draws from the environment's prior; with ``tasks: pool`` they are drawn
(uniformly, with replacement) from the finite pool the run was trained on (the
environment's ``task_pool``, see :mod:`mesaprobe.envs.task_pool`).  A model that
memorised its pool scores better on pool tasks than on fresh ones: the gap is the
memorisation signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import polars as pl
import torch

from mesaprobe.baselines.mdp import PlansWithTask
from mesaprobe.envs.base import Environment
from mesaprobe.envs.bernoulli_bandit import BanditTransform
from mesaprobe.envs.linear_regression import ProjectedRegression
from mesaprobe.envs.prediction_transform import TransformedPrediction
from mesaprobe.envs.task_pool import TaskPool
from mesaprobe.errors import UserError
from mesaprobe.kinds import kind_of
from mesaprobe.probes.base import Probe
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError


@dataclass(frozen=True)
class AdaptationConfig:
    episodes: int = 2000
    """Held-out tasks played, one episode each."""
    policy: Literal["sample", "greedy"] = "sample"
    """How a trained model picks actions: sample from its policy, or take the most likely."""
    batch: int = 1000
    """Episodes played at once (memory bound only; results do not depend on it)."""
    horizon_factor: int = 1
    """Out of distribution: episodes this many times longer than trained (the time input
    keeps its trained scale and runs past 1)."""
    prior_alpha: float | None = None
    """Out of distribution: arms drawn from Beta(prior_alpha, prior_beta) instead of the trained prior."""
    prior_beta: float | None = None
    """See prior_alpha."""
    squeeze: tuple[float, float] | None = None
    """Out of distribution: arm probabilities mapped from [0, 1] into [low, high]."""
    permute_labels: bool = False
    """Out of distribution: arm labels (bandits) or symbols (sequences) permuted by one fixed
    random permutation. Under a label-symmetric prior fresh relabelled tasks have the
    prior's distribution (a control); with tasks: pool the pool's tasks are relabelled, so
    a model sees its memorised tasks in an alien language (Kirsch et al. 2022)."""
    switch_at: float | None = None
    """Out of distribution (restless): after this fraction of the episode every arm
    probability is drawn afresh."""
    project_inputs: bool = False
    """Out of distribution, regression only (Kirsch et al. 2022): every input x of the probed
    tasks is shown as Q x for one fixed random orthogonal matrix Q (the same for every agent
    and run), so a task w appears as Q w. Ridge stays exact (the prior is rotation invariant),
    and so fresh tasks keep their distribution: the control. With tasks: pool (the one
    out-of-distribution setting that combines with it) the pool's tasks appear in coordinates
    never trained on: a model that located memorised tasks loses its edge on them."""
    carry_memory: bool = True
    """In trials (trial_episodes > 1): whether the agent's memory carries across the episode
    boundaries of a trial (true, as trained) or is reset at each boundary (false; no effect
    on environments without trials)."""
    tasks: Literal["fresh", "pool"] = "fresh"
    """Which held-out tasks. fresh: new draws from the environment's prior. pool: draws
    from the pool of tasks the run was trained on (the environment's task_pool, the same
    pool for every architecture and baseline of one seed); without a task_pool the pool is
    the whole prior, so pool tasks are fresh draws too. The gap between the two is the
    memorisation signal. The exact Bayes-optimal baselines and the regret_bits reference
    stay Bayes-optimal for the prior, not for the pool (a model that memorised a small pool
    can beat them on it; dmmse is the pool's Bayes predictor for regression). Under a discrete
    prior (e.g. dependent_easy) fresh tasks can equal pool tasks. pool combines with the
    relabelling settings (permute_labels, project_inputs) only."""

    #: Left out of probe ids at their default (see Component.resolved): results recorded
    #: before the setting existed keep their ids and held-out tasks.
    id_neutral_defaults: ClassVar[tuple[str, ...]] = ("tasks", "project_inputs", "carry_memory")

    def validate(self) -> None:
        for name in ("episodes", "batch"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        self.transform.validate()
        if self.tasks == "pool" and self.transform not in (
            BanditTransform(),
            BanditTransform(permute_labels=True),
        ):
            raise SettingError(
                "tasks",
                "tasks: pool replays the training tasks; out-of-distribution settings "
                "(horizon_factor, prior_alpha, prior_beta, squeeze, switch_at) draw other tasks, "
                "so use them with tasks: fresh (permute_labels and project_inputs combine with pool)",
            )

    @property
    def transform(self) -> BanditTransform:
        """The environment transform these settings ask for (identity by default)."""
        return BanditTransform(
            horizon_factor=self.horizon_factor,
            prior_alpha=self.prior_alpha,
            prior_beta=self.prior_beta,
            squeeze=self.squeeze,
            permute_labels=self.permute_labels,
            switch_at=self.switch_at,
        )


class AdaptationProbe(Probe):
    """Per-step expected reward, regret and cumulative regret on held-out tasks."""

    Config: ClassVar[type] = AdaptationConfig
    serves: ClassVar[tuple[str, ...]] = ("bandit", "prediction", "regression", "mdp")

    @classmethod
    def not_applicable(cls, config: AdaptationConfig, kind: str) -> str | None:
        if (reason := super().not_applicable(config, kind)) is not None:
            return reason
        if not config.carry_memory and kind not in ("bandit", "mdp"):
            return "carry_memory applies to environments with trials (bandit and mdp) only"
        if kind == "mdp":
            if config.transform != BanditTransform() or config.project_inputs:
                return "out-of-distribution settings do not apply to mdp environments"
            return None
        if kind == "regression":
            if config.transform != BanditTransform():
                return "horizon_factor, prior_alpha, prior_beta, squeeze, permute_labels and switch_at do not apply to regression"
            return None
        if config.project_inputs:
            return "project_inputs applies to regression environments only"
        if kind != "bandit":
            bandit_only = [name for name in ("prior_alpha", "squeeze") if getattr(config, name) is not None]
            if bandit_only:
                return f"{bandit_only[0]} applies to bandit environments only"
        return None

    @property
    def plays_pool(self) -> bool:
        return self.config.tasks == "pool"

    @property
    def policy(self) -> Literal["sample", "greedy"]:
        return self.config.policy

    def environment(self, trained: Environment) -> Environment:
        """The environment this probe plays: the trained one, transformed as configured.

        ``trained`` draws its tasks from the run's pool when this probe asks for
        ``tasks: pool`` (see :func:`mesaprobe.jobs.probed_environment`), from the prior otherwise.
        Relabelled pool tasks are the pool drawn through the relabelled environment: the same
        draws (the permutation is applied after them), seen in an alien language.
        """
        config = self.config
        reason = self.not_applicable(config, trained.kind)
        if reason is not None:
            raise UserError(f"probe settings: {reason}")
        if isinstance(trained, TaskPool) and config.permute_labels:
            return TaskPool(self.environment(trained.environment), trained.size, trained.key)
        if trained.kind == "mdp":
            return trained
        if trained.kind == "regression":
            return ProjectedRegression(trained) if config.project_inputs else trained
        if trained.kind == "bandit":
            if config.transform == BanditTransform():
                return trained
            return trained.transformed(config.transform)
        if (config.horizon_factor, config.permute_labels, config.switch_at) == (1, False, None):
            return trained
        return TransformedPrediction(trained, config.horizon_factor, config.permute_labels, config.switch_at)

    def run(
        self,
        agent,
        environment: Environment,
        heldout_key: tuple,
        agent_key: tuple,
        device: torch.device | str = "cpu",
    ) -> pl.DataFrame:
        """Play ``config.episodes`` held-out episodes of ``environment`` (already transformed by
        :meth:`environment`); long table (episode, step, metric, value).

        ``heldout_key`` names the task and reward-luck streams (shared by all agents at
        one seed); ``agent_key`` names the agent's own action-sampling stream.
        """
        task_generator, luck_generator, action_generator = heldout_streams(heldout_key, agent_key, device)
        kind = kind_of(environment)
        if not self.config.carry_memory and environment.trial_episodes > 1:
            agent = MemoryResetAtEpisodes(agent, environment)
        frames = []
        with torch.inference_mode():
            for start in range(0, self.config.episodes, self.config.batch):
                count = min(self.config.batch, self.config.episodes - start)
                tasks = environment.sample_tasks(count, task_generator, device)
                metrics = kind.step_metrics(agent, environment, tasks, luck_generator, action_generator)
                frames.append(long_table(metrics, first_episode=start))
        return pl.concat(frames)


@dataclass(frozen=True)
class ResettingState:
    inner: Any
    """The wrapped agent's state."""
    step: int
    """Steps played so far in the trial."""
    batch: int
    horizon: int
    device: torch.device | str


class MemoryResetAtEpisodes(PlansWithTask):
    """An agent whose memory is reset at every episode boundary of a trial (``carry_memory: false``):
    at the first step of each episode it starts again from its initial state and sees what the
    environment's reset shows (the previous episode's last action and reward are memory too)."""

    def __init__(self, agent: Any, environment: Environment):
        self.agent = agent
        self.environment = environment

    def for_tasks(self, tasks: Any) -> MemoryResetAtEpisodes:
        if isinstance(self.agent, PlansWithTask):
            return MemoryResetAtEpisodes(self.agent.for_tasks(tasks), self.environment)
        return self

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> ResettingState:
        return ResettingState(self.agent.initial_state(batch, horizon, device), 0, batch, horizon, device)

    def act(self, state: ResettingState, observation: torch.Tensor, generator: torch.Generator):
        inner = state.inner
        if state.step > 0 and state.step % self.environment.episode_length == 0:
            inner = self.agent.initial_state(state.batch, state.horizon, state.device)
            observation = self.environment.episode_start_observation(observation)
        inner, action = self.agent.act(inner, observation, generator)
        return ResettingState(inner, state.step + 1, state.batch, state.horizon, state.device), action


def heldout_streams(
    heldout_key: tuple, agent_key: tuple, device: torch.device | str
) -> tuple[torch.Generator, torch.Generator, torch.Generator]:
    """(tasks, luck, actions) generators of a probe: the first two named by ``heldout_key``
    and shared by every agent at one seed, the last by ``agent_key``, the agent's own."""
    return (
        make_generator("heldout-tasks", *heldout_key, device=device),
        make_generator("heldout-luck", *heldout_key, device=device),
        make_generator("actions", *agent_key, device=device),
    )


def long_table(metrics: dict[str, torch.Tensor], first_episode: int = 0) -> pl.DataFrame:
    """(B, T) tensors per metric (in the family's order) -> rows (episode, step, metric, value)."""
    batch, horizon = next(iter(metrics.values())).shape
    episode = torch.arange(first_episode, first_episode + batch).repeat_interleave(horizon)
    step = torch.arange(1, horizon + 1).repeat(batch)
    frames = [
        pl.DataFrame(
            {
                "episode": episode.numpy(),
                "step": step.numpy(),
                "metric": name,
                "value": metrics[name].detach().to("cpu", torch.float64).reshape(-1).numpy(),
            }
        )
        for name in metrics
    ]
    return pl.concat(frames).with_columns(pl.col("episode", "step").cast(pl.Int64))
