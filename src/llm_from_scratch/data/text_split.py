"""Splitting text into a train file and a validation file, streaming, whatever its size.

The text to split is a *virtual concatenation*: a list of :class:`TextPiece` s, each a byte range
of a file or a few literal bytes (such as the empty line put between two documents). Nothing is
ever concatenated in memory: :func:`split_pieces` reads the pieces in 1 MiB chunks, finds the cut
(just after the first newline at or past 90% of the bytes, see :func:`find_cut`), and writes the
bytes before it to ``train.txt`` and the rest to ``validation.txt``. On the way every file is
checked to be UTF-8 (the error names the file and the byte offset) and to hold some non-blank
text. The two files are written under temporary names and appear together, only if all went well
(:func:`~llm_from_scratch.io.atomic.atomic_paths`).

`data/corpora.py` uses this for your own text and `data/named_corpora.py` for the downloads.
"""

from __future__ import annotations

import codecs
import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from llm_from_scratch.io.atomic import atomic_paths

VALIDATION_FRACTION = 0.1
"""Share of the text (in bytes) that goes to validation when we make the split ourselves."""

CHUNK_SIZE = 1 << 20  # 1 MiB
INFO_FILE = "info.json"
TRAIN_FILE = "train.txt"
VALIDATION_FILE = "validation.txt"


def check_text_file(file: Path) -> None:
    """A quick check of a file used in place: not empty, and UTF-8 at least in its first megabyte."""
    if file.stat().st_size == 0:
        raise ValueError(f"{file} is empty: there is no text to train on")
    with open(file, "rb") as handle:
        head = handle.read(CHUNK_SIZE)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise not_utf8_error(file, error.start) from error


def not_utf8_error(file: Path | str, offset: int) -> ValueError:
    return ValueError(
        f"{file} is not UTF-8 text (invalid byte at offset {offset}). Convert it first, for example "
        f"`iconv -f GB18030 -t UTF-8 in.txt > out.txt` or, in an editor, 'save with encoding UTF-8'."
    )


def bom_length(file: Path) -> int:
    with open(file, "rb") as handle:
        return 3 if handle.read(3) == codecs.BOM_UTF8 else 0


