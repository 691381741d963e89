"""The small building blocks of a transformer block: norms and feed-forward networks.

GPT-2's (chapter 4): LayerNorm, GELU and the GELU FeedForward. What later models use instead:
RMSNorm and the gated SwiGLU feed-forward (Llama, SmolLM2, Qwen, Mistral...). The decoder core
(`decoder.py`) picks one norm and one feed-forward per model configuration.

Parameter names follow the book (`scale`, `shift`, `layers.0`, `layers.2`; `weight`; `fc1`,
`fc2`, `fc3`) so checkpoints made with the book's code load unchanged. The math is written out in the docstrings; the forward
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


class ReLUSquared(nn.Module):
    """relu(x)^2: as cheap as ReLU, smooth at 0 in its first derivative, and sparse (So et al.,
    2021, "Primer"; the activation of the modded-nanogpt speedruns)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


ACTIVATIONS = {"gelu": GELU, "relu2": ReLUSquared}


class FeedForward(nn.Module):
    """Per-token MLP: widen to 4x, GELU, project back. Attention mixes tokens; this thinks per token.

    `activation="relu2"` uses ReLU squared instead of GELU; `bias=False` drops the biases."""

    def __init__(self, emb_dim: "int | dict | object", hidden_dim: int | None = None, activation: str = "gelu",
                 bias: bool = True):
        super().__init__()
        if not isinstance(emb_dim, int):  # the book passes its whole config dict
            emb_dim = emb_dim["emb_dim"] if isinstance(emb_dim, dict) else emb_dim.emb_dim
        hidden_dim = hidden_dim or 4 * emb_dim
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.layers = nn.Sequential(
            nn.Linear(emb_dim, hidden_dim, bias=bias),  # (b, T, emb) -> (b, T, 4*emb)
            ACTIVATIONS[activation](),
            nn.Linear(hidden_dim, emb_dim, bias=bias),  # (b, T, 4*emb) -> (b, T, emb)
        )

    @property
    def output_layer(self) -> nn.Linear:
        """The projection back into the residual stream (initialized smaller in deep stacks)."""
        return self.layers[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class RMSNorm(nn.Module):
    """Root-mean-square norm: divide each token vector by its RMS, then scale.

        y = weight * x / sqrt(mean(x^2) + eps)

    Unlike LayerNorm it neither subtracts the mean nor adds a shift. Zhang & Sennrich (2019) found
    the re-centering contributes little; dropping it saves a reduction and a parameter vector and
    trains as well. The statistics are computed in float32 even for bf16/fp16 activations: the
    mean of squares of a few hundred values overflows or loses precision in 16 bits.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class SwiGLUFeedForward(nn.Module):
    """ff(x) = fc3(silu(fc1(x)) * fc2(x)): a gated MLP (Shazeer, 2020).

    fc1 ("gate") and fc2 ("up") both widen emb_dim -> hidden_dim; the SiLU of the gate multiplies
    the up projection element by element, so the network can switch features on and off per token;
    fc3 ("down") projects back. Three matrices instead of two, so hidden_dim is usually ~8/3 *
    emb_dim instead of 4x to keep the parameter count; at equal size it trains to a lower loss than
    GELU. Names fc1/fc2/fc3 as in the book's Llama code; HF calls them gate_proj/up_proj/down_proj.
    """

    def __init__(self, emb_dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(emb_dim, hidden_dim, bias=bias)  # gate
        self.fc2 = nn.Linear(emb_dim, hidden_dim, bias=bias)  # up
        self.fc3 = nn.Linear(hidden_dim, emb_dim, bias=bias)  # down

    @property
    def output_layer(self) -> nn.Linear:
        return self.fc3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (b, T, emb) -> (b, T, hidden) -> (b, T, emb)
        return self.fc3(F.silu(self.fc1(x)) * self.fc2(x))
