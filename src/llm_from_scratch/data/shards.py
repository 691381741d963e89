"""Token shards: tokenize a corpus once, then train from memory-mapped files.

Tokenizing is slow compared with training a small model (GPT-2's tokenizer does a few MB of
text per second per core) and the result never changes, so we do it once and keep the ids on
disk. A prepared corpus is a folder with three files::

    train.bin        the training split's token ids, one after the other
    validation.bin   the validation split's token ids
    meta.json        what the .bin files contain: dtype, token "counts" per split,
                     tokenizer config, vocab_size, eot_id, and the sources' fingerprints

A ``.bin`` file is nothing but raw little-endian integers: ``uint16`` (2 bytes per token)
when every id fits, i.e. ``vocab_size <= 65536`` (GPT-2: 50,257), else ``uint32``. No header,
so ``np.fromfile("train.bin", dtype="<u2")`` would read it, and so does any other tool.

Training does not read the file into memory: :func:`load_tokens` returns a read-only
``np.memmap``, an array whose data stay on disk and are paged in by the operating system when
a slice is touched. :class:`TokenWindowDataset` cuts (input, target) windows out of it exactly
like :class:`~llm_from_scratch.data.GPTDatasetV1` and converts only that window to int64, so a
corpus larger than RAM trains fine (the OS keeps the hot pages cached).

:func:`prepare_shards` streams each text file in ~1 MB chunks (never the whole file in
memory), tokenizes the chunks in several processes, appends the ids to a temporary file and
renames it when complete: a crash never leaves a half-written shard under the real name. Its
``meta.json`` records the tokenizer and a fingerprint of the sources (path, size, mtime), so a
second call with the same inputs returns at once and a changed text or tokenizer triggers a
rebuild.

**Chunk boundaries.** Byte-level BPE (GPT-2, cl100k, o200k) first splits text into pieces with a
regular expression and merges only inside a piece. A chunk boundary is harmless exactly when it
falls on a piece boundary that does not depend on what follows. Cutting *after* a newline is not
always such a place: GPT-2 turns ``"\\n\\n"`` before a word into two pieces ``"\\n", "\\n"`` but the
same two newlines at the end of a chunk into one (``"\\n\\n"``, another id), and cl100k glues
punctuation to the newlines after it (``".\\n\\n"``). So we cut just *after the last letter or digit
of a line*, leaving the line's trailing punctuation/spaces and its newline to the next chunk
(``"...The end" | ".\\n\\nOnce upon..."``): a run of letters or digits ends the same way whether
text follows or not, and every piece after it starts fresh. With this rule the chunked ids are
identical to ``tokenizer.encode(whole_text)`` for the tiktoken encodings, the character and the
word tokenizers. If no line in ``8 x chunk`` of text ends like that (a file of very long lines),
we cut between a letter or digit and a space inside a line, which is just as exact. Only text with
neither (no letter followed by a space in 8 MB) is cut after a newline or anywhere; ids at such a
cut may differ slightly from encoding the whole text, and ``meta["inexact_cuts"]`` counts them.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import multiprocessing
import os
import re
import signal
import time
import unicodedata
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from llm_from_scratch.tokenizers import Tokenizer, get_tokenizer, tokenizer_from_config

FORMAT = "llmfs-token-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")
META_FILE = "meta.json"
DEFAULT_CHUNK_BYTES = 1 << 20  # 1 MiB of text per task: big enough to amortize the IPC, small enough to stream
MAX_CHUNK_FACTOR = 8  # look this many chunks far for a safe cut before falling back to a cruder one
UINT16_MAX_VOCAB = 1 << 16  # ids 0..65535 fit in two bytes
SAMPLE_BLOCKS = 64  # load_tokens checks this many evenly spaced blocks of ids...
SAMPLE_BLOCK_TOKENS = 1 << 14  # ...of this many tokens each (small files: every id)

# What may stand between a line's last letter/digit and its newline for the cut to stay exact:
# whitespace and punctuation that never starts or continues a letter piece. Not the apostrophe
# (o200k glues "'s" to the word before) and not | < > (they would let a cut fall inside
# a special token such as <|endoftext|>).
_SAFE_LINE_TAIL = frozenset('.,;:!?)]}"*-')
_MAX_LINE_TAIL = 32
_MAX_NEWLINES_TRIED = 2000


class ShardError(ValueError):
    """A shard folder is missing, corrupt, or does not match what was asked for."""


def _fix_hint(directory: Path) -> str:
    return f"delete the folder {directory} or run `llmfs prepare --force`"


@dataclass(frozen=True)
class ShardSet:
    """The result of :func:`prepare_shards`: two ``.bin`` files and their ``meta.json``."""

    train: Path  # .bin file of token ids
    validation: Path
    meta: dict  # contents of meta.json, plus "directory" and "reused" (True: nothing was rebuilt)

    @property
    def directory(self) -> Path:
        return self.train.parent

    def tokens(self, split: str = "train") -> np.memmap:
        """The validated memmap of ``split`` ("train" or "validation")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return load_tokens(getattr(self, split))


