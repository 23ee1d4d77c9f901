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
        mem_mb=1000,  # the quickstart's: at most 495 MB, 24 s on a loaded machine
        runtime=15,
    shell:
        "{MESAPROBE} probe {SPEC:q} --run {wildcards.run:q} --probe {wildcards.probe:q} --device cpu "
        "--results-root {RESULTS_ROOT:q} --threads {threads} > {log:q} 2>&1"


rule baseline:
    output:
        f"{OUT}/baselines/{{environment}}/{{probe}}/{{baseline}}-s{{seed}}.parquet",
    log:
        f"{OUT}/logs/baseline/{{environment}}/{{probe}}/{{baseline}}-s{{seed}}.log",
    threads: 1
    resources:
        mem_mb=1000,  # the quickstart's: at most 476 MB, 19 s on a loaded machine
        runtime=15,
    shell:
        "{MESAPROBE} baseline {SPEC:q} --environment {wildcards.environment:q} --probe {wildcards.probe:q} "
        "--baseline {wildcards.baseline:q} --seed {wildcards.seed:q} --results-root {RESULTS_ROOT:q} "
        "--threads {threads} > {log:q} 2>&1"
