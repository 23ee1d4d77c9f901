"""Explicit randomness: every sampler gets a ``torch.Generator`` derived from names.

Nothing in mesaprobe touches the global RNG.  A generator is derived from the run's
seed and a tuple of names saying what it is for (``("train", run_config_id)``,
``("heldout", environment_id, probe, seed)``), so two purposes never share a stream
and the same purpose always gets the same one.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit integer seed determined by ``parts`` (their ``str`` forms)."""
    text = "\x1f".join(str(part) for part in parts)
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def fixed_permutation(size: int, *parts: object) -> torch.Tensor:
    """A fixed permutation of ``range(size)`` that is never the identity, named by ``parts``.

    Out-of-distribution probes relabel arms or symbols with it, so every agent and every
    run sees the same relabelling.
    """
    assert size >= 2, "only two or more labels can be permuted"
    generator = torch.Generator().manual_seed(derive_seed(*parts, size))
    identity = torch.arange(size)
    permutation = identity
    while torch.equal(permutation, identity):
        permutation = torch.randperm(size, generator=generator)
    return permutation


def fixed_orthogonal(size: int, *parts: object) -> torch.Tensor:
    """A fixed random orthogonal matrix (size, size), float64, uniform (Haar) over rotations and
    reflections, named by ``parts``.

    Out-of-distribution probes turn regression inputs with it (Kirsch et al. 2022), so every
    agent and every run sees the same projection.
    """
    generator = torch.Generator().manual_seed(derive_seed(*parts, size))
    gaussian = torch.randn((size, size), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r))[None, :]  # fix the column signs: Haar, not biased by QR


def make_generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` seeded by :func:`derive_seed` of ``parts``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(*parts))
    return generator
