"""Variable-order Markov weather from a random context tree; Bayes = Context Tree Weighting.

A task is a context tree of depth at most ``depth``: starting at the root (the empty
context), each node at depth d < depth is a leaf with probability
``leaf_probability`` and otherwise splits into K children, one per value of the
token d + 1 steps back; nodes at ``depth`` are always leaves.  Every leaf has its
own next-symbol distribution ~ Dirichlet(prior_counts) (Beta(1/2, 1/2) by default).
The next token is drawn from the leaf reached by reading the history backwards.
Before the first ``depth`` tokens the history is padded with sun (symbol 0).

This prior is exactly the one Context Tree Weighting (Willems, Shtarkov and
Tjalkens 1995) mixes over, with the node weight P_w = w P_e + (1 - w) prod P_w(child)
and Dirichlet (KT for 1/2) estimators P_e, so CTW is the exact Bayes predictor.
The filter keeps, for every node, its counts and log(P_e / prod_children P_w); an
update touches only the depth + 1 nodes on the current context path.

Nodes are numbered by depth, then by context: the node of context (c_1 .. c_d),
c_1 the most recent token, is offset(d) + sum_i c_i K^(i - 1), offset(d) = sum_{j<d} K^j.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mesaprobe.envs.sequences.base import (
    PROBABILITY,
    PredictionEnvironment,
    check_alphabet,
    check_prior_counts,
    check_probability,
    dirichlet_concentration,
    sample_dirichlet,
    uniform_open,
)
from mesaprobe.settings import SettingError

#: Most deepest-level contexts (symbols ** depth); tables hold about K/(K-1) times as many nodes.
MAX_LEAVES = 1024


@dataclass(frozen=True)
class VariableOrderMarkovConfig:
    symbols: int = 2
    """Alphabet size K (2: 0 = sun, 1 = rain)."""
    horizon: int = 100
    """Tokens per episode."""
    depth: int = 3
    """Deepest context length D of the tree; symbols ** depth may be at most 1024."""
    leaf_probability: float = 0.5
    """Probability that a node above the deepest level is a leaf (CTW's weight, 1/2 in the
    original); 1 gives the iid family, 0 a full order-D chain."""
    prior_counts: tuple[float, ...] = (0.5,)
    """Dirichlet concentration of each leaf's distribution, one value per symbol (sun, rain, ...)
    or one value for all; (0.5,) makes every node estimator KT."""

    def validate(self) -> None:
        check_alphabet(self)
        if self.depth < 0:
            raise SettingError("depth", f"expected a non-negative depth, got {self.depth}")
        if self.symbols**self.depth > MAX_LEAVES:
            raise SettingError(
                "depth",
                f"symbols ** depth = {self.symbols**self.depth} deepest contexts, more than {MAX_LEAVES}",
            )
        check_probability(self, "leaf_probability")
        check_prior_counts(self)


@dataclass(frozen=True)
class ContextTreeTasks:
    leaf: Tensor
    """(B, nodes) true where the node is a leaf if reached (always at the deepest level)."""
    probs: Tensor
    """(B, nodes, K) next-symbol distribution of each node (used where it is the leaf reached)."""


@dataclass(frozen=True)
class ContextTreeState:
    counts: Tensor
    """(B, nodes, K) symbols seen in each node's context."""
    log_ratio: Tensor
    """(B, nodes) log(P_e / prod over children of P_w) for every node above the deepest level."""
    recent: Tensor
    """(B, depth) the last ``depth`` tokens, most recent first (sun-padded)."""


@dataclass(frozen=True)
class ContextTreeOracleState:
    tasks: ContextTreeTasks
    recent: Tensor
    """(B, depth) the last ``depth`` tokens, most recent first (sun-padded)."""


