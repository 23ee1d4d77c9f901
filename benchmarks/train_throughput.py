"""Bandit meta-RL training throughput: env-steps/s of whole A2C updates per architecture.

    python benchmarks/train_throughput.py                       # CPU (or CUDA if present)
    python benchmarks/train_throughput.py --device cuda --batches 512 4096 --json out.json
    python benchmarks/train_throughput.py --seeds 1 8 --batches 64   # several seeds per process
    python benchmarks/train_throughput.py --environment mdp          # RL^2's tabular MDPs

Each measurement times complete updates (acting step by step with the model, then the
whole-episode forward/backward pass and the optimiser step) after warm-up updates, on
2-armed uniform bandits with 100 pulls.  With ``--seeds S`` S seeds train together as in a
job of ``training.seeds_per_job: S`` (stacked weights, ``batch`` episodes per seed) and the
env steps of all S count.  ``--environment mdp`` measures RL^2's tabular MDPs instead (10
states, 5 actions, trials of 10 episodes of 10 steps: sequences of 100 steps, as the
bandit's).  Each row also counts the torch operators one acting step of the model
dispatches (``operators_per_step``: on a CPU each is a kernel call with its own overhead,
which for small models at small batches costs more than its arithmetic).  Prints a table
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mesaprobe.artifacts import provenance
from mesaprobe.device import resolve_device, set_threads
from mesaprobe.envs.base import Environment
from mesaprobe.envs.bernoulli_bandit import BernoulliBandit, BernoulliBanditConfig
from mesaprobe.envs.tabular_mdp import TabularMDP, TabularMDPConfig
from mesaprobe.kinds import kind_of
from mesaprobe.models import ARCHITECTURES, SequenceModel, build_model
from mesaprobe.models.stacked import stack_models
from mesaprobe.seeding import SeedGenerators, make_generator
from mesaprobe.train.config import TrainingConfig
from mesaprobe.train.loop import update
from mesaprobe.train.stacked import SeedEnvironments
from mesaprobe.train.state import TrainingState

MODELS = {
    "gru-64": ("gru", {"hidden": 64}),
    "gru-256": ("gru", {"hidden": 256}),
    "lstm-64": ("lstm", {"hidden": 64}),
    "transformer-32x2": ("transformer", {"d_model": 32, "layers": 2, "heads": 2}),
    "transformer-64x2": ("transformer", {"d_model": 64, "layers": 2, "heads": 4}),
    "memoryless-64": ("memoryless", {"hidden": 64}),
    # The ladder's rungs at about the GRU-64's parameter count (specs/ladder.yaml).
    "lru-32x2": ("lru", {"d_model": 32, "state": 36, "layers": 2}),
    "mamba-24x2": ("mamba", {"d_model": 24, "layers": 2, "d_state": 16}),
    "linear-attention-24x2": ("linear_attention", {"d_model": 24, "layers": 2, "heads": 2}),
    "transformer-24x2": ("transformer", {"d_model": 24, "layers": 2, "heads": 2}),
}


#: The environments measured, each with sequences of 100 steps.
ENVIRONMENTS = {
    "bandit": lambda: BernoulliBandit(BernoulliBanditConfig(arms=2, horizon=100)),
    "mdp": lambda: TabularMDP(TabularMDPConfig(states=10, actions=5, horizon=10, trial_episodes=10)),
}


def training_state(
    model: SequenceModel, config: TrainingConfig, device: torch.device, seeds: int = 1
) -> TrainingState:
    """A fresh training state for ``model`` (stacked when ``seeds`` > 1) with the benchmarks' fixed generators."""
    if seeds == 1:
        tasks, actions = (
            make_generator("bench-tasks", device=device),
            make_generator("bench-actions", device=device),
        )
    else:
        tasks = SeedGenerators(make_generator("bench-tasks", seed, device=device) for seed in range(seeds))
        actions = SeedGenerators(
            make_generator("bench-actions", seed, device=device) for seed in range(seeds)
        )
    return TrainingState(model, torch.optim.Adam(model.parameters(), lr=config.lr), tasks, actions)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_updates(
    environment: Environment, state: TrainingState, config: TrainingConfig, updates: int, warmup: int
) -> float:
    """Seconds taken by ``updates`` whole updates (``mesaprobe.train.loop.update``) after ``warmup`` more."""
    total = updates + warmup
    for _ in range(warmup):
        update(environment, state, config, total)
    synchronize(state.model.device)
    started = time.perf_counter()
    for _ in range(updates):
        update(environment, state, config, total)
    synchronize(state.model.device)  # CUDA kernels run asynchronously: wait for the last one
    return time.perf_counter() - started


