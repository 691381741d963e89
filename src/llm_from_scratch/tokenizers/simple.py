"""Word-level tokenizers: the first, simplest idea of tokenization.

Split text into words and punctuation with a regular expression, give every distinct
piece a number, done. This is easy to understand and shows the two problems that real
tokenizers solve:

* **unknown words**: a word that was not in the training text has no id.
  ``SimpleTokenizerV1`` stops with an error; ``SimpleTokenizerV2`` maps it to ``<|unk|>``
  (and so loses the word forever, which is why GPT models use byte-level BPE instead);
* **document boundaries**: ``<|endoftext|>`` is added to the vocabulary so separate texts
  can be joined into one training stream and the model can still tell them apart.

Decoding is lossy: the splitter throws the whitespace away, so ``decode`` can only guess
where spaces were (one between words, none before punctuation).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from llm_from_scratch.tokenizers.base import (
    DEFAULT_ALLOWED_SPECIAL,
    ENDOFTEXT,
    SPECIAL_TOKEN_PATTERN,
    UNKNOWN,
    AllowedSpecial,
    Tokenizer,
    as_token_ids,
    check_special_tokens_allowed,
    register_tokenizer_type,
)

# One capture group so re.split keeps the separators: special tokens such as
# <|endoftext|> (kept whole even when glued to a word), punctuation, the double dash
# "--", and whitespace. Whitespace pieces are dropped afterwards.
WORD_SPLIT_PATTERN = re.compile(r"(" + SPECIAL_TOKEN_PATTERN.pattern + r"|[,.:;?_!\"()']|--|\s)")

# When decoding, glue these characters to the word before them: "Hello , world" -> "Hello, world".
SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.:;?_!\"()'])")


def split_into_words(text: str) -> list[str]:
    """Split text into words and punctuation marks, dropping the whitespace."""
    return [piece.strip() for piece in WORD_SPLIT_PATTERN.split(text) if piece.strip()]


def join_words(words: Iterable[str]) -> str:
    """Inverse of :func:`split_into_words`, as far as possible: spaces between words, none before punctuation."""
    return SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(words))


def build_vocab(text: str, special_tokens: Iterable[str] = (ENDOFTEXT, UNKNOWN)) -> dict[str, int]:
    """Give every distinct word of ``text`` an id (in sorted order), then add the special tokens.

    Sorting makes the ids reproducible: the same text always yields the same vocabulary.
    """
    words = sorted(set(split_into_words(text)))
    words += [token for token in special_tokens if token not in words]
    return {word: token_id for token_id, word in enumerate(words)}


class UnknownWordError(ValueError):
    """The text contains words that are not in the vocabulary."""


@register_tokenizer_type("simple-v1")
class SimpleTokenizerV1(Tokenizer):
    """Word-level tokenizer over a fixed vocabulary; unknown words are an error.

    >>> tokenizer = SimpleTokenizerV1(build_vocab("the cat sat."))
    >>> tokenizer.decode(tokenizer.encode("the cat sat."))
    'the cat sat.'
    """

    name = "simple-v1"

    def __init__(self, vocab: Mapping[str, int]):
        _check_ids_are_dense(vocab)
        self.str_to_int: dict[str, int] = dict(vocab)
        self.int_to_str: dict[int, str] = {token_id: word for word, token_id in vocab.items()}
        self.special_tokens = frozenset(word for word in vocab if SPECIAL_TOKEN_PATTERN.fullmatch(word))
        self.eot_id = self.str_to_int.get(ENDOFTEXT)

    @property
    def vocab_size(self) -> int:
        return len(self.str_to_int)

    def encode(self, text: str, allowed_special: AllowedSpecial = DEFAULT_ALLOWED_SPECIAL) -> list[int]:
        check_special_tokens_allowed(text, self.special_tokens, allowed_special)
        words = split_into_words(text)
        unknown = [word for word in words if word not in self.str_to_int]
        if unknown:
            self._handle_unknown_words(unknown)
        return [self._id_of(word) for word in words]

    def _handle_unknown_words(self, unknown: list[str]) -> None:
        """V1 cannot represent unknown words, so it says which ones and what to do."""
        shown = ", ".join(repr(word) for word in dict.fromkeys(unknown[:10]))
        raise UnknownWordError(
            f"{len(unknown)} word(s) not in the vocabulary: {shown}. SimpleTokenizerV1 only knows the words "
            f"of the text its vocabulary was built from; use SimpleTokenizerV2, which maps unknown words to {UNKNOWN}."
        )

    def _id_of(self, word: str) -> int:
        return self.str_to_int[word]

    def decode(self, ids: Iterable[int]) -> str:
        token_ids = as_token_ids(ids)
        bad_ids = [token_id for token_id in token_ids if token_id not in self.int_to_str]
        if bad_ids:
            raise ValueError(f"ids not in the vocabulary (size {self.vocab_size}): {bad_ids[:10]}")
        return join_words(self.int_to_str[token_id] for token_id in token_ids)

    def to_config(self) -> dict[str, Any]:
        return {"type": self.config_type, "vocab": dict(self.str_to_int)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Tokenizer:
        return cls(config["vocab"])


@register_tokenizer_type("simple-v2")
class SimpleTokenizerV2(SimpleTokenizerV1):
    """Like V1, but unknown words become ``<|unk|>`` instead of an error.

    The vocabulary must contain ``<|unk|>``; :func:`build_vocab` adds it by default.
    """

    name = "simple-v2"

    def __init__(self, vocab: Mapping[str, int]):
        if UNKNOWN not in vocab:
            raise ValueError(
                f"SimpleTokenizerV2 needs {UNKNOWN!r} in its vocabulary; build it with build_vocab(text)"
            )
        super().__init__(vocab)
        self.unk_id = self.str_to_int[UNKNOWN]

    def _handle_unknown_words(self, unknown: list[str]) -> None:
        """Nothing to do: :meth:`_id_of` maps each unknown word to ``<|unk|>``."""

    def _id_of(self, word: str) -> int:
        return self.str_to_int.get(word, self.unk_id)


def _check_ids_are_dense(vocab: Mapping[str, int]) -> None:
    """Ids must be exactly 0..N-1: they index the rows of the model's embedding table."""
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(
            "vocabulary ids must be 0, 1, ..., N-1 with no gaps or repeats; build_vocab(text) makes such a dict"
        )
