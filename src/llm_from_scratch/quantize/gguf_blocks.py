"""GGUF's 4- and 8-bit blocks read as our quantized values, without a float copy of the matrix.

llama.cpp stores a quantized matrix row by row, each row as blocks of 32 weights:

    Q8_0  (34 bytes): d (fp16), then 32 int8 values q          weight = d * q
    Q4_0  (18 bytes): d (fp16), then 16 bytes of 4-bit q        weight = d * (q - 8)
    Q4_1  (20 bytes): d (fp16), m (fp16), then 16 bytes of q    weight = d * q + m

In a Q4 block, byte j holds weight j in its low four bits and weight j + 16 in its high four.

`read_blocks` turns such rows into `GroupValues` (q, scale, minimum with weight = q * scale +
minimum per group of 32), a form that rows can be reordered and stacked in (the loader undoes
llama.cpp's query/key row order and fuses q, k and v) before it becomes a layer:

* Q4_0 / Q4_1 -> `Int4Linear` (the int4 format, `formats.py`): the file's 4-bit values bit
  for bit; its fp16 scales ``d`` and the kernel's ``zero = m + 8 d`` are rounded to bf16, which
  the kernel needs (each to within 2**-8 of its value: see `int4.py`);
* anything -> int8 per channel (`to_int8`): the group values are turned into float one slice
  of rows at a time and quantized per row, so no float copy of the whole matrix ever exists.
  This rounds a second time (a per-row scale instead of a per-block one): at most half an
  int8 step of the row's largest weight.

Which blocks go where is the formats' decision (`QuantFormat.from_blocks`); this module only
reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llm_from_scratch.quantize.int8 import quantize_per_channel

BLOCK = 32

#: Bytes per block and whether the block has a minimum, by GGML type name.
BLOCK_LAYOUTS = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}

#: How many values `GroupValues.to_int8` turns into float at a time (a 1 MB slice of float32).
FLOATS_PER_SLICE = 1 << 18


@dataclass
class GroupValues:
    """A matrix as integer values in groups of 32: weight[r, j] = q[r, j] * scale[r, g] + minimum[r, g]
    for j in group g; scale and minimum are (rows, cols / 32).

    Kept as compact as in the file until a layer is built: Q8_0 values as int8 (rows, cols), Q4
    values still two per byte (rows, cols / 2, in the file's order), scales and minimums in fp16."""

    stored: torch.Tensor           # int8 (rows, cols) for Q8_0; uint8 (rows, cols / 2) for Q4_0/Q4_1
    scale: torch.Tensor            # (rows, groups) fp16
    minimum: torch.Tensor          # (rows, groups) fp16
    kind: str                      # the GGML type it came from

    @property
    def shape(self) -> tuple[int, int]:
        rows, width = self.stored.shape
        return (rows, width if self.kind == "Q8_0" else 2 * width)

    def values(self, rows: slice = slice(None)) -> torch.Tensor:
        """q for these rows: (n, cols) int8 (Q8_0) or uint8 in 0..15 (Q4)."""
        stored = self.stored[rows]
        if self.kind == "Q8_0":
            return stored
        n, width = stored.shape
        blocks = stored.reshape(n, width // (BLOCK // 2), BLOCK // 2)      # (n, groups, 16)
        # low nibbles are a block's weights 0..15, high nibbles its weights 16..31
        return torch.cat([blocks & 0x0F, blocks >> 4], dim=-1).reshape(n, 2 * width)

    def dequantize(self, rows: slice = slice(None)) -> torch.Tensor:
        q, scale, minimum = self.values(rows), self.scale[rows].float(), self.minimum[rows].float()
        n, cols = q.shape
        groups = q.reshape(n, -1, BLOCK).float() * scale[..., None] + minimum[..., None]
        return groups.reshape(n, cols)

    def to_int8(self, rows_per_slice: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(q int8, scale) per output channel, computed a slice of rows at a time and written
        straight into the result (no list of pieces to concatenate: that would be a second copy).

        A slice's float values and the temporaries of its quantization are the only float memory:
        by default slices of about `FLOATS_PER_SLICE` values (1 MB in float32). Every row is
        quantized on its own, so the result does not depend on the slicing."""
        rows, cols = self.shape
        rows_per_slice = rows_per_slice or max(1, FLOATS_PER_SLICE // cols)
        q, scale = torch.empty(rows, cols, dtype=torch.int8), torch.empty(rows, dtype=torch.float32)
        for start in range(0, rows, rows_per_slice):
            part = slice(start, start + rows_per_slice)
            q[part], scale[part] = quantize_per_channel(self.dequantize(part))
        return q, scale

    def map_rows(self, fn) -> "GroupValues":
        """The same values with rows reordered/reshaped by `fn` (applied to values, scale and minimum alike)."""
        return GroupValues(fn(self.stored), fn(self.scale), fn(self.minimum), self.kind)

    @staticmethod
    def stack(parts: list["GroupValues"]) -> "GroupValues":
        """Rows of several matrices one after another (q, k, v -> our fused qkv)."""
        kinds = {p.kind for p in parts}
        if len(kinds) > 1:
            raise ValueError(f"cannot stack matrices stored as different types {sorted(kinds)}")
        return GroupValues(torch.cat([p.stored for p in parts]), torch.cat([p.scale for p in parts]),
                           torch.cat([p.minimum for p in parts]), kinds.pop())

    @property
    def exact_int4(self) -> bool:
        """Whether the values are 4-bit (they go into `Int4Linear` unchanged)."""
        return self.kind in ("Q4_0", "Q4_1")


def read_blocks(raw: np.ndarray, kind: str, cols: int) -> GroupValues:
    """GroupValues from a GGUF tensor's stored bytes (rows, bytes per row) of type `kind`."""
    if kind not in BLOCK_LAYOUTS:
        raise ValueError(f"{kind} blocks are not read directly (only {', '.join(BLOCK_LAYOUTS)})")
    rows = raw.shape[0]
    n_blocks = cols // BLOCK
    blocks = np.asarray(raw).reshape(rows, n_blocks, BLOCK_LAYOUTS[kind])

    def half(start: int) -> torch.Tensor:  # (rows, blocks) fp16 from two bytes per block
        return torch.from_numpy(np.ascontiguousarray(blocks[..., start:start + 2]).view(np.float16)[..., 0])

    d = half(0)
    if kind == "Q8_0":
        values = torch.from_numpy(np.ascontiguousarray(blocks[..., 2:]).view(np.int8)).reshape(rows, cols)
        return GroupValues(values, d, torch.zeros_like(d), kind)
    if kind == "Q4_1":
        minimum, packed = half(2), blocks[..., 4:]
    else:  # Q4_0: weight = d * (q - 8) = d * q + (-8 d)
        minimum, packed = (-8.0 * d.float()).half(), blocks[..., 2:]
    return GroupValues(torch.from_numpy(np.ascontiguousarray(packed)).reshape(rows, cols // 2), d, minimum, kind)
