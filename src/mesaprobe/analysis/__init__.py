"""From probe tables to study tables (polars) and charts (altair).

:mod:`mesaprobe.analysis.tables` reads and writes probe tables and collects them
into curves, curve bands and a summary with two-level bootstrap intervals;
:mod:`mesaprobe.analysis.charts` draws those tables as self-contained HTML and SVG;
:mod:`mesaprobe.analysis.sweeps` reads from a study which environments form a task-pool
sweep and which probes are memory windows, for the charts drawn against M and w.
The charts module is imported on its own (``from mesaprobe.analysis.charts import
make_charts``) so that probes writing tables do not pay for importing altair.
"""

from mesaprobe.analysis.tables import (
    AGENT_KINDS,
    CURVE_BANDS_COLUMNS,
    CURVES_COLUMNS,
    GROUP_COLUMNS,
    PROBE_COLUMNS,
    SUMMARY_COLUMNS,
    TABLE_FILES,
    BootstrapInterval,
    collect,
    read_probe_table,
    read_table,
    two_level_bootstrap,
    write_probe_table,
)

__all__ = [
    "AGENT_KINDS",
    "CURVES_COLUMNS",
    "CURVE_BANDS_COLUMNS",
    "GROUP_COLUMNS",
    "PROBE_COLUMNS",
    "SUMMARY_COLUMNS",
    "TABLE_FILES",
    "BootstrapInterval",
    "collect",
    "read_probe_table",
    "read_table",
    "two_level_bootstrap",
    "write_probe_table",
]
