"""The quantization formats in one place: what ``--quantize`` offers, and how each one is made.

A format is a `QuantFormat`: its name and a one-line description (the CLI's ``--help``), the
devices it runs on, and how it turns each kind of matrix into a layer:

* `linear`: a float weight (out, in) and its bias -> a layer (`Int8Linear`, `Int4Linear`...);
* `from_blocks`: a matrix read from a GGUF file as its integer blocks (`gguf_blocks.GroupValues`)
  -> a layer, without a float copy of the matrix;
* `embedding` and `head`: the token embedding and an untied output head (int8 in both formats:
  the head decides every next token and is where 4 bits cost the most quality, and GPT-2's
  50,257-row vocabulary does not fit the int4 kernel).

`FORMATS` holds them by name, and everything that lists or checks formats reads it: the
``--quantize`` choices (`QUANTIZE_MODES`, which adds ``"none"``), `resolve_format` (the check),
`model.quantize_model` and `model.quantized_model_from_state` (the layers). Adding a format means
adding one entry here.

**One check per loading path.** `resolve_format(name, device)` turns a ``--quantize`` value into
its `QuantFormat` (None for ``"none"``) and raises a clear error for an unknown name, a device
the format does not run on, or a PyTorch without its kernel. The loaders call it once, where
the value comes in, and hand the `QuantFormat` on: given a `QuantFormat`, `resolve_format`
returns it as it is.

**Shapes.** Every matrix shape works in every format: `Int8Linear` pads its input width for the
kernel (`int8.py`); int4 keeps a matrix in int4 where PyTorch's kernel takes its shape
(`int4.int4_fits`: out_features % 16 == 0, in_features % 32 == 0) and makes it int8 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from llm_from_scratch.quantize.gguf_blocks import BLOCK, GroupValues
from llm_from_scratch.quantize.int4 import (DEFAULT_GROUP_SIZE, KERNEL_GROUP_SIZES, Int4Linear, int4_fits,
                                            int4_kernel_available, quantize_groups)
from llm_from_scratch.quantize.int8 import Int8Embedding, Int8Linear, quantize_per_channel

Matrix = torch.Tensor | GroupValues  # a float weight, or a GGUF matrix's blocks


def int8_parts(value: Matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8, scale) per row from a float weight or from GGUF blocks (dequantized a slice at a time)."""
    return value.to_int8() if isinstance(value, GroupValues) else quantize_per_channel(value)


def int8_linear(value: Matrix, bias: torch.Tensor | None = None) -> Int8Linear:
    return Int8Linear(*int8_parts(value), bias)


def int8_embedding(value: Matrix, dtype: torch.dtype) -> Int8Embedding:
    return Int8Embedding(*int8_parts(value), dtype)


@dataclass(frozen=True, eq=False)
class QuantFormat:
    """One ``--quantize`` choice: what it is, where it runs, how it makes each layer."""

    name: str
    description: str                                     # one line: --help and messages
    devices: tuple[str, ...] | None                      # device types it runs on (None: every one)
    linear: Callable[[torch.Tensor, torch.Tensor | None], nn.Module]      # float (out, in) weight, bias
    from_blocks: Callable[[GroupValues, torch.Tensor | None], nn.Module]  # GGUF blocks, bias
    embedding: Callable[[Matrix, torch.dtype], nn.Module] = int8_embedding   # table, activation dtype
    head: Callable[[Matrix, torch.Tensor | None], nn.Module] = int8_linear    # an untied output head
    requirement: Callable[[], str | None] = lambda: None  # "needs ...: use ..." if this PyTorch lacks it
    device_note: str = ""                                # why it runs on `devices` only

    def layer(self, value: Matrix, bias: torch.Tensor | None = None) -> nn.Module:
        """The layer for a matrix of the decoder blocks, given as a float weight or as GGUF blocks."""
        return self.from_blocks(value, bias) if isinstance(value, GroupValues) else self.linear(value, bias)

    def runs_on(self, device: torch.device | str) -> bool:
        return self.devices is None or torch.device(device).type in self.devices

    def problem(self, device: torch.device | str | None = None) -> str | None:
        """Why this format cannot be used here (a sentence with the fix), or None."""
        if device is not None and not self.runs_on(device):
            kind = torch.device(device).type
            where = " or ".join(d.upper() if d in ("cpu", "cuda") else d for d in self.devices)
            others = [f.name for f in FORMATS.values() if f.runs_on(device)] + ["none"]
            note = f" ({self.device_note})" if self.device_note else ""
            return (f"--quantize {self.name} runs on the {where} only{note}, not on {kind}: "
                    f"use --quantize {' or '.join(others)} there")
        missing = self.requirement()
        return f"--quantize {self.name} {missing}" if missing else None

    def check(self, device: torch.device | str | None = None) -> None:
        problem = self.problem(device)
        if problem:
            raise ValueError(problem)


