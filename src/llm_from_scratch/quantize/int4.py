"""Weight-only int4 quantization in groups: 16 levels per weight, a scale and a minimum per group.

With only 16 levels, one scale per row is too coarse: a single large weight would leave every
other weight of the row on one or two levels. So each row is cut into groups of `group_size`
consecutive weights (32, as llama.cpp's Q4_0 / Q4_1), and each group gets its own affine map::

    min   = min_j W[r, j]                          over the group's weights
    scale = (max_j W[r, j] - min) / 15
    q     = round((W[r, j] - min) / scale)         in 0 .. 15
    W[r, j] ~= q * scale + min                     error at most scale / 2

This is exactly llama.cpp's Q4_1 block (``d = scale``, ``m = min``); Q4_0 is the symmetric
special case ``min = -8 * scale``. So a GGUF file's Q4_0/Q4_1 tensors become these layers with
their values unchanged (`from_groups`, used by the GGUF loader), no float copy in between.

The kernel: PyTorch's ``_weight_int4pack_mm_for_cpu`` multiplies a bf16 input by a matrix
packed two values per byte (``_convert_weight_to_int4pack_for_cpu``). It stores each group as
``(q - 8) * scale + zero``, so our ``min`` becomes ``zero = min + 8 * scale``. It needs
`out_features` divisible by 16 and `in_features` by `group_size`; other matrices stay int8
(`quantize_model` decides). On another device there is no such kernel here: `check_int4_device`
says so with a clear error.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from llm_from_scratch.quantize.int8 import KERNEL_INPUT_DTYPE

DEFAULT_GROUP_SIZE = 32


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
    """Whether the CPU int4 kernel takes a matrix of this shape."""
    return out_features % 16 == 0 and in_features % group_size == 0 and in_features % 2 == 0


def check_int4_device(device: torch.device | str) -> None:
    """Raise a clear error where int4 has no kernel (anything but a CPU, or an old PyTorch)."""
    device = torch.device(device)
    if device.type != "cpu":
        raise ValueError(f"--quantize int4 has a kernel on the CPU only, not on {device.type}: "
                         "use --quantize int8, or --dtype bf16 without quantizing")
    if not int4_kernel_available():
        raise ValueError(f"--quantize int4 needs PyTorch >= 2.6 (its CPU int4 kernel); this is {torch.__version__}. "
                         "Use --quantize int8.")


class Int4Linear(nn.Module):
    """A linear layer with int4 weights in groups (CPU): x (..., in) -> (..., out) in x's dtype."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor,
                 bias: torch.Tensor | None = None):
        super().__init__()
        check_int4_device("cpu")
        self.out_features, self.in_features = q.shape
        self.group_size = self.in_features // scale.shape[1]
        if not int4_fits(self.out_features, self.in_features, self.group_size):
            raise ValueError(f"the int4 kernel needs out_features % 16 == 0 and in_features % group_size == 0; "
                             f"got {self.out_features} x {self.in_features} in groups of {self.group_size}")
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(KERNEL_INPUT_DTYPE)          # (N, in)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size,
                                                         self.scales_and_zeros).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*leading, self.out_features)                        # (..., out)

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
