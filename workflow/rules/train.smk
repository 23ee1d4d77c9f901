# Training and freezing: one job per run (environment x architecture x training x seed),
# or one training job per group of seeds of a run (training.seeds_per_job). A group's rule
# names its runs' checkpoints explicitly; Snakemake prefers it to the wildcard rule below.

# On screen while a training job runs: one line every TRAIN_STATUS_SECONDS (env steps done,
# env-steps/s, time left) on the job's standard output; its log file gets the progress bar
# (tail -f results/<study>/logs/train/<run>.log) and runs/<run>/metrics.jsonl every update.
TRAIN_STATUS_SECONDS = 30

# What a training job asks the scheduler for: enough for the quickstart's (measured: 1-4
# minutes on an idle 2-core laptop, 10.5 minutes on a machine loaded four times over, at most
# 541 MB resident). Larger studies on a cluster ask for more (workflow/profiles/slurm sets
# `train`'s, which groups of seeds ask for too).
TRAIN_MEM_MB = 1000
TRAIN_RUNTIME_MINUTES = 30


rule train:
    output:
        f"{OUT}/runs/{{run}}/checkpoint.pt",
    log:
        f"{OUT}/logs/train/{{run}}.log",
    threads: TRAIN_THREADS
    resources:
        gpu=train_resources,
        mem_mb=TRAIN_MEM_MB,
        runtime=TRAIN_RUNTIME_MINUTES,
    shell:
        "{MESAPROBE} train {SPEC:q} --run {wildcards.run:q} --results-root {RESULTS_ROOT:q} "
        "--threads {threads} --status-every {TRAIN_STATUS_SECONDS} 2> {log:q}"


# A group of seeds asks for what `train` asks for, --set-resources included.
TRAIN_REQUESTS = requests_of(rules.train)


for index, group in enumerate(group for group in PLAN.seed_groups if len(group) > 1):

    rule:
        name:
            f"train_seeds_{index}"
        output:
            [f"{OUT}/runs/{run.id}/checkpoint.pt" for run in group],
        log:
            f"{OUT}/logs/train/{group[0].id}+{len(group) - 1}.log",
        params:
            runs=" ".join(f"--run {run.id}" for run in group),
        threads: TRAIN_THREADS
        resources:
            gpu=gpus(group[0]),
            **TRAIN_REQUESTS,
        shell:
            "{MESAPROBE} train {SPEC:q} {params.runs} --results-root {RESULTS_ROOT:q} "
            "--threads {threads} --status-every {TRAIN_STATUS_SECONDS} 2> {log:q}"


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
        mem_mb=1000,  # the quickstart's: at most 429 MB, 20 s on a loaded machine
        runtime=10,
    shell:
        "{MESAPROBE} freeze {SPEC:q} --run {wildcards.run:q} --results-root {RESULTS_ROOT:q} "
        "--threads {threads} > {log:q} 2>&1"
