"""Rotary position embedding (RoPE): positions enter attention by rotating queries and keys.

GPT-2 adds a learned position vector to every token embedding. Llama-family models (Llama,
SmolLM2, Mistral, Qwen, ...) instead rotate each pair of dimensions (x[i], x[i + d/2]) of every
query and key by the angle ``position * theta_i``, with ``theta_i = base^(-2i / head_dim)``.
A query at position m and a key at position n, each rotated by its own position, have a dot
product that depends only on m - n: attention sees *relative* positions, there is no table to
learn, and the tables are just recomputed for another length.

``base`` ("rope_theta") sets the slowest rotation (the longest wavelength is about
2 * pi * base tokens): 1e4 for Llama 2, 1e5 for SmolLM2, 1e6 for Qwen3. ``scaling`` > 1 is
linear position interpolation: positions are divided by it, so a model trained on n tokens
sees n * scaling tokens within the angles it knows.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def rope_frequencies(head_dim: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """The head_dim / 2 rotation speeds theta_i = base^(-2i / head_dim), i = 0 .. head_dim/2 - 1 (float32)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (base ** exponents)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1), where x1/x2 are the first/second half of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + d/2]) of x by the angle position * theta_i.

    x: (b, heads, T, head_dim); cos, sin: (T, head_dim), broadcast over batch and heads (or
    (b, 1, T, head_dim) when each row has its own positions).
    This is the "rotate-half" pairing used by Hugging Face Llama. Meta's original code (and
    llama.cpp) pair neighbours (x[2i], x[2i+1]) instead; the two are the same model up to a fixed
    permutation of the query/key projection rows, which is why GGUF files store Q and K permuted
    (see `weights.llama.unpermute_qk_rows`).
    """
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables for every position up to context_length.

    The tables are non-persistent buffers: they follow `.to(device)` but are not saved in
    state_dicts (they are a function of the config). They are kept in float32: if the model is
    cast to bf16, they are rebuilt in float32 on first use, because bf16 angles lose precision
    after a few hundred positions.
    """

    def __init__(self, head_dim: int, context_length: int, base: float, scaling: float = 1.0):
        super().__init__()
        self.head_dim = head_dim
        self.context_length = context_length
        self.base = base
        self.scaling = scaling
        if torch.empty(0).device.type == "meta":
            # Built inside `with torch.device("meta")` (the loaders do this to skip random init):
            # placeholders only; `rebuild()` computes the real tables once weights are loaded.
            cos = sin = torch.empty(context_length, head_dim)
        else:
            cos, sin = self._tables()
        self.register_buffer("cos", cos, persistent=False)  # (context_length, head_dim)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = rope_frequencies(self.head_dim, self.base, device)             # (head_dim/2,)
        positions = torch.arange(self.context_length, device=device, dtype=torch.float32) / self.scaling
        angles = torch.outer(positions, inv_freq)                                  # (ctx, head_dim/2)
        angles = torch.cat((angles, angles), dim=-1)                               # (ctx, head_dim)
        return angles.cos(), angles.sin()

    def rebuild(self) -> None:
        """Recompute the tables in float32 on the buffers' device (after a dtype cast or meta init)."""
        device = self.cos.device if self.cos.device.type != "meta" else torch.device("cpu")
        self.cos, self.sin = self._tables(device)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (float32) for these positions: (T,) -> (T, head_dim) each, shared by the batch;
        (b, T) (left-padded rows, see `KVCache.positions`) -> (b, 1, T, head_dim), one per row."""
        if self.cos.dtype != torch.float32 or self.cos.device.type == "meta":
            self.rebuild()
        cos, sin = self.cos[positions], self.sin[positions]
        if positions.dim() == 2:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over the heads
        return cos, sin
