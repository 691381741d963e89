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

**The kernels.** With fp32 activations on a CPU that has a C compiler, the native kernels
(`kernels/decode_cpu.c`) multiply: the int8 rows are read once, widened to fp32 in registers and
multiplied with the fp32 input (a few rows: decoding), or converted to an fp32 matrix once for a
BLAS product (many rows: a prompt); each output is then times its exact fp32 ``scale[r]``.
Otherwise (bf16 activations, or no native kernels) PyTorch's kernel runs, as follows.

PyTorch ships a CPU kernel for the product with int8 values,
``torch.ops.aten._weight_int8pack_mm(x, q, scales)``. It is fast only with a bf16 input (and
then wants its scales in bf16 too): measured on a 2-core AMD EPYC (AVX2), a 576 x 1536 matrix
takes 0.03-0.09 ms with a bf16 input and 0.6-1.0 ms with an fp16 or fp32 one. So the layers hand
it a bf16 copy of the input (it accumulates in fp32) and give back the caller's dtype:
"weights int8, activations float". The scales stay exact: the kernel gets scales of 1 (it
computes ``x . q``) and each output is then multiplied by its fp32 ``scale[r]``, the line
above; this costs nothing measurable and avoids rounding the scales to bf16's 8 bits.

**What the kernel cannot take** (measured with PyTorch 2.13, each shape in its own process,
see tests/test_quantize_formats.py):

* an input width ``in_features`` that is not a multiple of 16: with 2 or more rows the process
  dies (segmentation fault), and even with one row the result is garbage (inf, NaN). So the
  layers store ``q`` with its columns padded by zeros to a multiple of 16, once, when they are
  built (`padded_width`), and pad the input with zero columns to match: the zeros add nothing
  to the dot products, and the kernel stays fast. ``in_features`` stays the true width;
  `dequantized_weight` gives the (out, in) matrix without the padding.
* an input whose rows are not contiguous in memory (a bf16 slice such as ``x[:, -1, :]``): a
  segmentation fault too, so the input is made contiguous first.

Every output size works. Elsewhere (another device, or a PyTorch without the kernel) the layers
use the plain reference computation, ``x @ (q * scale).T``: correct, not faster than float.

The token embedding is quantized the same way (one scale per token row); a model whose output
head is tied to the embedding (GPT-2, SmolLM2) shares the same (padded) int8 matrix between
both, as the float model shares its float one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_from_scratch.kernels import native

#: The dtype the int8 and int4 kernels take their inputs (and scales) in on a CPU (see above).
KERNEL_INPUT_DTYPE = torch.bfloat16

#: The int8 kernel is only correct for input widths that are a multiple of this (measured above).
KERNEL_WIDTH_MULTIPLE = 16


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


