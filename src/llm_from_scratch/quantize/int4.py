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

The kernel: PyTorch's ``_weight_int4pack_mm_for_cpu`` multiplies a bf16 input by a matrix
packed two values per byte (``_convert_weight_to_int4pack_for_cpu``). It stores each group as
``(q - 8) * scale + zero``, so our ``min`` becomes ``zero = min + 8 * scale``.

**The scales are rounded to bf16.** The kernel takes ``scale`` and ``zero`` in the dtype of its
input, and it is fast only with bf16 (measured on a 2-core AMD EPYC: 0.03 ms for a 576 x 1536
matrix in bf16, 1.3 ms in fp16 or fp32). So `scales_and_zeros` holds them in bf16 (8
significant bits; GGUF's fp16 has 11): ``scale`` and ``zero = min + 8 * scale`` (computed in
fp32) are each rounded once, to within 2**-8 of their value, and a weight moves by at most
``2**-8 * (|q - 8| * |scale| + |zero|)``, on top of its own rounding to 4 bits. The 4-bit values
themselves are kept exactly. `dequantized_weight` gives the matrix the kernel really uses.

**Shapes.** The kernel refuses (with an error, measured with PyTorch 2.13) an output size
`out_features` that is not a multiple of 16, a group size other than 32, 64, 128 or 256, an
input size not divisible by the group size, and an input whose rows are not contiguous (the
layer makes it contiguous). `int4_fits` says which matrices it takes; the int4 format
(`formats.py`) makes the others int8. There is no such kernel on other devices here, nor
before PyTorch 2.6: `int4_problem` says so, and the layer refuses to be built or moved there.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from llm_from_scratch.quantize.int8 import KERNEL_INPUT_DTYPE, as_rows, from_rows

DEFAULT_GROUP_SIZE = 32

#: The group sizes the CPU int4 kernel accepts.
KERNEL_GROUP_SIZES = (32, 64, 128, 256)

#: The kernel needs the number of output rows to be a multiple of this.
KERNEL_ROW_MULTIPLE = 16


def quantize_groups(weight: torch.Tensor, group_size: int = DEFAULT_GROUP_SIZE
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, scale, minimum): q (rows, cols) uint8 in 0..15, scale and minimum (rows, cols // group_size)."""
    rows, cols = weight.shape
    if cols % group_size:
        raise ValueError(f"int4 groups of {group_size} need in_features divisible by {group_size}, got {cols}")
    groups = weight.detach().float().reshape(rows, cols // group_size, group_size)
    minimum = groups.amin(dim=-1)
    scale = (groups.amax(dim=-1) - minimum) / 15.0
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
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and \
        hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


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

    Buffers: `packed` (the kernel's layout of q) and `scales_and_zeros` (groups, out, 2) bf16
    (kept in bf16 by ``.to(dtype)``); the optional `bias` is a float parameter."""

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
        # two 4-bit values per byte, in the kernel's own layout
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1))
        # (groups, out, 2): [scale, zero] with zero = min + 8 * scale, as the kernel computes (q - 8) * scale + zero
        zero = minimum.float() + 8.0 * scale.float()
        scales_and_zeros = torch.stack([scale.float(), zero], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(KERNEL_INPUT_DTYPE))
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = DEFAULT_GROUP_SIZE) -> "Int4Linear":
        q, scale, minimum = quantize_groups(linear.weight, group_size)
        return cls(q, scale, minimum, linear.bias)

    @classmethod
    def from_groups(cls, q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> "Int4Linear":
        """From values already in groups (a GGUF Q4_0/Q4_1 tensor), without re-quantizing."""
        return cls(q, scale, minimum)

    def _matmul(self, flat: torch.Tensor, scales_and_zeros: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(flat.to(KERNEL_INPUT_DTYPE).contiguous(), self.packed,
                                                          self.group_size, scales_and_zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = as_rows(self, x)                                                 # (N, in)
        out = self._matmul(flat, self.scales_and_zeros).to(x.dtype)
        return from_rows(self, out, x)                                          # (..., out)

    @torch.no_grad()
    def int4_values(self) -> torch.Tensor:
        """q (out, in) in 0..15, read back through the kernel itself: with scale 1 and zero 8 every
        weight is q exactly, and multiplying the identity gives them (small integers: exact in bf16)."""
        unit = torch.tensor([1.0, 8.0], dtype=KERNEL_INPUT_DTYPE).expand_as(self.scales_and_zeros).contiguous()
        columns = []
        for start in range(0, self.in_features, 512):  # 512 rows of the identity at a time
            n = min(512, self.in_features - start)
            eye = torch.zeros(n, self.in_features, dtype=KERNEL_INPUT_DTYPE)
            eye[torch.arange(n), start + torch.arange(n)] = 1
            columns.append(self._matmul(eye, unit))                                # (n, out): q[:, start:start+n].T
        return torch.cat(columns).t().round().to(torch.uint8)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (out, in) matrix the kernel multiplies by: (q - 8) * scale + zero with the bf16 scales."""
        scale, zero = self.scales_and_zeros.float().transpose(0, 1).unbind(-1)  # (out, groups) each
        q = self.int4_values().float().reshape(self.out_features, -1, self.group_size)
        return ((q - 8.0) * scale[..., None] + zero[..., None]).reshape(self.out_features, -1).to(dtype)

    def _apply(self, fn, recurse=True):
        # .to(dtype) must not turn the kernel's bf16 scales into another dtype; devices other
        # than the CPU have no kernel (check_int4_device)
        scales = self.scales_and_zeros
        result = super()._apply(fn, recurse)
        check_int4_device(self.packed.device)
        self.scales_and_zeros = scales.to(self.packed.device)
        return result

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}, bias={self.bias is not None}")