# ---------------------------------------------------------------------------------- the formats

INT8 = QuantFormat(
    name="int8",
    description="int8 weights with one scale per output channel (every device; PyTorch's fast kernel on a CPU)",
    devices=None,
    linear=int8_linear,
    from_blocks=int8_linear,  # any blocks -> one scale per row: a second rounding (gguf_blocks.py)
)


def _int4_requirement() -> str | None:
    if int4_kernel_available():
        return None
    return (f"needs PyTorch >= 2.6 for its CPU kernel (this is {torch.__version__}): use --quantize int8, "
            "or upgrade PyTorch")


def int4_format(group_size: int = DEFAULT_GROUP_SIZE) -> QuantFormat:
    """The int4 format with groups of `group_size` (32, 64, 128 or 256: what the kernel takes)."""
    if group_size not in KERNEL_GROUP_SIZES:
        raise ValueError(f"int4 group size {group_size}: the CPU kernel takes "
                         f"{', '.join(map(str, KERNEL_GROUP_SIZES))}")

    def linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Module:
        rows, cols = weight.shape
        if int4_fits(rows, cols, group_size):
            return Int4Linear(*quantize_groups(weight, group_size), bias)
        return int8_linear(weight, bias)  # a shape the int4 kernel does not take

    def from_blocks(blocks: GroupValues, bias: torch.Tensor | None = None) -> nn.Module:
        rows, cols = blocks.shape
        if blocks.exact_int4 and int4_fits(rows, cols, BLOCK):  # Q4_0/Q4_1: the file's 4-bit values as they are
            return Int4Linear(blocks.values(), blocks.scale.float(), blocks.minimum.float(), bias)
        return int8_linear(blocks, bias)  # Q8_0 stays 8-bit; or a shape the int4 kernel does not take

    return QuantFormat(
        name="int4",
        description=f"int4 weights in groups of {group_size} with a scale and a minimum each (CPU only; the "
                    "embedding, the head and matrices the kernel cannot take stay int8)",
        devices=("cpu",),
        linear=linear,
        from_blocks=from_blocks,
        requirement=_int4_requirement,
        device_note="PyTorch's int4 kernel is a CPU kernel",
    )


INT4 = int4_format()

#: The formats by name: the one list that the CLI, the loaders and the checks read.
FORMATS: dict[str, QuantFormat] = {f.name: f for f in (INT8, INT4)}

#: The choices of `--quantize` (and `load_model(quantize=...)`): "none", then every format.
QUANTIZE_MODES: tuple[str, ...] = ("none", *FORMATS)


def resolve_format(quantize: str | QuantFormat | None,
                   device: torch.device | str | None = None) -> QuantFormat | None:
    """The `QuantFormat` a ``--quantize`` value names (None for "none"), checked for `device`.

    A `QuantFormat` is returned as it is: it was resolved and checked where it came in."""
    if isinstance(quantize, QuantFormat):
        return quantize
    name = "none" if quantize is None else str(quantize).lower()
    if name == "none":
        return None
    if name not in FORMATS:
        raise ValueError(f"unknown quantization {quantize!r}: use one of {', '.join(QUANTIZE_MODES)}")
    fmt = FORMATS[name]
    fmt.check(device)
    return fmt


def check_quantize(mode: str | QuantFormat | None, device: torch.device | str | None = "cpu") -> str:
    """The name of a ``--quantize`` value ("none", "int8"...), checked as `resolve_format` does."""
    fmt = resolve_format(mode, device)
    return "none" if fmt is None else fmt.name
