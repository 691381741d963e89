"""Token shards: tokenize a corpus once, then train from memory-mapped files.

Tokenizing is slow compared with training a small model (GPT-2's tokenizer does a few MB of
text per second per core) and the result never changes, so we do it once and keep the ids on
disk: a prepared corpus is a folder with ``train.bin``, ``validation.bin`` (the token ids) and
``meta.json`` (what they hold). What the files are and how training reads them (a memory map,
never the whole file) is :mod:`llm_from_scratch.data.shard_files`; this module *writes* them.
Every name of that module is importable from here too.

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
import json
import multiprocessing
import os
import re
import signal
import time
import unicodedata
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from llm_from_scratch.data.shard_files import (  # noqa: F401 - the format and the reader are public here too
    ID_COUNTS_FILE,
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    SAMPLE_BLOCK_TOKENS,
    SAMPLE_BLOCKS,
    SPLITS,
    UINT16_MAX_VOCAB,
    ShardError,
    ShardSet,
    TokenWindowDataset,
    canonical_json,
    check_bin_file,
    check_shard_tokenizer,
    load_tokens,
    read_meta,
    token_dtype,
    tokenizer_hash,
)
from llm_from_scratch.io.atomic import atomic_paths, write_json_atomically
from llm_from_scratch.tokenizers import Tokenizer, get_tokenizer, tokenizer_from_config

DEFAULT_CHUNK_BYTES = 1 << 20  # 1 MiB of text per task: big enough to amortize the IPC, small enough to stream
MAX_CHUNK_FACTOR = 8  # look this many chunks far for a safe cut before falling back to a cruder one

# What may stand between a line's last letter/digit and its newline for the cut to stay exact:
# whitespace and punctuation that never starts or continues a letter piece. Not the apostrophe
# (o200k glues "'s" to the word before) and not | < > (they would let a cut fall inside
# a special token such as <|endoftext|>).
_SAFE_LINE_TAIL = frozenset('.,;:!?)]}"*-')
_MAX_LINE_TAIL = 32
_MAX_NEWLINES_TRIED = 2000


def _source_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "corpus"


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
        if canonical_json(meta.get("tokenizer")) != canonical_json(config) or meta.get("sources") != sources:
            return None
        for split in SPLITS:
            check_bin_file(out_dir / f"{split}.bin", meta, split)
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
    config = json.loads(canonical_json(tokenizer.to_config()))
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
    started = time.perf_counter()
    pool = None
    try:
        # The .bin files are written under temporary names and renamed together when this block
        # ends without an error. Before that the old meta.json goes, so no moment exists where an
        # old meta.json describes new .bin files; the new meta.json appears last.
        with atomic_paths(*(out_dir / f"{split}.bin" for split in SPLITS)) as temporaries:
            if workers > 1:
                pool = multiprocessing.get_context().Pool(
                    workers, initializer=_init_worker, initargs=(config, dtype.str, vocab_size))
            for split, temporary in zip(SPLITS, temporaries):
                counts[split] = _tokenize_file(files[split], temporary, split=split, name=name,
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
            (out_dir / META_FILE).unlink(missing_ok=True)
            (out_dir / ID_COUNTS_FILE).unlink(missing_ok=True)   # counted again from the new shards
        write_json_atomically(out_dir / META_FILE, meta, indent=1)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    meta.update(directory=str(out_dir), reused=False)
    return ShardSet(out_dir / "train.bin", out_dir / "validation.bin", meta)


def _default_cache_dir(*parts: str) -> Path:
    from llm_from_scratch.assets import cache_dir

    return cache_dir(*parts)
