"""The TensorFlow checkpoint reader against a checkpoint written by real TensorFlow.

`tests/fixtures/tf_gpt2_tiny/` was made by `scripts/make_tf_gpt2_fixture.py` with
tensorflow-cpu 2.21 (`tf.compat.v1.train.Saver`), together with `weights.npz` holding the numbers
TensorFlow was given. TensorFlow is not needed to run these tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from llm_from_scratch.weights import crc32c as crc32c_module
from llm_from_scratch.weights import tf_checkpoint
from llm_from_scratch.weights.tf_checkpoint import (
    TFCheckpoint,
    TFCheckpointError,
    crc32c,
    mask_crc,
    open_tf_checkpoint,
    proto_fields,
    read_sstable,
    read_tf_checkpoint,
    read_varint,
    resolve_checkpoint_prefix,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tf_gpt2_tiny"


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "weights.npz") as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture
def copy(tmp_path) -> Path:
    """A private copy of the fixture that a test may damage."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "ckpt"))


# --------------------------------------------------------------------------------------
# CRC-32C and protobuf pieces against published values
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, crc", [
    # RFC 3720 (iSCSI), appendix B.4, and the usual check value of CRC-32C.
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"123456789", 0xE3069283),
    (b"", 0),
])
def test_crc32c_matches_published_values(data, crc):
    assert crc32c(data) == crc


def test_vectorized_crc_equals_the_byte_at_a_time_loop(monkeypatch):
    rng = np.random.default_rng(0)
    # Small windows, so that a few KB already cross several windows and leave a tail.
    monkeypatch.setattr(crc32c_module, "_WINDOW_BYTES", 4096)
    for size in (2047, 2048, 2049, 4096 * 3 + 5, 20_000):
        data = rng.integers(0, 256, size, dtype=np.uint8)
        slow = crc32c_module._crc_register_bytes(0xFFFFFFFF, data.tobytes()) ^ 0xFFFFFFFF
        assert crc32c(data) == slow, size
        assert crc32c(data.tobytes()) == slow
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")  # continuing a CRC


def test_mask_is_leveldbs_rotate_and_offset():
    assert mask_crc(0) == 0xA282EAD8
    assert mask_crc(0x8000) == (1 + 0xA282EAD8) & 0xFFFFFFFF  # bit 15 rotates down to bit 0


def test_varints_from_the_protobuf_documentation():
    assert read_varint(b"\x01", 0) == (1, 1)
    assert read_varint(b"\x96\x01", 0) == (150, 2)
    assert read_varint(b"\xac\x02rest", 0) == (300, 2)
    minus_one = b"\xff" * 9 + b"\x01"  # int64 -1 is ten bytes on the wire
    value, end = read_varint(minus_one, 0)
    assert (value, end) == (2**64 - 1, 10) and tf_checkpoint._signed64(value) == -1
    with pytest.raises(TFCheckpointError, match="truncated"):
        read_varint(b"\x96", 0)


def test_proto_fields_decodes_every_wire_type():
    # field 1 varint 150 | field 2 bytes "hi" | field 6 fixed32 | field 7 fixed64
    message = b"\x08\x96\x01" + b"\x12\x02hi" + b"\x35\x04\x03\x02\x01" + b"\x39" + bytes(range(8))
    assert list(proto_fields(message)) == [
        (1, 150), (2, b"hi"), (6, 0x01020304), (7, int.from_bytes(bytes(range(8)), "little")),
    ]


# --------------------------------------------------------------------------------------
# Reading the checkpoint TensorFlow wrote
# --------------------------------------------------------------------------------------


def test_every_tensor_equals_what_tensorflow_was_given(expected):
    tensors = read_tf_checkpoint(FIXTURE)  # checksums verified on the way
    assert sorted(tensors) == sorted(expected)
    for name, array in expected.items():
        assert tensors[name].dtype == array.dtype, name
        assert tensors[name].shape == array.shape, name
        np.testing.assert_array_equal(tensors[name], array, err_msg=name)
    assert int(tensors["global_step"]) == 4242  # an int64 scalar


