# Tables (polars) and charts (altair) of the whole study, and what goes into the report.


rule collect:
    input:
        table_inputs(),
        # Each run's train.json (its training history, for the learning curves) is written
        # by the job that writes its checkpoint.
        trained=[f"{OUT}/runs/{run.id}/checkpoint.pt" for run in PLAN.runs],
    output:
        curves=f"{OUT}/tables/curves.parquet",
        curve_bands=f"{OUT}/tables/curve_bands.parquet",
        summary=f"{OUT}/tables/summary.parquet",
        summary_csv=report(
            f"{OUT}/tables/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
        differences=f"{OUT}/tables/differences.parquet",
        differences_csv=report(
            f"{OUT}/tables/differences.csv",
            caption="../report/differences.rst",
            category="Tables",
            labels={"table": "paired differences"},
        ),
        total_reward_table=report(
            f"{OUT}/tables/total_reward_table.csv",
            caption="../report/total_reward_table.rst",
            category="Tables",
            labels={"table": "totals by setting"},
        ),
        trial_episodes=f"{OUT}/tables/trial_episodes.parquet",
        trial_episodes_csv=report_if(
            any(episodes > 1 for episodes in PLAN.trial_episodes.values()),
            f"{OUT}/tables/trial_episodes.csv",
            caption="../report/trial_episodes.rst",
            category="Tables",
            labels={"table": "per episode of a trial"},
        ),
        inside=f"{OUT}/tables/inside.parquet",
        inside_csv=report_if(
            PLAN.inside_inputs,
            f"{OUT}/tables/inside.csv",
            caption="../report/inside.rst",
            category="Tables",
            labels={"table": "inside the frozen learner"},
        ),
        training=f"{OUT}/tables/training.parquet",
        provenance=f"{OUT}/tables/tables.json",
    log:
        f"{OUT}/logs/collect.log",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    shell:
        "{MESAPROBE} collect {SPEC:q} --results-root {RESULTS_ROOT:q} {SELECTION} > {log:q} 2>&1"


rule chart:
    input:
        rules.collect.output.curve_bands,
        rules.collect.output.summary,
        rules.collect.output.inside,
        rules.collect.output.training,
    output:
        chart_reports(),
        front_page=f"{OUT}/report/front.rst",
    log:
        f"{OUT}/logs/chart.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{MESAPROBE} chart {SPEC:q} --results-root {RESULTS_ROOT:q} {SELECTION} {LOG_STEPS} > {log:q} 2>&1"
