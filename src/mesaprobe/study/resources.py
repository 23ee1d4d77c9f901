"""Rough upper bounds on the memory of a study's jobs, so that validation refuses a job that
cannot fit a machine instead of letting it crash (or swap for hours) when it runs.

The estimate is deliberately simple and generous: the sizes a study sets (batch, horizon,
width, layers, episodes) multiplied as the tensors they shape are, in float32 (4 bytes),
times a stated factor for what a step keeps besides its output.  A job whose estimate
exceeds :data:`MAX_JOB_MEMORY_BYTES` is refused with one line naming the study key whose
value dominates the estimate, the estimate and how it was made.  The bound is a constant
rather than this machine's memory so that a plan is the same on every machine (a login node
and the compute nodes must agree on the jobs).

Training, per seed trained in the job:

* activations kept for the backward pass: batch x horizon x (width x layers + observation
  + output) x 4 bytes x :data:`ACTIVATION_FACTOR`;
* attention scores (architectures with ``heads``): batch x heads x horizon x attended steps
  x layers x 4 bytes x :data:`ATTENTION_FACTOR`;
* parameters (counted exactly, on a model built on the meta device) x 4 bytes x
  :data:`PARAMETER_COPIES` (weights, gradients, Adam's two moments);
* the training history: updates x :data:`HISTORY_BYTES_PER_UPDATE`.

A probe or baseline job: its long table, episodes x horizon (times the probe's horizon
factor) x step metrics x :data:`TABLE_ROW_BYTES`; probes of a frozen model also the hidden
states of every episode (episodes x horizon x width x layers x 4 bytes, what read-out
probes hold) and one acting batch (batch x horizon x width x layers x 4 bytes x
:data:`ACTING_FACTOR`).

The width of an architecture is the largest of its settings named in
:data:`WIDTH_SETTINGS` (else its largest integer setting), its depth its ``layers``
setting (else 1).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

from mesaprobe.envs import Environment
from mesaprobe.errors import SpecError
from mesaprobe.frozen import (
    MAX_BUILT_SETTING,
    MAX_MODEL_TENSORS,
    TooManyTensors,
    build_skeleton,
    oversized_setting,
)
from mesaprobe.kinds import kind_of

#: The memory one job may need by its estimate: a large compute node's (512 GiB).
MAX_JOB_MEMORY_BYTES = 512 * 2**30
#: Bytes of a float32 number, the type of every tensor the estimate counts.
FLOAT_BYTES = 4
#: Tensors of batch x horizon x width size a training step keeps per layer for the backward
#: pass: a recurrent cell's gates (four for an LSTM) and their activations, a Transformer
#: block's residual stream, attention outputs and its MLP (mlp_ratio x width, before and after
#: the non-linearity), the policy's outputs and losses.
ACTIVATION_FACTOR = 16
#: Tensors of batch x horizon x width size a probe keeps per layer while a frozen model plays
#: (no gradients): a Transformer's key and value caches, hidden states returned for read-outs,
#: the outputs.
ACTING_FACTOR = 4
#: Copies of the attention scores a Transformer layer keeps: scores, softmax, dropout-free
#: product for the backward pass.
ATTENTION_FACTOR = 3
#: Copies of each parameter a training job holds: weights, gradients, Adam's two moments.
PARAMETER_COPIES = 4
#: Bytes one update adds to the training history: about ten statistics as a Python dict, again
#: in every checkpoint and in train.json.
HISTORY_BYTES_PER_UPDATE = 2048
#: Bytes of one row of a long probe table (eight text and four number columns) while it is
#: built, cast and written.
TABLE_ROW_BYTES = 256
#: Architecture settings that are its width (units per layer); the largest present counts.
WIDTH_SETTINGS = ("hidden", "d_model", "width")


@dataclass(frozen=True)
class Factor:
    """One size an estimate multiplies: its value, the study key that sets it, and a name."""

    value: int
    key: str
    name: str


@dataclass(frozen=True)
class Term:
    """One part of an estimate: the product of its factors times a constant (bytes)."""

    what: str
    factors: tuple[Factor, ...]
    bytes_each: float

    @property
    def bytes(self) -> float:
        return math.prod(factor.value for factor in self.factors) * self.bytes_each

    @property
    def key(self) -> str:
        """The study key of its largest factor."""
        return max(self.factors, key=lambda factor: factor.value).key

    def __str__(self) -> str:
        sizes = " x ".join(f"{factor.name} {factor.value:,}" for factor in self.factors)
        return f"{self.what}: {sizes} x {self.bytes_each:g} bytes"


def format_bytes(count: float) -> str:
    """``count`` bytes as text with a binary unit (``3.2 GiB``)."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_memory(job: str, terms: list[Term], file: str) -> None:
    """Refuse ``job`` when its terms add up to more than :data:`MAX_JOB_MEMORY_BYTES`, naming
    the study key of the largest term (see the module docstring for the estimate)."""
    total = sum(term.bytes for term in terms)
    if total <= MAX_JOB_MEMORY_BYTES:
        return
    largest = max(terms, key=lambda term: term.bytes)
    raise SpecError(
        file,
        largest.key,
        f"{job} needs an estimated {format_bytes(total)} of memory, more than the "
        f"{format_bytes(MAX_JOB_MEMORY_BYTES)} a job may use (mostly {largest})",
    )


