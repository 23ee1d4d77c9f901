"""A causal Transformer that re-reads the episode history at every step.

Pre-LayerNorm blocks in the style of nanoGPT, rotary position embeddings (so that
nothing is tied to a trained maximum length and attention depends on relative
position only), and an optional attention window: ``context: full`` attends to the
whole episode so far, ``context: w`` to the last ``w`` steps including the current
one (``w = 1``: no memory at all).  A window set here is trained with: it masks attention in
``forward`` (training) and bounds the cache in ``step`` (acting), so every probe of the frozen
model sees it too; the window probe may narrow it further, never widen it.

Private inputs (the last ``private_size`` columns) bypass attention: they join the
final residual stream in an MLP output head at their own step only.

Acting uses a key/value cache.  With a window the cache is a ring buffer of ``w``
slots: keys are rotated by their absolute position before they are cached, so the
order of the slots does not matter to attention.

A frozen model's window can be narrowed at probe time (the context-window ablation):
inside ``with model.attention_window(w):`` it computes exactly what a Transformer
built with ``context: w`` and the same weights computes; the weights are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mesaprobe.models.base import SequenceModel, linear_flops
from mesaprobe.settings import SettingError


@dataclass(frozen=True)
class TransformerConfig:
    d_model: int = 64
    """Width of the residual stream."""
    layers: int = 2
    """Transformer blocks."""
    heads: int = 4
    """Attention heads per block; d_model / heads must be even (rotary embeddings)."""
    context: int | Literal["full"] = "full"
    """Steps each position may attend to, in training and in every probe: full (the whole
    episode so far) or a sliding window of w steps including the current one (w = 1 means
    no memory; L layers reach L * (w - 1) + 1 steps back)."""
    mlp_ratio: int = 4
    """Width of each block's MLP, as a multiple of d_model."""
    rope_base: float = 10000.0
    """Base of the rotary embedding frequencies."""

    def validate(self) -> None:
        for name in ("d_model", "layers", "heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"expected a positive integer, got {getattr(self, name)}")
        if self.d_model % self.heads or (self.d_model // self.heads) % 2:
            raise SettingError(
                "heads", f"d_model ({self.d_model}) / heads ({self.heads}) must be an even integer"
            )
        if self.context != "full" and self.context < 1:
            raise SettingError(
                "context", f"expected 'full' or a window of at least 1 step, got {self.context}"
            )

    @property
    def window(self) -> int | None:
        return None if self.context == "full" else int(self.context)


def rotate(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """Rotary position embedding of ``x`` (B, H, T, D) at integer ``positions`` (T,)."""
    half = x.shape[-1] // 2
    frequencies = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * frequencies[None]  # (T, D/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


@dataclass
class KVCache:
    """Per-layer keys and values (B, H, capacity, D), written in place while acting."""

    keys: list[Tensor]
    values: list[Tensor]
    t: int
    """Steps already taken; the next step has position t."""


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.heads = config.heads
        self.window = config.window
        self.rope_base = config.rope_base
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def split_heads(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (
            z.view(B, T, self.heads, C // self.heads).transpose(1, 2) for z in (q, k, v)
        )  # (B, H, T, D)
        return rotate(q, positions, self.rope_base), rotate(k, positions, self.rope_base), v

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        positions = torch.arange(T, device=x.device)
        q, k, v = self.split_heads(x, positions)
        if self.window is None or self.window >= T:  # a window as long as the sequence is no limit
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            distance = positions[:, None] - positions[None, :]  # (T, T): query minus key
            allowed = (distance >= 0) & (distance < self.window)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)

    def step(self, x: Tensor, keys: Tensor, values: Tensor, t: int) -> Tensor:
        B, C = x.shape
        capacity = keys.shape[2]
        position = torch.full((1,), t, device=x.device)  # a fill on the device: no host-to-device copy
        q, k, v = self.split_heads(x[:, None], position)  # (B, H, 1, D)
        slot = t % capacity
        keys[:, :, slot] = k[:, :, 0]
        values[:, :, slot] = v[:, :, 0]
        # Slots 0..t hold positions 0..t until the ring buffer wraps; then all slots
        # hold exactly the last `capacity` positions, which is the window.
        filled = min(t + 1, capacity)
        y = F.scaled_dot_product_attention(q, keys[:, :, :filled], values[:, :, :filled])
        return self.out(y.transpose(1, 2).reshape(B, C))  # (B, C)


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attention = CausalSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.mlp_ratio * config.d_model),
            nn.GELU(),
            nn.Linear(config.mlp_ratio * config.d_model, config.d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def step(self, x: Tensor, keys: Tensor, values: Tensor, t: int) -> Tensor:
        x = x + self.attention.step(self.norm1(x), keys, values, t)
        return x + self.mlp(self.norm2(x))


class Transformer(SequenceModel):
    Config: ClassVar[type] = TransformerConfig

    def __init__(self, config: TransformerConfig, input_size: int, output_size: int, private_size: int = 0):
        super().__init__(config, input_size, output_size, private_size)
        self.embed = nn.Linear(input_size - private_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        if private_size:
            # Private inputs meet the residual stream only here, after attention: an MLP
            # head so that they can change the decision non-linearly.
            self.head = nn.Sequential(
                nn.Linear(config.d_model + private_size, config.d_model),
                nn.GELU(),
                nn.Linear(config.d_model, output_size),
            )
        else:
            self.head = nn.Linear(config.d_model, output_size)
        # Steps each position attends to (None: all); attention_window narrows it.
        self.window = config.window

    def split_private(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(public, private) columns of the inputs ``x`` (..., I); private is None when there are none."""
        if not self.private_size:
            return x, None
        cut = x.shape[-1] - self.private_size
        return x[..., :cut], x[..., cut:]

    def output(self, h: Tensor, private: Tensor | None) -> Tensor:
        h = self.norm(h)
        return self.head(h if private is None else torch.cat([h, private], dim=-1))

    @property
    def has_memory(self) -> bool:  # type: ignore[override]
        return self.window != 1

    @contextlib.contextmanager
    def attention_window(self, window: int) -> Iterator[Transformer]:
        """Attend to at most the last ``window`` steps (the current one included) while inside.

        A model trained with a shorter window keeps its own.  Only the attention mask
        and the size of new key/value caches change, never a weight; start the cache
        (``initial_state``) inside the block too.
        """
        assert window >= 1, "a window holds at least the current step"
        trained = self.window
        self.set_window(window if trained is None else min(window, trained))
        try:
            yield self
        finally:
            self.set_window(trained)

    def set_window(self, window: int | None) -> None:
        self.window = window
        for block in self.blocks:
            block.attention.window = window

    def flops_per_step(self, horizon: int) -> int:
        """The embedding, each block's projections (query, key and value, output) and MLP, and its
        attention at the last step over the min(window, horizon) cached steps (scores and the
        weighted sum of values: 2 x d_model multiply-adds per cached step), then the head."""
        attended = horizon if self.window is None else min(self.window, horizon)
        blocks = sum(
            linear_flops(block.attention.qkv, block.attention.out, block.mlp[0], block.mlp[2])
            + 2 * 2 * self.config.d_model * attended
            for block in self.blocks
        )
        head = [self.head[0], self.head[2]] if self.private_size else [self.head]
        return linear_flops(self.embed, *head) + blocks

    def initial_state(self, batch: int, horizon: int, device: torch.device | str) -> KVCache:
        config = self.config
        capacity = horizon if self.window is None else min(self.window, horizon)
        shape = (batch, config.heads, capacity, config.d_model // config.heads)
        dtype = self.embed.weight.dtype
        keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.blocks]
        values = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.blocks]
        return KVCache(keys=keys, values=values, t=0)

    def step(self, state: KVCache, x: Tensor) -> tuple[KVCache, Tensor]:
        capacity = state.keys[0].shape[2]
        if self.window is None and state.t >= capacity:
            raise ValueError(f"key/value cache holds {capacity} steps; start a longer one")
        public, private = self.split_private(x)
        h = self.embed(public)  # (B, C)
        for block, keys, values in zip(self.blocks, state.keys, state.values, strict=True):
            h = block.step(h, keys, values, state.t)
        state.t += 1  # the cache tensors were written in place; only the clock moves
        return state, self.output(h, private)

    def forward(self, xs: Tensor, return_hidden: bool = False):
        public, private = self.split_private(xs)
        h = self.embed(public)  # (B, T, C)
        hidden = {"layer0": h}
        for i, block in enumerate(self.blocks):
            h = block(h)
            hidden[f"layer{i + 1}"] = h
        ys = self.output(h, private)
        return (ys, hidden) if return_hidden else ys