# --------------------------------------------------------------------------------------
# Small helpers: dtype, tokenizer identity, source fingerprints
# --------------------------------------------------------------------------------------


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits in two bytes (vocab_size <= 65536), else ``uint32``; little-endian."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size > 1 << 32:
        raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 token ids")
    return np.dtype("<u2") if vocab_size <= UINT16_MAX_VOCAB else np.dtype("<u4")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def tokenizer_hash(tokenizer_or_config: Tokenizer | Mapping[str, Any]) -> str:
    """Short stable hash of a tokenizer's config (names the default shard folder)."""
    config = tokenizer_or_config.to_config() if isinstance(tokenizer_or_config, Tokenizer) else tokenizer_or_config
    return hashlib.sha256(_canonical_json(config).encode("utf-8")).hexdigest()[:10]


def _describe_tokenizer_config(config: Mapping[str, Any]) -> str:
    """A short human description (a char tokenizer's config lists every character)."""
    if not isinstance(config, Mapping):
        return repr(config)[:80]
    label = str(config.get("type", "?"))
    if "name" in config:
        label += f" {config['name']!r}"
    return f"{label} (config hash {tokenizer_hash(config)})"


def check_shard_tokenizer(meta: Mapping[str, Any], tokenizer: Tokenizer) -> None:
    """Raise ShardError unless the shards described by ``meta`` were made with ``tokenizer``.

    Token ids only mean something together with the tokenizer that made them: training a
    GPT-2-vocabulary model on cl100k ids would run without any error and learn garbage.
    """
    stored = meta.get("tokenizer")
    wanted = json.loads(_canonical_json(tokenizer.to_config()))  # tuples -> lists, as in meta.json
    if stored is None or _canonical_json(stored) != _canonical_json(wanted):
        where = meta.get("directory", "these shards")
        raise ShardError(
            f"the shards in {where} were prepared with the tokenizer {_describe_tokenizer_config(stored)}, "
            f"but the requested tokenizer is {_describe_tokenizer_config(wanted)}. Use the tokenizer the "
            f"shards were made with, or prepare shards for this one (`llmfs prepare --dataset ... "
            f"--tokenizer ...`; the default folder depends on the tokenizer, so both can coexist)."
        )


def _source_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "corpus"


# --------------------------------------------------------------------------------------
# Reading and validating shards
# --------------------------------------------------------------------------------------