def padded_width(width: int) -> int:
    """`width` rounded up to a multiple of KERNEL_WIDTH_MULTIPLE: the number of columns stored."""
    return -(-width // KERNEL_WIDTH_MULTIPLE) * KERNEL_WIDTH_MULTIPLE


def _padded_table(q: torch.Tensor, width: int) -> torch.Tensor:
    """q (rows, width) with zero columns added up to `padded_width(width)`; a q already padded as is."""
    if q.dtype != torch.int8 or q.dim() != 2:
        raise ValueError(f"need q as an int8 matrix (rows, cols), got {q.dtype} of shape {tuple(q.shape)}")
    if q.shape[1] == padded_width(width):
        return q
    if q.shape[1] != width:
        raise ValueError(f"q has {q.shape[1]} columns: expected {width} or, padded, {padded_width(width)}")
    return F.pad(q, (0, padded_width(width) - width))


def as_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x (..., in_features) as rows (N, in_features) for a quantized layer's matmul; an input of
    another width is a clear error (the kernels would read past the rows, or crash)."""
    if x.shape[-1] != layer.in_features:
        raise ValueError(f"{type(layer).__name__} takes inputs of width {layer.in_features}, "
                         f"got shape {tuple(x.shape)}")
    return x.reshape(-1, layer.in_features)


def from_rows(layer: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The rows (N, out_features) of a matmul, plus the layer's bias, in x's leading shape."""
    if layer.bias is not None:
        out = out + layer.bias.to(out.dtype)
    return out.reshape(*x.shape[:-1], layer.out_features)


class Int8Linear(nn.Module):
    """A linear layer whose weight is int8 with one scale per output channel.

    x (..., in_features) -> (..., out_features), in x's dtype. Buffers: `q` (out, in padded to a
    multiple of 16) int8, `scale` (out,) float32 (kept in float32 by ``.to(dtype)``), and the
    optional `bias` (a float parameter, as in nn.Linear). `in_features`: the true input width
    when `q` is already padded (a tied head sharing the embedding's table).
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, *,
                 in_features: int | None = None):
        super().__init__()
        self.in_features = q.shape[1] if in_features is None else in_features
        self.out_features = q.shape[0]
        if scale.shape != (self.out_features,):
            raise ValueError(f"need one scale per output row: q has {self.out_features} rows, scale has shape "
                             f"{tuple(scale.shape)}")
        self.register_buffer("q", _padded_table(q, self.in_features))
        self.register_buffer("scale", scale.float())
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self._unit_scales: torch.Tensor | None = None  # the kernel's scales: ones in bf16, made once

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        q, scale = quantize_per_channel(linear.weight)
        return cls(q, scale, linear.bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (out, in) matrix this layer multiplies by (without the padding columns)."""
        return dequantize_per_channel(self.q[:, :self.in_features], self.scale, dtype)

    def kernel_matrix(self, with_bias: bool = False) -> native.Linear:
        """This layer's weights as the native kernels' `Linear` (pointers into `q` and `scale`)."""
        return native.cached_linear(self, native.FORMAT_INT8, self.q, self.q.shape[1], self.in_features,
                                    scale=self.scale, bias=self.bias if with_bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = as_rows(self, x)                                                 # (N, in)
        lib = native.library() if flat.device.type == "cpu" else None
        if lib is not None and flat.dtype == torch.float32 and not (torch.is_grad_enabled() and flat.requires_grad):
            out = native.matmul(lib, self.kernel_matrix(), flat)                # fp32 throughout, exact scales
        elif int8_kernel_available(flat.device):
            flat = flat.to(KERNEL_INPUT_DTYPE)
            if self.q.shape[1] != self.in_features:                             # zero columns, as in q
                flat = F.pad(flat, (0, self.q.shape[1] - self.in_features))
            if self._unit_scales is None or self._unit_scales.device != flat.device:
                self._unit_scales = torch.ones(self.out_features, dtype=KERNEL_INPUT_DTYPE, device=flat.device)
            dots = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.q, self._unit_scales)  # x . q
            out = dots.float().mul_(self.scale).to(x.dtype)                     # * scale, in fp32
        else:  # the reference: dequantize, then an ordinary matmul
            out = F.linear(flat, self.q[:, :self.in_features].to(x.dtype)) * self.scale.to(x.dtype)
        return from_rows(self, out, x)                                          # (..., out)

    def _apply(self, fn, recurse=True):
        # .to(dtype) converts float buffers: keep `scale` exact in float32 (it moves devices only)
        scale = self.scale
        result = super()._apply(fn, recurse)
        self.scale = scale.to(self.q.device)
        self._unit_scales = None  # made again on the new device
        return result

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Embedding(nn.Module):
    """A token embedding table stored as int8 rows with one scale per token.

    ids (...) -> (..., emb_dim) vectors in `dtype` (the model's activation dtype). The table's
    columns are padded with zeros to a multiple of 16, as `Int8Linear` needs, so that `as_head()`
    gives an output head sharing this very table (tied weights)."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = q.shape
        if scale.shape != (self.num_embeddings,):
            raise ValueError(f"need one scale per token row: {self.num_embeddings} rows, scale shape "
                             f"{tuple(scale.shape)}")
        self.register_buffer("q", _padded_table(q, self.embedding_dim))
        self.register_buffer("scale", scale.float())
        self.dtype = dtype

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> "Int8Embedding":
        q, scale = quantize_per_channel(embedding.weight)
        return cls(q, scale, embedding.weight.dtype)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (num_embeddings, embedding_dim) table the lookups read."""
        return dequantize_per_channel(self.q[:, :self.embedding_dim], self.scale, dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # look up the int8 rows first, then scale only those: (..., emb_dim)
        rows = self.q[ids, :self.embedding_dim].to(torch.float32)
        return (rows * self.scale[ids].unsqueeze(-1)).to(self.dtype)

    def as_head(self) -> Int8Linear:
        """An output head (emb_dim -> vocab) reading this same int8 table: no second copy."""
        return Int8Linear(self.q, self.scale, in_features=self.embedding_dim)

    def _apply(self, fn, recurse=True):
        scale = self.scale
        result = super()._apply(fn, recurse)
        self.scale = scale.to(self.q.device)  # exact float32, as in Int8Linear
        probe = fn(torch.zeros((), dtype=self.dtype))  # follow .to(dtype) like a float embedding
        if probe.is_floating_point():
            self.dtype = probe.dtype
        return result

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows, dtype={self.dtype}"
