"""Explicit randomness: every sampler gets a ``torch.Generator`` derived from names.

Nothing in mesaprobe touches the global RNG.  A generator is derived from the run's
seed and a tuple of names saying what it is for (``("train", run_config_id)``,
``("heldout", environment_id, probe, seed)``), so two purposes never share a stream
and the same purpose always gets the same one.

Several seeds of one run trained in one process (``training.seeds_per_job``) keep their
own generators (:class:`SeedGenerators`): each seed draws, from its own generator, exactly
the numbers it would draw alone, so a run's randomness does not depend on which seeds
share its job.
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


class SeedGenerators(tuple):
    """The generators of S seeds trained together, one per seed, in seed order.

    Batches of such a job are seed-major: seed ``s`` owns the ``s``-th of S equal blocks of
    rows.  Samplers that draw per row go through :func:`uniform`, which gives every block the
    draw of its own seed's generator.
    """


def uniform(
    shape: tuple[int, ...],
    generator: torch.Generator | SeedGenerators,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """U[0, 1) of ``shape`` from ``generator``; with :class:`SeedGenerators`, one block of rows
    (the first dimension) per seed, each drawn from that seed's generator."""
    if not isinstance(generator, SeedGenerators):
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    rows, rest = shape[0], tuple(shape[1:])
    if rows % len(generator):
        raise ValueError(f"{rows} rows do not split into {len(generator)} seeds' blocks")
    block = (rows // len(generator), *rest)
    return torch.cat([torch.rand(block, generator=g, device=device, dtype=dtype) for g in generator])