def read_meta(directory: Path) -> dict[str, Any]:
    """The contents of ``directory/meta.json``, checked to be a shard description we understand."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise ShardError(
            f"no {META_FILE} in {directory}: this is not a prepared shard folder, or preparing it was "
            f"interrupted. Run `llmfs prepare` (or prepare_shards) to make it; {_fix_hint(directory)}"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ShardError(
            f"{meta_path} is not valid JSON ({error}): corrupt shard folder; {_fix_hint(directory)}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ShardError(f"{meta_path} does not describe token shards; {_fix_hint(directory)}")
    if meta.get("version") != FORMAT_VERSION:
        raise ShardError(
            f"{meta_path} has shard format version {meta.get('version')}, this code reads version "
            f"{FORMAT_VERSION}; {_fix_hint(directory)}"
        )
    meta["directory"] = str(directory)
    return meta


def _check_bin(path: Path, meta: Mapping[str, Any], split: str) -> tuple[np.dtype, int]:
    """Check that ``path`` exists and has exactly the size meta.json promises; return (dtype, count)."""
    directory = path.parent
    if not path.is_file():
        raise ShardError(f"missing shard file {path}; {_fix_hint(directory)}")
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    expected = int(meta["counts"][split])
    size = path.stat().st_size
    if size % dtype.itemsize != 0 or size // dtype.itemsize != expected:
        raise ShardError(
            f"corrupt or truncated shard {path}: it is {size:,} bytes, but {META_FILE} promises {expected:,} "
            f"{dtype.name} tokens = {expected * dtype.itemsize:,} bytes; {_fix_hint(directory)}"
        )
    return dtype, expected


def _sampled_max(tokens: np.ndarray) -> int:
    """Largest id in ``tokens`` (all of them if few, else evenly spaced blocks): cheap on a memmap."""
    n = len(tokens)
    if n == 0:
        return -1
    if n <= SAMPLE_BLOCKS * SAMPLE_BLOCK_TOKENS:
        return int(tokens.max())
    starts = np.linspace(0, n - SAMPLE_BLOCK_TOKENS, SAMPLE_BLOCKS).astype(np.int64)
    return max(int(tokens[s:s + SAMPLE_BLOCK_TOKENS].max()) for s in starts)


def _split_of(path: Path) -> str:
    split = path.name[:-len(".bin")] if path.name.endswith(".bin") else path.stem
    if split not in SPLITS:
        raise ShardError(f"{path} is not a shard file: expected train.bin or validation.bin")
    return split


def load_tokens(path: str | Path) -> np.memmap:
    """Open one ``.bin`` shard as a validated, read-only ``np.memmap`` (nothing is read into RAM).

    Checks against the ``meta.json`` next to it: the file exists, its size is exactly the
    promised token count times the item size, and a sample of ids is below ``vocab_size``.
    """
    path = Path(path)
    split = _split_of(path)
    meta = read_meta(path.parent)
    dtype, count = _check_bin(path, meta, split)
    if count == 0:  # cannot mmap an empty file; prepare_shards never writes one
        raise ShardError(f"shard {path} holds no tokens; {_fix_hint(path.parent)}")
    tokens = np.memmap(path, dtype=dtype, mode="r", shape=(count,))
    vocab_size = int(meta["vocab_size"])
    largest = _sampled_max(tokens)
    if largest >= vocab_size:
        raise ShardError(
            f"corrupt shard {path}: it contains the token id {largest}, but the vocabulary has only "
            f"{vocab_size} ids (0..{vocab_size - 1}). The file was damaged or written with another "
            f"tokenizer; {_fix_hint(path.parent)}"
        )
    return tokens


# --------------------------------------------------------------------------------------
# Streaming a text file in chunks cut at safe places
# --------------------------------------------------------------------------------------


def _is_letter_or_digit(char: str) -> bool:
    return unicodedata.category(char)[0] in "LN"  # exactly the regex classes \p{L} and \p{N}


def find_safe_cut(text: str, min_pos: int = 1) -> int | None:
    """The last position ``p`` (>= ``min_pos``) where ``text`` can be cut without changing its BPE ids.

    ``p`` is just after the last letter or digit of a line whose remaining characters up to the
    newline are whitespace or simple punctuation (see the module docstring for why). None if
    there is no such place among the last newlines.
    """
    newline = len(text)
    for _ in range(_MAX_NEWLINES_TRIED):
        newline = text.rfind("\n", min_pos, newline)
        if newline < 0:
            return None
        pos = newline
        while pos > min_pos and newline - pos < _MAX_LINE_TAIL:
            char = text[pos - 1]
            if char in _SAFE_LINE_TAIL or (char.isspace() and char != "\n"):
                pos -= 1
                continue
            break
        if pos >= min_pos and pos > 0 and _is_letter_or_digit(text[pos - 1]):
            return pos
    return None


def _find_word_cut(text: str) -> int | None:
    """The last place where a letter or digit is followed by a space: as exact as a line cut."""
    space = len(text)
    for _ in range(_MAX_NEWLINES_TRIED):
        space = text.rfind(" ", 1, space)
        if space < 0:
            return None
        if _is_letter_or_digit(text[space - 1]):
            return space
    return None


def iter_text_chunks(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                     stats: dict[str, int] | None = None) -> Iterator[str]:
    """Yield the text of ``path`` in pieces of about ``chunk_bytes``, cut at safe places.

    Joined, the pieces are exactly the file's text. At most ``MAX_CHUNK_FACTOR`` chunks of text
    are in memory at once. ``stats["inexact_cuts"]`` counts fallback cuts (see module docstring).
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    stats = stats if stats is not None else {}
    stats.setdefault("inexact_cuts", 0)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()  # a leading byte-order mark is not text
    pending = ""
    offset = 0
    with open(path, "rb") as file:
        while True:
            block = file.read(chunk_bytes)
            try:
                pending += decoder.decode(block, final=not block)
            except UnicodeDecodeError as error:
                raise ShardError(
                    f"{path} is not UTF-8 text: {error.reason} near byte {offset + error.start:,}. "
                    f"Convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
                ) from None
            offset += len(block)
            if not block:
                if pending:
                    yield pending
                return
            if len(pending) < chunk_bytes:
                continue  # multibyte text: keep reading until there is a chunk's worth of characters
            cut = find_safe_cut(pending)
            if cut is None and len(pending) >= MAX_CHUNK_FACTOR * chunk_bytes:
                cut = _find_word_cut(pending)  # still exact, but in the middle of a (very long) line
                if cut is None:
                    newline = pending.rfind("\n")
                    cut = newline + 1 if newline > 0 else len(pending)
                    stats["inexact_cuts"] += 1
            if cut is not None:
                yield pending[:cut]
                pending = pending[cut:]


