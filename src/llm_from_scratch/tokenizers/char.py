"""Character-level tokenizer: one id per character.

The opposite extreme from word tokenizers: the vocabulary is tiny (a few dozen symbols
for English text) and every text made of those characters can be encoded, but
sequences get long, so the model must spend its context and compute on spelling. It is
the easiest tokenizer to train a first model with, because nothing needs downloading.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from llm_from_scratch.tokenizers.base import (
    DEFAULT_ALLOWED_SPECIAL,
    AllowedSpecial,
    Tokenizer,
    as_token_ids,
    register_tokenizer_type,
)


class UnknownCharacterError(ValueError):
    """The text contains characters the tokenizer never saw."""


@register_tokenizer_type("char")
class CharTokenizer(Tokenizer):
    """Vocabulary = the sorted distinct characters of ``text``.

    It has no special tokens: ``allowed_special`` is accepted so that all tokenizers can
    be called the same way, and ``"<|endoftext|>"`` is simply 13 ordinary characters
    (if they are all in the vocabulary).

    >>> tokenizer = CharTokenizer("hello world")
    >>> tokenizer.vocab_size
    8
    >>> tokenizer.decode(tokenizer.encode("hello"))
    'hello'
    """

    name = "char"
    eot_id = None

    def __init__(self, text: str):
        self.chars: list[str] = sorted(set(text))
        if not self.chars:
            raise ValueError("CharTokenizer needs a non-empty text to learn its characters from")
        self.char_to_id: dict[str, int] = {char: token_id for token_id, char in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str, allowed_special: AllowedSpecial = DEFAULT_ALLOWED_SPECIAL) -> list[int]:
        try:
            return [self.char_to_id[char] for char in text]
        except KeyError:
            unknown = sorted(set(text) - set(self.char_to_id))
            raise UnknownCharacterError(
                f"{len(unknown)} character(s) not in the vocabulary: {', '.join(map(repr, unknown[:20]))}. "
                f"Build the tokenizer from text that contains them."
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        token_ids = as_token_ids(ids)
        bad_ids = [token_id for token_id in token_ids if not 0 <= token_id < len(self.chars)]
        if bad_ids:
            raise ValueError(f"ids not in the vocabulary (size {self.vocab_size}): {bad_ids[:10]}")
        return "".join(self.chars[token_id] for token_id in token_ids)

    def to_config(self) -> dict[str, Any]:
        return {"type": self.config_type, "chars": list(self.chars)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Tokenizer:
        return cls("".join(config["chars"]))


# Another name for the same class: some older project examples call it SimpleTokenizer.
# (Not to be confused with SimpleTokenizerV1/V2, which work on words.)
SimpleTokenizer = CharTokenizer
