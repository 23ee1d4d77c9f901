"""Sequence-prediction families: binary (sun = 0, rain = 1) or K-symbol weather with exact Bayes predictors.

One file per family; :mod:`~mesaprobe.envs.sequences.base` holds the shared contract and loops.
"""

from mesaprobe.envs.sequences.base import PredictionEnvironment
from mesaprobe.envs.sequences.drifting import Drifting
from mesaprobe.envs.sequences.iid import IID
from mesaprobe.envs.sequences.markov import Markov
from mesaprobe.envs.sequences.periodic import Periodic
from mesaprobe.envs.sequences.streak import Streak
from mesaprobe.envs.sequences.switching import Switching
from mesaprobe.envs.sequences.vom import VariableOrderMarkov

__all__ = [
    "IID",
    "Drifting",
    "Markov",
    "Periodic",
    "PredictionEnvironment",
    "Streak",
    "Switching",
    "VariableOrderMarkov",
]
