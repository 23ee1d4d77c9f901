# mesaprobe: train -> freeze -> probe -> collect -> chart, for one study.
#
#   snakemake --cores all                                   # the quickstart study
#   snakemake --cores all --config spec=specs/other.yaml    # any study
#   snakemake --report results/quickstart/report.html       # the report, after a run
#   snakemake --profile workflow/profiles/slurm             # on a SLURM cluster
#
# Snakemake also reads profiles/default/ (beside this file) on every run: an interrupted
# run is resumed by running the same command again.
#
# The study file is expanded by mesaprobe.study into a plan of jobs with stable ids;
# every rule is one `mesaprobe <step>` command (see workflow/rules/).

from snakemake.utils import min_version

from mesaprobe.study.results import check_owner, lock_results

min_version("9.0")


include: "workflow/rules/common.smk"


report: front_page()


include: "workflow/rules/train.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/analysis.smk"


# The study's results directory: refused at once if another study file of the same name
# owns it; a run that executes jobs holds its lock until its process ends, however it ends
# (mesaprobe.study.results; profiles/default turns off Snakemake's own lock files, which a
# killed Snakemake leaves behind to block every later run).
try:
    check_owner(STUDY, RESULTS_ROOT)
except UserError as error:
    print(f"mesaprobe: error: {error}", file=sys.stderr)
    sys.exit(2)
HELD_LOCKS = []  # the lock's open file, kept open for the process's lifetime


onstart:
    try:
        HELD_LOCKS.append(lock_results(STUDY, RESULTS_ROOT))
    except UserError as error:
        print(f"mesaprobe: error: {error}", file=sys.stderr)
        sys.exit(2)


rule all:
    input:
        summary=f"{OUT}/tables/summary.csv",
        charts=chart_outputs(),
    default_target: True


# At the end of a successful run: where the results are, the headline numbers and the
# command that builds the report (a summary that cannot be printed does not fail the run).
onsuccess:
    shell("{MESAPROBE} summary {SPEC:q} --results-root {RESULTS_ROOT:q} {SELECTION} || true")
