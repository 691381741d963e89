"""Byte-level BPE from a vocabulary and a merges list, as Hugging Face and GGUF files store it.

GPT-2 made this format popular, and most open models since (Llama 3, Qwen, SmolLM2, StarCoder...)
still use it. A tokenizer is described by:

* ``tokens``: id -> token string. Ordinary tokens are byte strings written with GPT-2's
  *byte-to-unicode* table, which gives each of the 256 byte values a printable character (a space
  is ``Ġ``, a newline ``Ċ``), so a vocabulary can live in JSON. ``"Ġthe"`` is the bytes ``b" the"``.
* ``merges``: the pairs learned in training, in order (``"Ġ t"``: ``Ġ`` + ``t`` -> ``Ġt``). To
  encode a piece of text, start from its bytes and repeatedly apply the earliest-learned merge
  that occurs in it, until none applies.
* a *pre-tokenizer*: a regular expression that cuts text into pieces (words with their leading
  space, numbers, punctuation, whitespace runs) before BPE; merges never cross a piece boundary.
  Models differ here: SmolLM2 first splits every digit off on its own, then applies GPT-2's pattern.
* special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``...): atomic strings with
  fixed ids, recognized in text before pre-tokenization.

**Fast encoding with tiktoken.** tiktoken implements BPE differently: it merges the neighbouring
pair whose *concatenation* has the lowest id (rank), instead of looking pairs up in a merges list.
The two agree when the ids follow the merge order (merge i creates token id first_merge_id + i)
and every multi-byte token is made by a merge, which is how BPE training assigns ids. We check
these conditions when building the tokenizer and use tiktoken when they hold (SmolLM2: yes), else
our own merges-list encoder (`engine="merges"`), which is also the reference implementation
the tests compare against Hugging Face ``tokenizers``. With tiktoken, the merges-list encoder's
table is made only if that encoder ever runs (`_merge_ranks`): a loaded SmolLM2 is ~6 MB smaller.

One more detail: a vocabulary may lack some byte values (SmolLM2 has no token for 21 of the 256,
e.g. the control character 0x04 or bytes that never occur in UTF-8). Hugging Face then silently
drops such bytes; tiktoken would crash, so text containing them takes the merges-list path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import regex
import tiktoken

from llm_from_scratch.tokenizers.base import (
    DEFAULT_ALLOWED_SPECIAL,
    ENDOFTEXT,
    AllowedSpecial,
    Tokenizer,
    as_token_ids,
    check_special_tokens_allowed,
    register_tokenizer_type,
)

# --------------------------------------------------------------------------------------
# Pre-tokenizers
# --------------------------------------------------------------------------------------

#: GPT-2's pattern (Hugging Face's ``ByteLevel(use_regex=True)``): contractions, a word with an
#: optional leading space, a number with an optional leading space, punctuation with an optional
#: leading space, whitespace not followed by a non-space (so a run of spaces leaves its last
#: space to the next word), any other whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: SmolLM2 / StarCoder: Hugging Face's ``Sequence([Digits(individual_digits=True), ByteLevel()])``
#: (llama.cpp: pre-tokenizer "smollm"). First every digit becomes a piece of its own, then GPT-2's
#: pattern runs on the text between digits. As one regex: a digit alone comes first; the
#: " ?\p{N}+" branch is gone (digits are never joined to a space); and a whitespace run may end
#: right before a digit, since there the text segment GPT-2's pattern sees ends.
DIGITS_THEN_GPT2_PATTERN = (
    r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
)

PRE_TOKENIZERS: dict[str, str] = {"gpt2": GPT2_PATTERN, "smollm": DIGITS_THEN_GPT2_PATTERN}

#: llama.cpp's `tokenizer.ggml.pre` names -> ours (see llama-vocab.cpp: these share one regex).
GGUF_PRE_TOKENIZER_NAMES = {
    "default": "gpt2", "gpt2": "gpt2", "gpt-2": "gpt2", "mpt": "gpt2", "olmo": "gpt2",
    "smollm": "smollm", "starcoder": "smollm", "refact": "smollm",
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table byte value -> printable character used to write byte tokens as text.

    Bytes that are already visible, non-space characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``)
    stand for themselves; the other 68 (control characters, space, ...) are mapped, in increasing
    order, to the characters 256, 257, ... (``Ā``, ``ā``...). So the space 0x20 becomes ``Ġ`` (288).
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in visible}
    next_char = 256
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(next_char)
            next_char += 1
    return table


BYTE_TO_UNICODE = bytes_to_unicode()
UNICODE_TO_BYTE = {char: byte for byte, char in BYTE_TO_UNICODE.items()}


def token_string_to_bytes(token: str) -> bytes:
    """``"Ġthe"`` -> ``b" the"``. Raises ValueError for characters outside the byte table."""
    try:
        return bytes(UNICODE_TO_BYTE[char] for char in token)
    except KeyError as error:
        raise ValueError(f"token {token!r} is not written in GPT-2's byte-to-unicode form "
                         f"(character {error.args[0]!r})") from None


def _split_merge(merge: str | Sequence[str]) -> tuple[str, str]:
    """``"Ġ t"`` or ``["Ġ", "t"]`` -> ``("Ġ", "t")``."""
    if isinstance(merge, str):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise ValueError(f"a merge must be two tokens separated by one space, got {merge!r}")
        return parts[0], parts[1]
    if len(merge) != 2:
        raise ValueError(f"a merge must be a pair of tokens, got {merge!r}")
    return str(merge[0]), str(merge[1])


# --------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------


@register_tokenizer_type("hf_bpe")
class HFBPETokenizer(Tokenizer):
    """Byte-level BPE given ``tokens`` (id -> token string) and ``merges``, like HF/GGUF store it.

    ``special_tokens`` maps each special token's text to its id (ids may lie inside ``tokens``,
    as in GGUF files, or after it, as added tokens). ``pre_tokenizer`` is ``"gpt2"`` or
    ``"smollm"`` (see :data:`PRE_TOKENIZERS`), or pass your own regex as ``pattern``.
    ``eos_token`` becomes ``eot_id`` (what generation stops at; for SmolLM2-Instruct that is
    ``<|im_end|>``); without it, ``<|endoftext|>`` if present. ``chat_template`` (a Jinja string)
    is kept with the tokenizer so checkpoints of fine-tuned models keep it too
    (see :mod:`llm_from_scratch.tokenizers.chat_template`).

    ``engine``: ``"tiktoken"`` (fast; an error if the vocabulary does not allow it), ``"merges"``
    (pure Python, follows the merges list exactly) or ``"auto"`` (tiktoken when possible).

    ``to_config()`` stores the whole vocabulary and merges list inline (about 1 MB for a 49k
    vocabulary), so a checkpoint can rebuild its tokenizer anywhere, without the original file.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str | Sequence[str]],
        *,
        special_tokens: Mapping[str, int] | None = None,
        pre_tokenizer: str = "gpt2",
        pattern: str | None = None,
        eos_token: str | None = None,
        bos_token: str | None = None,
        chat_template: str | None = None,
        name: str = "hf_bpe",
        engine: str = "auto",
        intermediate_merges: bool = False,
    ):
        if engine not in ("auto", "tiktoken", "merges"):
            raise ValueError(f"engine must be 'auto', 'tiktoken' or 'merges', got {engine!r}")
        if pattern is None:
            if pre_tokenizer not in PRE_TOKENIZERS:
                raise ValueError(f"unknown pre_tokenizer {pre_tokenizer!r}; known: {', '.join(PRE_TOKENIZERS)} "
                                 "(or pass the splitting regex itself as pattern=...)")
            pattern = PRE_TOKENIZERS[pre_tokenizer]
        self.name = name
        self.tokens = list(tokens)
        self.pre_tokenizer = pre_tokenizer
        self.pattern = pattern
        self.chat_template = chat_template
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        # The merges as pairs of the very string objects of `tokens` where a part is a token:
        # splitting "Ġ t" makes new strings, ~100k copies (~5 MB) for a 49k-merge list otherwise.
        shared = {token: token for token in self.tokens}
        self._merges: list[tuple[str, str]] = [(shared.get(left, left), shared.get(right, right))
                                               for left, right in map(_split_merge, merges)]
        del shared
        # llama.cpp's rule (GGUF files): a merge may join symbols that are not tokens themselves
        # (the bytes of a multi-byte character, on the way to the character's token).
        self.intermediate_merges = intermediate_merges

        # id -> bytes for every id, and bytes -> id for the ordinary (BPE) tokens.
        special_ids = set(self.special_tokens.values())
        for text, token_id in self.special_tokens.items():
            if token_id < len(self.tokens) and self.tokens[token_id] != text:
                raise ValueError(f"special token {text!r} has id {token_id}, but tokens[{token_id}] is "
                                 f"{self.tokens[token_id]!r}")
        self._vocab_size = max([len(self.tokens) - 1, *special_ids], default=-1) + 1
        self._id_to_bytes: list[bytes] = [b""] * self._vocab_size
        self._ranks: dict[bytes, int] = {}
        self._token_ids: dict[str, int] = {}  # token string (byte-to-unicode form) -> id
        for token_id, token in enumerate(self.tokens):
            if token_id in special_ids:
                continue
            token_bytes = token_string_to_bytes(token)
            if token_bytes in self._ranks:
                raise ValueError(f"tokens {self._ranks[token_bytes]} and {token_id} are the same bytes {token_bytes!r}")
            self._ranks[token_bytes] = token_id
            self._token_ids[token] = token_id
            self._id_to_bytes[token_id] = token_bytes
        for text, token_id in self.special_tokens.items():
            self._id_to_bytes[token_id] = text.encode("utf-8")

        for rank, (left, right) in enumerate(() if intermediate_merges else self._merges):
            for part in (left, right, left + right):
                if part not in self._token_ids:
                    raise ValueError(f"merge {rank} ({left!r} + {right!r}) uses {part!r}, which is not an "
                                     "ordinary token of the vocabulary")

        # Bytes without a token of their own: HF drops them, tiktoken would crash on them.
        self._missing_bytes = bytes(b for b in range(256) if bytes([b]) not in self._ranks)
        self._present_bytes = bytes(b for b in range(256) if bytes([b]) in self._ranks)
        self._compiled = regex.compile(pattern)

        problem = self.tiktoken_incompatibility()
        if engine == "tiktoken" and problem:
            raise ValueError(f"this vocabulary cannot be encoded with tiktoken: {problem}. Use engine='merges'.")
        self.engine = "merges" if engine == "merges" or problem else "tiktoken"
        self._encoding: tiktoken.Encoding | None = None
        if self.engine == "tiktoken":
            self._encoding = tiktoken.Encoding(
                name=f"hf_bpe:{name}", pat_str=pattern, mergeable_ranks=self._ranks,
                special_tokens=self.special_tokens,
            )
        self._engine_arg = engine
        self._bpe_cached = lru_cache(maxsize=65536)(self._bpe_piece)

        self.eos_token = eos_token if eos_token is not None else (
            ENDOFTEXT if ENDOFTEXT in self.special_tokens else None)
        self.bos_token = bos_token
        self.eot_id = self.token_to_id(self.eos_token) if self.eos_token is not None else None
        self.bos_id = self.token_to_id(bos_token) if bos_token is not None else None

    # ------------------------------------------------------------------ construction helpers
    @cached_property
    def _merge_ranks(self) -> dict[tuple[str, str], int]:
        """(left, right) -> rank of the earliest merge of that pair: the table of the merges-list
        encoder (`_bpe_piece`), made when it first runs. With the tiktoken engine it usually never
        does (only for text with bytes that have no token), and the table is not kept for nothing
        (~6 MB for a 49k-merge list)."""
        ranks: dict[tuple[str, str], int] = {}
        for rank, pair in enumerate(self._merges):
            ranks.setdefault(pair, rank)
        return ranks

    def tiktoken_incompatibility(self) -> str | None:
        """Why tiktoken's rank-based BPE might differ from this merges list, or None if it cannot.

        Conditions: every merge result has a higher id than the results of all earlier merges (so
        "lowest id first" = "earliest merge first"), and every multi-byte token is the result of
        a merge (else tiktoken could build a token that the merges list never makes).
        """
        previous = -1
        for rank, (left, right) in enumerate(self._merges):
            if any(part not in self._token_ids for part in (left, right, left + right)):
                return (f"merge {rank} ({left!r} + {right!r}) joins or makes a symbol that is no token "
                        "(an intermediate symbol, as llama.cpp allows)")
            merged_id = self._token_ids[left + right]
            if merged_id <= previous:
                return (f"merge {rank} ({left!r} + {right!r}) makes id {merged_id}, not above the id made by the "
                        f"merge before it ({previous}): ids do not follow the merge order")
            previous = merged_id
        made_by_merges = {left + right for left, right in self._merges}
        for token, token_id in self._token_ids.items():
            if len(self._id_to_bytes[token_id]) > 1 and token not in made_by_merges:
                return f"token {token_id} ({token!r}) is not made by any merge"
        return None

    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], *, name: str | None = None,
                           engine: str = "auto") -> "HFBPETokenizer":
        """Build the tokenizer stored in a GGUF file's metadata (``tokenizer.ggml.*``)."""
        model = metadata.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(
                f"this GGUF file's tokenizer is {model!r}; only byte-level BPE ('gpt2', used by Llama 3, "
                "SmolLM2, Qwen...) is supported, not SentencePiece ('llama', used by Llama 1/2)"
                if model else "this GGUF file has no tokenizer (no tokenizer.ggml.model key)")
        tokens = metadata["tokenizer.ggml.tokens"]
        merges = metadata.get("tokenizer.ggml.merges", [])
        token_types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        # Type 1 is an ordinary token; 3 (control) and 4 (user-defined) are atomic added tokens.
        specials = {token: token_id for token_id, (token, kind) in enumerate(zip(tokens, token_types))
                    if kind in (3, 4)}
        pre = metadata.get("tokenizer.ggml.pre", "default")
        if pre not in GGUF_PRE_TOKENIZER_NAMES:
            raise ValueError(f"GGUF pre-tokenizer {pre!r} is not supported yet; supported: "
                             f"{', '.join(sorted(GGUF_PRE_TOKENIZER_NAMES))}")

        def token_at(key: str) -> str | None:
            token_id = metadata.get(key)
            return tokens[token_id] if token_id is not None and 0 <= token_id < len(tokens) else None

        return cls(tokens, merges, special_tokens=specials, pre_tokenizer=GGUF_PRE_TOKENIZER_NAMES[pre],
                   eos_token=token_at("tokenizer.ggml.eos_token_id"),
                   bos_token=token_at("tokenizer.ggml.bos_token_id"),
                   chat_template=metadata.get("tokenizer.chat_template"),
                   name=name or str(metadata.get("general.basename") or metadata.get("general.name") or "gguf"),
                   engine=engine, intermediate_merges=True)

    @classmethod
    def from_tokenizer_json(cls, path_or_dict: str | Path | Mapping[str, Any], *, eos_token: str | None = None,
                            bos_token: str | None = None, chat_template: str | None = None,
                            name: str = "hf_bpe", engine: str = "auto") -> "HFBPETokenizer":
        """Build from a Hugging Face ``tokenizer.json`` (byte-level BPE models only)."""
        data = (json.loads(Path(path_or_dict).read_text(encoding="utf-8"))
                if not isinstance(path_or_dict, Mapping) else path_or_dict)
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"tokenizer.json holds a {model.get('type')!r} model; only BPE is supported")
        if model.get("byte_fallback"):
            raise ValueError("tokenizer.json uses byte_fallback (SentencePiece-style BPE); only byte-level "
                             "BPE is supported")
        if data.get("normalizer") is not None:
            raise ValueError(f"tokenizer.json has a normalizer ({data['normalizer'].get('type')}); "
                             "byte-level BPE tokenizers with a normalizer are not supported")
        pre_tokenizer, pattern = _recognize_pre_tokenizer(data.get("pre_tokenizer"))
        vocab: dict[str, int] = model["vocab"]
        specials = {added["content"]: added["id"] for added in data.get("added_tokens", [])}
        size = max([*vocab.values(), *specials.values()]) + 1
        tokens = [""] * size
        for token, token_id in vocab.items():
            tokens[token_id] = token
        for token, token_id in specials.items():
            tokens[token_id] = token
        holes = [token_id for token_id, token in enumerate(tokens) if token == ""]
        if holes:
            raise ValueError(f"tokenizer.json has no token for ids {holes[:10]}")
        return cls(tokens, model.get("merges", []), special_tokens=specials, pre_tokenizer=pre_tokenizer,
                   pattern=pattern, eos_token=eos_token, bos_token=bos_token, chat_template=chat_template, name=name,
                   engine=engine)

    # ------------------------------------------------------------------ the Tokenizer interface
    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def merges(self) -> list[tuple[str, str]]:
        return list(self._merges)

    def token_to_id(self, token: str) -> int:
        """Id of a special token (``"<|im_end|>"``) or an ordinary one in byte-to-unicode form (``"Ġthe"``)."""
        if token in self.special_tokens:
            return self.special_tokens[token]
        if token in self._token_ids:
            return self._token_ids[token]
        raise KeyError(f"{token!r} is not a token of {self.name!r}")

    def encode(self, text: str, allowed_special: AllowedSpecial = DEFAULT_ALLOWED_SPECIAL) -> list[int]:
        """Text -> ids. Special tokens in `text` become their ids only when listed in `allowed_special`
        (default: just ``<|endoftext|>``; ``"all"`` for chat prompts). A ``<|...|>``-shaped special token
        that is not allowed is an error; other special tokens that are not allowed are plain text."""
        if allowed_special != "all":
            allowed_special = set(allowed_special)
        allowed = set(self.special_tokens) if allowed_special == "all" else \
            {token for token in allowed_special if token in self.special_tokens}
        check_special_tokens_allowed(text, self.special_tokens, allowed_special)
        if self._encoding is not None and not self._has_missing_bytes(text):
            return self._encoding.encode(text, allowed_special=allowed, disallowed_special=())
        return self.encode_with_merges(text, allowed)

    def encode_with_merges(self, text: str, allowed: Iterable[str] = ()) -> list[int]:
        """The merges-list reference encoder (what Hugging Face ``tokenizers`` computes)."""
        ids: list[int] = []
        for chunk, is_special in self._split_special(text, set(allowed)):
            if is_special:
                ids.append(self.special_tokens[chunk])
                continue
            for piece in self._compiled.findall(chunk):
                ids.extend(self._bpe_cached(piece))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        token_ids = as_token_ids(ids)
        for token_id in token_ids:
            if not 0 <= token_id < self._vocab_size:
                raise ValueError(f"cannot decode id {token_id}: the vocabulary has ids 0..{self._vocab_size - 1}")
        return b"".join(self._id_to_bytes[token_id] for token_id in token_ids)

    def to_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "type": self.config_type, "name": self.name, "pre_tokenizer": self.pre_tokenizer,
            "tokens": self.tokens, "merges": [f"{left} {right}" for left, right in self._merges],
            "special_tokens": dict(self.special_tokens), "eos_token": self.eos_token,
            "bos_token": self.bos_token, "chat_template": self.chat_template,
        }
        if self.pattern != PRE_TOKENIZERS.get(self.pre_tokenizer):
            config["pattern"] = self.pattern
        if self._engine_arg != "auto":
            config["engine"] = self._engine_arg
        if self.intermediate_merges:
            config["intermediate_merges"] = True
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "HFBPETokenizer":
        return cls(config["tokens"], config["merges"], special_tokens=config.get("special_tokens"),
                   pre_tokenizer=config.get("pre_tokenizer", "gpt2"), pattern=config.get("pattern"),
                   eos_token=config.get("eos_token"), bos_token=config.get("bos_token"),
                   chat_template=config.get("chat_template"), name=config.get("name", "hf_bpe"),
                   engine=config.get("engine", "auto"),
                   intermediate_merges=config.get("intermediate_merges", False))

    def __reduce__(self):
        # Pickle (DataLoader workers, deepcopy) through the config: the tiktoken Encoding and the
        # BPE cache are rebuilt on the other side.
        return (type(self).from_config, (self.to_config(),))

    def fingerprint(self) -> str:
        """SHA-256 of the vocabulary, merges, pattern and special tokens: equal iff they encode alike."""
        blob = json.dumps([self.tokens, self._merges, self.pattern, sorted(self.special_tokens.items())],
                          ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return (f"HFBPETokenizer(name={self.name!r}, vocab_size={self.vocab_size}, merges={len(self._merges)}, "
                f"pre_tokenizer={self.pre_tokenizer!r}, engine={self.engine!r})")

    # ------------------------------------------------------------------ internals
    def _has_missing_bytes(self, text: str) -> bool:
        if not self._missing_bytes:
            return False
        data = text.encode("utf-8", errors="surrogatepass")
        return bool(data.translate(None, self._present_bytes))  # what is left are bytes without a token

    def _split_special(self, text: str, allowed: set[str]) -> Iterable[tuple[str, bool]]:
        """Cut text at the allowed special tokens (longest first): (chunk, is_special) pairs."""
        if not allowed:
            if text:
                yield text, False
            return
        alternatives = "|".join(regex.escape(token) for token in sorted(allowed, key=len, reverse=True))
        start = 0
        for match in regex.finditer(alternatives, text):
            if match.start() > start:
                yield text[start:match.start()], False
            yield match.group(), True
            start = match.end()
        if start < len(text):
            yield text[start:], False

    def _bpe_piece(self, piece: str) -> tuple[int, ...]:
        """Merges-list BPE of one pre-tokenized piece -> ids (HF semantics)."""
        # Byte symbols without a token are dropped, as Hugging Face does without an unk token;
        # with intermediate merges (llama.cpp), only those that no merge turned into a token.
        symbols = [BYTE_TO_UNICODE[byte] for byte in piece.encode("utf-8", errors="surrogatepass")]
        if not self.intermediate_merges:
            symbols = [symbol for symbol in symbols if symbol in self._token_ids]
        merge_ranks = self._merge_ranks
        while len(symbols) > 1:
            best_rank, best_pair = None, None
            for pair in zip(symbols, symbols[1:]):
                rank = merge_ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_pair = rank, pair
            if best_pair is None:
                break
            left, right = best_pair
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence, left to right, without overlaps
                if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        if self.intermediate_merges:   # a symbol left half-merged: its bytes that are tokens
            symbols = [part for symbol in symbols
                       for part in ([symbol] if symbol in self._token_ids else symbol) if part in self._token_ids]
        return tuple(self._token_ids[symbol] for symbol in symbols)


def _recognize_pre_tokenizer(spec: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """Map a tokenizer.json pre_tokenizer to (one of PRE_TOKENIZERS, None), or to ("regex", its
    splitting regex) for Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)] (Qwen and
    other models that bring their own pattern); anything else raises."""

    def is_byte_level(step: Mapping[str, Any], use_regex: bool = True) -> bool:
        return (step.get("type") == "ByteLevel" and step.get("use_regex", True) == use_regex
                and not step.get("add_prefix_space", False))

    if spec is not None and is_byte_level(spec):
        return "gpt2", None
    if spec is not None and spec.get("type") == "Sequence":
        steps = spec.get("pretokenizers", [])
        if (len(steps) == 2 and steps[0].get("type") == "Digits" and steps[0].get("individual_digits")
                and is_byte_level(steps[1])):
            return "smollm", None
        if (len(steps) == 2 and steps[0].get("type") == "Split" and "Regex" in (steps[0].get("pattern") or {})
                and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
                and is_byte_level(steps[1], use_regex=False)):
            return "regex", steps[0]["pattern"]["Regex"]
    raise ValueError(
        f"unsupported pre_tokenizer in tokenizer.json: {json.dumps(spec)[:300]}. Supported: ByteLevel "
        "(GPT-2), Sequence[Digits(individual_digits=True), ByteLevel] (SmolLM2/StarCoder) and "
        "Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)] (Qwen); pass "
        "HFBPETokenizer(..., pattern=<regex>) to use another splitting regex"
    )
