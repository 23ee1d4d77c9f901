"""What every environment family provides.

An environment is built from its family's frozen ``Config`` and is itself
stateless: tasks and episode state are small frozen dataclasses of tensors with a
leading batch dimension, and ``reset``/``step`` return new state instead of
mutating it.  All episodes of a batch move in lockstep, so the only Python loop is
over time.

Reinforcement-learning families (``kind = "bandit"``) provide::

    sample_tasks(n, generator, device) -> tasks
    reset(tasks) -> (state, observation)              # observation: (B, observation_size)
    step(state, action, generator) -> (state, observation, reward, done)
    expected_reward(state, action) -> (B,)            # regret without sampling noise
    best_expected_reward(state) -> (B,)
    transformed(transform) -> Environment             # out-of-distribution variant
"""

from __future__ import annotations

from typing import ClassVar


class Environment:
    """Base of all environment families; see the module docstring for the contract."""

    #: What kind of problem this is; probes and baselines declare which kinds they serve.
    kind: ClassVar[str]
    #: The family's settings dataclass (what a study may set under ``environments.<name>``).
    Config: ClassVar[type]
    #: Filled in by the registry.
    registered_name: ClassVar[str]

    def __init__(self, config):
        self.config = config

    @property
    def horizon(self) -> int:
        return self.config.horizon
