"""The workflow on a real single-node SLURM cluster, through workflow/profiles/slurm.

The test starts munged (unless one already answers), slurmctld and slurmd on this host, with
a minimal slurm.conf at /etc/slurm/slurm.conf (the job-step plugin drops SLURM_CONF, so the
daemons and every job must find it there), runs a tiny study with
`snakemake --profile workflow/profiles/slurm`, and stops everything it started. It skips
unless the SLURM and MUNGE daemons are installed (`apt-get install slurm-wlm munge`), we are
root, the executor plugin is installed, and no SLURM daemon is running already (a live
cluster is never touched).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import REPO
from tests.test_pipeline import SMOKE_STUDY

pytestmark = pytest.mark.slurm

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN_DIR = Path("/run/munge")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
DAEMONS = ("slurmctld", "slurmd", "munged")
CLIENTS = ("sbatch", "squeue", "sinfo", "srun", "scancel", "munge", "unmunge")
PARTITION = "mesaprobe"
# The largest memory request of any rule (collect asks for 8000 MB): the node must offer it.
NODE_MIN_MEMORY_MB = 16_000

SLURM_STUDY = SMOKE_STUDY.replace("study: smoke", "study: slurm_smoke")
AGENTS = {"gru", "transformer", "random", "ucb1"}
# study -> rule -> jobs: 2 runs x (train, freeze, probe) + 2 baselines + collect + chart.
EXPECTED_RULE_JOBS = {"train": 2, "freeze": 2, "probe": 2, "baseline": 2, "collect": 1, "chart": 1}
# What the rules declare, as squeue prints it (%m min memory, %l time limit).
EXPECTED_REQUESTS = {
    "train": ("4000M", "4:00:00"),
    "freeze": ("2000M", "10:00"),
    "probe": ("4000M", "1:00:00"),
    "baseline": ("4000M", "1:00:00"),
    "collect": ("8000M", "30:00"),
    "chart": ("4000M", "30:00"),
}


def which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def missing_requirements() -> str | None:
    """Why this host cannot run the test, or None."""
    absent = [name for name in (*DAEMONS, *CLIENTS) if which(name) is None]
    if absent:
        return f"SLURM/MUNGE not installed (no {', '.join(absent)}): apt-get install slurm-wlm munge"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "starting slurmctld/slurmd and writing /etc/slurm/slurm.conf needs root"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')"
    running = running_daemons({"slurmctld", "slurmd", "slurmstepd"})
    if running:
        return f"a SLURM daemon is already running here ({', '.join(running)}); not touching a live cluster"
    return None


def running_daemons(names: set[str]) -> list[str]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name in names:
            found.append(f"{name} pid {comm.parent.name}")
    return found


def run(*command: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [which(command[0]) or command[0], *command[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def munge_works() -> bool:
    try:
        credential = run("munge", "-n", timeout=10)
        if credential.returncode != 0:
            return False
        return run("unmunge", input=credential.stdout, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def slurm_conf(node: str, cpus: int, memory: int, state: Path) -> str:
    """A single-node cluster: no cgroups, no accounting, one default partition."""
    return f"""\
