"""Environment families.  Adding one: a file here and one ``register`` line below."""

from mesaprobe.envs.base import Environment
from mesaprobe.envs.bernoulli_bandit import BernoulliBandit
from mesaprobe.envs.commitment import Commitment
from mesaprobe.envs.linear_regression import LinearRegression
from mesaprobe.envs.sequences import (
    IID,
    Drifting,
    Markov,
    Periodic,
    Streak,
    Switching,
    VariableOrderMarkov,
)
from mesaprobe.envs.tabular_mdp import TabularMDP
from mesaprobe.registry import Registry

ENVIRONMENTS: Registry[type[Environment]] = Registry("environment family")
ENVIRONMENTS.register("bernoulli_bandit")(BernoulliBandit)
ENVIRONMENTS.register("iid")(IID)
ENVIRONMENTS.register("markov")(Markov)
ENVIRONMENTS.register("streak")(Streak)
ENVIRONMENTS.register("switching")(Switching)
ENVIRONMENTS.register("periodic")(Periodic)
ENVIRONMENTS.register("vom")(VariableOrderMarkov)
ENVIRONMENTS.register("drifting")(Drifting)
ENVIRONMENTS.register("commitment")(Commitment)
ENVIRONMENTS.register("linear_regression")(LinearRegression)
ENVIRONMENTS.register("tabular_mdp")(TabularMDP)

__all__ = ["ENVIRONMENTS", "Environment"]
