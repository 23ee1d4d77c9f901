"""The seed essay's world where "all these parameters drift": segments of different weather laws.

Before the first token, and before every later token with probability ``hazard``, a
new segment starts: its family is drawn uniformly from ``families`` and its task
from that family's prior, and the segment is a fresh episode of that family (Markov
and context-tree histories restart sun-padded, patterns restart at phase 0, streaks
restart with a uniform first token).  So the weather is sometimes memoryless,
sometimes sticky, sometimes a repeating pattern, and it changes without warning.

The Bayes predictor is exact: a change-point recursion (as in ``switching``) over
pairs (segment start s, family f), where the predictive of each pair is family f's
own exact Bayes filter restarted at s.  It runs one filter per family for every
possible start, so step t costs O(t) filter updates per episode (O(T^2) in all) and
memory grows with t; keep horizons to a few hundred steps.

The oracle knows the change points, each segment's family and task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from mesaprobe.envs.sequences.base import (
    PROBABILITY,
    PredictionEnvironment,
    cat_rows,
    check_alphabet,
    check_probability,
    combine,
    normalise,
    where_rows,
)
from mesaprobe.envs.sequences.iid import IID
from mesaprobe.envs.sequences.markov import Markov
from mesaprobe.envs.sequences.periodic import Periodic
from mesaprobe.envs.sequences.streak import Streak
from mesaprobe.envs.sequences.switching import sample_change_points
from mesaprobe.envs.sequences.vom import VariableOrderMarkov
from mesaprobe.errors import SpecError
from mesaprobe.settings import SettingError, build

#: Families a segment can follow: the stationary ones (each with an exact restartable filter).
SEGMENT_FAMILIES: dict[str, type[PredictionEnvironment]] = {
    "iid": IID,
    "markov": Markov,
    "streak": Streak,
    "periodic": Periodic,
    "vom": VariableOrderMarkov,
}


@dataclass(frozen=True)
class DriftingConfig:
    symbols: int = 2
    """Alphabet size K (2: 0 = sun, 1 = rain), shared by every segment family."""
    horizon: int = 100
    """Tokens per episode (the Bayes predictor costs O(horizon^2) per episode)."""
    hazard: float = 0.02
    """Probability that a new segment starts before each token after the first (mean segment
    length 1 / hazard)."""
    families: tuple[str, ...] = ("iid", "markov", "periodic")
    """Families a segment can follow, each equally likely: any of iid, markov, streak, periodic, vom."""
    components: Any = None
    """Settings of the segment families: a mapping from a name in ``families`` to that family's
    settings (e.g. {markov: {order: 2}}); unnamed settings keep the family's defaults, and
    symbols and horizon are always this environment's."""

    def validate(self) -> None:
        check_alphabet(self)
        check_probability(self, "hazard")
        if not self.families:
            raise SettingError("families", "expected at least one family")
        for name in self.families:
            if name not in SEGMENT_FAMILIES:
                valid = ", ".join(SEGMENT_FAMILIES)
                raise SettingError("families", f"unknown segment family {name!r}; expected one of: {valid}")
        if len(set(self.families)) != len(self.families):
            raise SettingError("families", f"expected distinct families, got {list(self.families)}")
        if self.components is not None and not isinstance(self.components, Mapping):
            raise SettingError("components", "expected a mapping from family name to settings")
        for name in self.components or {}:
            if name not in self.families:
                raise SettingError(f"components.{name}", f"not one of families: {', '.join(self.families)}")
        for name in self.families:
            self.component_config(name)

    def component_config(self, name: str):
        """The settings of segment family ``name`` (its Config), checked."""
        overrides = (self.components or {}).get(name) or {}
        if not isinstance(overrides, Mapping):
            raise SettingError(f"components.{name}", "expected a mapping of settings")
        for key in ("symbols", "horizon"):
            if key in overrides:
                raise SettingError(f"components.{name}.{key}", "set it on the drifting environment itself")
        settings = {**overrides, "symbols": self.symbols, "horizon": self.horizon}
        try:
            return build(SEGMENT_FAMILIES[name].Config, settings, key="", file="")
        except SpecError as error:
            raise SettingError(f"components.{name}.{error.key}", error.problem) from None


@dataclass(frozen=True)
class DriftingTasks:
    changes: Tensor
    """(B, T) true where a segment starts (always at t = 0)."""
    family: Tensor
    """(B, T) index into ``families`` of the segment holding each step."""
    components: tuple
    """Per family, its tasks with every tensor (B, T, ...): entry [b, s] is the task of a segment
    of that family starting at s."""


@dataclass(frozen=True)
class DriftingOracleState:
    tasks: DriftingTasks
    components: tuple
    """Per family, its oracle state (B rows) for the current segment's task."""
    step: int
    """Tokens seen so far."""


@dataclass(frozen=True)
class SegmentPosterior:
    weights: Tensor
    """(B, S, F) posterior of (current segment start s, family f) before the next token."""
    components: tuple
    """Per family, its Bayes state with S * B rows, row s * B + b restarted at step s of episode b."""


