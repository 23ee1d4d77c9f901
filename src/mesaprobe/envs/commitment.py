"""Kosoy's commitment game: emit y, then z, and win only if y = f(z).

An episode is ``2 n`` binary actions: first the n bits of y, then the n bits of z
(most significant bit first).  The agent wins if y = f(z) for a fixed function f of
n-bit strings (see :data:`FUNCTIONS`).  A policy with a recurrent state can draw z
at random, keep it in its state, emit f(z) and then z; a policy that only re-reads
the history has to invert f, unless the random bits it drew are in the history.

Fresh random bits come with every step (``noise_bits`` of them, n by default):

* ``noise: private``: the bits are the last ``noise_bits`` observation columns and
  the environment declares them private (``private_size``): a Transformer gets them
  in its output head only, never in the history it attends to; a recurrent model
  gets them as input like everything else (its state may keep them);
* ``noise: history``: the same bits, as ordinary observations (Kosoy's fix);
* ``noise: none``: no bits; the only randomness is the agent's own action sampling.

The reward, given at the last step, is ``success - penalty * (a - 2^-n) / (1 - 2^-n)``,
where ``success`` is 1 if y = f(z) and ``a`` is the probability that an adversary
guesses the whole of z.  A uniformly random z has a = 2^-n on average and costs
nothing; a constant z costs ``penalty``; a z with one bit of entropy about half of it.
Adversaries (``adversary``):

* ``marginal``: draws its guess from the frequencies of z over the *other* episodes
  of the batch (``a`` is that frequency of the episode's own z): punishes a z that
  does not vary between episodes;
* ``conditional``: the same among the other episodes with the same y (a predictor of
  z from y; no such episode: a uniform guess); for one-to-one f every successful
  policy has a z predictable from y, so this adversary only tells policies apart for
  many-to-one f;
* ``fixed``: a fixed guess (``guess``, default all zeros); weak on purpose: a
  constant z other than the guess earns ``penalty / (2^n - 1)`` more than random z.

An episode's own z is independent of the other episodes' under a uniformly random
policy, so the adversary's draw equals it with probability exactly 2^-n: the optimal
policy's expected reward is exactly 1 against the marginal adversary.
The adversary guesses z whole, not bit by bit: a z that is 0000 or 1111 with equal
odds agrees with a per-bit guess half of the time, like a random z, yet has one bit of
entropy; trained agents find such a z when the penalty counts bits.

Observations: one-hot previous action (zeros at the first step), one-hot position
``t`` of the action about to be taken (the phase: y for t < n, z after), then the
noise bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from mesaprobe.envs.base import Environment
from mesaprobe.registry import Registry
from mesaprobe.seeding import make_generator
from mesaprobe.settings import SettingError

#: Functions f of n-bit strings, each built as a lookup table ``(2**n,)`` of codes.
FUNCTIONS: Registry = Registry("commitment function")

#: Most bits a function may take (its table has 2**bits entries).
MAX_BITS = 16


@dataclass(frozen=True)
class CommitmentConfig:
    bits: int = 4
    """n: bits of y and of z (an episode is 2 n actions)."""
    function: str = "identity"
    """f, from the registry: identity, xor_mask, gf2_linear, modmul, random_table, discrete_exp."""
    rank: int | None = None
    """gf2_linear only: rank of the matrix over GF(2) (default n - 1: two-to-one)."""
    function_seed: int = 0
    """Draws the fixed mask, matrix, multiplier or table of f."""
    noise: Literal["private", "history", "none"] = "private"
    """Where the fresh random bits of each step go (see the module docstring)."""
    noise_bits: int | None = None
    """Fresh random bits per step (default n)."""
    adversary: Literal["marginal", "conditional", "fixed"] = "marginal"
    """Who guesses z for the predictability penalty (see the module docstring)."""
    penalty: float = 1.0
    """Weight of the predictability penalty."""
    guess: int = 0
    """fixed adversary only: the guessed z, as an integer code."""

    @property
    def horizon(self) -> int:
        return 2 * self.bits

    @property
    def noise_size(self) -> int:
        if self.noise == "none":
            return 0
        return self.bits if self.noise_bits is None else self.noise_bits

    def validate(self) -> None:
        if not 1 <= self.bits <= MAX_BITS:
            raise SettingError("bits", f"expected 1 to {MAX_BITS} bits, got {self.bits}")
        if self.function not in FUNCTIONS:
            raise SettingError(
                "function", f"unknown function {self.function!r}; expected one of: {', '.join(FUNCTIONS)}"
            )
        if self.rank is not None:
            if self.function != "gf2_linear":
                raise SettingError("rank", "rank is only used with function: gf2_linear")
            if not 1 <= self.rank <= self.bits:
                raise SettingError("rank", f"expected a rank from 1 to bits ({self.bits}), got {self.rank}")
        if self.noise_bits is not None and (self.noise == "none" or self.noise_bits < 1):
            raise SettingError("noise_bits", "expected a positive count, and noise: private or history")
        if self.penalty < 0:
            raise SettingError("penalty", f"expected a non-negative weight, got {self.penalty}")
        if not 0 <= self.guess < 2**self.bits:
            raise SettingError("guess", f"expected a code from 0 to {2**self.bits - 1}, got {self.guess}")
        if self.guess and self.adversary != "fixed":
            raise SettingError("guess", "guess is only used with adversary: fixed")


# --------------------------------------------------------------------------- functions


def gf2_rank(matrix: Tensor) -> int:
    """Rank over GF(2) of a 0/1 matrix, by Gaussian elimination."""
    rows = matrix.clone().to(torch.uint8) % 2
    rank = 0
    for column in range(rows.shape[1]):
        pivots = (rows[rank:, column] == 1).nonzero()
        if len(pivots) == 0:
            continue
        pivot = rank + int(pivots[0])
        rows[[rank, pivot]] = rows[[pivot, rank]]
        below = rows[:, column].clone()
        below[rank] = 0
        rows ^= below[:, None] * rows[rank][None, :]
        rank += 1
        if rank == rows.shape[0]:
            break
    return rank


def bits_of(codes: Tensor, bits: int) -> Tensor:
    """(..., bits) 0/1 digits of integer ``codes``, most significant first."""
    shifts = torch.arange(bits - 1, -1, -1, device=codes.device)
    return (codes[..., None] >> shifts) & 1


def codes_of(digits: Tensor) -> Tensor:
    """Integer codes of (..., bits) 0/1 digits, most significant first (inverse of :func:`bits_of`)."""
    bits = digits.shape[-1]
    weights = 2 ** torch.arange(bits - 1, -1, -1, device=digits.device)
    return (digits.long() * weights).sum(dim=-1)


def _random_full_rank(rows: int, columns: int, generator: torch.Generator) -> Tensor:
    while True:
        matrix = torch.randint(0, 2, (rows, columns), generator=generator)
        if gf2_rank(matrix) == min(rows, columns):
            return matrix


@FUNCTIONS.register("identity")
def identity_table(config: CommitmentConfig, generator: torch.Generator) -> Tensor:
    """f(z) = z: the control, trivial to invert."""
    return torch.arange(2**config.bits)


@FUNCTIONS.register("xor_mask")
def xor_mask_table(config: CommitmentConfig, generator: torch.Generator) -> Tensor:
    """f(z) = z xor m for a fixed non-zero mask m: one-to-one, inverted by the same xor."""
    size = 2**config.bits
    mask = int(torch.randint(1, size, (1,), generator=generator)) if size > 1 else 0
    return torch.arange(size) ^ mask


@FUNCTIONS.register("gf2_linear")
def gf2_linear_table(config: CommitmentConfig, generator: torch.Generator) -> Tensor:
    """f(z) = A z over GF(2) with A of rank r (default n - 1): 2^(n - r)-to-one."""
    n = config.bits
    rank = n - 1 if config.rank is None else config.rank
    rank = max(rank, 1)
    matrix = (_random_full_rank(n, rank, generator) @ _random_full_rank(rank, n, generator)) % 2  # (n, n)
    z = bits_of(torch.arange(2**n), n)  # (2^n, n)
    return codes_of((z @ matrix.T) % 2)


@FUNCTIONS.register("modmul")
def modmul_table(config: CommitmentConfig, generator: torch.Generator) -> Tensor:
    """f(z) = a z mod 2^n for a fixed odd a > 1 (when n > 1): one-to-one."""
    size = 2**config.bits
    multiplier = 2 * int(torch.randint(1, max(2, size // 2), (1,), generator=generator)) + 1
    return (torch.arange(size) * multiplier) % size


@FUNCTIONS.register("random_table")
def random_table(config: CommitmentConfig, generator: torch.Generator) -> Tensor:
    """f(z) = T[z] for a fixed uniformly random function T (many-to-one, no structure)."""
    size = 2**config.bits
    return torch.randint(0, size, (size,), generator=generator)


def _largest_prime_below(limit: int) -> int:
    for candidate in range(limit - 1, 1, -1):
        if all(candidate % d for d in range(2, int(candidate**0.5) + 1)):
            return candidate
    return 2


def _primitive_root(p: int) -> int:
    factors = {d for d in range(2, p) if (p - 1) % d == 0 and all(d % e for e in range(2, d))}
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in factors):
            return g
    return 1


@FUNCTIONS.register("discrete_exp")
def discrete_exp_table(config: CommitmentConfig, generator: torch.Generator) -> Tensor:
    """f(z) = g^z mod p, p the largest prime below 2^n, g its smallest primitive root.

    Computing f is repeated squaring; inverting it is a discrete logarithm (the
    classic one-way candidate).  Exponents wrap modulo p - 1, so a few codes collide.
    """
    size = 2**config.bits
    if size < 4:
        return torch.arange(size)
    p = _largest_prime_below(size)
    g = _primitive_root(p)
    return torch.tensor([pow(g, z % (p - 1), p) for z in range(size)])


def function_table(config: CommitmentConfig) -> Tensor:
    """(2**bits,) the codes f(z) of every code z (fixed by the config)."""
    generator = make_generator("commitment-function", config.function, config.bits, config.function_seed)
    return FUNCTIONS.get(config.function)(config, generator).long()


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class CommitmentTasks:
    noise: Tensor
    """(B, 2n, noise_size) the fresh random bits shown at each step."""

    @property
    def batch(self) -> int:
        return self.noise.shape[0]


@dataclass(frozen=True)
class CommitmentState:
    tasks: CommitmentTasks
    actions: Tensor
    """(B, t) the bits emitted so far."""

    @property
    def t(self) -> int:
        return self.actions.shape[1]


@dataclass(frozen=True)
class Outcome:
    """How each episode of a batch ended; every tensor (B,)."""

    success: Tensor
    """1.0 where y = f(z)."""
    guessed: Tensor
    """Probability that the adversary guessed z."""
    reward: Tensor
    z: Tensor
    """z as an integer code."""
    y: Tensor


class Commitment(Environment):
    kind: ClassVar[str] = "commitment"
    Config: ClassVar[type] = CommitmentConfig
    rows_independent: ClassVar[bool] = False  # the adversary guesses from the batch's other episodes

    def __init__(self, config: CommitmentConfig):
        super().__init__(config)
        self.bits = config.bits
        self.action_count = 2
        self.table = function_table(config)
        self.tables_on_devices: dict[torch.device, Tensor] = {}  # copies of table, made once per device
        self.noise_size = config.noise_size
        self.private_size = self.noise_size if config.noise == "private" else 0
        self.observation_size = 2 + config.horizon + self.noise_size

    def sample_tasks(self, n: int, generator: torch.Generator, device: torch.device | str) -> CommitmentTasks:
        shape = (n, self.horizon, self.noise_size)
        noise = torch.randint(0, 2, shape, generator=generator, device=device).float()
        return CommitmentTasks(noise=noise)

    def reset(self, tasks: CommitmentTasks) -> tuple[CommitmentState, Tensor]:
        actions = torch.zeros(tasks.batch, 0, dtype=torch.long, device=tasks.noise.device)
        state = CommitmentState(tasks=tasks, actions=actions)
        return state, self.observation(state)

    def observation(self, state: CommitmentState) -> Tensor:
        """(B, observation_size): previous action, position of the next action, its noise bits."""
        batch, t, device = state.tasks.batch, state.t, state.tasks.noise.device
        previous = torch.zeros(batch, 2, device=device)
        if t > 0:
            previous[torch.arange(batch, device=device), state.actions[:, -1]] = 1.0
        position = torch.zeros(batch, self.horizon, device=device)
        noise = torch.zeros(batch, self.noise_size, device=device)
        if t < self.horizon:
            position[:, t] = 1.0
            noise = state.tasks.noise[:, t]
        return torch.cat([previous, position, noise], dim=1)

    def outcome(self, actions: Tensor) -> Outcome:
        """Score whole episodes ``actions`` (B, 2n): success, the adversary's odds of guessing z, reward."""
        n, config = self.bits, self.config
        y_bits, z_bits = actions[:, :n], actions[:, n:]
        y, z = codes_of(y_bits), codes_of(z_bits)
        success = (self.table_on(actions.device)[z] == y).float()
        guessed = self.adversary_guessed(y, z)
        chance = 2.0**-n
        reward = success - config.penalty * (guessed - chance) / (1.0 - chance)
        return Outcome(success=success, guessed=guessed, reward=reward, z=z, y=y)

    def table_on(self, device: torch.device) -> Tensor:
        """The function's table on ``device``, copied there once (a copy from the host waits for the GPU)."""
        if device not in self.tables_on_devices:
            self.tables_on_devices[device] = self.table.to(device)
        return self.tables_on_devices[device]

    def adversary_guessed(self, y: Tensor, z: Tensor) -> Tensor:
        """(B,) probability that the adversary's guess is each episode's z (codes y, z (B,))."""
        config, size = self.config, 2**self.bits
        if config.adversary == "fixed":
            return (z == config.guess).float()
        if config.adversary == "marginal":
            same = counts(z, size)[z] - 1  # other episodes with this z
            others = torch.full_like(z, z.shape[0] - 1)
        else:
            same = counts(y * size + z, size * size)[y * size + z] - 1
            others = counts(y, size)[y] - 1  # other episodes with this y
        return torch.where(others > 0, same / others.clamp_min(1), 1.0 / size).float()  # none: uniform

    def step(
        self, state: CommitmentState, action: Tensor, generator: torch.Generator
    ) -> tuple[CommitmentState, Tensor, Tensor, bool]:
        reward = self.expected_reward(state, action)
        state = CommitmentState(tasks=state.tasks, actions=torch.cat([state.actions, action[:, None]], dim=1))
        return state, self.observation(state), reward, state.t >= self.horizon

    def expected_reward(self, state: CommitmentState, action: Tensor) -> Tensor:
        """(B,) the reward of this action: zero until the last one, then the episode's reward."""
        if state.t + 1 < self.horizon:
            return torch.zeros(action.shape[0], device=action.device)
        return self.outcome(torch.cat([state.actions, action[:, None]], dim=1)).reward

    def best_expected_reward(self, state: CommitmentState) -> Tensor:
        """(B,) the optimal policy's expected reward at this step (1 at the last step).

        Against the ``fixed`` adversary a constant z far from the guess earns more
        (up to ``1 + penalty``); the reference stays the random-z policy.
        """
        value = 1.0 if state.t + 1 == self.horizon else 0.0
        return torch.full((state.tasks.batch,), value, device=state.tasks.noise.device)


def counts(values: Tensor, size: int) -> Tensor:
    """(size,) occurrences of each of 0..size-1 in ``values``: ``torch.bincount`` without its
    look at the largest value, which on a GPU waits for the device."""
    return torch.zeros(size, dtype=values.dtype, device=values.device).scatter_add_(
        0, values, torch.ones_like(values)
    )