# --------------------------------------------------------------------------------------
# Tokenizing chunks, in this process or in a pool of workers
# --------------------------------------------------------------------------------------

# Each worker process builds its own tokenizer once (from the config, not pickled).
_worker_state: dict[str, Any] = {}


def _init_worker(tokenizer_config: Mapping[str, Any], dtype_str: str, vocab_size: int) -> None:
    # A forked worker inherits its parent's signal handlers; with a custom SIGTERM handler
    # (e.g. one that turns SIGTERM into KeyboardInterrupt) Pool.terminate() could not stop it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_state["tokenizer"] = tokenizer_from_config(tokenizer_config)
    _worker_state["dtype"] = np.dtype(dtype_str)
    _worker_state["vocab_size"] = vocab_size


def _encode_chunk(text: str, tokenizer: Tokenizer, dtype: np.dtype, vocab_size: int) -> tuple[np.ndarray, int]:
    """Chunk -> (ids as the shard's dtype, number of UTF-8 bytes of the chunk)."""
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = int(ids.max()) if ids.max() >= vocab_size else int(ids.min())
        raise ShardError(f"the tokenizer produced the id {bad}, outside its vocabulary of {vocab_size} ids")
    return ids.astype(dtype), len(text.encode("utf-8"))


def _encode_in_worker(text: str) -> tuple[np.ndarray, int]:
    state = _worker_state
    return _encode_chunk(text, state["tokenizer"], state["dtype"], state["vocab_size"])


def _ordered_results(chunks: Iterator[str], encode_local, pool, workers: int) -> Iterator[tuple[np.ndarray, int]]:
    """Encoded chunks in file order (like ``Pool.imap``). At most 2 tasks per worker are in
    flight, so reading the file never runs far ahead of tokenizing it: memory stays bounded."""
    if pool is None:
        for text in chunks:
            yield encode_local(text)
        return
    in_flight: deque = deque()
    limit = 2 * workers
    for text in chunks:
        in_flight.append(pool.apply_async(_encode_in_worker, (text,)))
        if len(in_flight) >= limit:
            yield in_flight.popleft().get()
    while in_flight:
        yield in_flight.popleft().get()