@dataclass(frozen=True)
class ArchitectureSize:
    """What the estimate reads from an architecture's settings (see the module docstring)."""

    width: Factor
    layers: Factor
    heads: Factor | None
    context: int | None
    """Steps attended to (a Transformer's ``context`` window), or None for every step."""


def architecture_size(name: str, config: Any) -> ArchitectureSize:
    settings = dataclasses.asdict(config)
    integers = {
        key: value for key, value in settings.items() if type(value) is int and not key.startswith("_")
    }
    widths = {key: integers[key] for key in WIDTH_SETTINGS if key in integers}
    if not widths:
        widths = dict([max(integers.items(), key=lambda item: item[1])]) if integers else {"": 1}
    width_key, width = max(widths.items(), key=lambda item: item[1])
    key = f"architectures.{name}"
    layers = integers.get("layers", 1)
    heads = integers.get("heads")
    context = settings.get("context")
    return ArchitectureSize(
        width=Factor(width, f"{key}.{width_key}" if width_key else key, "width"),
        layers=Factor(layers, f"{key}.layers" if "layers" in integers else key, "layers"),
        heads=None if heads is None else Factor(heads, f"{key}.heads", "heads"),
        context=context if type(context) is int else None,
    )


@functools.cache
def parameter_count(
    name: str, family: str, config: Any, input_size: int, output_size: int, private_size: int, file: str
) -> int:
    """Parameters of the model the settings describe (built on the meta device), refusing
    settings of more than :data:`mesaprobe.frozen.MAX_MODEL_TENSORS` tensors."""
    key = f"architectures.{name}"
    oversized = oversized_setting(config)
    if oversized is not None:  # refused before a constructor makes a list of that length
        setting, value = oversized
        raise SpecError(
            file,
            f"{key}.{setting}",
            f"expected at most {MAX_BUILT_SETTING:,} (the largest integer setting of a model "
            f"mesaprobe builds), got {value:,}",
        )
    try:
        model = build_skeleton(family, config, input_size, output_size, private_size, MAX_MODEL_TENSORS)
    except TooManyTensors:
        size = architecture_size(name, config)
        raise SpecError(
            file,
            size.layers.key,
            f"describes a model of more than {MAX_MODEL_TENSORS:,} weight tensors "
            f"({size.layers.value:,} layers); at most {MAX_MODEL_TENSORS:,}",
        ) from None
    except (RuntimeError, ValueError, OverflowError, MemoryError) as error:
        raise SpecError(file, key, f"describes no model ({' '.join(str(error).split())[:200]})") from None
    return sum(parameter.numel() for parameter in model.parameters())


def environment_factors(name: str, environment: Environment) -> tuple[Factor, Factor]:
    """(horizon, values per step: observation plus model output) of an environment as trained."""
    config_key = f"environments.{name}"
    horizon_key = f"{config_key}.horizon" if hasattr(environment.config, "horizon") else config_key
    step = environment.observation_size + kind_of(environment).output_size(environment)
    return Factor(environment.horizon, horizon_key, "horizon"), Factor(step, config_key, "inputs+outputs")


