"""Training: the loop every algorithm shares, the algorithms, checkpoints and stacked seeds.

Layers, lowest first: :mod:`~mesaprobe.train.config` (the ``training`` block),
:mod:`~mesaprobe.train.stacked` (several seeds in one process),
:mod:`~mesaprobe.train.state` (training state, schedule, optimiser step),
:mod:`~mesaprobe.train.rollout` and :mod:`~mesaprobe.train.losses`,
:mod:`~mesaprobe.train.algorithm` (the contract) and one file per algorithm, this registry,
then :mod:`~mesaprobe.train.loop` (progress, checkpoints, preemption, divergence).

Adding an algorithm: a file with an :class:`~mesaprobe.train.algorithm.Algorithm` subclass
and one ``register`` line below.
"""

from mesaprobe.registry import Registry
from mesaprobe.settings import SettingError
from mesaprobe.train.algorithm import Algorithm
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.meta import Reptile
from mesaprobe.train.predict import Predict
from mesaprobe.train.regress import Regress
from mesaprobe.train.rl import A2C, PPO

ALGORITHMS: Registry[type[Algorithm]] = Registry("training algorithm")
ALGORITHMS.register("a2c")(A2C)
ALGORITHMS.register("ppo")(PPO)
ALGORITHMS.register("predict")(Predict)
ALGORITHMS.register("regress")(Regress)
ALGORITHMS.register("reptile")(Reptile)


def algorithm_of(config: TrainingConfig) -> type[Algorithm]:
    """The algorithm ``config`` names (``training.algorithm``)."""
    return ALGORITHMS.get(config.algorithm)


def check_training(config: TrainingConfig) -> None:
    """SettingError unless ``config`` names a registered algorithm that can honour its settings."""
    if config.algorithm not in ALGORITHMS:
        raise SettingError(
            "algorithm", f"expected one of {', '.join(ALGORITHMS.names())}, got {config.algorithm!r}"
        )
    stacking = tuple(name for name in ALGORITHMS.names() if ALGORITHMS.get(name).stacks_seeds)
    algorithm_of(config).check(config, stacking)


__all__ = ["ALGORITHMS", "Algorithm", "algorithm_of", "check_training"]
