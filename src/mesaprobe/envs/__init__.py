"""Environment families.  Adding one: a file here and one ``register`` line below."""

from mesaprobe.envs.base import Environment
from mesaprobe.envs.bernoulli_bandit import BernoulliBandit
from mesaprobe.registry import Registry

ENVIRONMENTS: Registry[type[Environment]] = Registry("environment family")
ENVIRONMENTS.register("bernoulli_bandit")(BernoulliBandit)

__all__ = ["ENVIRONMENTS", "Environment"]
