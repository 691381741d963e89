"""A big tokenizer's vocabulary cut down to the ids a corpus uses: small models train much faster.

Training a small model from scratch with a pretrained tokenizer (cl100k_base has 100,277 ids)
on a small corpus wastes most of the model. The Chinese corpus of this project uses 1,093 of
those ids; gpt-micro with the full vocabulary has 13.6M parameters, of which 12.8M are the
embedding and the output head, and every training token pays for a 100,277-way softmax and its
gradient. Rows of ids that never occur learn nothing but "never predict me".

`CompactTokenizer` wraps the user's tokenizer and keeps only the ids the corpus uses
(`kept_ids`, from the token shards' id counts): the model's vocabulary is those ids plus one
**reserved id for every id it never saw** (`unknown_id`, the last one). The text side does not
change: the same tokenizer splits the text, and `full_ids` / `decode` speak its ids. Only the
numbering the model sees is compact:

    full id      0 ... 100,276   (what the tokenizer gives, what users and other tools see)
    compact id   0 ... 1,093     the kept ids (the corpus's and <|endoftext|>), by full id
                 1,094           the reserved id: any full id that is not kept

What happens to text outside the corpus: a prompt with a token the corpus never had encodes to
the reserved id, one per such token. The model has never seen it (its embedding row keeps its
initial values), so it reads the prompt with that token blanked out; it never generates the
reserved id in practice (it was never a target, so training pushes its logit down), and
`decode` writes nothing for it, and decoding never picks it. Export to another tool (`export/`)
writes the full vocabulary again: every unseen id gets the reserved id's embedding and output
row, hence the reserved id's logit; our softmax adds log(number of unseen ids) to that logit
(`logit_offset`), so both are the same distribution.

Losses stay comparable with a full-vocabulary model: on text made of kept ids, the compact
model's softmax is a distribution over the full vocabulary that gives the unseen ids (together)
the reserved id's probability, so its cross-entropy is measured against the same targets.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from llm_from_scratch.tokenizers.base import (DEFAULT_ALLOWED_SPECIAL, AllowedSpecial, Tokenizer, as_token_ids,
                                              register_tokenizer_type, tokenizer_from_config)

# The base tokenizer's attributes that hold no ids, so a compact tokenizer can pass them on.
ID_FREE_ATTRIBUTES = frozenset({"chat_template", "bos_token", "eos_token", "pattern", "pre_tokenizer", "engine"})

UNSEEN_WARNING = ("the text has tokens this model never saw in training (its compact vocabulary holds only the "
                  "ids of its corpus): each is read as one reserved 'unknown' token, and left out when decoding")

#: `vocab="auto"` picks the compact vocabulary when the corpus uses less than this share of the ids.
AUTO_COMPACT_BELOW = 0.5


@register_tokenizer_type("compact")
class CompactTokenizer(Tokenizer):
    """`base` with its ids renumbered to `kept_ids` (sorted, distinct) plus one reserved id."""

    def __init__(self, base: Tokenizer, kept_ids: Sequence[int]):
        kept = sorted({int(i) for i in kept_ids})
        if not kept:
            raise ValueError("a compact vocabulary needs at least one kept id")
        if kept[0] < 0 or kept[-1] >= base.vocab_size:
            raise ValueError(f"kept ids must lie in 0..{base.vocab_size - 1} (the tokenizer's ids), "
                             f"got {kept[0]}..{kept[-1]}")
        if isinstance(base, CompactTokenizer):
            raise ValueError("the base of a compact vocabulary must be a full tokenizer")
        if base.eot_id is not None and base.eot_id not in kept:   # always keep the end-of-text token
            kept = sorted(kept + [base.eot_id])
        self.base = base
        self.kept_ids = kept
        self.name = base.name
        self.unknown_id = len(kept)
        self.to_compact = np.full(base.vocab_size, self.unknown_id, dtype=np.int64)   # full id -> compact id
        self.to_compact[kept] = np.arange(len(kept))
        self.to_full = np.asarray(kept, dtype=np.int64)                               # compact id -> full id
        self.eot_id = self.compact_id(base.eot_id) if base.eot_id is not None else None

    # ------------------------------------------------------------------ the two numberings
    @property
    def vocab_size(self) -> int:
        return len(self.kept_ids) + 1

    @property
    def full_vocab_size(self) -> int:
        return self.base.vocab_size

    def compact_id(self, full_id: int) -> int:
        return int(self.to_compact[full_id])

    def full_ids(self, compact_ids: Iterable[int]) -> list[int]:
        """Compact ids -> the tokenizer's ids (the reserved id has none: it is left out)."""
        ids = as_token_ids(compact_ids)
        bad = [i for i in ids if not 0 <= i <= self.unknown_id]
        if bad:
            raise ValueError(f"id {bad[0]} is not in this compact vocabulary (0..{self.unknown_id})")
        return [int(self.to_full[i]) for i in ids if i != self.unknown_id]

    # ------------------------------------------------------------------ Tokenizer
    def encode(self, text: str, allowed_special: AllowedSpecial = DEFAULT_ALLOWED_SPECIAL) -> list[int]:
        ids = self.to_compact[self.base.encode(text, allowed_special=allowed_special)].tolist()
        if self.unknown_id in ids:
            warnings.warn(UNSEEN_WARNING, stacklevel=2)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.base.decode(self.full_ids(ids))

    def to_config(self) -> dict[str, Any]:
        return {"type": self.config_type, "base": self.base.to_config(), "kept_ids": self.kept_ids}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "CompactTokenizer":
        return cls(tokenizer_from_config(config["base"]), config["kept_ids"])

    # ------------------------------------------------------------------ what else a tokenizer has
    @property
    def special_tokens(self) -> dict[str, int]:
        """The base's special tokens that the vocabulary kept, with their compact ids."""
        specials = getattr(self.base, "special_tokens", None) or {}
        return {text: int(self.to_compact[i]) for text, i in specials.items()
                if i < len(self.to_compact) and self.to_compact[i] != self.unknown_id}

    @property
    def bos_id(self) -> int | None:
        bos = getattr(self.base, "bos_id", None)
        return None if bos is None or self.to_compact[bos] == self.unknown_id else int(self.to_compact[bos])

    def token_to_id(self, token: str) -> int:
        """The compact id of a token string (the reserved id for a token the vocabulary did not keep)."""
        return int(self.to_compact[self.base.token_to_id(token)])

    def __getattr__(self, name: str):
        # Only what does not speak in ids is the base's (a chat template, the name of the
        # end-of-text token, the splitting pattern...); anything with ids in it must be mapped,
        # and is defined above, or it is not there (hasattr() says False).
        if name in ID_FREE_ATTRIBUTES:
            return getattr(self.base, name)
        raise AttributeError(f"{type(self).__name__} has no {name!r} (the base tokenizer's would be in its own ids)")

    def __reduce__(self):
        return (type(self).from_config, (self.to_config(),))

    def logit_offset(self, rows: int | None = None) -> np.ndarray:
        """(rows,) float32: log(number of unseen ids) at the reserved id, 0 elsewhere. Added to the
        model's logits, it makes the reserved id's probability that of *all* unseen ids together,
        each of which has the reserved id's own logit: exactly the distribution of the
        full-vocabulary model an export writes (model/compact_vocab.py)."""
        offset = np.zeros(rows or self.vocab_size, dtype=np.float32)
        unseen = self.full_vocab_size - len(self.kept_ids)
        if unseen > 1:
            offset[self.unknown_id] = np.log(unseen)
        return offset

    def describe(self) -> str:
        """"vocabulary: 1,095 of 100,277 ids (compact)" - for the first lines of a run."""
        return f"vocabulary: {self.vocab_size:,} of {self.full_vocab_size:,} ids (compact)"


def used_ids(counts: np.ndarray) -> list[int]:
    """The ids with a nonzero count (a bincount of a corpus's token ids)."""
    return np.flatnonzero(np.asarray(counts)).tolist()


def choose_vocabulary(tokenizer: Tokenizer, counts: np.ndarray, vocab: str = "auto") -> Tokenizer:
    """The tokenizer a run trains with: `tokenizer` itself ("full"), or a `CompactTokenizer` of the
    ids with a nonzero count ("compact"; "auto": when they are less than half of the ids)."""
    if vocab not in ("auto", "compact", "full"):
        raise ValueError(f"vocab must be auto, compact or full, got {vocab!r}")
    if vocab == "full" or isinstance(tokenizer, CompactTokenizer):
        return tokenizer
    kept = used_ids(counts)
    if vocab == "auto" and len(kept) >= AUTO_COMPACT_BELOW * tokenizer.vocab_size:
        return tokenizer
    if len(kept) >= tokenizer.vocab_size - 1:      # nothing to leave out: compact would be no smaller
        return tokenizer
    return CompactTokenizer(tokenizer, kept)
