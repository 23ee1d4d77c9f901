"""What every environment family provides.

An environment is built from its family's frozen ``Config`` and is itself
stateless: tasks and episode state are small frozen dataclasses of tensors with a
leading batch dimension, and ``reset``/``step`` return new state instead of
mutating it.  All episodes of a batch move in lockstep, so the only Python loop is
over time.

Reinforcement-learning families (``kind`` in :data:`ACTING_KINDS`: ``"bandit"``,
``"commitment"`` whose reward comes at the end of the episode, and ``"mdp"``) provide::

    sample_tasks(n, generator, device) -> tasks
    reset(tasks) -> (state, observation)              # observation: (B, observation_size)
    step(state, action, generator) -> (state, observation, reward, done)
    expected_reward(state, action) -> (B,)            # regret without sampling noise
    best_expected_reward(state) -> (B,)
    transformed(transform) -> Environment             # out-of-distribution variant (bandits)

Trials: a family with a ``trial_episodes`` setting (K, default 1) plays one task for K
episodes of ``episode_length`` steps as one sequence of ``horizon = K x episode_length``
steps.  At each episode boundary the family resets its episode state (not its task) and
marks the boundary in the observation (a done flag), so training, probes and baselines
see one long sequence whose memory carries across episodes; ``episode_length`` says where
the boundaries are, and ``episode_start_observation(observation)`` turns the observation at a
boundary into what ``reset`` would have shown (an agent whose memory is reset there sees
no trace of the previous episode).

The other kinds are predicted, not played: ``"prediction"`` (next-token families, see
:mod:`mesaprobe.envs.sequences.base`) and ``"regression"`` (in-context linear regression,
see :mod:`mesaprobe.envs.linear_regression`).

An environment may declare its last ``private_size`` observation columns private:
they reach the model's decision at the current step only, never the history a
Transformer attends to (a recurrent model takes them as input like the rest).
"""

from __future__ import annotations

from typing import ClassVar

#: Kinds of environment played by acting agents (trained with a2c/ppo); the others are predicted.
ACTING_KINDS = ("bandit", "commitment", "mdp")


class Environment:
    """Base of all environment families; see the module docstring for the contract."""

    #: What kind of problem this is: a name in :data:`mesaprobe.kinds.KINDS`, whose entry says
    #: what the kind decides (metrics, model outputs, agents); algorithms, probes and baselines
    #: declare which kinds they serve.
    kind: ClassVar[str]
    #: The family's settings dataclass (what a study may set under ``environments.<name>``).
    Config: ClassVar[type]
    #: Filled in by the registry.
    registered_name: ClassVar[str]
    #: Observation columns (the last ones) that are private to the current step.
    private_size: int = 0
    #: False where an episode's reward depends on the other episodes of its batch (the
    #: commitment game's adversary learns from them): seeds trained together then step
    #: their own blocks of rows apart (:class:`mesaprobe.train.stacked.SeedEnvironments`).
    rows_independent: ClassVar[bool] = True

    def __init__(self, config):
        self.config = config

    @property
    def horizon(self) -> int:
        """Steps of one sequence (a trial of ``trial_episodes`` episodes where a family has trials)."""
        return self.config.horizon

    @property
    def episode_length(self) -> int:
        """Steps of one episode: the whole sequence unless the family plays trials."""
        return self.horizon

    @property
    def trial_episodes(self) -> int:
        """Episodes of one sequence: 1 unless the family plays trials (its ``trial_episodes``)."""
        return 1
