"""Causal linear attention: a Transformer whose memory is a fast-weight matrix.

Katharopoulos et al. (2020), "Transformers are RNNs": softmax(q . k) is replaced by the
kernel phi(q) . phi(k) with the positive feature map phi(x) = elu(x) + 1, so the output at
step t,

    y_t = sum_(s <= t) (phi(q_t) . phi(k_s)) v_s / sum_(s <= t) phi(q_t) . phi(k_s),

only needs S_t = sum_(s <= t) phi(k_s) v_s^T (a D x D fast-weight matrix per head, written by
one outer product per step: Schlag et al. 2021) and z_t = sum_(s <= t) phi(k_s) (the
normaliser): y_t = S_t^T phi(q_t) / (z_t . phi(q_t)).  ``step`` carries exactly (S, z), as
one D x (D + 1) matrix per head: the outer product phi(k) [v, 1]^T writes both, and
phi(q)^T [S, z] reads numerator and normaliser at once.  The state does not grow with the
episode, unlike a Transformer's key/value cache.

``forward`` computes the same sums in their attention form (the kernel scores of every pair
of steps, masked causally): for episodes of a few hundred steps one masked product is
faster than a loop over time.  There are no position embeddings: the sums ignore the order
of the past, except through the causal structure that deeper layers see.

Blocks are the Transformer's (pre-LayerNorm, an MLP after attention); private inputs
(the last ``private_size`` columns) are read like any input, as by the recurrent families:
the fast-weight matrix is a recurrent state and may keep them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mesaprobe.models.base import SequenceModel, linear_flops
from mesaprobe.settings import SettingError

#: Added to the normaliser z . phi(q) (positive) so that a vanishing one cannot divide by zero.
NORMALISER_EPSILON = 1e-6


@dataclass(frozen=True)
class LinearAttentionConfig:
    d_model: int = 64
    """Width of the residual stream."""
    layers: int = 2
    """Blocks (linear attention, then an MLP)."""
    heads: int = 4
    """Attention heads per block; d_model / heads must be an integer D, and each head carries a
    D x D fast-weight matrix and a D-vector normaliser (state: d_model * (D + 1) per layer)."""
    mlp_ratio: int = 4
    """Width of each block's MLP, as a multiple of d_model."""

    def validate(self) -> None:
        for name in ("d_model", "layers", "heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise SettingError(
                "heads",
                f"d_model ({self.d_model}) must split into {self.heads} heads of equal size "
                "(each carries a (d_model / heads)^2 fast-weight state)",
            )


def feature_map(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1: positive, so every score and the normaliser are positive."""
    return F.elu(x) + 1.0


class LinearSelfAttention(nn.Module):
    def __init__(self, config: LinearAttentionConfig):
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(phi(q), phi(k), v), each (B, H, T, D), of ``x`` (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (
            z.view(B, T, self.heads, C // self.heads).transpose(1, 2) for z in (q, k, v)
        )  # (B, H, T, D)
        return feature_map(q), feature_map(k), v

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.split_heads(x)
        scores = q @ k.transpose(-1, -2)  # (B, H, T, T): phi(q_t) . phi(k_s)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, 0.0)
        # scores @ v sums phi(q_t) . phi(k_s) v_s = phi(q_t)^T S_t; its row sums are z_t . phi(q_t).
        y = (scores @ v) / (scores.sum(dim=-1, keepdim=True) + NORMALISER_EPSILON)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)

    def step(self, x: Tensor, fast_weights: Tensor) -> tuple[Tensor, Tensor]:
        """One step from ``fast_weights`` (B, H, D, D + 1) = [S, z]; returns them updated and the output."""
        B, C = x.shape
        q, k, v = (z[:, :, 0] for z in self.split_heads(x[:, None]))  # (B, H, D)
        # Write first: the current step attends to itself, as in forward's causal mask.
        written = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, H, D + 1): [v, 1]
        fast_weights = torch.addcmul(
            fast_weights, k[..., :, None], written[..., None, :]
        )  # += phi(k) [v, 1]^T
        read = (q[:, :, None, :] @ fast_weights)[:, :, 0]  # (B, H, D + 1): [phi(q)^T S, phi(q) . z]
        y = read[..., :-1] / (read[..., -1:] + NORMALISER_EPSILON)  # (B, H, D)
        return fast_weights, self.out(y.reshape(B, C))  # (B, C)


class LinearAttentionBlock(nn.Module):
    def __init__(self, config: LinearAttentionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attention = LinearSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.mlp_ratio * config.d_model),
            nn.GELU(),
            nn.Linear(config.mlp_ratio * config.d_model, config.d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        state, attended = self.attention.step(self.norm1(x), state)
        x = x + attended
        return state, x + self.mlp(self.norm2(x))


class LinearAttention(SequenceModel):
    Config: ClassVar[type] = LinearAttentionConfig

    def __init__(
        self, config: LinearAttentionConfig, input_size: int, output_size: int, private_size: int = 0
    ):
        super().__init__(config, input_size, output_size, private_size)
        self.embed = nn.Linear(input_size, config.d_model)
        self.blocks = nn.ModuleList(LinearAttentionBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, output_size)

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> list[Tensor]:
        """Per layer the fast weights [S, z] of every head: (B, H, D, D + 1), zero."""
        config = self.config
        size = config.d_model // config.heads
        dtype = self.embed.weight.dtype
        return [
            torch.zeros(batch, config.heads, size, size + 1, device=device, dtype=dtype) for _ in self.blocks
        ]

    def step(self, state: list[Tensor], x: Tensor) -> tuple[list[Tensor], Tensor]:
        h = self.embed(x)  # (B, C)
        new_state = []
        for block, layer_state in zip(self.blocks, state, strict=True):
            layer_state, h = block.step(h, layer_state)
            new_state.append(layer_state)
        return new_state, self.head(self.norm(h))

    def forward(self, xs: Tensor, return_hidden: bool = False):
        h = self.embed(xs)  # (B, T, C)
        hidden = {"layer0": h}
        for i, block in enumerate(self.blocks):
            h = block(h)
            hidden[f"layer{i + 1}"] = h
        ys = self.head(self.norm(h))  # (B, T, O)
        return (ys, hidden) if return_hidden else ys

    def flops_per_step(self, horizon: int) -> int:
        """The embedding, each block's projections and MLP, its fast-weight write phi(k) [v, 1]^T
        and read phi(q)^T [S, z] (d_model * (D + 1) multiply-adds each), then the head; the same
        at every step, whatever the horizon."""
        size = self.config.d_model // self.config.heads
        memory = 2 * 2 * self.config.d_model * (size + 1)
        blocks = sum(
            linear_flops(block.attention.qkv, block.attention.out, block.mlp[0], block.mlp[2]) + memory
            for block in self.blocks
        )
        return linear_flops(self.embed, self.head) + blocks
