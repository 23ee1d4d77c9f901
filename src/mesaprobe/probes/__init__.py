"""Probe kinds.  Adding one: a file here and one ``register`` line below."""

from mesaprobe.probes.adaptation import AdaptationProbe
from mesaprobe.registry import Registry

PROBES: Registry[type] = Registry("probe kind")
PROBES.register("adaptation")(AdaptationProbe)

__all__ = ["PROBES"]
