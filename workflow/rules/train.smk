# Training and freezing: one job per run (environment x architecture x training x seed).


rule train:
    output:
        f"{OUT}/runs/{{run}}/checkpoint.pt",
    log:
        f"{OUT}/logs/train/{{run}}.log",
    threads: TRAIN_THREADS
    resources:
        gpu=train_resources,
        mem_mb=4000,
        runtime=240,
    shell:
        "{MESAPROBE} train {SPEC:q} --run {wildcards.run} --results-root {RESULTS_ROOT:q} "
        "--threads {threads} > {log:q} 2>&1"


rule freeze:
    input:
        f"{OUT}/runs/{{run}}/checkpoint.pt",
    output:
        weights=f"{OUT}/runs/{{run}}/frozen.safetensors",
        manifest=f"{OUT}/runs/{{run}}/frozen.json",
    log:
        f"{OUT}/logs/freeze/{{run}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{MESAPROBE} freeze {SPEC:q} --run {wildcards.run} --results-root {RESULTS_ROOT:q} "
        "--threads {threads} > {log:q} 2>&1"
