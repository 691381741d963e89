"""Reading TensorFlow checkpoints without TensorFlow.

OpenAI released GPT-2 as TensorFlow 1 checkpoints written by ``tf.train.Saver`` (format "V2").
A checkpoint with prefix ``model.ckpt`` is two kinds of file:

* ``model.ckpt.index`` - a sorted key -> value table. Keys are tensor names
  (``model/h0/attn/c_attn/w``); each value says where that tensor's bytes are and what they are
  (dtype, shape, shard, offset, size, checksum). The empty key ``""`` holds a header.
* ``model.ckpt.data-00000-of-00001`` - the raw tensor bytes, one tensor after another
  (little-endian, row-major, like a NumPy array's memory). Big checkpoints may be split into
  several ``data-0000S-of-0000N`` shards.

(``model.ckpt.meta`` holds the computation graph and ``checkpoint`` names the newest prefix;
neither is needed to read the weights, though we read ``checkpoint`` to find the prefix.)

The index file is an SSTable, the file format of LevelDB, which TensorFlow copied::

    [data block 1] [trailer] ... [data block n] [trailer]
    [metaindex block] [trailer]      (empty in TensorFlow's files)
    [index block] [trailer]          (one entry per data block: last key -> BlockHandle)
    [footer: 48 bytes]               (metaindex and index BlockHandles, padding, magic number)

A *BlockHandle* is two varints, (offset, size). Every block is followed by a 5-byte trailer: a
compression byte (0 = none, 1 = snappy; TensorFlow writes uncompressed tables) and the masked
CRC-32C of the block plus that byte. Inside a block, keys are *prefix-compressed*: each entry
stores how many leading bytes it shares with the previous key, then only the new bytes.
Every 16th entry (a *restart point*) stores its whole key, and the block ends with the offsets
of the restart points, so a reader could binary-search; we simply scan.

The values are *protocol buffers* (protobuf), decoded here by hand in a few lines instead of
depending on the ``protobuf`` package. A protobuf message is a sequence of fields, each a varint
``tag = field_number << 3 | wire_type`` followed by the value: wire type 0 is a varint, 1 is 8
bytes, 2 is a varint length and that many bytes (strings, bytes, nested messages), 5 is 4
bytes. The messages we need (``tensorflow/core/protobuf/tensor_bundle.proto``)::

    BundleHeaderProto  1: num_shards (int32)   2: endianness (0 little, 1 big)   3: version (VersionDef)
    BundleEntryProto   1: dtype (DataType enum, 1 = float32)   2: shape (TensorShapeProto)
                       3: shard_id   4: offset   5: size   6: crc32c (fixed32, masked)
                       7: slices (only for partitioned variables; not supported here)
    TensorShapeProto   2: dim (repeated Dim)   3: unknown_rank (bool)
    Dim                1: size (int64)         2: name (string)
    VersionDef         1: producer   2: min_consumer   3: bad_consumers (repeated)

Integrity: every index block's CRC-32C is checked, every entry's offset and size must lie inside
its data file, and (with ``verify=True``, the default) the CRC-32C of each tensor's bytes is
checked as it is read, so a truncated or corrupted download is an error, never silent garbage.
CRC-32C is implemented in :mod:`.crc32c`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from llm_from_scratch.weights.crc32c import crc32c, mask_crc

_WINDOW_BYTES = 16 << 20  # verify_checksums reads the data files 16 MiB at a time


class TFCheckpointError(ValueError):
    """A file is not a TensorFlow V2 checkpoint we can read, or it is damaged."""


# --------------------------------------------------------------------------------------
# Protocol buffers, by hand
# --------------------------------------------------------------------------------------


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``buf[pos]``: 7 bits per byte, low bits first, the top bit
    of each byte says "more follows". Returns (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFCheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise TFCheckpointError("varint longer than 10 bytes")


def _signed64(value: int) -> int:
    """Protobuf encodes negative int64 as their 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field_number, value) for each field of a serialized message.

    Varint and fixed-width values come out as ints, length-delimited ones as bytes.
    """
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
        elif wire_type == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire_type == 2:
            length, pos = read_varint(buf, pos)
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire_type == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire_type} (field {field})")
        if pos > len(buf):
            raise TFCheckpointError("truncated protobuf message")
        yield field, value


# TensorFlow's DataType enum (tensorflow/core/framework/types.proto) -> NumPy, for the plain
# fixed-width types. GPT-2's weights are all DT_FLOAT (1).
TF_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
TF_DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 18: "complex128",
    19: "float16", 20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}


@dataclass(frozen=True)
class BundleHeader:
    num_shards: int
    big_endian: bool
    producer_version: int


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives: ``size`` bytes at ``offset`` in data shard ``shard_id``."""

    name: str
    dtype: int  # TensorFlow DataType enum
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked CRC-32C of the bytes; None if the writer left it out
    sliced: bool  # saved as slices of a partitioned variable

    @property
    def dtype_name(self) -> str:
        return TF_DTYPE_NAMES.get(self.dtype, f"DataType {self.dtype}")


