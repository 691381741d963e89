"""Weight-only int4 quantization in groups: 16 levels per weight, a scale and a minimum per group.

With only 16 levels, one scale per row is too coarse: a single large weight would leave every
other weight of the row on one or two levels. So each row is cut into groups of `group_size`
consecutive weights (32, as llama.cpp's Q4_0 / Q4_1), and each group gets its own affine map::

    min   = min_j W[r, j]                          over the group's weights
    scale = (max_j W[r, j] - min) / 15
    q     = round((W[r, j] - min) / scale)         in 0 .. 15
    W[r, j] ~= q * scale + min                     error at most scale / 2

This is llama.cpp's Q4_1 block (``d = scale``, ``m = min``); Q4_0 is the symmetric special
case ``min = -8 * scale``. So a GGUF file's Q4_0/Q4_1 tensors become these layers with their
4-bit values unchanged (`from_groups`, used by the GGUF loader), no float copy in between.

**Storage: Q4_1 blocks.** The layer keeps its weights as llama.cpp's Q4_1 blocks of 32 weights,
20 bytes each: ``d`` (the scale) and ``m`` (the minimum) in fp16, then 16 bytes whose low
nibbles are weights 0..15 and high nibbles weights 16..31 of the block. A GGUF Q4_1 tensor is
that byte for byte; a Q4_0 one is the case ``m = -8 d`` (exact in fp16); a larger group repeats
its scale and minimum in each of its blocks. Scales and minima are therefore fp16 (11
significant bits): `quantize_groups` rounds the minimum *down* and the scale *up* to fp16 values
before it computes q, so every weight still lies within ``scale / 2`` of its 4-bit value.

**The kernels.** On a CPU with a C compiler the native kernels (`kernels/decode_cpu.c`) read the
blocks directly with fp32 activations: a matrix-vector loop for a few rows (decoding), or the
matrix converted to fp32 once and a BLAS product for many (a prompt). Without them, PyTorch's
``_weight_int4pack_mm_for_cpu`` runs instead: it takes a bf16 input, its own packed layout
(built from the blocks on first use) and bf16 ``scale`` and ``zero = min + 8 * scale`` (it
computes ``(q - 8) * scale + zero``), so on that path the scales are rounded once more, to bf16.

**Shapes.** PyTorch's kernel refuses (with an error, measured with PyTorch 2.13) an output size
`out_features` that is not a multiple of 16, a group size other than 32, 64, 128 or 256, an
input size not divisible by the group size, and an input whose rows are not contiguous (the
layer makes it contiguous). `int4_fits` says which matrices it takes; the int4 format
(`formats.py`) makes the others int8, so that both paths take every int4 layer. There is no such kernel on other devices here, nor
before PyTorch 2.6: `int4_problem` says so, and the layer refuses to be built or moved there.
"""

from __future__ import annotations

import torch
import torch.nn as nn

import torch.nn.functional as F

from llm_from_scratch.kernels import native
from llm_from_scratch.quantize.int8 import KERNEL_INPUT_DTYPE, as_rows, from_rows

#: Weights per Q4_1 block, and the block's bytes: fp16 d, fp16 m, 16 bytes of nibbles.
BLOCK = 32
BLOCK_BYTES = 20

DEFAULT_GROUP_SIZE = 32

#: The group sizes the CPU int4 kernel accepts.
KERNEL_GROUP_SIZES = (32, 64, 128, 256)

#: The kernel needs the number of output rows to be a multiple of this.
KERNEL_ROW_MULTIPLE = 16


def _fp16_toward(values: torch.Tensor, direction: float) -> torch.Tensor:
    """fp32 values rounded to fp16-representable values, never past them in `direction` (-inf: down)."""
    if values.abs().max() > torch.finfo(torch.float16).max:
        raise ValueError("int4 stores scales and minima in fp16: this matrix has weights beyond +-65504")
    half = values.half()
    wrong = half.float() < values if direction > 0 else half.float() > values
    stepped = torch.nextafter(half, torch.full_like(half, direction))   # the next fp16 value that way
    return torch.where(wrong, stepped, half).float()


