"""What every tokenizer in this project can do, and how tokenizers are saved and rebuilt.

A tokenizer turns text into a list of integer ids (``encode``) and back (``decode``).
The model only ever sees the ids; the tokenizer is the dictionary between the two.

Because a trained model is useless without the exact tokenizer it was trained with,
every tokenizer can describe itself as a small JSON-able dict (``to_config``). That dict
is stored in model checkpoints and turned back into a tokenizer by
:func:`tokenizer_from_config`. A new kind of tokenizer only has to subclass
:class:`Tokenizer` and add ``@register_tokenizer_type("its-name")``.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

ENDOFTEXT = "<|endoftext|>"
UNKNOWN = "<|unk|>"

# Special tokens look like <|name|>. Matching them by shape lets a tokenizer notice a
# special token written inside ordinary text (see check_special_tokens_allowed).
SPECIAL_TOKEN_PATTERN = re.compile(r"<\|[^|<>\s]+\|>")

# What ``allowed_special`` accepts: a set of special-token strings, or "all".
AllowedSpecial = Literal["all"] | Iterable[str]

# The project-wide default: the end-of-text marker may appear in text and is encoded as
# its own id (the book joins documents with it). Every other special token in text is
# an error unless allowed explicitly, because text from users could otherwise inject
# control tokens. tiktoken's own default allows none, which surprises beginners.
DEFAULT_ALLOWED_SPECIAL: frozenset[str] = frozenset({ENDOFTEXT})


class Tokenizer(ABC):
    """Base class of all tokenizers: the shared interface plus save/load.

    Subclasses set ``name`` and ``eot_id`` and implement ``vocab_size``, ``encode``,
    ``decode``, ``to_config`` and ``from_config``.
    """

    #: The key stored as ``"type"`` in configs; set by @register_tokenizer_type.
    config_type: ClassVar[str] = ""

    #: Short human-readable name, e.g. ``"gpt2"`` or ``"char"``.
    name: str = ""

    #: Id of ``<|endoftext|>``, or None when the tokenizer has no such token.
    eot_id: int | None = None

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids: the size of the model's embedding table."""

    @abstractmethod
    def encode(self, text: str, allowed_special: AllowedSpecial = DEFAULT_ALLOWED_SPECIAL) -> list[int]:
        """Text -> token ids. ``allowed_special`` lists special tokens that may appear in text."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Token ids (list, tuple, 1-D tensor or array) -> text."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """A small JSON-able dict with ``"type"`` and whatever is needed to rebuild this tokenizer."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: Mapping[str, Any]) -> Tokenizer:
        """Rebuild a tokenizer from what :meth:`to_config` returned."""

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_config` as a JSON file; read it back with :func:`load_tokenizer`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_config(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------
# Registry of tokenizer types, for rebuilding from configs
# --------------------------------------------------------------------------------------

_TOKENIZER_TYPES: dict[str, type[Tokenizer]] = {}

TokenizerClass = TypeVar("TokenizerClass", bound=type[Tokenizer])


def register_tokenizer_type(config_type: str) -> Callable[[TokenizerClass], TokenizerClass]:
    """Class decorator: make ``tokenizer_from_config({"type": config_type, ...})`` build this class."""

    def register(cls: TokenizerClass) -> TokenizerClass:
        if config_type in _TOKENIZER_TYPES and _TOKENIZER_TYPES[config_type] is not cls:
            raise ValueError(
                f"tokenizer type {config_type!r} is already registered by {_TOKENIZER_TYPES[config_type]}"
            )
        cls.config_type = config_type
        _TOKENIZER_TYPES[config_type] = cls
        return cls

    return register


def registered_tokenizer_types() -> list[str]:
    """The ``"type"`` values :func:`tokenizer_from_config` understands."""
    return sorted(_TOKENIZER_TYPES)


def tokenizer_from_config(config: Mapping[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from a dict made by ``to_config()`` (e.g. from a checkpoint)."""
    if not isinstance(config, Mapping) or "type" not in config:
        raise ValueError(f"a tokenizer config must be a dict with a 'type' key, got {config!r:.200}")
    cls = _TOKENIZER_TYPES.get(config["type"])
    if cls is None:
        raise ValueError(
            f"unknown tokenizer type {config['type']!r}; known types: {', '.join(registered_tokenizer_types())}"
        )
    return cls.from_config(config)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer saved with :meth:`Tokenizer.save`."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a tokenizer JSON file saved by Tokenizer.save(): {error}") from error
    return tokenizer_from_config(config)


# --------------------------------------------------------------------------------------
# Small helpers shared by the tokenizers
# --------------------------------------------------------------------------------------


def as_token_ids(ids: Iterable[int] | Any) -> list[int]:
    """Turn a list, tuple, 1-D tensor or NumPy array of ids into a plain ``list[int]``.

    Decoding a model's output is the common case, and that output is a tensor; a 2-D
    batch is refused because which row to decode would be a guess.
    """
    if hasattr(ids, "tolist"):  # torch.Tensor and numpy.ndarray
        ids = ids.tolist()
    if isinstance(ids, int):  # a 0-d tensor's tolist() is a bare number
        return [ids]
    token_ids = list(ids)
    if any(isinstance(token_id, (list, tuple)) for token_id in token_ids):
        raise ValueError("decode() takes a 1-D sequence of ids; for a batch, decode each row separately")
    return [int(token_id) for token_id in token_ids]


def check_special_tokens_allowed(
    text: str, special_tokens: Iterable[str], allowed_special: AllowedSpecial
) -> None:
    """Raise ValueError if ``text`` contains one of ``special_tokens`` that is not allowed.

    This mirrors tiktoken: a special token typed into text is only treated as special
    when the caller says so, so user text cannot smuggle in control tokens by accident.
    """
    if allowed_special == "all":
        return
    allowed = set(allowed_special)
    for found in SPECIAL_TOKEN_PATTERN.findall(text):
        if found in special_tokens and found not in allowed:
            raise ValueError(
                f"text contains the special token {found!r}, which is not in allowed_special. "
                f"Pass allowed_special={{{found!r}}} (or 'all') to encode it as a special token."
            )