class Drifting(PredictionEnvironment):
    Config: ClassVar[type] = DriftingConfig

    def __init__(self, config: DriftingConfig):
        super().__init__(config)
        self.segment_families: tuple[PredictionEnvironment, ...] = tuple(
            SEGMENT_FAMILIES[name](config.component_config(name)) for name in config.families
        )

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> DriftingTasks:
        horizon, count = self.horizon, len(self.segment_families)
        changes, segment_start = sample_change_points(n, horizon, self.config.hazard, generator, device)
        fresh = torch.randint(count, (n, horizon), generator=generator, device=device)
        family = fresh.gather(1, segment_start)
        components = tuple(
            combine(
                lambda x: x.view(n, horizon, *x.shape[1:]),  # (B * T, ...) -> (B, T, ...)
                environment.sample_tasks(n * horizon, generator, device),
            )
            for environment in self.segment_families
        )
        return DriftingTasks(changes=changes, family=family, components=components)

    # Oracle: every family's oracle follows the current segment's task, restarted at each change.
    def segment_oracles(self, tasks: DriftingTasks, step: int) -> tuple:
        return tuple(
            environment.oracle_state(combine(lambda x: x[:, step], component))
            for environment, component in zip(self.segment_families, tasks.components, strict=True)
        )

    def oracle_state(self, tasks: DriftingTasks) -> DriftingOracleState:
        return DriftingOracleState(tasks=tasks, components=self.segment_oracles(tasks, 0), step=0)

    def oracle_predictive(self, state: DriftingOracleState) -> Tensor:
        probs = torch.stack(
            [
                environment.oracle_predictive(component)
                for environment, component in zip(self.segment_families, state.components, strict=True)
            ]
        )  # (F, B, K)
        family = state.tasks.family[:, state.step]
        return probs[family, torch.arange(family.shape[0], device=family.device)]

    def oracle_update(self, state: DriftingOracleState, token: Tensor) -> DriftingOracleState:
        components = tuple(
            environment.oracle_update(component, token)
            for environment, component in zip(self.segment_families, state.components, strict=True)
        )
        step = state.step + 1
        if step < state.tasks.changes.shape[1]:
            restart = state.tasks.changes[:, step]
            fresh = self.segment_oracles(state.tasks, step)
            components = tuple(
                where_rows(restart, new, old) for new, old in zip(fresh, components, strict=True)
            )
        return DriftingOracleState(tasks=state.tasks, components=components, step=step)

    # Bayes: change-point recursion over (segment start, family).
    def prior_state(self, batch: int, device: torch.device | str) -> SegmentPosterior:
        count = len(self.segment_families)
        return SegmentPosterior(
            weights=torch.full((batch, 1, count), 1.0 / count, dtype=PROBABILITY, device=device),
            components=tuple(environment.prior_state(batch, device) for environment in self.segment_families),
        )

    def segment_predictives(self, state: SegmentPosterior) -> Tensor:
        """(S, B, F, K) each family's Bayes predictive restarted at each segment start s."""
        batch, starts, _ = state.weights.shape
        return torch.stack(
            [
                environment.posterior_predictive(component).view(starts, batch, self.symbols)
                for environment, component in zip(self.segment_families, state.components, strict=True)
            ],
            dim=2,
        )

    def posterior_predictive(self, state: SegmentPosterior) -> Tensor:
        return torch.einsum("bsf,sbfk->bk", state.weights, self.segment_predictives(state))

    def posterior_update(self, state: SegmentPosterior, token: Tensor) -> SegmentPosterior:
        batch, starts, count = state.weights.shape
        predictives = self.segment_predictives(state)
        index = token[None, :, None, None].expand(starts, batch, count, 1)
        likelihood = predictives.gather(3, index).squeeze(3).permute(1, 0, 2)  # (B, S, F)
        weights = normalise(state.weights * likelihood, dim=(1, 2))
        repeated = token.repeat(starts)  # (S * B,), row s * B + b holds token b
        components = tuple(
            cat_rows(
                environment.posterior_update(component, repeated),
                environment.prior_state(batch, token.device),
            )
            for environment, component in zip(self.segment_families, state.components, strict=True)
        )
        # Next step: the segment goes on, or a new one of any family starts (the new last start).
        hazard = self.config.hazard
        fresh = (hazard / count) * weights.sum(dim=(1, 2))[:, None, None].expand(batch, 1, count)
        return SegmentPosterior(
            weights=torch.cat([(1.0 - hazard) * weights, fresh], dim=1), components=components
        )

    def filtered_run_lengths(self, state: SegmentPosterior) -> Tensor:
        """(B, S - 1) posterior, given the token x_t just seen, of the run length before it
        (r = 0: x_t started a segment; a segment starting at s has r = t - s), summed over
        families, read from the state that token produced.

        :meth:`posterior_update` stores the (start, family) posterior scaled by 1 - hazard,
        followed by the new start.
        """
        hazard = self.config.hazard
        if hazard < 1.0:
            starts = state.weights[:, :-1].sum(dim=2) / (1.0 - hazard)  # (B, S - 1): start s = 0 .. t
            return starts.flip(1)
        certain = torch.zeros_like(state.weights[:, :-1, 0])  # every token starts a segment
        certain[:, 0] = 1.0
        return certain
