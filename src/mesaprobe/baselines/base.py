"""The contract every baseline follows.

A baseline is a policy or predictor that is not trained, played on the same held-out
tasks as the frozen runs.  It is built as ``cls(config, environment)`` (plus ``pool=``,
the seed's training tasks, when it ``needs_task_pool``) and then behaves like what the
environment's kind asks of an agent: ``initial_state(batch, horizon, device)`` and
``act(state, observation, generator) -> (state, action)`` for acting kinds (bandits, the
commitment game), ``predict(environment, tasks, tokens) -> probs`` for prediction and
``predict(environment, tasks, examples) -> predictions`` for regression.  A baseline is one
class with this base and one ``register`` line in :mod:`mesaprobe.baselines`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Baseline:
    """Base of all baselines; a subclass sets ``Config`` and ``serves``."""

    #: The baseline's settings dataclass (what a study may set under ``baselines.<name>``).
    Config: ClassVar[type]
    #: Filled in by the registry.
    registered_name: ClassVar[str]
    #: Environment kinds it plays; the plan gives it no jobs on other environments.
    serves: ClassVar[tuple[str, ...]]
    #: Whether it is defined by the run's finite task pool (built with ``pool=``); the plan
    #: skips it, saying :attr:`without_task_pool`, on an environment without a ``task_pool``.
    needs_task_pool: ClassVar[bool] = False
    #: Why it is skipped where there is no task pool (baselines that need one).
    without_task_pool: ClassVar[str] = ""
    #: Environment kinds on which it is the exact optimum (the Bayes-optimal policy or
    #: predictor) for tasks drawn from the environment's prior: the reference of regret
    #: ratios and paired differences (:mod:`mesaprobe.analysis.differences`).
    optimal_for: ClassVar[tuple[str, ...]] = ()
    #: Likewise for probes that replay the run's training pool (``tasks: pool``).
    optimal_for_pool: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def skip_reason(cls, config: Any, environment: Any) -> str | None:
        """Why it cannot play ``environment`` as probed (None: it can), e.g. an exact dynamic
        programme too large; the plan skips it with this note."""
        return None

    def check(self, environment: Any) -> None:
        """ValueError unless it plays ``environment``'s kind."""
        if environment.kind not in self.serves:
            raise ValueError(
                f"{type(self).__name__} plays {', '.join(self.serves)} environments, not {environment.kind!r}"
            )