# Written by mesaprobe's tests/test_slurm.py for one test run; restored afterwards.
ClusterName=mesaprobe-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Take the node's CPUs and memory from this file, not from the hardware (memory is not
# enforced without cgroups; it only has to admit the rules' requests).
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to squeue (the status command without slurmdbd) for 10 minutes.
MinJobAge=600
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """The daemons this test started and the files it changed, undone in reverse order."""

    def __init__(self, state: Path):
        self.state = state
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.undo: list = []

    def start(self, name: str, command: list[str], **kwargs) -> subprocess.Popen:
        log = (self.state / f"{name}.out").open("w")
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
        log.close()
        self.processes.append((name, process))
        return process

    def logs(self) -> str:
        parts = []
        for path in sorted(self.state.glob("*.log")) + sorted(self.state.glob("*.out")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name}\n{text[-2000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        if any(name == "slurmctld" for name, _ in self.processes):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                run("scancel", "--quiet", "--partition", PARTITION, timeout=20)
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self.processes.clear()
        while self.undo:
            self.undo.pop()()


def replace_file(cluster: Cluster, path: Path, text: str) -> None:
    """Write path, and on teardown put back what was there (or remove it)."""
    backup = cluster.state / f"backup-{path.name}"
    existed = path.exists()
    if existed:
        shutil.copy2(path, backup)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)

    def restore() -> None:
        if existed:
            shutil.copy2(backup, path)
        else:
            path.unlink(missing_ok=True)

    cluster.undo.append(restore)


def start_munge(cluster: Cluster) -> None:
    if munge_works():
        return  # a munged already answers on the default socket: use it, leave it running
    if not MUNGE_KEY.exists():
        created = run("mungekey", "--create", f"--keyfile={MUNGE_KEY}")
        assert created.returncode == 0, created.stderr
        shutil.chown(MUNGE_KEY, "munge", "munge")
        cluster.undo.append(lambda: MUNGE_KEY.unlink(missing_ok=True))
    if not MUNGE_RUN_DIR.exists():
        MUNGE_RUN_DIR.mkdir(mode=0o755)
        shutil.chown(MUNGE_RUN_DIR, "munge", "munge")
        cluster.undo.append(lambda: shutil.rmtree(MUNGE_RUN_DIR, ignore_errors=True))
    cluster.start("munged", [which("munged"), "--foreground"], user="munge", group="munge", extra_groups=[])
    deadline = time.monotonic() + 30
    while not munge_works():
        assert time.monotonic() < deadline, f"munged did not answer in 30 s\n{cluster.logs()}"
        time.sleep(0.5)


def wait_for_idle_node(cluster: Cluster, node: str) -> None:
    deadline = time.monotonic() + 90
    states = ""
    while time.monotonic() < deadline:
        for name, process in cluster.processes:
            assert process.poll() is None, f"{name} exited ({process.returncode})\n{cluster.logs()}"
        try:
            states = run("sinfo", "--noheader", "--Node", "--format=%N %t", timeout=10).stdout
        except subprocess.TimeoutExpired:
            states = ""
        if f"{node} idle" in states:
            return
        time.sleep(1)
    pytest.fail(f"node {node} not idle after 90 s (sinfo: {states!r})\n{cluster.logs()}")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A started single-node SLURM cluster; yields its (default) partition."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    (state / "ctld").mkdir()
    (state / "spool").mkdir()
    node = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    memory = max(memory_mb(), NODE_MIN_MEMORY_MB)
    cluster = Cluster(state)
    try:
        replace_file(cluster, SLURM_CONF, slurm_conf(node, cpus, memory, state))
        start_munge(cluster)
        cluster.start("slurmctld", [which("slurmctld"), "-D", "-i"])
        cluster.start("slurmd", [which("slurmd"), "-D", "-N", node])
        wait_for_idle_node(cluster, node)
        yield PARTITION
    finally:
        cluster.stop()


def snakemake(*arguments: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("snakemake")
    command = str(executable) if executable.exists() else shutil.which("snakemake") or "snakemake"
    environment = {**os.environ, "PATH": SBIN_PATH}
    return subprocess.run(
        [command, "-s", str(REPO / "Snakefile"), "-d", str(cwd), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def test_tiny_study_through_slurm(slurm_cluster, tmp_path):
    spec = tmp_path / "slurm_smoke.yaml"
    spec.write_text(SLURM_STUDY)
    started = time.perf_counter()
    result = snakemake(
        "--profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "--config",
        f"spec={spec}",
        # No slurmdbd here: ask squeue, as the README says.
        "--slurm-status-command",
        "squeue",
        # Only to be quick on a tiny study: first status check after 2 s instead of 40 s.
        "--slurm-init-seconds-before-status-checks",
        "2",
        # Keep the job logs of successful jobs too, as evidence that each job ran in SLURM.
        "--slurm-keep-successful-logs",
        cwd=tmp_path,
        timeout=1200,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"

    summary = pl.read_csv(tmp_path / "results" / "slurm_smoke" / "tables" / "summary.csv")
    assert set(summary["agent"]) == AGENTS
    assert (summary["episodes"] == 30).all() and (summary["seeds"] == 1).all()
    charts = {path.name for path in (tmp_path / "results" / "slurm_smoke" / "charts").iterdir()}
    assert "regret_bandit2_adaptation.html" in charts

    # Every job went through sbatch: one kept SLURM log per job, under its rule ...
    slurm_logs = tmp_path / ".snakemake" / "slurm_logs"
    logged = {rule: len(list((slurm_logs / f"rule_{rule}").rglob("*.log"))) for rule in EXPECTED_RULE_JOBS}
    assert logged == EXPECTED_RULE_JOBS, f"SLURM logs per rule: {logged}"

    # ... and slurmctld knows each of them as completed, with the rule's requests and no GPU.
    queue = subprocess.run(
        [which("squeue"), "--states=all", "--noheader", "--format=%k|%T|%P|%C|%m|%l|%b"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert queue.returncode == 0, queue.stderr
    jobs = [line.split("|") for line in queue.stdout.splitlines() if line.startswith("rule_")]
    per_rule = {
        rule: [job for job in jobs if job[0].split("_wildcards")[0] == f"rule_{rule}"]
        for rule in EXPECTED_RULE_JOBS
    }
    assert {rule: len(found) for rule, found in per_rule.items()} == EXPECTED_RULE_JOBS, queue.stdout
    for rule, found in per_rule.items():
        for _comment, state, partition, cpus, memory, limit, gres in found:
            assert (state, partition, cpus) == ("COMPLETED", slurm_cluster, "1"), (rule, found)
            assert (memory, limit) == EXPECTED_REQUESTS[rule], (rule, found)
            assert "gpu" not in gres, (rule, found)
    print(f"tiny study through SLURM: {elapsed:.0f} s for {len(jobs)} jobs")


def test_only_cuda_training_asks_for_a_gpu(tmp_path):
    """The profile with a cuda study: training jobs declare gpu=1 (sbatch --gpus=1), nothing else does."""
    pytest.importorskip(
        "snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm not installed"
    )
    spec = tmp_path / "cuda.yaml"
    # Two seeds: on a GPU seeds_per_job (auto) trains them in one job, which asks for the GPU.
    spec.write_text(
        SLURM_STUDY.replace("batch: 16}", "batch: 16, device: cuda}").replace("seeds: [0]", "seeds: [0, 1]")
    )
    result = snakemake(
        "--profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "--config",
        f"spec={spec}",
        "--dry-run",
        # The workflow profile (profiles/default) hides each job's block (quiet: rules), where
        # the dry run prints the resources read below; this run shows them.
        "--quiet",
        "progress",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resources: dict[str, list[str]] = {}
    rule = None
    for line in result.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            resources.setdefault(rule, []).append(line)
    training = {rule for rule in resources if rule.startswith("train")}
    assert training == {"train_seeds_0", "train_seeds_1"}, resources  # gru and transformer, 2 seeds each
    assert set(resources) >= set(EXPECTED_RULE_JOBS) - {"train"}, resources
    for rule in training:
        assert all("gpu=1" in line for line in resources[rule]), resources[rule]
    for other in set(resources) - training:
        assert not any("gpu" in line for line in resources[other]), (other, resources[other])
