"""Probe kinds.  Adding one: a file here and one ``register`` line below."""

from mesaprobe.probes.adaptation import AdaptationProbe
from mesaprobe.probes.base import Probe
from mesaprobe.probes.commitment import CommitmentProbe
from mesaprobe.probes.fitted_learner import FittedLearnerProbe
from mesaprobe.probes.in_weights import InWeightsProbe
from mesaprobe.probes.readout import ReadoutProbe
from mesaprobe.probes.window import WindowProbe
from mesaprobe.registry import Registry

PROBES: Registry[type[Probe]] = Registry("probe kind")
PROBES.register("adaptation")(AdaptationProbe)
PROBES.register("commitment")(CommitmentProbe)
PROBES.register("window")(WindowProbe)
PROBES.register("in_weights")(InWeightsProbe)
PROBES.register("readout")(ReadoutProbe)
PROBES.register("fitted_learner")(FittedLearnerProbe)

__all__ = ["PROBES", "Probe"]