def ends_with_newline(file: Path) -> bool:
    with open(file, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"



# --------------------------------------------------------------------------------------
# Streaming split: a virtual concatenation of files (and separators) cut in two
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextPiece:
    """Part of the text to split: ``length`` bytes of ``path`` from ``start``, or literal ``data``."""

    path: Path | None
    data: bytes = b""
    start: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        return self.length if self.path is not None else len(self.data)


def _iter_chunks(pieces: Sequence[TextPiece], start: int = 0) -> Iterator[tuple[TextPiece, bytes]]:
    """Yield ``(piece, bytes)`` chunks of the concatenation, from byte offset ``start``."""
    position = 0
    for piece in pieces:
        if position + piece.size <= start:
            position += piece.size
            continue
        skip = max(0, start - position)
        if piece.path is None:
            yield piece, piece.data[skip:]
        else:
            with open(piece.path, "rb") as handle:
                handle.seek(piece.start + skip)
                remaining = piece.length - skip
                while remaining > 0:
                    chunk = handle.read(min(CHUNK_SIZE, remaining))
                    if not chunk:
                        raise ValueError(f"{piece.path} became shorter while it was being read; run again")
                    remaining -= len(chunk)
                    yield piece, chunk
        position += piece.size


def _read_range(pieces: Sequence[TextPiece], start: int, end: int) -> bytes:
    out = bytearray()
    for _, chunk in _iter_chunks(pieces, start):
        out += chunk
        if len(out) >= end - start:
            break
    return bytes(out[: end - start])


def find_cut(pieces: Sequence[TextPiece], fraction: float = VALIDATION_FRACTION) -> int:
    """Byte offset where validation starts: just after the first newline at or past 90%.

    If there is no newline after that point (or only the very last byte is one), the last
    newline before it is used; text with no newline at all is cut at a character boundary.
    Both sides are always non-empty.
    """
    total = sum(piece.size for piece in pieces)
    if total < 2:
        raise ValueError("the text is too short to split into train and validation (fewer than 2 bytes)")
    target = min(max(int(total * (1 - fraction)), 1), total - 1)

    # Forward: first '\n' at index >= target - 1, giving cut = index + 1 in [target, total).
    position = target - 1
    for _, chunk in _iter_chunks(pieces, target - 1):
        index = chunk.find(b"\n")
        if index >= 0:
            cut = position + index + 1
            if cut < total:
                return cut
            break
        position += len(chunk)

    # Backward: last '\n' before the target, giving cut in [1, target).
    end = target - 1
    while end > 0:
        begin = max(0, end - CHUNK_SIZE)
        index = _read_range(pieces, begin, end).rfind(b"\n")
        if index >= 0:
            return begin + index + 1
        end = begin

    # No usable newline: cut at the first character boundary at or after the target.
    window = _read_range(pieces, target, min(total, target + 4))
    for offset, byte in enumerate(window):
        if byte & 0xC0 != 0x80:  # not a UTF-8 continuation byte
            return target + offset
    return target


def split_pieces(pieces: Sequence[TextPiece], out_dir: Path, *, progress: bool, label: str,
                  fraction: float = VALIDATION_FRACTION) -> None:
    """Write the concatenation of ``pieces`` to train.txt / validation.txt, cut by :func:`find_cut`.

    Checks on the way that every file is UTF-8 and that there is some non-blank text; the
    error names the file. The output appears only when everything went well.
    """
    cut = find_cut(pieces, fraction)
    total = sum(piece.size for piece in pieces)
    decoders: dict[int, codecs.IncrementalDecoder] = {}
    consumed: dict[int, int] = {}
    seen_text = False
    position = 0
    with _staged_outputs(out_dir) as (train, validation), progress_bar(total, label, progress) as bar:
        current: TextPiece | None = None
        for piece, chunk in _iter_chunks(pieces):
            if piece is not current:
                _finish_decoder(current, decoders, consumed)
                current = piece
            if piece.path is not None:
                decoder = decoders.setdefault(id(piece), codecs.getincrementaldecoder("utf-8")())
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as error:
                    raise not_utf8_error(piece.path, piece.start + consumed.get(id(piece), 0) + error.start) from error
                consumed[id(piece)] = consumed.get(id(piece), 0) + len(chunk)
            seen_text = seen_text or bool(chunk.strip())
            if position + len(chunk) <= cut:
                train.write(chunk)
            elif position >= cut:
                validation.write(chunk)
            else:
                train.write(chunk[: cut - position])
                validation.write(chunk[cut - position:])
            position += len(chunk)
            bar.update(len(chunk))
        _finish_decoder(current, decoders, consumed)
        if not seen_text:
            names = sorted({str(p.path) for p in pieces if p.path is not None})
            raise ValueError(f"{', '.join(names)}: only whitespace, there is no text to train on")


def _finish_decoder(piece: TextPiece | None, decoders: dict, consumed: dict) -> None:
    """A file must not end in the middle of a UTF-8 character."""
    if piece is None or piece.path is None:
        return
    try:
        decoders.pop(id(piece)).decode(b"", final=True)
    except UnicodeDecodeError as error:
        raise not_utf8_error(piece.path, piece.start + consumed.get(id(piece), 0) - 1) from error


@contextlib.contextmanager
def _staged_outputs(out_dir: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """Open train/validation as temporary files; both are renamed into place only on success."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INFO_FILE).unlink(missing_ok=True)  # from here on, the old files are not trusted
    with atomic_paths(out_dir / TRAIN_FILE, out_dir / VALIDATION_FILE) as (train_tmp, validation_tmp), \
            open(train_tmp, "wb") as train, open(validation_tmp, "wb") as validation:
        yield train, validation


def write_split(out_dir: Path, train_parts: Sequence[bytes] | Iterator[bytes],
                 validation_parts: Sequence[bytes] | Iterator[bytes]) -> None:
    """Write an already-decided split (byte strings) to train.txt / validation.txt atomically."""
    with _staged_outputs(out_dir) as (train, validation):
        for part in train_parts:
            train.write(part)
        for part in validation_parts:
            validation.write(part)


def progress_bar(total: int | None, label: str, progress: bool, unit: str = "B"):
    return tqdm(total=total, desc=label, unit=unit, unit_scale=True, unit_divisor=1024 if unit == "B" else 1000,
                disable=None if progress else True, leave=False)


def text_stats(path: Path) -> dict:
    """Bytes, characters and lines of a UTF-8 file, streaming."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = chars = lines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            try:
                chars += len(decoder.decode(chunk))
            except UnicodeDecodeError as error:
                raise not_utf8_error(path, size + error.start) from error
            size += len(chunk)
            lines += chunk.count(b"\n")
    chars += len(decoder.decode(b"", final=True))
    return {"path": str(path), "bytes": size, "chars": chars, "lines": lines}
