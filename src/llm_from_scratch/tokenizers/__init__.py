"""Tokenizers: turning text into the integer ids a language model reads, and back.

One module per idea, from simplest to what GPT uses:

* :mod:`.simple` - split into words; unknown words are a problem (``SimpleTokenizerV1/V2``);
* :mod:`.char` - one id per character (``CharTokenizer``);
* :mod:`.tiktoken_bpe` - byte-level BPE as used by GPT-2/3/4 (``TiktokenTokenizer``);
* :mod:`.bpe` - byte-level BPE trained from scratch on your text (``BPETokenizer``);
* :mod:`.base` - the interface they share and saving/loading them.

``get_tokenizer`` is the one entry point the rest of the project uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from llm_from_scratch.tokenizers.base import (
    DEFAULT_ALLOWED_SPECIAL,
    ENDOFTEXT,
    UNKNOWN,
    Tokenizer,
    load_tokenizer,
    register_tokenizer_type,
    registered_tokenizer_types,
    tokenizer_from_config,
)
from llm_from_scratch.tokenizers.bpe import BPETokenizer
from llm_from_scratch.tokenizers.char import CharTokenizer, SimpleTokenizer, UnknownCharacterError
from llm_from_scratch.tokenizers.compact import CompactTokenizer
from llm_from_scratch.tokenizers.hf_bpe import HFBPETokenizer
from llm_from_scratch.tokenizers.simple import (
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    UnknownWordError,
    build_vocab,
    split_into_words,
)
from llm_from_scratch.tokenizers.tiktoken_bpe import TiktokenTokenizer, load_encoding

__all__ = [
    "BPETokenizer",
    "HFBPETokenizer",
    "DEFAULT_ALLOWED_SPECIAL",
    "ENDOFTEXT",
    "UNKNOWN",
    "CharTokenizer",
    "CompactTokenizer",
    "SimpleTokenizer",
    "SimpleTokenizerV1",
    "SimpleTokenizerV2",
    "TiktokenTokenizer",
    "Tokenizer",
    "UnknownCharacterError",
    "UnknownWordError",
    "build_vocab",
    "get_tokenizer",
    "known_tokenizer_names",
    "load_encoding",
    "load_tokenizer",
    "register_named_tokenizer",
    "register_tokenizer_type",
    "registered_tokenizer_types",
    "split_into_words",
    "tokenizer_from_config",
]

# Names get_tokenizer() understands, each with a function that builds the tokenizer.
# Add more with register_named_tokenizer().
_NAMED_TOKENIZERS: dict[str, Callable[[], Tokenizer]] = {
    "gpt2": lambda: TiktokenTokenizer("gpt2"),
    "r50k_base": lambda: TiktokenTokenizer("r50k_base"),
    "cl100k_base": lambda: TiktokenTokenizer("cl100k_base"),
    "o200k_base": lambda: TiktokenTokenizer("o200k_base"),
}

RANKS_FILE_SUFFIXES = (".tiktoken", ".tiktoken.gz")


def register_named_tokenizer(name: str, build: Callable[[], Tokenizer]) -> None:
    """Make ``get_tokenizer(name)`` return ``build()``."""
    _NAMED_TOKENIZERS[name] = build


def known_tokenizer_names() -> list[str]:
    """The names ``get_tokenizer`` accepts (besides file paths and config dicts)."""
    return list(_NAMED_TOKENIZERS)


def get_tokenizer(name_or_path: str | Path | Mapping[str, Any] | Tokenizer) -> Tokenizer:
    """Return a tokenizer from whatever describes one.

    - a name: ``"gpt2"`` (= ``"r50k_base"``), ``"cl100k_base"``, ``"o200k_base"``;
    - a path to a JSON file written by ``Tokenizer.save()``;
    - a path to a ``.tiktoken`` (or ``.tiktoken.gz``) ranks file;
    - a config dict from ``Tokenizer.to_config()`` (e.g. out of a checkpoint);
    - a Tokenizer, returned as is.
    """
    if isinstance(name_or_path, Tokenizer):
        return name_or_path
    if isinstance(name_or_path, Mapping):
        return tokenizer_from_config(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in _NAMED_TOKENIZERS:
        return _NAMED_TOKENIZERS[name_or_path]()
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(
            f"get_tokenizer() takes a name, a path or a config dict, not {type(name_or_path).__name__}"
        )

    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.name.endswith(RANKS_FILE_SUFFIXES):
            return TiktokenTokenizer(ranks_file=path)
        return load_tokenizer(path)
    if isinstance(name_or_path, Path) or path.suffix or len(path.parts) > 1:
        raise FileNotFoundError(f"no tokenizer file at {path}")
    raise ValueError(
        f"unknown tokenizer {str(name_or_path)!r}. Known names: {', '.join(known_tokenizer_names())}; "
        f"or give a path to a saved tokenizer .json or a .tiktoken ranks file"
    )
