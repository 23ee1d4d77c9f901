"""Training settings: the ``training`` block of a study."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from mesaprobe.settings import SettingError

#: Seeds per job on a GPU when ``seeds_per_job: auto`` (on a CPU: 1).
AUTO_SEEDS_PER_GPU_JOB = 8
#: Largest learning rate accepted (lr, inner_lr): far beyond any useful one, and far below
#: where float32 arithmetic in the optimiser overflows.
MAX_LEARNING_RATE = 100.0


@dataclass(frozen=True)
class TrainingConfig:
    algorithm: str = "a2c"
    """Learning algorithm (a name registered in mesaprobe.train.ALGORITHMS). a2c: advantage actor-critic over whole episodes; ppo: proximal
    policy optimisation (clipped surrogate, GAE) over whole episodes; predict: log-loss
    training of a next-symbol predictor (prediction environments); regress: squared-error
    training of an in-context regressor (regression environments); reptile: first-order
    meta-learning of an initialisation from which in-weights SGD adapts to each task
    (memoryless architecture on bandits, see :mod:`mesaprobe.train.meta`)."""
    env_steps: int = 10_000_000
    """Environment steps to train for (episodes x horizon), rounded up to whole updates."""
    batch: int = 64
    """Episodes played in parallel per update (each a fresh task); reptile: tasks per
    meta-update, each played inner_steps x inner_episodes times."""
    lr: float = 2.0e-3
    """Adam learning rate (decayed linearly to lr_final_fraction x lr)."""
    lr_final_fraction: float = 0.1
    """Learning rate at the end of training as a fraction of lr."""
    gamma: float = 0.8
    """Discount of future reward in the advantage estimate."""
    gae_lambda: float = 0.5
    """GAE(lambda) parameter: 0 = one-step TD, 1 = Monte Carlo returns."""
    value_coef: float = 0.5
    """Weight of the value regression loss."""
    entropy_coef: float = 0.01
    """Initial weight of the policy entropy bonus (decays linearly to entropy_final)."""
    entropy_final: float = 0.0
    """Entropy bonus weight at the end of training."""
    max_grad_norm: float = 1.0
    """Gradient norm clip."""
    normalize_advantages: bool = True
    """Standardise advantages within each update."""
    ppo_epochs: int = 4
    """PPO: passes over each rollout."""
    ppo_minibatches: int = 4
    """PPO: minibatches (of whole episodes) per pass."""
    ppo_clip: float = 0.2
    """PPO: clipping range of the probability ratio."""
    inner_steps: int = 5
    """Reptile: SGD steps that adapt the weights to each task, from the meta-initialisation."""
    inner_lr: float = 0.3
    """Reptile: learning rate of the inner SGD steps (plain SGD, no clipping)."""
    inner_episodes: int = 1
    """Reptile: episodes of the task played with the current weights before each inner step."""
    precision: Literal["float32", "bf16"] = "float32"
    """Arithmetic of training updates: float32, or bf16 (mixed precision: torch.autocast to
    bfloat16 for matrix products and attention, float32 weights, optimiser and losses), for
    Transformers on GPUs with bf16 tensor cores.  Acting while training runs under the same
    autocast (A2C stays on-policy); frozen models are probed in float32.  On a CPU an LSTM's
    layers stay in float32 (``models.recurrent.run_layer``).  Changes run ids."""
    checkpoint_every: int = 50
    """Updates between resumable checkpoints (partial.pt in the run directory)."""
    device: str = "auto"
    """Where to train: auto (CUDA when present, else CPU), cpu, cuda or cuda:N."""
    tensorboard: bool = False
    """Also write every update's statistics to TensorBoard (runs/<run>/tensorboard/; needs the
    tensorboard package: pip install 'mesaprobe[tensorboard]').  metrics.jsonl is written either way."""
    seeds_per_job: int | Literal["auto"] = "auto"
    """Seeds of one run trained together in one process (stacked weights; see
    :mod:`mesaprobe.train.stacked`); auto: AUTO_SEEDS_PER_GPU_JOB when device names CUDA, else 1."""

    #: Settings added after results were recorded: left out of run ids while at their default.
    id_neutral_defaults: ClassVar[tuple[str, ...]] = (
        "inner_steps",
        "inner_lr",
        "inner_episodes",
        "precision",
    )

    def validate(self) -> None:
        for name in (
            "env_steps",
            "batch",
            "checkpoint_every",
            "ppo_epochs",
            "ppo_minibatches",
            "inner_steps",
            "inner_episodes",
        ):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        for name in ("lr", "inner_lr"):
            if not 0 < getattr(self, name) <= MAX_LEARNING_RATE:
                raise SettingError(
                    name,
                    f"expected a positive learning rate of at most {MAX_LEARNING_RATE}, got {getattr(self, name)}",
                )
        for name in ("gamma", "gae_lambda", "lr_final_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SettingError(name, f"expected a number in [0, 1], got {getattr(self, name)}")
        for name in ("value_coef", "entropy_coef", "entropy_final", "max_grad_norm", "ppo_clip"):
            if getattr(self, name) < 0:
                raise SettingError(name, f"expected a non-negative number, got {getattr(self, name)}")
        if self.seeds_per_job != "auto" and self.seeds_per_job < 1:
            raise SettingError(
                "seeds_per_job", f"expected auto or a positive integer, got {self.seeds_per_job}"
            )
        if not re.fullmatch(r"auto|cpu|cuda|cuda:[0-9]{1,4}", self.device):
            raise SettingError("device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")

    def auto_seeds_per_job(self) -> int:
        """Seeds per job that ``seeds_per_job: auto`` means for an algorithm that stacks seeds,
        decided by the device the study names (``cuda``/``cuda:N``: AUTO_SEEDS_PER_GPU_JOB;
        ``cpu`` or ``auto``: 1).

        Not by the GPUs of the machine that builds the DAG: the jobs, and so which rule makes
        each checkpoint, must not change between a login node and a GPU node (Snakemake would
        retrain runs whose rule changed)."""
        return AUTO_SEEDS_PER_GPU_JOB if self.device.startswith("cuda") else 1
