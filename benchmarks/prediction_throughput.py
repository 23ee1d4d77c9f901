"""Sequence-prediction (log-loss) training throughput: tokens/s and model FLOP/s of whole updates.

    python benchmarks/prediction_throughput.py --threads 1              # CPU, one thread
    python benchmarks/prediction_throughput.py --device cuda --json out.json
    python benchmarks/prediction_throughput.py --device cuda --precision float32 bf16   # mixed precision

Each measurement times complete ``predict`` updates (``mesaprobe.train.loop.update``:
sampling 128 fresh order-1 binary Markov chains of 256 tokens, the whole-sequence
forward/backward pass and the optimiser step) after warm-up updates, for an LSTM with
128 hidden units and a 4-layer Transformer (d_model 128, 4 heads).

Model FLOPs per trained token are estimated as in nanoGPT's ``estimate_mfu`` (PaLM,
Chowdhery et al. 2022, appendix B): ``6 N`` for the forward and backward pass through
the N parameters (2 FLOPs per multiply-add forward, twice that backward), plus
``12 L d T`` for the attention scores and their weighted sum in L layers of width d
over the T positions of the sequence (the full T x T matrix is counted, as the formula
does, although causal masking leaves half of it unused).  The LSTM gets ``6 N`` (every
weight is used once per token).  Parameter-free work (softmax, norms, activations) and
the data sampling inside the update are not counted, so the figure is a lower bound on
the work done.  Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from train_throughput import synchronize, time_updates, training_state, write_json

from mesaprobe.device import resolve_device, set_threads
from mesaprobe.envs.sequences.markov import Markov, MarkovConfig
from mesaprobe.models import ARCHITECTURES, SequenceModel, build_model
from mesaprobe.models.transformer import Transformer
from mesaprobe.seeding import make_generator
from mesaprobe.train.config import TrainingConfig

MODELS = {
    "lstm-128": ("lstm", {"hidden": 128}),
    "transformer-128x4": ("transformer", {"d_model": 128, "layers": 4, "heads": 4}),
}


def flops_per_token(model: SequenceModel, sequence_length: int) -> int:
    """Estimated training FLOPs per token: 6 N, plus 12 L d T for a Transformer's attention."""
    parameters = sum(parameter.numel() for parameter in model.parameters())
    if not isinstance(model, Transformer):
        return 6 * parameters
    return 6 * parameters + 12 * model.config.layers * model.config.d_model * sequence_length


def sampling_seconds(environment: Markov, batch: int, device: torch.device, repeats: int) -> float:
    """Mean seconds to draw one update's tasks and sequences (part of every timed update)."""
    generator = make_generator("bench-sampling", device=device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        environment.sample(environment.sample_tasks(batch, generator, device), generator)
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def measure(
    name: str,
    batch: int,
    sequence_length: int,
    device: torch.device,
    updates: int,
    warmup: int,
    precision: str = "float32",
) -> dict:
    """Tokens/s and model FLOP/s of log-loss training of model ``name`` on binary Markov chains
    (``precision``: float32 or bf16 mixed precision, ``training.precision``)."""
    family, settings = MODELS[name]
    environment = Markov(MarkovConfig(symbols=2, horizon=sequence_length, order=1))
    config = TrainingConfig(
        algorithm="predict",
        batch=batch,
        env_steps=batch * sequence_length * (updates + warmup),
        precision=precision,
    )
    model = build_model(
        family,
        ARCHITECTURES.get(family).Config(**settings),
        environment.observation_size,
        environment.symbols,
    ).to(device)
    seconds = time_updates(environment, training_state(model, config, device), config, updates, warmup)
    tokens = updates * batch * sequence_length
    per_token = flops_per_token(model, sequence_length)
    return {
        "model": name,
        "precision": precision,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "batch": batch,
        "sequence_length": sequence_length,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "flops_per_token": per_token,
        "model_flops_per_second": per_token * tokens / seconds,
        "sampling_seconds_per_update": sampling_seconds(environment, batch, device, repeats=3),
        "seconds_per_update": seconds / updates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=128, help="sequences per update")
    parser.add_argument("--sequence-length", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=["float32", "bf16"])
    parser.add_argument("--updates", type=int, default=10, help="timed updates")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates first")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/prediction_throughput.json"))
    arguments = parser.parse_args()
    set_threads(arguments.threads)
    device = resolve_device(arguments.device)
    load_before = os.getloadavg()[0]
    rows = []
    print(f"device={device} threads={torch.get_num_threads()}\n")
    print(
        "| model | precision | parameters | batch x length | tokens/s | model FLOPs/token | model FLOP/s "
        "| sampling / update |\n|---|---|---|---|---|---|---|---|"
    )
    for name in arguments.models:
        for precision in arguments.precision:
            row = measure(
                name,
                arguments.batch,
                arguments.sequence_length,
                device,
                arguments.updates,
                arguments.warmup,
                precision,
            )
            rows.append(row)
            print(
                f"| {name} | {precision} | {row['parameters']:,} | {row['batch']} x {row['sequence_length']} "
                f"| {row['tokens_per_second']:,.0f} | {row['flops_per_token'] / 1e6:.2f} M "
                f"| {row['model_flops_per_second'] / 1e9:.1f} G "
                f"| {row['sampling_seconds_per_update']:.3f} s of {row['seconds_per_update']:.3f} s |",
                flush=True,
            )
    write_json(
        arguments.json, rows, device, load_average_1min={"before": load_before, "after": os.getloadavg()[0]}
    )


if __name__ == "__main__":
    main()