def training_terms(
    environment_name: str,
    environment: Environment,
    architecture_name: str,
    architecture_family: str,
    architecture_config: Any,
    batch: Factor,
    updates: Factor,
    seeds: Factor,
) -> list[Term]:
    """The estimate of one training job but its parameters (:func:`parameter_term`): ``seeds``
    seeds of one run, each playing ``batch`` episodes per update for ``updates`` updates."""
    horizon, step_values = environment_factors(environment_name, environment)
    size = architecture_size(architecture_name, architecture_config)
    terms = [
        Term(
            "activations",
            (seeds, batch, horizon, size.width, size.layers),
            FLOAT_BYTES * ACTIVATION_FACTOR,
        ),
        Term("inputs and outputs", (seeds, batch, horizon, step_values), FLOAT_BYTES * ACTIVATION_FACTOR),
        Term("history", (seeds, updates), HISTORY_BYTES_PER_UPDATE),
    ]
    if size.heads is not None:
        attended = Factor(min(horizon.value, size.context or horizon.value), horizon.key, "attended steps")
        terms.append(
            Term(
                "attention scores",
                (seeds, batch, size.heads, horizon, attended, size.layers),
                FLOAT_BYTES * ATTENTION_FACTOR,
            )
        )
    return terms


def parameter_term(
    environment_name: str,
    environment: Environment,
    architecture_name: str,
    architecture_family: str,
    architecture_config: Any,
    seeds: Factor,
    file: str,
) -> Term:
    """A training job's parameters (counted on the model built on the meta device), with their
    gradients and optimiser state, for each seed; named by the environment's block when its
    inputs and outputs outnumber the architecture's width."""
    size = architecture_size(architecture_name, architecture_config)
    output_size = kind_of(environment).output_size(environment)
    parameters = parameter_count(
        architecture_name,
        architecture_family,
        architecture_config,
        environment.observation_size,
        output_size,
        environment.private_size,
        file,
    )
    key = (
        f"environments.{environment_name}"
        if environment.observation_size + output_size > size.width.value
        else size.width.key
    )
    return Term("parameters", (seeds, Factor(parameters, key, "parameters")), FLOAT_BYTES * PARAMETER_COPIES)


def played_factors(
    probe_name: str, probe_config: Any, environment_name: str, environment: Environment, played: Environment
) -> tuple[Factor, Factor, Factor]:
    """(episodes, acting batch, horizon as played) of a probe of ``environment``."""
    key = f"probes.{probe_name}"
    episodes = getattr(probe_config, "episodes", 1)
    batch = min(getattr(probe_config, "batch", episodes), episodes)
    horizon, _ = environment_factors(environment_name, environment)
    if played.horizon > environment.horizon and hasattr(probe_config, "horizon_factor"):
        # The longer episodes are the probe's doing: name its setting when it dominates.
        longer = played.horizon // environment.horizon
        if longer > environment.horizon:
            horizon = Factor(played.horizon, f"{key}.horizon_factor", "horizon")
        else:
            horizon = Factor(played.horizon, horizon.key, "horizon")
    return (
        Factor(episodes, f"{key}.episodes" if hasattr(probe_config, "episodes") else key, "episodes"),
        Factor(batch, f"{key}.batch" if hasattr(probe_config, "batch") else key, "batch"),
        horizon,
    )


def table_term(episodes: Factor, horizon: Factor, environment: Environment) -> Term:
    """A probe table's rows: one per episode, step and step metric of the environment's kind."""
    metrics = Factor(len(kind_of(environment).metrics.step_metrics), episodes.key, "metrics")
    return Term("table", (episodes, horizon, metrics), TABLE_ROW_BYTES)


def probe_terms(
    probe_name: str,
    probe_config: Any,
    environment_name: str,
    environment: Environment,
    played: Environment,
    architecture_name: str,
    architecture_config: Any,
) -> list[Term]:
    """The estimate of one probe job of a frozen model."""
    episodes, batch, horizon = played_factors(probe_name, probe_config, environment_name, environment, played)
    size = architecture_size(architecture_name, architecture_config)
    return [
        table_term(episodes, horizon, played),
        Term("hidden states", (episodes, horizon, size.width, size.layers), FLOAT_BYTES),
        Term("acting batch", (batch, horizon, size.width, size.layers), FLOAT_BYTES * ACTING_FACTOR),
    ]


def baseline_terms(
    probe_name: str, probe_config: Any, environment_name: str, environment: Environment, played: Environment
) -> list[Term]:
    """The estimate of one baseline job: its table."""
    episodes, _, horizon = played_factors(probe_name, probe_config, environment_name, environment, played)
    return [table_term(episodes, horizon, played)]