def test_openais_shapes_keep_the_leading_one_of_conv1d(expected):
    shapes = open_tf_checkpoint(FIXTURE).shapes
    assert shapes["model/h0/attn/c_attn/w"] == (1, 24, 72)
    assert shapes["model/h1/mlp/c_proj/w"] == (1, 96, 24)
    assert shapes["model/wte"] == (67, 24) and shapes["global_step"] == ()


def test_index_is_a_sorted_table_with_the_header_first(expected):
    keys = [key for key, _ in read_sstable(FIXTURE / "model.ckpt.index")]
    assert keys[0] == b""  # the BundleHeaderProto
    assert keys == sorted(keys)  # SSTables are sorted; prefix compression was undone right
    assert {key.decode() for key in keys[1:]} == set(expected)
    assert len(keys) > 16  # more than one restart point in the block


def test_header_and_entries():
    checkpoint = open_tf_checkpoint(FIXTURE)
    assert checkpoint.header.num_shards == 1 and not checkpoint.header.big_endian
    entry = checkpoint.entries["model/wte"]
    assert entry.dtype == 1 and entry.dtype_name == "float32"
    assert entry.size == 67 * 24 * 4 and entry.shard_id == 0 and entry.crc32c is not None
    data = (FIXTURE / "model.ckpt.data-00000-of-00001").read_bytes()
    ends = [e.offset + e.size for e in checkpoint.entries.values()]
    assert max(ends) == len(data)  # the entries cover the data file exactly


@pytest.mark.parametrize("form", ["folder", "prefix", "index"])
def test_the_checkpoint_can_be_named_three_ways(form, expected):
    path = {"folder": FIXTURE, "prefix": FIXTURE / "model.ckpt", "index": FIXTURE / "model.ckpt.index"}[form]
    assert resolve_checkpoint_prefix(path) == FIXTURE / "model.ckpt"
    np.testing.assert_array_equal(open_tf_checkpoint(path)["model/wpe"], expected["model/wpe"])


def test_folder_without_checkpoint_file_uses_its_only_index(copy):
    (copy / "checkpoint").unlink()
    assert resolve_checkpoint_prefix(copy) == copy / "model.ckpt"
    shutil.copy(copy / "model.ckpt.index", copy / "other.ckpt.index")
    with pytest.raises(TFCheckpointError, match="several checkpoints"):
        resolve_checkpoint_prefix(copy)


def test_absolute_path_in_checkpoint_file_from_another_machine(copy):
    (copy / "checkpoint").write_text('model_checkpoint_path: "/somewhere/else/model.ckpt"\n')
    assert resolve_checkpoint_prefix(copy) == copy / "model.ckpt"


def test_lazy_reads_return_fresh_writable_arrays(expected):
    checkpoint = TFCheckpoint(FIXTURE)
    assert len(checkpoint) == len(expected) and "model/ln_f/g" in checkpoint
    first = checkpoint["model/ln_f/g"]
    first[:] = 0  # writable, and not shared with the next read
    np.testing.assert_array_equal(checkpoint["model/ln_f/g"], expected["model/ln_f/g"])
    with pytest.raises(KeyError, match="not in checkpoint"):
        checkpoint["model/nope"]


