"""Weight-only int8 quantization with one scale per output channel: the idea, and the layers.

A batch-1 decoding step multiplies one activation vector by every weight matrix of the model,
so its speed is bounded by how fast the weights come out of memory. Storing each weight in
one byte instead of four (fp32) or two (bf16) reads 4x (2x) fewer bytes and holds the model
in 4x (2x) less memory.

**Per-channel symmetric quantization.** Row ``r`` of a weight matrix (the weights of output
channel ``r``) is stored as int8 values ``q`` and one float ``scale``::

    scale[r] = max_j |W[r, j]| / 127          (the largest weight of the row maps to +-127)
    q[r, j]  = round(W[r, j] / scale[r])      in -127 .. 127
    W[r, j] ~= q[r, j] * scale[r]             error at most scale[r] / 2

One scale per row (not one for the whole matrix) matters: rows differ in magnitude, and a
single scale would spend the 255 levels of a small row on a range it never uses. And because
the scale is constant along a row, it factors out of the dot product::

    y[r] = sum_j x[j] * q[r, j] * scale[r] = scale[r] * (x . q[r, :])

so a kernel can multiply by the int8 values directly and scale each output once. PyTorch ships
such a kernel for CPUs, ``torch.ops.aten._weight_int8pack_mm(x, q, scale)``. It is fast only
with bf16 (or fp16) inputs: measured on a 2-core AMD EPYC (AVX2), a 576 x 1536 matrix takes
0.09 ms with a bf16 input and 1.0 ms with an fp32 one (the fp32 input is not vectorized). So
these layers compute the matrix product in bf16 with fp32 accumulation inside the kernel, and
hand back the caller's dtype: "weights int8, activations float". Elsewhere (another device,
an older PyTorch) they use the plain reference computation, ``x @ (q * scale).T``.

The token embedding is quantized the same way (one scale per token row); a model whose output
head is tied to the embedding (GPT-2, SmolLM2) shares the same int8 matrix between both, as the
float model shares its float one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

#: The dtype the int8 and int4 kernels take their inputs in on a CPU (see the module docstring).
KERNEL_INPUT_DTYPE = torch.bfloat16


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale): q (rows, cols) int8 in -127..127 and scale (rows,) float32 with W ~= q * scale[:, None]."""
    if weight.dim() != 2:
        raise ValueError(f"per-channel quantization needs a 2-D weight (rows, cols), got shape {tuple(weight.shape)}")
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale works
    q = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_per_channel(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float matrix the int8 values stand for: q * scale[:, None]."""
    return (q.to(torch.float32) * scale.to(torch.float32)[:, None]).to(dtype)


def int8_kernel_available(device: torch.device | str) -> bool:
    """Whether PyTorch's int8 weight-only matmul kernel serves this device (CPU, PyTorch >= 2.4)."""
    return torch.device(device).type == "cpu" and hasattr(torch.ops.aten, "_weight_int8pack_mm")


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 with one scale per output channel.

    x (..., in_features) -> (..., out_features), in x's dtype. Buffers: `q` (out, in) int8,
    `scale` (out,) float32, and the optional `bias` (a float parameter, as in nn.Linear).
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        if q.dtype != torch.int8 or q.dim() != 2 or scale.shape != (q.shape[0],):
            raise ValueError(f"need q (out, in) int8 and scale (out,), got {q.dtype} {tuple(q.shape)} and "
                             f"{tuple(scale.shape)}")
        self.out_features, self.in_features = q.shape
        self.register_buffer("q", q)
        self.register_buffer("scale", scale.float())
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self._kernel_scale: torch.Tensor | None = None  # `scale` in the kernel's input dtype, made once

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        q, scale = quantize_per_channel(linear.weight)
        return cls(q, scale, linear.bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_per_channel(self.q, self.scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)                                  # (N, in)
        if int8_kernel_available(flat.device):
            if self._kernel_scale is None or self._kernel_scale.device != flat.device:
                self._kernel_scale = self.scale.to(KERNEL_INPUT_DTYPE)
            out = torch.ops.aten._weight_int8pack_mm(flat.to(KERNEL_INPUT_DTYPE), self.q, self._kernel_scale)
            out = out.to(x.dtype)
        else:  # the reference: dequantize, then an ordinary matmul
            out = F.linear(flat, self.q.to(x.dtype)) * self.scale.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*leading, self.out_features)                         # (..., out)

    def _apply(self, fn, recurse=True):
        self._kernel_scale = None  # .to(device/dtype) moves the buffers: make the kernel copy again
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Embedding(nn.Module):
    """A token embedding table stored as int8 rows with one scale per token.

    ids (...) -> (..., emb_dim) vectors in `dtype` (the model's activation dtype). `as_head()` gives
    the output head that shares this table (tied weights)."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = q.shape
        self.register_buffer("q", q)
        self.register_buffer("scale", scale.float())
        self.dtype = dtype

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> "Int8Embedding":
        q, scale = quantize_per_channel(embedding.weight)
        return cls(q, scale, embedding.weight.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # look up the int8 rows first, then scale only those: (..., emb_dim)
        return (self.q[ids].to(self.dtype) * self.scale[ids].to(self.dtype).unsqueeze(-1))

    def as_head(self) -> Int8Linear:
        """An output head (emb_dim -> vocab) reading this same int8 table: no second copy."""
        return Int8Linear(self.q, self.scale)

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        probe = fn(torch.zeros((), dtype=self.dtype))  # follow .to(dtype) like a float embedding
        if probe.is_floating_point():
            self.dtype = probe.dtype
        return result

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows, dtype={self.dtype}"