def _tokenize_file(source: Path, target: Path, *, split: str, name: str, encode_local, pool, workers: int,
                   chunk_bytes: int, stats: dict[str, int], progress: bool) -> int:
    """Tokenize ``source`` into the binary file ``target``; return the number of tokens."""
    from tqdm.auto import tqdm

    count = 0
    started = time.perf_counter()
    bar = tqdm(total=source.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
               desc=f"tokenizing {name}/{split}", disable=not progress, dynamic_ncols=True)
    try:
        with open(target, "wb") as out:
            for ids, num_bytes in _ordered_results(iter_text_chunks(source, chunk_bytes, stats), encode_local, pool,
                                               workers):
                out.write(ids.tobytes())
                count += len(ids)
                rate = count / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{count:,} tokens, {rate / 1e3:,.0f}k tok/s", refresh=False)
                bar.update(num_bytes)
    finally:
        bar.close()
    return count


# --------------------------------------------------------------------------------------
# prepare_shards
# --------------------------------------------------------------------------------------


def _reusable(out_dir: Path, config: Mapping[str, Any], sources: Mapping[str, Any]) -> dict[str, Any] | None:
    """meta.json of a complete, matching shard folder, else None (then we rebuild)."""
    try:
        meta = read_meta(out_dir)
        if _canonical_json(meta.get("tokenizer")) != _canonical_json(config) or meta.get("sources") != sources:
            return None
        for split in SPLITS:
            _check_bin(out_dir / f"{split}.bin", meta, split)
    except (ShardError, KeyError, TypeError, ValueError):
        return None
    return meta