# --------------------------------------------------------------------------------------
# Damaged files give clear errors
# --------------------------------------------------------------------------------------


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_corrupted_tensor_data_fails_its_checksum(copy):
    checkpoint = open_tf_checkpoint(copy)
    entry = checkpoint.entries["model/h1/mlp/c_fc/w"]
    _flip_byte(copy / "model.ckpt.data-00000-of-00001", entry.offset + entry.size // 2)
    with pytest.raises(TFCheckpointError, match="checksum mismatch.*damaged"):
        checkpoint.read("model/h1/mlp/c_fc/w")
    checkpoint.read("model/h1/mlp/c_fc/w", verify=False)  # can be skipped on purpose
    checkpoint.read("model/wte")  # other tensors are fine
    with pytest.raises(TFCheckpointError, match="model/h1/mlp/c_fc/w: checksum mismatch"):
        checkpoint.verify_checksums()
    checkpoint.verify_checksums(["model/wte", "model/h0/mlp/c_fc/w"])


def test_streamed_checksums_in_small_pieces(monkeypatch):
    """verify_checksums continues each CRC across pieces; TensorFlow's stored values must match."""
    monkeypatch.setattr(tf_checkpoint, "_WINDOW_BYTES", 1000)  # every big tensor in several pieces
    open_tf_checkpoint(FIXTURE).verify_checksums()


def test_read_into_a_reused_buffer(expected):
    checkpoint = open_tf_checkpoint(FIXTURE)
    scratch = np.zeros(10_000, dtype=np.uint8)
    wpe = checkpoint.read("model/wpe", out=scratch)
    np.testing.assert_array_equal(wpe, expected["model/wpe"])
    assert np.shares_memory(wpe, scratch)
    with pytest.raises(ValueError, match="at least"):
        checkpoint.read("model/wte", out=np.zeros(10, dtype=np.uint8))


def test_truncated_data_file_is_reported_when_opening(copy):
    data = copy / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(TFCheckpointError, match="truncated"):
        open_tf_checkpoint(copy)


def test_missing_data_file(copy):
    (copy / "model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(FileNotFoundError, match="data file .* is missing"):
        open_tf_checkpoint(copy)


def test_corrupted_index_block_fails_its_checksum(copy):
    _flip_byte(copy / "model.ckpt.index", 40)
    with pytest.raises(TFCheckpointError, match="checksum mismatch in the block"):
        open_tf_checkpoint(copy)


def test_not_an_index_file(copy):
    (copy / "model.ckpt.index").write_bytes(b"hello" * 20)
    with pytest.raises(TFCheckpointError, match="wrong magic number"):
        open_tf_checkpoint(copy)


def _rewrite_first_block(index: Path, change) -> None:
    """Apply ``change(block_bytes, trailer_type) -> (block_bytes, type)`` to the first data
    block and give it a valid trailer, so only the change itself can be objected to."""
    data = bytearray(index.read_bytes())
    footer = bytes(data[-48:])
    (_meta, pos) = tf_checkpoint._read_block_handle(footer, 0)
    (index_offset, index_size), _ = tf_checkpoint._read_block_handle(footer, pos)
    index_block = bytes(data[index_offset : index_offset + index_size])
    _, handle = next(tf_checkpoint._block_entries(index_block, index))
    (offset, size), _ = tf_checkpoint._read_block_handle(handle, 0)
    block, kind = change(bytes(data[offset : offset + size]), data[offset + size])
    assert len(block) == size
    data[offset : offset + size] = block
    data[offset + size] = kind
    data[offset + size + 1 : offset + size + 5] = mask_crc(crc32c(block + bytes([kind]))).to_bytes(4, "little")
    index.write_bytes(bytes(data))


def test_snappy_compressed_index_is_refused_clearly(copy):
    _rewrite_first_block(copy / "model.ckpt.index", lambda block, kind: (block, 1))
    with pytest.raises(TFCheckpointError, match="snappy"):
        open_tf_checkpoint(copy)


def test_unsupported_dtype_is_named(copy):
    # global_step's entry starts with field 1 (dtype) = 9 (int64): make it 7 (string).
    def to_string(block, kind):
        marker = b"global_step\x08\x09"
        assert marker in block
        return block.replace(marker, b"global_step\x08\x07"), kind

    _rewrite_first_block(copy / "model.ckpt.index", to_string)
    checkpoint = open_tf_checkpoint(copy)  # listing still works
    with pytest.raises(TFCheckpointError, match="dtype string"):
        checkpoint.read("global_step")
    checkpoint.read("model/wte")
