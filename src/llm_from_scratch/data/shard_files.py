"""A prepared shard folder on disk: its format, checking it, and reading it as training windows.

A corpus tokenized by :func:`~llm_from_scratch.data.shards.prepare_shards` is a folder with three
files::

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
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from llm_from_scratch.tokenizers import Tokenizer

FORMAT = "llmfs-token-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")
META_FILE = "meta.json"
UINT16_MAX_VOCAB = 1 << 16  # ids 0..65535 fit in two bytes
SAMPLE_BLOCKS = 64  # load_tokens checks this many evenly spaced blocks of ids...
SAMPLE_BLOCK_TOKENS = 1 << 14  # ...of this many tokens each (small files: every id)


class ShardError(ValueError):
    """A shard folder is missing, corrupt, or does not match what was asked for."""


def _fix_hint(directory: Path) -> str:
    return f"delete the folder {directory} or run `llmfs prepare --force`"


ID_COUNTS_FILE = "id_counts.npz"  # ShardSet.id_counts(): how often each id occurs
COUNT_SLICE = 1 << 24            # tokens counted at a time (bounded memory for any corpus)


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

    def id_counts(self) -> np.ndarray:
        """How often each token id occurs in the two splits together: (vocab_size,) int64. It
        says which ids a corpus uses (a compact vocabulary, tokenizers/compact.py). Counted once,
        in slices, and kept beside meta.json in `ID_COUNTS_FILE`, tied to the shards it counted
        (their creation time); shards made again are counted again."""
        path, vocab_size = self.directory / ID_COUNTS_FILE, int(self.meta["vocab_size"])
        created = str(self.meta.get("created"))
        try:
            with np.load(path) as saved:
                if str(saved["created"]) == created and saved["counts"].shape == (vocab_size,):
                    return saved["counts"]
        except (OSError, ValueError, KeyError):
            pass                                                  # not counted yet (or stale)
        counts = np.zeros(vocab_size, dtype=np.int64)
        for split in SPLITS:
            tokens = self.tokens(split)
            for start in range(0, len(tokens), COUNT_SLICE):
                counts += np.bincount(tokens[start:start + COUNT_SLICE], minlength=vocab_size)[:vocab_size]
        temporary = path.with_name(f".{path.name}.{os.getpid()}.npz")
        try:
            np.savez(temporary, counts=counts, created=np.array(created))
            os.replace(temporary, path)                           # whole or not at all
        except OSError:                                           # a read-only cache: count again next time
            temporary.unlink(missing_ok=True)
        return counts



# --------------------------------------------------------------------------------------
# Small helpers: dtype, tokenizer identity
# --------------------------------------------------------------------------------------


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits in two bytes (vocab_size <= 65536), else ``uint32``; little-endian."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size > 1 << 32:
        raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 token ids")
    return np.dtype("<u2") if vocab_size <= UINT16_MAX_VOCAB else np.dtype("<u4")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def tokenizer_hash(tokenizer_or_config: Tokenizer | Mapping[str, Any]) -> str:
    """Short stable hash of a tokenizer's config (names the default shard folder)."""
    config = tokenizer_or_config.to_config() if isinstance(tokenizer_or_config, Tokenizer) else tokenizer_or_config
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:10]


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
    wanted = json.loads(canonical_json(tokenizer.to_config()))  # tuples -> lists, as in meta.json
    if stored is None or canonical_json(stored) != canonical_json(wanted):
        where = meta.get("directory", "these shards")
        raise ShardError(
            f"the shards in {where} were prepared with the tokenizer {_describe_tokenizer_config(stored)}, "
            f"but the requested tokenizer is {_describe_tokenizer_config(wanted)}. Use the tokenizer the "
            f"shards were made with, or prepare shards for this one (`llmfs prepare --dataset ... "
            f"--tokenizer ...`; the default folder depends on the tokenizer, so both can coexist)."
        )



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


def check_bin_file(path: Path, meta: Mapping[str, Any], split: str) -> tuple[np.dtype, int]:
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
    dtype, count = check_bin_file(path, meta, split)
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
# The dataset
# --------------------------------------------------------------------------------------


class TokenWindowDataset(Dataset):
    """(input, target) windows over a token memmap, with ``GPTDatasetV1``'s semantics.

    Windows start at ``range(0, num_tokens - max_length, stride)``; item ``i`` is
    ``(ids[s:s+L], ids[s+1:s+L+1])`` as int64 tensors of shape ``(max_length,)``. ``stride``
    defaults to ``max_length`` (no overlap).

    ``id_map`` (optional) renumbers the ids as they are read: ``id_map[id]`` (a compact vocabulary).
    ``tokens`` is a path to a ``.bin`` shard (opened with :func:`load_tokens`) or an array; with
    a memmap only the requested window is read and converted, so memory use does not grow with
    the corpus. Pickling (DataLoader workers) sends the file name, not the data.
    """

    def __init__(self, tokens: np.ndarray | str | Path, max_length: int, stride: int | None = None,
                 id_map: np.ndarray | None = None):
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
        # the tokenizer's ids -> the model's (a compact vocabulary: CompactTokenizer.to_compact)
        self.id_map = None if id_map is None else np.asarray(id_map, dtype=np.int64)
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
        window = self.tokens[start:start + self.max_length + 1].astype(np.int64)
        if self.id_map is not None:
            window = self.id_map[window]
        window = torch.from_numpy(window)
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
