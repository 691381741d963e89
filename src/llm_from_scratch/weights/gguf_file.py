"""Reading GGUF files: the single-file model format of llama.cpp (metadata + possibly quantized tensors).

A GGUF file is laid out as (all little-endian):

    "GGUF"  version:u32  tensor_count:u64  kv_count:u64
    kv_count x   key:string  value_type:u32  value          (the metadata: hyperparameters, tokenizer,
                                                             chat template, ...)
    tensor_count x  name:string  n_dims:u32  dims:u64[n_dims]  ggml_type:u32  offset:u64
    padding to `general.alignment` (32 by default)
    tensor data, each tensor at data_start + offset

where a string is a u64 byte length followed by UTF-8 bytes and an array value is item_type:u32,
count:u64, then the items. Dimensions are in ggml order, fastest-varying first: a PyTorch weight of
shape (out_features, in_features) is stored with dims [in_features, out_features].

Quantized tensors are stored in blocks along each row (see docs/12-llama-and-gguf.md for Q4_1 and
Q8_0); the `gguf` package (llama.cpp's own Python library) dequantizes them with
`gguf.quants.dequantize`.

Why parse the header here instead of using `gguf.GGUFReader`? The reader builds a NumPy view for
every element of every metadata array; for SmolLM2's 49,152 tokens and 48,900 merges that takes ~7 s
on one core, while walking the header with `struct` takes ~0.2 s. The parse is checked against
`GGUFReader` in the tests. Tensor bytes are memory-mapped, and `GGUFFile.tensor` dequantizes one
tensor at a time, so peak memory is the model plus one float32 tensor.

Pages of a memory-mapped file that were read count as the process's resident memory for as long
as they stay mapped, so the reader hands them back to the OS once their contents are copied: the
header's right after it is parsed, a tensor's when the loader calls `release(name)`. And a loader
can `forget_metadata("tokenizer.ggml.")` once it has built the tokenizer: the ~100k strings of
SmolLM2's vocabulary and merges need not stay in memory while the weights are read.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import gguf
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "Reading GGUF files needs the `gguf` package (llama.cpp's Python library): pip install gguf"
    ) from error

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
SUPPORTED_VERSIONS = (2, 3)

# struct format of each scalar metadata type, and the NumPy dtype used for arrays of it.
_SCALAR_FORMATS: dict[GGUFValueType, tuple[str, str]] = {
    GGUFValueType.UINT8: ("<B", "<u1"), GGUFValueType.INT8: ("<b", "<i1"),
    GGUFValueType.UINT16: ("<H", "<u2"), GGUFValueType.INT16: ("<h", "<i2"),
    GGUFValueType.UINT32: ("<I", "<u4"), GGUFValueType.INT32: ("<i", "<i4"),
    GGUFValueType.UINT64: ("<Q", "<u8"), GGUFValueType.INT64: ("<q", "<i8"),
    GGUFValueType.FLOAT32: ("<f", "<f4"), GGUFValueType.FLOAT64: ("<d", "<f8"),
    GGUFValueType.BOOL: ("<?", "?"),
}

# Plain (unquantized) tensor types we turn into float32 ourselves; everything else goes
# through gguf.quants.dequantize.
_PLAIN_NUMPY_TYPES: dict[GGMLQuantizationType, str] = {
    GGMLQuantizationType.F64: "<f8",
    GGMLQuantizationType.I8: "<i1",
    GGMLQuantizationType.I16: "<i2",
    GGMLQuantizationType.I32: "<i4",
    GGMLQuantizationType.I64: "<i8",
}


class GGUFError(ValueError):
    """The file is not a GGUF file we can read (bad magic, unsupported version, truncated...)."""


@dataclass(frozen=True)
class GGUFTensorInfo:
    """Where one tensor lives in the file and how it is encoded."""

    name: str
    shape: tuple[int, ...]          # PyTorch order, e.g. (out_features, in_features)
    ggml_type: GGMLQuantizationType
    offset: int                     # absolute byte offset of the first block in the file
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


def supported_tensor_types() -> list[str]:
    """Names of the tensor encodings `GGUFFile.tensor` can turn into float32."""
    names = {"F32", "F16", *(t.name for t in _PLAIN_NUMPY_TYPES)}
    names.update(t.name for t in getattr(gguf.quants, "_type_traits", {}))
    return sorted(names)


class _HeaderParser:
    """Walks the header with struct.unpack_from over a memoryview of the mapped file."""

    def __init__(self, buffer: memoryview, path: Path):
        self.buffer = buffer
        self.path = path
        self.pos = 0

    def _unpack(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        except struct.error:
            raise GGUFError(f"{self.path} is truncated: the header ends at byte {self.pos}. "
                            "Download the file again.") from None
        self.pos += struct.calcsize(fmt)
        return value

    def u32(self) -> int:
        return self._unpack("<I")

    def u64(self) -> int:
        return self._unpack("<Q")

    def string(self) -> str:
        length = self.u64()
        end = self.pos + length
        if end > len(self.buffer):
            raise GGUFError(f"{self.path} is truncated or corrupt: a string at byte {self.pos} claims "
                            f"{length} bytes. Download the file again.")
        raw = self.buffer[self.pos:end].tobytes()
        self.pos = end
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise GGUFError(f"{self.path}: a metadata string is not valid UTF-8 ({error})") from None

    def value(self, value_type: int) -> Any:
        try:
            value_type = GGUFValueType(value_type)
        except ValueError:
            raise GGUFError(f"{self.path}: unknown metadata value type {value_type} at byte {self.pos}; "
                            "the file may be corrupt or newer than this reader") from None
        if value_type == GGUFValueType.STRING:
            return self.string()
        if value_type == GGUFValueType.ARRAY:
            item_type, count = self.u32(), self.u64()
            if item_type in _SCALAR_FORMATS:
                # Numeric arrays in one go (token types, scores: tens of thousands of items).
                fmt, dtype = _SCALAR_FORMATS[GGUFValueType(item_type)]
                size = struct.calcsize(fmt) * count
                if self.pos + size > len(self.buffer):
                    raise GGUFError(f"{self.path} is truncated inside a metadata array. Download it again.")
                items = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.pos).tolist()
                self.pos += size
                return items
            return [self.value(item_type) for _ in range(count)]
        return self._unpack(_SCALAR_FORMATS[value_type][0])


class GGUFFile:
    """A GGUF file opened for reading: `metadata`, `tensor_infos`, and `tensor(name)` -> float32.

        with GGUFFile("model.gguf") as f:
            f.architecture                 # 'llama'
            f.metadata["llama.block_count"]
            w = f.tensor("blk.0.attn_q.weight")   # torch.float32, PyTorch shape (out, in)

    The file is memory-mapped; tensors are read and dequantized only when asked for.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no GGUF file at {self.path}")
        self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        buffer = memoryview(self._data)
        header = _HeaderParser(buffer, self.path)

        magic = buffer[:4].tobytes()
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path} is not a GGUF file: it starts with {magic!r}, not {GGUF_MAGIC!r}")
        header.pos = 4
        version = header.u32()
        if version not in SUPPORTED_VERSIONS:
            if version & 0xFFFF == 0 and int.from_bytes(version.to_bytes(4, "little"), "big") in SUPPORTED_VERSIONS:
                raise GGUFError(f"{self.path} is a big-endian GGUF file; only little-endian files are supported "
                                "(convert it with llama.cpp's gguf tools)")
            raise GGUFError(f"{self.path} is GGUF version {version}; this reader supports versions "
                            f"{', '.join(map(str, SUPPORTED_VERSIONS))} (re-convert old v1 files with llama.cpp)")
        self.version = version
        tensor_count, kv_count = header.u64(), header.u64()

        self.metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = header.string()
            self.metadata[key] = header.value(header.u32())

        raw_infos = []
        for _ in range(tensor_count):
            name = header.string()
            n_dims = header.u32()
            dims = [header.u64() for _ in range(n_dims)]
            ggml_type = header.u32()
            offset = header.u64()
            raw_infos.append((name, dims, ggml_type, offset))

        self.alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        data_start = -(-header.pos // self.alignment) * self.alignment  # round up to the alignment
        self.tensor_infos: dict[str, GGUFTensorInfo] = {}
        for name, dims, ggml_type, offset in raw_infos:
            info = self._tensor_info(name, dims, ggml_type, data_start + offset)
            self.tensor_infos[name] = info
        del buffer, header  # (views of the map)
        self._release_pages(0, data_start)  # the header is parsed into Python objects

    def _tensor_info(self, name: str, dims: list[int], ggml_type: int, offset: int) -> GGUFTensorInfo:
        try:
            qtype = GGMLQuantizationType(ggml_type)
        except ValueError:
            raise GGUFError(f"{self.path}: tensor {name!r} has unknown type id {ggml_type}; the file may be "
                            "newer than the installed `gguf` package (pip install -U gguf)") from None
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        if dims and dims[0] % block_size != 0:
            raise GGUFError(f"{self.path}: tensor {name!r} rows of {dims[0]} values do not split into "
                            f"{qtype.name} blocks of {block_size}")
        n_bytes = math.prod(dims) // block_size * type_size
        if offset + n_bytes > len(self._data):
            raise GGUFError(f"{self.path} is truncated: tensor {name!r} ends at byte {offset + n_bytes} but the "
                            f"file has {len(self._data)} bytes. Download the file again.")
        return GGUFTensorInfo(name, tuple(reversed(dims)), qtype, offset, n_bytes)

    # ------------------------------------------------------------------ metadata helpers
    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        """A metadata value that must be there, with a clear error otherwise."""
        if key not in self.metadata:
            raise GGUFError(f"{self.path} has no metadata key {key!r}; it is not a complete "
                            f"{self.architecture or 'model'} GGUF file")
        return self.metadata[key]

    # ------------------------------------------------------------------ tensors
    def raw_tensor(self, name: str) -> np.ndarray:
        """The stored bytes of a tensor, shaped (rows..., bytes per row), as a read-only memory map."""
        info = self._info(name)
        if self._data is None:
            raise ValueError(f"{self.path} was closed; open it again with GGUFFile(path)")
        block_size, type_size = GGML_QUANT_SIZES[info.ggml_type]
        row_bytes = info.shape[-1] // block_size * type_size if info.shape else type_size
        data = self._data[info.offset:info.offset + info.n_bytes]
        return data.reshape(*info.shape[:-1], row_bytes) if info.shape else data

    def tensor(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Tensor `name` dequantized to float32 (then cast to `dtype`), in PyTorch's shape order."""
        info = self._info(name)
        raw = self.raw_tensor(name)
        if info.ggml_type in _PLAIN_NUMPY_TYPES:
            values = raw.view(_PLAIN_NUMPY_TYPES[info.ggml_type]).astype(np.float32)
        else:
            try:
                values = gguf.quants.dequantize(raw, info.ggml_type)
            except NotImplementedError:
                raise GGUFError(
                    f"{self.path}: tensor {name!r} is stored as {info.ggml_type.name}, which the installed gguf "
                    f"package cannot dequantize. Supported: {', '.join(supported_tensor_types())}. "
                    "Try `pip install -U gguf`, or use a file quantized differently."
                ) from None
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(info.shape)
        if not values.flags.writeable:  # an F32 tensor is a view of the read-only map: copy it
            values = values.copy()
        return torch.from_numpy(values).to(dtype)

    def tensors(self, names: Iterable[str] | None = None,
                dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, dequantized tensor) one at a time, in file order (or the order of `names`)."""
        for name in (self.tensor_infos if names is None else names):
            yield name, self.tensor(name, dtype)

    def release(self, name: str) -> None:
        """Tell the OS it may drop the mapped pages of tensor `name` (after copying what it needed):
        file pages that were read stay in this process's resident memory while mapped, so a
        loader that converts tensor by tensor would otherwise end up holding the whole file."""
        info = self._info(name)
        self._release_pages(info.offset, info.offset + info.n_bytes)

    def _release_pages(self, start: int, end: int) -> None:
        """Drop the mapped pages that lie wholly inside bytes start..end of the file (reading them
        again would fault them back in from the OS's page cache)."""
        handle = getattr(self._data, "_mmap", None)
        if handle is None or not hasattr(handle, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = -(-start // page) * page
        end = end // page * page
        if end > start:
            handle.madvise(mmap.MADV_DONTNEED, start, end - start)

    def forget_metadata(self, prefix: str) -> None:
        """Drop the metadata entries whose key starts with `prefix` (e.g. "tokenizer.ggml." once
        the tokenizer is built): their memory is freed while the tensors are still being read."""
        for key in [key for key in self.metadata if key.startswith(prefix)]:
            del self.metadata[key]

    def _info(self, name: str) -> GGUFTensorInfo:
        try:
            return self.tensor_infos[name]
        except KeyError:
            shown = ", ".join(list(self.tensor_infos)[:8])
            raise KeyError(f"{self.path} has no tensor {name!r} (it has {len(self.tensor_infos)} tensors, "
                           f"e.g. {shown})") from None

    # ------------------------------------------------------------------ housekeeping
    def summary(self) -> dict[str, int]:
        """How many tensors use each encoding, e.g. {'Q4_1': 210, 'F32': 61, 'Q8_0': 1}."""
        counts: dict[str, int] = {}
        for info in self.tensor_infos.values():
            counts[info.ggml_type.name] = counts.get(info.ggml_type.name, 0) + 1
        return counts

    def close(self) -> None:
        """Drop the memory map (tensors already returned are copies and stay valid)."""
        self._data = None  # type: ignore[assignment]

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFFile({str(self.path)!r}, architecture={self.architecture!r}, "
                f"tensors={len(self.tensor_infos)}, metadata_keys={len(self.metadata)})")


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Only the metadata dict of a GGUF file (hyperparameters, tokenizer, chat template...)."""
    with GGUFFile(path) as gguf_file:
        return dict(gguf_file.metadata)
