"""CRC-32C (Castagnoli), the checksum TensorFlow and LevelDB use, in plain Python and NumPy.

A CRC treats the data as one long binary polynomial and keeps the remainder of its division by a
fixed polynomial (here Castagnoli's, ``0x1EDC6F41``). It catches every burst of errors up to 32
bits, so a truncated or damaged download cannot pass. TensorFlow stores the CRC-32C of every
index block and every tensor of a checkpoint (:mod:`.tf_checkpoint`), *masked*
(:func:`mask_crc`).

Two implementations of the same function:

* :func:`_crc_register_bytes`: the textbook one, one table lookup per byte (a few MB/s);
* :func:`_crc_register_numpy`: the data is cut into rows of 1 KiB, all rows are fed through their
  own register side by side (one NumPy step per 32-bit column), and the rows' results are joined
  in order. Feeding zeros into a CRC register is linear in its bits, so "advance a register over
  1 KiB of zeros" is a precomputed table, and joining costs four lookups per row. A few hundred
  MB/s: enough to check GPT-2 XL's 6 GB in well under a minute.

``crc32c(b"123456789") == 0xE3069283`` (the published check value) is in the tests.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_CRC32C_POLY = 0x82F63B78  # the Castagnoli polynomial, bit-reversed (the "reflected" form)


def _make_crc_table() -> list[int]:
    """table[b] = the CRC register after feeding byte b into a register of zeros."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _make_crc_table()
_CRC_TABLE_NP = np.array(_CRC_TABLE, dtype=np.uint32)
_LANE_BYTES = 1024  # bytes per slice in the vectorized CRC; shorter data uses the plain loop
_WINDOW_BYTES = 16 << 20  # work through big tensors 16 MiB at a time (bounded extra memory)


def _crc_register_bytes(register: int, data: bytes | memoryview) -> int:
    """Feed bytes through the CRC register, one table lookup per byte (the textbook way)."""
    table = _CRC_TABLE
    for byte in bytes(data):
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


@lru_cache(maxsize=1)
def _word_tables() -> tuple[np.ndarray, np.ndarray]:
    """Two 65536-entry tables that feed a whole 32-bit word in two lookups.

    ``t16[x]`` is the register after pushing the 16 bits of ``x`` through a zero register (16
    steps of the bitwise algorithm at once). Feeding a word: ``r ^= word``, then 32 zero-steps,
    which is linear in r: the low half contributes ``low[r & 0xFFFF]`` (16 steps via t16, then
    16 more), the high half ``t16[r >> 16]`` (its first 16 steps only move it down).
    """
    t16 = np.arange(1 << 16, dtype=np.uint32)
    for _ in range(16):
        t16 = np.where(t16 & 1, (t16 >> 1) ^ np.uint32(_CRC32C_POLY), t16 >> 1).astype(np.uint32)
    low = t16[t16 & 0xFFFF] ^ (t16 >> 16)
    return low, t16


@lru_cache(maxsize=4)
def _shift_tables(n_bytes: int) -> tuple[list[int], ...]:
    """Tables that advance a CRC register over ``n_bytes`` zero bytes in 4 lookups.

    Feeding zeros is linear in the register's bits (XOR is addition mod 2), so it is a 32x32
    bit matrix: we push the 32 one-bit registers through ``n_bytes`` zeros, then precompute the
    result for every value of each of the register's 4 bytes.
    """
    images = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))  # (32,) basis registers
    for _ in range(n_bytes):
        images = _CRC_TABLE_NP[images & 0xFF] ^ (images >> 8)
    tables = []
    values = np.arange(256, dtype=np.uint32)
    for byte_index in range(4):
        table = np.zeros(256, dtype=np.uint32)
        for bit in range(8):
            has_bit = ((values >> bit) & 1).astype(bool)
            table[has_bit] ^= images[8 * byte_index + bit]
        tables.append(table.tolist())  # Python ints: fastest for the one-at-a-time joins below
    return tuple(tables)


def _crc_register_numpy(register: int, data: np.ndarray, lane_bytes: int = _LANE_BYTES) -> int:
    """The same as `_crc_register_bytes` for a long uint8 array, vectorized over slices.

    The data is cut into rows of ``lane_bytes``; all rows of a window are fed through their own
    register (starting at zero) side by side, one 32-bit word column per NumPy step. Then the
    rows are joined in order: register = shift(register over lane_bytes zeros) XOR row_register,
    which is exactly what feeding the row's bytes would have done (CRC is affine in the register).
    """
    low, high = _word_tables()
    t0, t1, t2, t3 = _shift_tables(lane_bytes)
    n_rows = data.size // lane_bytes
    rows = data[: n_rows * lane_bytes].view("<u4").reshape(n_rows, lane_bytes // 4)
    rows_per_window = max(1, min(n_rows, _WINDOW_BYTES // lane_bytes))
    # One buffer for the transposed window, reused: allocating and freeing 16 MiB blocks over
    # and over made glibc keep hundreds of MB of freed memory while loading a big model.
    columns = np.empty((lane_bytes // 4, rows_per_window), dtype=np.uint32)  # (words, rows)
    lane = np.empty(rows_per_window, dtype=np.uint32)
    low_part = np.empty_like(lane)
    index = np.empty_like(lane)
    for start in range(0, n_rows, rows_per_window):
        window = rows[start : start + rows_per_window]
        count = window.shape[0]
        cols, regs, lows, idx = columns[:, :count], lane[:count], low_part[:count], index[:count]
        np.copyto(cols, window.T)
        regs[:] = 0
        for column in cols:  # in place, to avoid allocating in the hot loop
            np.bitwise_xor(regs, column, out=regs)
            np.bitwise_and(regs, 0xFFFF, out=idx)
            np.take(low, idx, out=lows)
            np.right_shift(regs, 16, out=regs)
            np.take(high, regs, out=regs)
            np.bitwise_xor(regs, lows, out=regs)
        for row_register in regs.tolist():
            register = (t0[register & 0xFF] ^ t1[(register >> 8) & 0xFF]
                        ^ t2[(register >> 16) & 0xFF] ^ t3[register >> 24] ^ row_register)
    return _crc_register_bytes(register, data[n_rows * lane_bytes :].tobytes())


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """CRC-32C of ``data`` (continuing from ``crc`` if given), as in RFC 3720.

    ``crc32c(b"123456789") == 0xE3069283``.
    """
    register = crc ^ 0xFFFFFFFF
    if isinstance(data, np.ndarray):
        array = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        array = np.frombuffer(data, dtype=np.uint8)
    if array.size >= 2 * _LANE_BYTES:
        register = _crc_register_numpy(register, array)
    else:
        register = _crc_register_bytes(register, array.tobytes())
    return register ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TensorFlow store CRCs "masked" (rotated and offset), so that a CRC of data that
    itself contains CRCs is not trivially related to them."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
