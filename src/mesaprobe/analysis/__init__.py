"""From probe tables to study tables (polars) and charts (altair), in layers.

* :mod:`mesaprobe.analysis.tables`: the schemas of probe and study tables, and reading
  and writing them validated (what probes writing their tables import);
* :mod:`mesaprobe.analysis.stats`: the two-level (seeds, then episodes) bootstrap;
* :mod:`mesaprobe.analysis.inside`: the inside tables (read-outs, fitted learners,
  in-weights learning) and their summary;
* :mod:`mesaprobe.analysis.collect`: a study's probe and inside tables collected into its
  curves, curve bands, summary and paper tables;
* :mod:`mesaprobe.analysis.chart_style`, :mod:`mesaprobe.analysis.chart_builders` and
  :mod:`mesaprobe.analysis.inside_charts`: how charts look and how each is built;
* :mod:`mesaprobe.analysis.charts`: :func:`~mesaprobe.analysis.charts.make_charts` draws
  a study's charts (:func:`mesaprobe.study.outputs.chart_outputs` names them).

This package imports none of them: each is imported on its own (``from
mesaprobe.analysis.tables import write_probe_table``), so that probes writing tables do
not pay for the bootstrap, the collect step or altair.
"""
