"""mesaprobe: does a sequence model keep learning after its weights are frozen?

A study (``specs/*.yaml``) names environments, architectures, probes and seeds;
:mod:`mesaprobe.study` turns it into a plan, Snakemake runs the plan through the
``mesaprobe`` command line, and :mod:`mesaprobe.analysis` turns probe tables into
summary tables, charts and a report.
"""

__version__ = "0.1.0"
