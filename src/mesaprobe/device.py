"""Choosing the torch device and CPU threads for a job."""

from __future__ import annotations

import torch

from mesaprobe.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; an unavailable CUDA request is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's own message spans lines
        raise UserError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was requested but torch sees no CUDA device (use auto or cpu)")
    return device


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads (the scheduler gives each job ``threads`` cores)."""
    if threads is not None and threads > 0:
        torch.set_num_threads(threads)
