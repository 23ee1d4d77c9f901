# mesaprobe: train -> freeze -> probe -> collect -> chart, for one study.
#
#   snakemake --cores all                                   # the quickstart study
#   snakemake --cores all --config spec=specs/other.yaml    # any study
#   snakemake --report results/quickstart/report.html       # the report, after a run
#   snakemake --profile workflow/profiles/slurm             # on a SLURM cluster
#
# The study file is expanded by mesaprobe.study into a plan of jobs with stable ids;
# every rule is one `mesaprobe <step>` command (see workflow/rules/).

from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"


report: front_page()


include: "workflow/rules/train.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/analysis.smk"


rule all:
    input:
        summary=f"{OUT}/tables/summary.csv",
        charts=chart_outputs(),
    default_target: True


# At the end of a successful run: where the results are, the headline numbers and the
# command that builds the report (a summary that cannot be printed does not fail the run).
onsuccess:
    shell("{MESAPROBE} summary {SPEC:q} --results-root {RESULTS_ROOT:q} {SELECTION} || true")