def parse_bundle_header(buf: bytes) -> BundleHeader:
    num_shards, endianness, producer = 0, 0, 0
    for field, value in proto_fields(buf):
        if field == 1:
            num_shards = value
        elif field == 2:
            endianness = value
        elif field == 3:
            producer = next((v for f, v in proto_fields(value) if f == 1), 0)
    return BundleHeader(num_shards=num_shards, big_endian=endianness == 1, producer_version=producer)


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, value in proto_fields(buf):
        if field == 2:  # Dim
            size = next((v for f, v in proto_fields(value) if f == 1), 0)
            dims.append(_signed64(size))
        elif field == 3 and value:
            raise TFCheckpointError("tensor of unknown rank")
    return tuple(dims)


def parse_bundle_entry(name: str, buf: bytes) -> BundleEntry:
    fields = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "sliced": False}
    for field, value in proto_fields(buf):
        if field == 1:
            fields["dtype"] = value
        elif field == 2:
            fields["shape"] = _parse_shape(value)
        elif field == 3:
            fields["shard_id"] = value
        elif field == 4:
            fields["offset"] = _signed64(value)
        elif field == 5:
            fields["size"] = _signed64(value)
        elif field == 6:
            fields["crc32c"] = value
        elif field == 7:
            fields["sliced"] = True
    return BundleEntry(name=name, **fields)


# --------------------------------------------------------------------------------------
# The SSTable (LevelDB table) that is the .index file
# --------------------------------------------------------------------------------------

FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes, then the 8-byte magic number
TABLE_MAGIC = 0xDB4775248B80FB57
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked CRC-32C (4 bytes)


def _read_block_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return (offset, size), pos


def _read_block(table: bytes, handle: tuple[int, int], path: Path) -> bytes:
    """The contents of one block, after checking its trailer (compression byte and CRC)."""
    offset, size = handle
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(table):
        raise TFCheckpointError(f"{path}: a block runs past the end of the file; is the file truncated?")
    contents = table[offset:end]
    compression = table[end]
    stored_crc = int.from_bytes(table[end + 1 : end + 5], "little")
    if mask_crc(crc32c(table[offset : end + 1])) != stored_crc:
        raise TFCheckpointError(f"{path}: checksum mismatch in the block at byte {offset}; the file is damaged")
    if compression == 1:
        raise TFCheckpointError(
            f"{path}: this index uses snappy compression, which this reader does not implement "
            "(TensorFlow writes uncompressed indexes). Re-save the checkpoint with TensorFlow's "
            "default options, or convert it to safetensors."
        )
    if compression != 0:
        raise TFCheckpointError(f"{path}: unknown block compression type {compression}")
    return contents


def _block_entries(block: bytes, path: Path) -> Iterator[tuple[bytes, bytes]]:
    """Yield (key, value) from a block, undoing the prefix compression of keys."""
    if len(block) < 4:
        raise TFCheckpointError(f"{path}: block too short")
    num_restarts = int.from_bytes(block[-4:], "little")
    entries_end = len(block) - 4 - 4 * num_restarts
    if entries_end < 0:
        raise TFCheckpointError(f"{path}: bad restart count {num_restarts}")
    restarts = {
        int.from_bytes(block[entries_end + 4 * i : entries_end + 4 * i + 4], "little") for i in range(num_restarts)
    }
    key = b""
    pos = 0
    while pos < entries_end:
        entry_start = pos
        shared, pos = read_varint(block, pos)
        non_shared, pos = read_varint(block, pos)
        value_length, pos = read_varint(block, pos)
        if entry_start in restarts and shared != 0:
            raise TFCheckpointError(f"{path}: entry at a restart point shares a key prefix")
        if shared > len(key) or pos + non_shared + value_length > entries_end:
            raise TFCheckpointError(f"{path}: corrupt block entry at byte {entry_start}")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_length]
        pos += value_length


