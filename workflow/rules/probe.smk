# Probes of frozen runs, and baselines on the same held-out tasks.


rule probe:
    input:
        f"{OUT}/runs/{{run}}/frozen.json",
    output:
        f"{OUT}/probes/{{run}}/{{probe}}.parquet",
    log:
        f"{OUT}/logs/probe/{{run}}/{{probe}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{MESAPROBE} probe {SPEC:q} --run {wildcards.run} --probe {wildcards.probe} --device cpu "
        "--results-root {RESULTS_ROOT:q} --threads {threads} > {log:q} 2>&1"


rule baseline:
    output:
        f"{OUT}/baselines/{{environment}}/{{probe}}/{{baseline}}-s{{seed}}.parquet",
    log:
        f"{OUT}/logs/baseline/{{environment}}/{{probe}}/{{baseline}}-s{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{MESAPROBE} baseline {SPEC:q} --environment {wildcards.environment} --probe {wildcards.probe} "
        "--baseline {wildcards.baseline} --seed {wildcards.seed} --results-root {RESULTS_ROOT:q} "
        "--threads {threads} > {log:q} 2>&1"