class VariableOrderMarkov(PredictionEnvironment):
    Config: ClassVar[type] = VariableOrderMarkovConfig

    def __init__(self, config: VariableOrderMarkovConfig):
        super().__init__(config)
        symbols, depth = config.symbols, config.depth
        self.offsets = torch.tensor([sum(symbols**j for j in range(d)) for d in range(depth + 1)])  # (D + 1,)
        self.nodes = int(self.offsets[-1]) + symbols**depth
        self.digit_weights = symbols ** torch.arange(depth)  # (D,) K^(i - 1) for c_i
        leaf_probability = torch.tensor(config.leaf_probability, dtype=PROBABILITY)
        self.log_prior_odds = (leaf_probability.log() - (1.0 - leaf_probability).log()).item()

    def concentration(self, device) -> Tensor:
        return dirichlet_concentration(self.config.prior_counts, self.symbols, device)

    def path(self, recent: Tensor) -> Tensor:
        """(B, D + 1) nodes of the current context, root first."""
        device = recent.device
        partial = (recent * self.digit_weights.to(device)).cumsum(dim=1)  # (B, D)
        partial = torch.cat([recent.new_zeros(recent.shape[0], 1), partial], dim=1)  # (B, D + 1)
        return self.offsets.to(device)[None, :] + partial

    def shift(self, recent: Tensor, token: Tensor) -> Tensor:
        return torch.cat([token[:, None], recent], dim=1)[:, : self.config.depth]

    def start_recent(self, batch: int, device) -> Tensor:
        return torch.zeros(batch, self.config.depth, dtype=torch.long, device=device)

    def sample_tasks(
        self, n: int, generator: torch.Generator, device: torch.device | str
    ) -> ContextTreeTasks:
        leaf = uniform_open((n, self.nodes), generator, device) <= self.config.leaf_probability
        leaf[:, int(self.offsets[-1]) :] = True
        probs = sample_dirichlet(self.concentration(device), (n, self.nodes), generator)
        return ContextTreeTasks(leaf=leaf, probs=probs)

    def prior_state(self, batch: int, device: torch.device | str) -> ContextTreeState:
        return ContextTreeState(
            counts=torch.zeros(batch, self.nodes, self.symbols, dtype=PROBABILITY, device=device),
            log_ratio=torch.zeros(batch, self.nodes, dtype=PROBABILITY, device=device),
            recent=self.start_recent(batch, device),
        )

    def path_predictives(self, state: ContextTreeState) -> tuple[Tensor, Tensor, Tensor]:
        """(path, estimates, weighted): the context path (B, D + 1), each path node's own estimate
        P_e(x | node) (B, D + 1, K) and its weighted predictive P_w(x | node) (B, D + 1, K)."""
        path = self.path(state.recent)
        depth = self.config.depth
        counts = state.counts.gather(1, path[:, :, None].expand(-1, -1, self.symbols))  # (B, D + 1, K)
        pseudo = counts + self.concentration(counts.device)
        estimates = pseudo / pseudo.sum(dim=2, keepdim=True)
        # Posterior probability that each node above the deepest level is where the tree stops.
        stop = torch.sigmoid(state.log_ratio.gather(1, path[:, :depth]) + self.log_prior_odds)  # (B, D)
        weighted = [estimates[:, depth]]
        for d in range(depth - 1, -1, -1):
            weighted.append(stop[:, d, None] * estimates[:, d] + (1.0 - stop[:, d, None]) * weighted[-1])
        return path, estimates, torch.stack(weighted[::-1], dim=1)

    def posterior_predictive(self, state: ContextTreeState) -> Tensor:
        return self.path_predictives(state)[2][:, 0]

    def posterior_update(self, state: ContextTreeState, token: Tensor) -> ContextTreeState:
        path, estimates, weighted = self.path_predictives(state)
        depth = self.config.depth
        index = token[:, None, None].expand(-1, depth + 1, 1)
        estimate_seen = estimates.gather(2, index).squeeze(2)  # (B, D + 1)
        weighted_seen = weighted.gather(2, index).squeeze(2)  # (B, D + 1)
        # P_e gains the node's own estimate; the product over children gains the child's P_w ratio.
        delta = estimate_seen[:, :depth].log() - weighted_seen[:, 1:].log()  # (B, D)
        seen = torch.nn.functional.one_hot(token, self.symbols).to(PROBABILITY)  # (B, K)
        return ContextTreeState(
            counts=state.counts.scatter_add(
                1, path[:, :, None].expand(-1, -1, self.symbols), seen[:, None, :].expand(-1, depth + 1, -1)
            ),
            log_ratio=state.log_ratio.scatter_add(1, path[:, :depth], delta),
            recent=self.shift(state.recent, token),
        )

    def oracle_state(self, tasks: ContextTreeTasks) -> ContextTreeOracleState:
        return ContextTreeOracleState(
            tasks=tasks, recent=self.start_recent(tasks.leaf.shape[0], tasks.leaf.device)
        )

    def oracle_predictive(self, state: ContextTreeOracleState) -> Tensor:
        path = self.path(state.recent)
        stops = state.tasks.leaf.gather(1, path)  # (B, D + 1), last column always true
        first_leaf = stops.long().argmax(dim=1)  # first true along the path
        node = path.gather(1, first_leaf[:, None])  # (B, 1)
        return state.tasks.probs.gather(1, node[:, :, None].expand(-1, -1, self.symbols)).squeeze(1)

    def oracle_update(self, state: ContextTreeOracleState, token: Tensor) -> ContextTreeOracleState:
        return ContextTreeOracleState(tasks=state.tasks, recent=self.shift(state.recent, token))