def quantize_groups(weight: torch.Tensor, group_size: int = DEFAULT_GROUP_SIZE
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, scale, minimum): q (rows, cols) uint8 in 0..15, scale and minimum (rows, cols // group_size),
    float32 tensors holding fp16 values (the blocks store them in fp16)."""
    rows, cols = weight.shape
    if cols % group_size:
        raise ValueError(f"int4 groups of {group_size} need in_features divisible by {group_size}, got {cols}")
    groups = weight.detach().float().reshape(rows, cols // group_size, group_size)
    minimum = _fp16_toward(groups.amin(dim=-1), float("-inf"))      # at or below every weight
    scale = _fp16_toward((groups.amax(dim=-1) - minimum) / 15.0, float("inf"))  # reaches the largest
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: q = 0 gives min
    q = torch.round((groups - minimum[..., None]) / scale[..., None]).clamp_(0, 15).to(torch.uint8)
    return q.reshape(rows, cols), scale, minimum


def dequantize_groups(q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float matrix the groups stand for: q * scale + minimum, group by group."""
    rows, cols = q.shape
    group_size = cols // scale.shape[1]
    groups = q.reshape(rows, -1, group_size).float() * scale[..., None].float() + minimum[..., None].float()
    return groups.reshape(rows, cols).to(dtype)


def int4_kernel_available() -> bool:
    """Whether some int4 kernel runs here: the native one, or PyTorch's (>= 2.6)."""
    return native.library() is not None or torch_int4_kernel_available()


def torch_int4_kernel_available() -> bool:
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and \
        hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def to_blocks(q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
    """(rows, cols // 32 * 20) uint8 Q4_1 blocks from q (rows, cols) in 0..15 and the groups'
    scale and minimum (rows, groups); a group of 64..256 becomes 2..8 blocks with its scale."""
    rows, cols = q.shape
    repeat = cols // BLOCK // scale.shape[1]
    d = scale.float().half().repeat_interleave(repeat, dim=1)             # (rows, blocks)
    m = minimum.float().half().repeat_interleave(repeat, dim=1)
    values = q.to(torch.uint8).reshape(rows, -1, BLOCK)
    nibbles = values[..., :16] | (values[..., 16:] << 4)                   # (rows, blocks, 16)
    halves = torch.stack([d, m], dim=-1).view(torch.uint8)                 # (rows, blocks, 4)
    return torch.cat([halves, nibbles], dim=-1).reshape(rows, -1).contiguous()


def from_blocks(blocks: torch.Tensor, cols: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, d, m) of Q4_1 blocks: q (rows, cols) uint8, d and m (rows, cols // 32) float32."""
    rows = blocks.shape[0]
    b = blocks.reshape(rows, cols // BLOCK, BLOCK_BYTES)
    halves = b[..., :4].contiguous().view(torch.float16).float()         # (rows, blocks, 2)
    nibbles = b[..., 4:]
    q = torch.cat([nibbles & 15, nibbles >> 4], dim=-1).reshape(rows, cols)
    return q, halves[..., 0], halves[..., 1]


def int4_fits(out_features: int, in_features: int, group_size: int = DEFAULT_GROUP_SIZE) -> bool:
    """Whether the CPU int4 kernel takes a matrix of this shape in groups of this size."""
    return (group_size in KERNEL_GROUP_SIZES and out_features % KERNEL_ROW_MULTIPLE == 0
            and in_features % group_size == 0)


def int4_problem(device: torch.device | str | None = None) -> str | None:
    """Why int4 cannot run here (a sentence with the fix), or None when it can."""
    if device is not None and torch.device(device).type != "cpu":
        return (f"int4 runs on the CPU only (PyTorch's int4 kernel is a CPU kernel), not on "
                f"{torch.device(device).type}: use int8 there, or --dtype bf16 without quantizing")
    if not int4_kernel_available():
        return (f"int4 needs PyTorch >= 2.6 (its CPU int4 kernel); this is {torch.__version__}: "
                "use int8, or upgrade PyTorch")
    return None


def check_int4_device(device: torch.device | str) -> None:
    """Raise a clear error where int4 has no kernel (anything but a CPU, or an old PyTorch)."""
    problem = int4_problem(device)
    if problem:
        raise ValueError(problem)


class Int4Linear(nn.Module):
    """A linear layer with int4 weights in groups (CPU): x (..., in) -> (..., out) in x's dtype.

    Buffer `blocks` (out, in / 32 * 20) uint8: Q4_1 blocks (above); the optional `bias` is a float
    parameter. `group_size` is the size the groups were made with (their blocks share a scale)."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor,
                 bias: torch.Tensor | None = None):
        super().__init__()
        check_int4_device(q.device)
        self.out_features, self.in_features = q.shape
        if scale.shape != minimum.shape or scale.dim() != 2 or scale.shape[0] != self.out_features \
                or self.in_features % scale.shape[1]:
            raise ValueError(f"need scale and minimum of shape (out, groups) for q of shape {tuple(q.shape)}, got "
                             f"{tuple(scale.shape)} and {tuple(minimum.shape)}")
        self.group_size = self.in_features // scale.shape[1]
        if not int4_fits(self.out_features, self.in_features, self.group_size):
            raise ValueError(f"the int4 kernel needs out_features % {KERNEL_ROW_MULTIPLE} == 0, a group size in "
                             f"{KERNEL_GROUP_SIZES} and in_features % group_size == 0; got {self.out_features} x "
                             f"{self.in_features} in groups of {self.group_size} (make such a matrix int8)")
        self.register_buffer("blocks", to_blocks(q, scale, minimum))
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = DEFAULT_GROUP_SIZE) -> "Int4Linear":
        q, scale, minimum = quantize_groups(linear.weight, group_size)
        return cls(q, scale, minimum, linear.bias)

    @classmethod
    def from_groups(cls, q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> "Int4Linear":
        """From values already in groups (a GGUF Q4_0/Q4_1 tensor), without re-quantizing."""
        return cls(q, scale, minimum)

    def kernel_matrix(self, with_bias: bool = False) -> native.Linear:
        """This layer's weights as the native kernels' `Linear` (pointers into `blocks`)."""
        return native.cached_linear(self, native.FORMAT_Q4_1, self.blocks, self.blocks.shape[1], self.in_features,
                                    bias=self.bias if with_bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = as_rows(self, x)                                                 # (N, in)
        lib = native.library()
        if lib is not None and not (torch.is_grad_enabled() and flat.requires_grad):
            out = native.matmul(lib, self.kernel_matrix(), flat)
        elif lib is not None or not torch_int4_kernel_available():              # autograd through x
            out = F.linear(flat, self.dequantized_weight(flat.dtype))
        else:
            packed, scales_and_zeros = self._torch_kernel_weights()
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat.to(KERNEL_INPUT_DTYPE).contiguous(), packed,
                                                             self.group_size, scales_and_zeros)
        return from_rows(self, out.to(x.dtype), x)                              # (..., out)

    def _torch_kernel_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """PyTorch's packed layout and bf16 [scale, zero] (groups, out, 2), made once from the blocks."""
        cached = self.__dict__.get("_torch_kernel")
        if cached is None or cached[0] != self.blocks.data_ptr():
            q, d, m = from_blocks(self.blocks, self.in_features)
            step = self.group_size // BLOCK                                     # blocks per group
            scale, minimum = d[:, ::step], m[:, ::step]
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
            zero = minimum + 8.0 * scale
            scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(KERNEL_INPUT_DTYPE)
            cached = (self.blocks.data_ptr(), packed, scales_and_zeros)
            self.__dict__["_torch_kernel"] = cached
        return cached[1], cached[2]

    @torch.no_grad()
    def int4_values(self) -> torch.Tensor:
        """q (out, in) in 0..15, as stored."""
        return from_blocks(self.blocks, self.in_features)[0]

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (out, in) matrix this layer multiplies by: q * d + m with the blocks' fp16 d and m."""
        q, d, m = from_blocks(self.blocks, self.in_features)
        weight = q.float().reshape(self.out_features, -1, BLOCK) * d[..., None] + m[..., None]
        return weight.reshape(self.out_features, self.in_features).to(dtype)

    def _apply(self, fn, recurse=True):
        # the blocks are bytes (uint8): .to(dtype) leaves them; devices other than the CPU have
        # no int4 kernel (check_int4_device)
        result = super()._apply(fn, recurse)
        check_int4_device(self.blocks.device)
        return result

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}, bias={self.bias is not None}")