def measure(
    name: str,
    batch: int,
    device: torch.device,
    updates: int,
    warmup: int,
    seeds: int = 1,
    environment_name: str = "bandit",
) -> dict:
    """Env-steps/s of A2C training of model ``name`` on 2-armed uniform bandits with 100 pulls
    (or the MDP of :data:`ENVIRONMENTS`; ``seeds`` seeds at once, ``batch`` episodes each)."""
    family, settings = MODELS[name]
    environment = ENVIRONMENTS[environment_name]()
    config = TrainingConfig(batch=batch, env_steps=batch * 100 * (updates + warmup))
    config_of_family = ARCHITECTURES.get(family).Config(**settings)
    outputs = kind_of(environment).output_size(environment)
    models = [
        build_model(family, config_of_family, environment.observation_size, outputs) for _ in range(seeds)
    ]
    model = (models[0] if seeds == 1 else stack_models(models)).to(device)
    if seeds > 1:
        environment = SeedEnvironments([environment] * seeds)
    seconds = time_updates(environment, training_state(model, config, device, seeds), config, updates, warmup)
    steps = updates * batch * environment.horizon * seeds
    return {
        "environment": environment_name,
        "model": name,
        "parameters": sum(parameter.numel() for parameter in models[0].parameters()),
        "seeds": seeds,
        "batch": batch,
        "env_steps": steps,
        "seconds": seconds,
        "env_steps_per_second": steps / seconds,
        "operators_per_step": operators_per_step(
            model, batch * seeds, models[0].input_size, torch.device(device)
        ),
    }


class OperatorCounter(TorchDispatchMode):
    """Counts the torch operators dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def operators_per_step(model: SequenceModel, batch: int, input_size: int, device: torch.device) -> int:
    """Torch operators one acting step of ``model`` dispatches for ``batch`` rows (its second step)."""
    inputs = torch.zeros(batch, input_size, device=device)
    with torch.no_grad():
        state, _ = model.step(model.initial_state(batch, 100, device), inputs)
        with OperatorCounter() as counter:
            model.step(state, inputs)
    return counter.count


def write_json(path: Path, rows: list[dict], device: torch.device, **extra) -> None:
    """``rows`` with the thread count, ``extra`` fields and provenance (versions, host, commit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"rows": rows, "threads": torch.get_num_threads(), **extra, **provenance(str(device))}
    path.write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], help="seeds trained together")
    parser.add_argument("--environment", default="bandit", choices=list(ENVIRONMENTS))
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/train_throughput.json"))
    arguments = parser.parse_args()
    set_threads(arguments.threads)
    device = resolve_device(arguments.device)
    rows = []
    threads = torch.get_num_threads()
    print(
        f"{'model':<22}{'seeds':>6}{'batch':>8}{'env-steps/s':>16}{'ops/step':>10}"
        f"   device={device} threads={threads}"
    )
    for name in arguments.models:
        for seeds in arguments.seeds:
            for batch in arguments.batches:
                row = measure(
                    name, batch, device, arguments.updates, arguments.warmup, seeds, arguments.environment
                )
                rows.append(row)
                print(
                    f"{name:<22}{seeds:>6}{batch:>8}{row['env_steps_per_second']:>16,.0f}"
                    f"{row['operators_per_step']:>10}",
                    flush=True,
                )
    write_json(arguments.json, rows, device)


if __name__ == "__main__":
    main()