def prepare_shards(train_file: str | Path, validation_file: str | Path, tokenizer: Tokenizer | str,
                   out_dir: str | Path | None = None, *, name: str = "corpus", num_workers: int | None = None,
                   force: bool = False, progress: bool = True, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> ShardSet:
    """Tokenize two UTF-8 text files into ``train.bin`` / ``validation.bin`` + ``meta.json``.

    - ``out_dir`` defaults to ``<cache>/shards/<name>-<tokenizer hash>``.
    - Returns at once (without touching the files) when the folder already holds shards of
      these very sources (path, size, mtime) made with this tokenizer, unless ``force``.
    - ``num_workers`` processes tokenize ~``chunk_bytes`` chunks in parallel (default: all CPU
      cores; 1 tokenizes in this process). Each worker rebuilds the tokenizer from its config.
    - Files are written under temporary names and renamed at the end, so an interruption never
      leaves a half-written shard behind.
    """
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = get_tokenizer(tokenizer)
    files = {"train": Path(train_file), "validation": Path(validation_file)}
    for split, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"the {split} text file {path} does not exist")
        if path.stat().st_size == 0:
            raise ShardError(f"the {split} text file {path} is empty: each split needs some text")
    config = json.loads(_canonical_json(tokenizer.to_config()))
    out_dir = Path(out_dir) if out_dir is not None else Path(
        _default_cache_dir("shards", f"{_safe_name(name)}-{tokenizer_hash(config)}"))
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {split: _source_fingerprint(path) for split, path in files.items()}

    if not force:
        meta = _reusable(out_dir, config, sources)
        if meta is not None:
            meta["reused"] = True
            return ShardSet(out_dir / "train.bin", out_dir / "validation.bin", meta)

    vocab_size = int(tokenizer.vocab_size)
    dtype = token_dtype(vocab_size)
    total_bytes = sum(s["size"] for s in sources.values())
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {workers}")
    workers = max(1, min(workers, -(-total_bytes // chunk_bytes)))  # no more workers than chunks

    def encode_local(text: str) -> tuple[np.ndarray, int]:
        return _encode_chunk(text, tokenizer, dtype, vocab_size)

    stats = {"inexact_cuts": 0}
    counts: dict[str, int] = {}
    temporaries = {split: out_dir / f".{split}.bin.{os.getpid()}.tmp" for split in SPLITS}
    started = time.perf_counter()
    pool = None
    try:
        if workers > 1:
            pool = multiprocessing.get_context().Pool(
                workers, initializer=_init_worker, initargs=(config, dtype.str, vocab_size))
        for split in SPLITS:
            counts[split] = _tokenize_file(files[split], temporaries[split], split=split, name=name,
                                           encode_local=encode_local, pool=pool, workers=workers,
                                           chunk_bytes=chunk_bytes, stats=stats, progress=progress)
            if counts[split] == 0:
                raise ShardError(f"the {split} text file {files[split]} is empty: it gave 0 tokens")
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
        seconds = time.perf_counter() - started
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": name,
            "dtype": dtype.name,
            "byteorder": "little",
            "counts": counts,
            "vocab_size": vocab_size,
            "eot_id": tokenizer.eot_id,
            "text_bytes": total_bytes,
            "inexact_cuts": stats["inexact_cuts"],
            "num_workers": workers,
            "seconds": round(seconds, 3),
            "tokens_per_second": round(sum(counts.values()) / max(seconds, 1e-9)),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sources": sources,
            "tokenizer": config,
        }
        # Commit: invalidate the old meta first, so no moment exists where an old meta.json
        # describes new .bin files; the new meta.json appears last.
        (out_dir / META_FILE).unlink(missing_ok=True)
        for split in SPLITS:
            os.replace(temporaries[split], out_dir / f"{split}.bin")
        _write_json_atomically(out_dir / META_FILE, meta)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
    meta.update(directory=str(out_dir), reused=False)
    return ShardSet(out_dir / "train.bin", out_dir / "validation.bin", meta)


def _default_cache_dir(*parts: str) -> Path:
    from llm_from_scratch.assets import cache_dir

    return cache_dir(*parts)


def _write_json_atomically(path: Path, value: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------


class TokenWindowDataset(Dataset):
    """(input, target) windows over a token memmap, with ``GPTDatasetV1``'s semantics.

    Windows start at ``range(0, num_tokens - max_length, stride)``; item ``i`` is
    ``(ids[s:s+L], ids[s+1:s+L+1])`` as int64 tensors of shape ``(max_length,)``. ``stride``
    defaults to ``max_length`` (no overlap).

    ``tokens`` is a path to a ``.bin`` shard (opened with :func:`load_tokens`) or an array; with
    a memmap only the requested window is read and converted, so memory use does not grow with
    the corpus. Pickling (DataLoader workers) sends the file name, not the data.
    """

    def __init__(self, tokens: np.ndarray | str | Path, max_length: int, stride: int | None = None):
        stride = max_length if stride is None else stride
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be positive, got {max_length} and {stride}")
        self.path = Path(tokens) if isinstance(tokens, (str, Path)) else None
        if self.path is not None:
            self.tokens = load_tokens(self.path)
        elif isinstance(tokens, np.ndarray):
            self.tokens = tokens
        elif isinstance(tokens, torch.Tensor):
            self.tokens = tokens.detach().cpu().numpy()
        else:
            self.tokens = np.asarray(tokens)
        if self.tokens.ndim != 1 or not np.issubdtype(self.tokens.dtype, np.integer):
            raise TypeError("tokens must be a 1-D array of integer ids (e.g. a memmap) or the path of a .bin shard")
        self.max_length = max_length
        self.stride = stride
        num_tokens = len(self.tokens)
        if num_tokens < max_length + 1:
            where = f" in {self.path}" if self.path is not None else ""
            raise ValueError(
                f"not enough tokens for one window: there are {num_tokens:,} tokens{where}, but a window of "
                f"max_length={max_length} needs max_length + 1 = {max_length + 1:,} (inputs plus the shifted "
                f"targets). Use a smaller max_length (the model's context length) or a bigger corpus."
            )
        self.starts = range(0, num_tokens - max_length, stride)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[idx]  # range indexing: negative indices work, past the end raises IndexError
        window = torch.from_numpy(self.tokens[start:start + self.max_length + 1].astype(np.int64))
        return window[:-1], window[1:]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(self.tokens, np.memmap) and self.tokens.filename is not None:
            # A memmap pickles as a full in-memory copy; send where to find it instead.
            state["tokens"] = ("memmap", self.tokens.filename, self.tokens.dtype.str, self.tokens.offset,
                               self.tokens.shape)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        tokens = state["tokens"]
        if isinstance(tokens, tuple) and tokens and tokens[0] == "memmap":
            _, filename, dtype, offset, shape = tokens
            state["tokens"] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
        self.__dict__.update(state)