def read_sstable(path: str | Path) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable file, in key order."""
    path = Path(path)
    table = path.read_bytes()
    if len(table) < FOOTER_SIZE:
        raise TFCheckpointError(f"{path} is too short ({len(table)} bytes) to be a TensorFlow checkpoint index")
    footer = table[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise TFCheckpointError(
            f"{path} is not a TensorFlow checkpoint index (wrong magic number). A V2 checkpoint is "
            "'<prefix>.index' plus '<prefix>.data-00000-of-00001'; old V1 checkpoints (one "
            "'model.ckpt' file) are not supported."
        )
    _metaindex_handle, pos = _read_block_handle(footer, 0)
    index_handle, _ = _read_block_handle(footer, pos)
    for _separator, handle_bytes in _block_entries(_read_block(table, index_handle, path), path):
        data_handle, _ = _read_block_handle(handle_bytes, 0)
        yield from _block_entries(_read_block(table, data_handle, path), path)


# --------------------------------------------------------------------------------------
# The checkpoint: index + data shards
# --------------------------------------------------------------------------------------


def resolve_checkpoint_prefix(prefix_or_dir: str | Path) -> Path:
    """``dir`` / ``dir/model.ckpt`` / ``dir/model.ckpt.index`` -> ``dir/model.ckpt``.

    For a folder, the ``checkpoint`` file names the prefix (as TensorFlow's
    ``tf.train.latest_checkpoint`` reads it); without one, the folder must hold exactly one
    ``*.index`` file.
    """
    path = Path(prefix_or_dir).expanduser()
    if path.name.endswith(".index") and path.is_file():
        return path.with_name(path.name[: -len(".index")])
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(errors="replace"), re.M)
            if match:
                named = Path(match.group(1))
                for candidate in (named if named.is_absolute() else path / named, path / named.name):
                    if candidate.with_name(candidate.name + ".index").is_file():
                        return candidate
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_name(indexes[0].name[: -len(".index")])
        if not indexes:
            raise FileNotFoundError(
                f"{path} holds no TensorFlow checkpoint: expected '<prefix>.index' and "
                f"'<prefix>.data-00000-of-00001' (e.g. model.ckpt.index), found {_listing(path)}"
            )
        raise TFCheckpointError(
            f"{path} holds several checkpoints ({', '.join(p.name for p in indexes)}) and no "
            "'checkpoint' file saying which one to use: pass the prefix, e.g. "
            f"{indexes[-1].with_name(indexes[-1].name[: -len('.index')])}"
        )
    if path.with_name(path.name + ".index").is_file():
        return path
    raise FileNotFoundError(f"no TensorFlow checkpoint at {path} (looked for {path.name}.index)")


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "nothing"


class TFCheckpoint(Mapping[str, np.ndarray]):
    """A TensorFlow V2 checkpoint, read lazily: ``ckpt["model/wte"]`` reads one tensor now.

    ``ckpt.entries`` (name -> `BundleEntry`) and ``ckpt.shapes`` need only the index file, so
    you can inspect a checkpoint, or check it is complete, without reading gigabytes.
    Each tensor read is a fresh, writable NumPy array (or a view of a buffer you pass as ``out``);
    no memory map of the file is kept, so loading a big model tensor by tensor never holds two
    copies of it.
    """

    def __init__(self, prefix_or_dir: str | Path, *, verify: bool = True):
        self.prefix = resolve_checkpoint_prefix(prefix_or_dir)
        self.verify = verify
        index_path = self.prefix.with_name(self.prefix.name + ".index")
        header: BundleHeader | None = None
        entries: dict[str, BundleEntry] = {}
        for key, value in read_sstable(index_path):
            if key == b"":
                header = parse_bundle_header(value)
            else:
                name = key.decode("utf-8")
                entries[name] = parse_bundle_entry(name, value)
        if header is None:
            raise TFCheckpointError(f"{index_path} has no bundle header (the entry with the empty key)")
        if header.big_endian:
            raise TFCheckpointError(
                f"{index_path} was written on a big-endian machine; this reader supports little-endian only"
            )
        self.header = header
        self.entries = entries
        self._check_data_files()

    def data_file(self, shard_id: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard_id:05d}-of-{self.header.num_shards:05d}")

    def _check_data_files(self) -> None:
        """Every shard exists and is long enough for the entries that point into it."""
        needed: dict[int, int] = {}
        for entry in self.entries.values():
            if not 0 <= entry.shard_id < self.header.num_shards:
                raise TFCheckpointError(f"{entry.name}: shard {entry.shard_id} of {self.header.num_shards}?")
            needed[entry.shard_id] = max(needed.get(entry.shard_id, 0), entry.offset + entry.size)
        for shard_id, end in sorted(needed.items()):
            path = self.data_file(shard_id)
            if not path.is_file():
                raise FileNotFoundError(
                    f"checkpoint data file {path} is missing (the index {self.prefix}.index needs it)"
                )
            if path.stat().st_size < end:
                raise TFCheckpointError(
                    f"{path} has {path.stat().st_size} bytes but the index needs {end}: the file is "
                    "truncated (an interrupted download?). Delete it and fetch it again."
                )

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: entry.shape for name, entry in self.entries.items()}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.read(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def verify_checksums(self, names: Iterable[str] | None = None) -> None:
        """Check the CRC-32C of the tensors ``names`` (default: all), streaming the data files in
        16 MiB pieces; raise TFCheckpointError naming the first damaged tensor.

        Checking everything first and then reading with ``verify=False`` keeps big temporary
        buffers out of the way while the model's own tensors are being allocated (interleaving
        them left hundreds of MB of freed-but-kept memory behind in glibc's heap).
        """
        entries = sorted((self.entries[name] for name in (self.entries if names is None else names)),
                         key=lambda entry: (entry.shard_id, entry.offset))
        buffer = np.empty(_WINDOW_BYTES, dtype=np.uint8)
        files: dict[int, BinaryIO] = {}
        try:
            for entry in entries:
                if entry.crc32c is None:
                    continue
                if entry.shard_id not in files:
                    files[entry.shard_id] = open(self.data_file(entry.shard_id), "rb")  # noqa: SIM115
                file = files[entry.shard_id]
                file.seek(entry.offset)
                crc, remaining = 0, entry.size
                while remaining:
                    piece = buffer[: min(remaining, buffer.size)]
                    if file.readinto(piece) != piece.size:
                        raise TFCheckpointError(f"{entry.name}: the data file ended early; it is truncated")
                    crc = crc32c(piece, crc)
                    remaining -= piece.size
                if mask_crc(crc) != entry.crc32c:
                    raise TFCheckpointError(
                        f"{entry.name}: checksum mismatch in {self.data_file(entry.shard_id).name}: the file "
                        "is damaged. Delete it and fetch it again."
                    )
        finally:
            for file in files.values():
                file.close()

    def read(self, name: str, *, verify: bool | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """The tensor ``name`` as a NumPy array (checksum verified unless ``verify=False``).

        With ``out`` (a uint8 array at least as large as the tensor), the bytes are read into it
        and the result is a view of ``out``: a loader can reuse one buffer for every tensor.
        """
        if name not in self.entries:
            shown = ", ".join(sorted(self.entries)[:8])
            raise KeyError(
                f"{name!r} is not in checkpoint {self.prefix} (it has {len(self.entries)} tensors: {shown} ...)"
            )
        entry = self.entries[name]
        if entry.sliced:
            raise TFCheckpointError(
                f"{name} was saved as slices of a partitioned variable, which this reader does not support"
            )
        if entry.dtype not in TF_DTYPES:
            raise TFCheckpointError(
                f"{name} has dtype {entry.dtype_name}; this reader supports the fixed-width numeric types "
                f"({', '.join(TF_DTYPE_NAMES[d] for d in TF_DTYPES)})"
            )
        dtype = TF_DTYPES[entry.dtype]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if any(d < 0 for d in entry.shape) or count * dtype.itemsize != entry.size:
            raise TFCheckpointError(
                f"{name}: shape {entry.shape} of {entry.dtype_name} needs {count * dtype.itemsize} bytes, "
                f"the index says {entry.size}"
            )
        if out is None:
            raw = np.empty(entry.size, dtype=np.uint8)
        elif out.dtype != np.uint8 or out.ndim != 1 or out.size < entry.size:
            raise ValueError(f"out must be a 1-d uint8 array of at least {entry.size} bytes for {name}")
        else:
            raw = out[: entry.size]
        with open(self.data_file(entry.shard_id), "rb") as file:
            file.seek(entry.offset)
            if file.readinto(memoryview(raw)) != entry.size:
                raise TFCheckpointError(f"{name}: the data file ended early; it is truncated")
        if (self.verify if verify is None else verify) and entry.crc32c is not None:
            if mask_crc(crc32c(raw)) != entry.crc32c:
                raise TFCheckpointError(
                    f"{name}: checksum mismatch in {self.data_file(entry.shard_id).name}: the file is "
                    "damaged. Delete it and fetch it again."
                )
        return raw.view(dtype).reshape(entry.shape)


def open_tf_checkpoint(prefix_or_dir: str | Path, *, verify: bool = True) -> TFCheckpoint:
    """A lazy `TFCheckpoint` (reads the index now, each tensor when you ask for it)."""
    return TFCheckpoint(prefix_or_dir, verify=verify)


def read_tf_checkpoint(prefix_or_dir: str | Path, *, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of a TensorFlow V2 checkpoint: ``{"model/wte": array(...), ...}``.

    ``prefix_or_dir`` is a folder (its ``checkpoint`` file names the prefix), a prefix like
    ``models/124M/model.ckpt``, or the ``.index`` file. For big checkpoints prefer
    `open_tf_checkpoint`, which reads one tensor at a time.
    """
    checkpoint = TFCheckpoint(prefix_or_dir, verify=verify)
    return {name: checkpoint.read(name) for name in checkpoint}
