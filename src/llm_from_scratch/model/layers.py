"""The small building blocks of a GPT block (chapter 4): LayerNorm, GELU and FeedForward.

Parameter names follow the book (`scale`, `shift`, `layers.0`, `layers.2`) so checkpoints made
with the book's code load unchanged. The math is written out in the docstrings; the forward
passes call PyTorch's fused kernels, which compute the same thing faster (the tests compare
them with the written-out formulas).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """Normalize each token vector to mean 0 and variance 1, then scale and shift it.

        y = scale * (x - mean(x)) / sqrt(var(x) + eps) + shift

    `var` is the biased variance (divide by n, not n - 1), as in GPT-2. Normalizing keeps the
    activations of deep stacks in a range where gradients behave.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GPT-2's activation: a smooth ReLU, in the tanh approximation GPT-2 was trained with.

        GELU(x) ~= 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


def gelu_formula(x: torch.Tensor) -> torch.Tensor:
    """The formula above, written out (used by tests and docs to check `GELU`)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class FeedForward(nn.Module):
    """Per-token MLP: widen to 4x, GELU, project back. Attention mixes tokens; this thinks per token."""

    def __init__(self, emb_dim: "int | dict | object"):
        super().__init__()
        if not isinstance(emb_dim, int):  # the book passes its whole config dict
            emb_dim = emb_dim["emb_dim"] if isinstance(emb_dim, dict) else emb_dim.emb_dim
        self.layers = nn.Sequential(
            nn.Linear(emb_dim, 4 * emb_dim),  # (b, T, emb) -> (b, T, 4*emb)
            GELU(),
            nn.Linear(4 * emb_dim, emb_dim),  # (b, T, 4*emb) -> (b, T, emb)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
