"""Byte-level BPE, trained from scratch: how the GPT-2/GPT-4 vocabularies are made.

:mod:`.tiktoken_bpe` *uses* OpenAI's finished vocabularies. This module *builds* one from
your own text, with the same recipe, in plain Python you can read in one sitting. The
result plugs into ``tiktoken``, so encoding stays fast.

**Why bytes.** Text is first turned into UTF-8 bytes, and the starting vocabulary is the
256 possible byte values (ids 0-255; id ``b`` is the byte ``b``). Every text in every
language, emoji included, is some sequence of bytes, so nothing is ever "unknown": a
Chinese character is three byte tokens until training learns something better.

**What a merge is.** Training counts which two tokens stand next to each other most
often, say ``b"t"`` followed by ``b"h"``, and makes that pair a new token ``b"th"`` with
the next free id (256, then 257, ...). Everywhere the pair occurs it is replaced by the
new token, the counts change, and the next most frequent pair is merged, and so on until
the vocabulary has the requested size. A token's id is its *rank*: the lower, the earlier
(and more frequent) the merge. Common words end up as one token, rare words as a few.

**Why pre-split.** Before counting, a regular expression cuts the text into chunks
(words with their leading space, runs of digits, punctuation, whitespace). Merges never
cross a chunk boundary, so the vocabulary does not fill up with accidents like
``b"dog."`` or ``b"the cat"``. We use GPT-4's pattern (``cl100k_base``), read from
tiktoken's own definition of that encoding (see :data:`GPT4_SPLIT_PATTERN`).
Since merges stay inside chunks, a chunk that occurs 10 000 times only needs to be
stored once, with its count: training works on a ``Counter`` of distinct chunks.

**Why incremental counts.** The textbook loop recounts all pairs after every merge,
which costs a pass over the whole corpus per merge: hours for a few MB and a few
thousand merges. But a merge only changes the chunks that contain the merged pair, and
in them only the pairs right next to it. So we keep, for every pair, its count *and* the
set of chunks it occurs in; a merge visits just those chunks and adjusts the counts of
the neighbouring pairs. A heap finds the most frequent pair without scanning all pairs
(see :class:`IncrementalPairCounts`).

**Encoding** a new text replays the training: split into chunks, start each chunk from
its bytes, and repeatedly merge the neighbouring pair whose merged token has the lowest
rank (was learned first), until no neighbouring pair forms a token. That is
:meth:`BPETokenizer.encode_python`; :meth:`BPETokenizer.encode` gives the same ids
through ``tiktoken`` (written in Rust, about 100x faster), built from our ranks.

Typical use::

    tokenizer = BPETokenizer.train(text, vocab_size=4096)
    ids = tokenizer.encode("Hello world")          # fast, via tiktoken
    ids == tokenizer.encode_python("Hello world")  # our own reference encoder: True
    tokenizer.save("tokenizer.json")               # get_tokenizer("tokenizer.json") loads it
    tokenizer.save_tiktoken("tokenizer.tiktoken")  # tiktoken's own file format
"""

from __future__ import annotations

import base64
import heapq
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import regex
import tiktoken
from tqdm import tqdm

from llm_from_scratch.tokenizers.base import (DEFAULT_ALLOWED_SPECIAL, ENDOFTEXT, AllowedSpecial, Tokenizer,
                                              as_token_ids, register_tokenizer_type)
from llm_from_scratch.tokenizers.tiktoken_bpe import encode_with_tiktoken, read_tiktoken_recipe

#: GPT-4's pre-split regex (``cl100k_base``), taken from tiktoken's definition of that
#: encoding (read locally, no download). Its alternatives, tried left to right:
#: English contractions (``'s``, ``'ll``, ...); a word with at most one leading
#: non-letter such as a space (``" hello"``); 1-3 digits; punctuation with an optional
#: leading space (and following newlines); and several rules that group whitespace, so
#: that a run of spaces stays together except for the last one, which joins the next word.
GPT4_SPLIT_PATTERN: str = read_tiktoken_recipe("cl100k_base").pat_str

#: GPT-2's pre-split regex (``r50k_base``): simpler, e.g. digits are not limited to 3.
GPT2_SPLIT_PATTERN: str = read_tiktoken_recipe("gpt2").pat_str

#: The 256 single-byte tokens every byte-level vocabulary starts with: id b is bytes([b]).
NUM_BYTE_TOKENS = 256

Pair = tuple[int, int]  # two neighbouring token ids, (left, right)


# --------------------------------------------------------------------------------------
# Step 1: text -> Counter of chunks
# --------------------------------------------------------------------------------------


def count_chunks(
    texts: Iterable[str], pattern: str = GPT4_SPLIT_PATTERN, special_tokens: Iterable[str] = ()
) -> Counter[str]:
    """Cut every text into chunks with ``pattern`` and count how often each chunk occurs.

    Special tokens written in the text (e.g. ``<|endoftext|>`` between documents) are
    cut out first: they get their own ids and must not be learned as ordinary text.

    >>> count_chunks(["the cat and the hat"])
    Counter({' the': 1, 'the': 1, ' cat': 1, ' and': 1, ' hat': 1})
    """
    chunk_regex = regex.compile(pattern)
    special_tokens = sorted(special_tokens, key=len, reverse=True)  # longest first
    special_regex = regex.compile("|".join(map(regex.escape, special_tokens))) if special_tokens else None
    chunk_counts: Counter[str] = Counter()
    for text in texts:
        pieces = special_regex.split(text) if special_regex else [text]
        for piece in pieces:
            chunk_counts.update(chunk_regex.findall(piece))
    return chunk_counts


# --------------------------------------------------------------------------------------
# Step 2: the bookkeeping that makes training fast
# --------------------------------------------------------------------------------------


def merge_pair(word: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``word``, left to right, by ``new_id``.

    >>> merge_pair([1, 2, 3, 1, 2], (1, 2), 99)
    [99, 3, 99]
    >>> merge_pair([7, 7, 7], (7, 7), 99)  # overlapping: the leftmost pair wins
    [99, 7]
    """
    merged = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged


class IncrementalPairCounts:
    """The training data as token lists, plus pair counts that are updated, not recounted.

    "Word" here means one distinct chunk of the pre-split text. The data structures:

    * ``words[i]``: the i-th distinct chunk, as its current list of token ids (it starts
      as the chunk's UTF-8 bytes and gets shorter with every merge that touches it);
    * ``word_counts[i]``: how often that chunk occurs in the text (from the Counter);
    * ``pair_counts[(a, b)]``: how often token ``a`` is directly followed by token ``b``
      in the whole text, i.e. the sum of ``word_counts[i]`` over every occurrence in
      every word;
    * ``words_with_pair[(a, b)]``: the indices ``i`` of the words that contain the pair:
      the only words a merge of that pair has to visit. Indices are added, never removed:
      a word that lost the pair stays listed, which costs one quick look when (if ever)
      the pair is merged, and saves keeping the sets exact on every merge;
    * ``heap``: entries ``(-count, pair)``, so ``heapq`` (a min-heap) keeps the most
      frequent pair on top. Entries are not updated when a count falls (that would mean
      searching the heap); instead an entry is checked when it comes to the top, and if its
      count is out of date it is pushed back with the current count ("lazy invalidation").
      This is correct because counts of existing pairs can only fall: a merge creates
      new pairs only with the new token in them, and those are pushed as new entries.

    **Tie-break**: among pairs with the same count, the pair with the smaller ids wins,
    compared left id first (``(32, 116)`` before ``(32, 119)`` before ``(101, 32)``). It
    falls out of the heap ordering of ``(-count, pair)``. Ids are ranks, so this prefers
    older tokens, and among the 256 bytes the smaller byte value. (Hugging Face's
    trainer uses the same rule on its own ids, which number the 256 bytes in another
    order, so on a tie the two may pick different pairs.)
    """

    def __init__(self, chunk_counts: Mapping[str, int]):
        self.words: list[list[int]] = []
        self.word_counts: list[int] = []
        self.pair_counts: dict[Pair, int] = defaultdict(int)
        self.words_with_pair: dict[Pair, set[int]] = defaultdict(set)
        for chunk, count in chunk_counts.items():
            word = list(chunk.encode("utf-8"))
            if len(word) < 2:
                continue  # a single byte has no pair: no merge can ever change it
            word_index = len(self.words)
            self.words.append(word)
            self.word_counts.append(count)
            for pair in zip(word, word[1:]):
                self.pair_counts[pair] += count
                self.words_with_pair[pair].add(word_index)
        self.heap: list[tuple[int, Pair]] = [(-count, pair) for pair, count in self.pair_counts.items()]
        heapq.heapify(self.heap)
        # Pairs that must never be merged (see forbid()).
        self.forbidden_pairs: set[Pair] = set()

    def most_frequent_pair(self) -> tuple[Pair, int] | None:
        """The pair to merge next and its count, or None when no pair is left."""
        while self.heap:
            negative_count, pair = self.heap[0]
            current_count = self.pair_counts.get(pair, 0)
            if pair in self.forbidden_pairs or current_count <= 0:
                heapq.heappop(self.heap)  # gone: drop the entry
            elif current_count != -negative_count:
                heapq.heapreplace(self.heap, (-current_count, pair))  # out of date: fix and look again
            else:
                return pair, current_count
        return None

    def merge(self, pair: Pair, new_id: int) -> None:
        """Merge ``pair`` into ``new_id`` in every word that contains it; update the counts.

        Only the pairs right next to a merge change. Merging (a, b) into N turns ``x a b y``
        into ``x N y``: (x, a), (a, b) and (b, y) lose this word's count, (x, N) and (N, y)
        gain it. The walk goes left to right and takes the left neighbour from the word *as
        merged so far*, which also gets back-to-back merges right: in ``a b a b`` the first
        merge turns (b, a) into (N, a), and the second one sees N on its left and turns
        (N, a) into (N, N).

        It is :func:`merge_pair` plus this bookkeeping, with one speed-up: ``list.index``
        (a fast search written in C) jumps straight to the next possible start of the pair.
        """
        left, right = pair
        pair_counts, words_with_pair = self.pair_counts, self.words_with_pair
        pairs_with_new_token: set[Pair] = set()
        for word_index in words_with_pair.pop(pair):
            word = self.words[word_index]
            count = self.word_counts[word_index]
            merged: list[int] = []  # the new word, built left to right
            position = 0  # everything before it in `word` has been copied or merged
            merged_any = False
            while True:
                try:
                    start = word.index(left, position)
                except ValueError:
                    break  # no more `left` tokens: the rest of the word stays as it is
                if start + 1 >= len(word) or word[start + 1] != right:
                    merged.extend(word[position : start + 1])  # a `left` not followed by `right`
                    position = start + 1
                    continue
                merged.extend(word[position:start])
                if merged:  # a token x on the left: (x, a) becomes (x, N)
                    before = merged[-1]
                    pair_counts[(before, left)] -= count
                    pair_counts[(before, new_id)] += count
                    pairs_with_new_token.add((before, new_id))
                    words_with_pair[(before, new_id)].add(word_index)
                if start + 2 < len(word):  # a token y on the right: (b, y) becomes (N, y)
                    after = word[start + 2]
                    pair_counts[(right, after)] -= count
                    pair_counts[(new_id, after)] += count
                    pairs_with_new_token.add((new_id, after))
                    words_with_pair[(new_id, after)].add(word_index)
                merged.append(new_id)
                merged_any = True
                position = start + 2
            if not merged_any:
                continue  # an out-of-date entry: the pair no longer occurs in this word
            merged.extend(word[position:])
            self.words[word_index] = merged
        del pair_counts[pair]  # every occurrence was merged: the pair is gone
        for new_pair in pairs_with_new_token:
            heapq.heappush(self.heap, (-pair_counts[new_pair], new_pair))

    def forbid(self, pair: Pair) -> None:
        """Never merge ``pair`` (used when its merged bytes already are a token)."""
        self.forbidden_pairs.add(pair)


# --------------------------------------------------------------------------------------
# Step 3: the tokenizer
# --------------------------------------------------------------------------------------


@register_tokenizer_type("bpe")
class BPETokenizer(Tokenizer):
    """A byte-level BPE vocabulary: ``token_bytes[id]`` for ordinary ids, then special tokens.

    Ids ``0..255`` are the single bytes, ``256..`` the merged tokens in the order they were
    learned, and the special tokens (e.g. ``<|endoftext|>``) come last. Build one with
    :meth:`train`, or :meth:`load` one that was saved.
    """

    def __init__(
        self,
        token_bytes: Sequence[bytes],
        *,
        pattern: str = GPT4_SPLIT_PATTERN,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        name: str | None = None,
        merges: Sequence[Pair] | None = None,
    ):
        token_bytes = [bytes(token) for token in token_bytes]
        if token_bytes[:NUM_BYTE_TOKENS] != [bytes([byte]) for byte in range(NUM_BYTE_TOKENS)]:
            raise ValueError("the first 256 tokens of a byte-level BPE vocabulary must be the bytes 0..255")
        #: id -> the token's bytes, for the ordinary (non-special) ids.
        self.token_bytes: list[bytes] = token_bytes
        #: bytes -> id (the id is the token's "rank"): what tiktoken calls mergeable ranks.
        self.ranks: dict[bytes, int] = {token: rank for rank, token in enumerate(token_bytes)}
        if len(self.ranks) != len(token_bytes):
            raise ValueError("two tokens have the same bytes; tiktoken identifies tokens by their bytes")
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special tokens must be distinct, got {list(special_tokens)}")
        #: special token -> id, after the ordinary ids.
        self.special_tokens: dict[str, int] = {
            token: len(token_bytes) + i for i, token in enumerate(special_tokens)
        }
        self.pattern = pattern
        self._chunk_regex = regex.compile(pattern)
        self.name = name or f"bpe-{self.vocab_size}"
        self.eot_id = self.special_tokens.get(ENDOFTEXT)
        self._merges: list[Pair] | None = list(merges) if merges is not None else None
        self._tiktoken_encoding: tiktoken.Encoding | None = None

    # ---------------------------------------------------------------------------------
    # Training
    # ---------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text_or_texts: str | Iterable[str],
        vocab_size: int,
        *,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        pattern: str = GPT4_SPLIT_PATTERN,
        progress: bool = True,
        name: str | None = None,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from text.

        ``vocab_size`` counts everything: the 256 bytes, the merges and the special tokens.
        If the text runs out of pairs first (every chunk became a single token), training
        stops early with a warning and the vocabulary is smaller. With ``progress``, a
        progress bar appears when training takes more than a second.
        """
        special_tokens = list(special_tokens)
        smallest = NUM_BYTE_TOKENS + len(special_tokens)
        if vocab_size < smallest:
            raise ValueError(
                f"vocab_size must be at least {smallest} (256 byte tokens + {len(special_tokens)} special), "
                f"got {vocab_size}"
            )
        texts = [text_or_texts] if isinstance(text_or_texts, str) else text_or_texts
        chunk_counts = count_chunks(texts, pattern, special_tokens)
        if not chunk_counts:
            raise ValueError("no text to train on: the text is empty (or only special tokens)")

        num_merges = vocab_size - smallest
        token_bytes = [bytes([byte]) for byte in range(NUM_BYTE_TOKENS)]
        known_tokens = set(token_bytes)
        merges: list[Pair] = []
        pair_counts = IncrementalPairCounts(chunk_counts)
        with tqdm(total=num_merges, unit="merge", desc="BPE training", delay=1.0, disable=not progress) as bar:
            while len(merges) < num_merges:
                best = pair_counts.most_frequent_pair()
                if best is None:
                    break
                (left, right), count = best
                new_token = token_bytes[left] + token_bytes[right]
                if new_token in known_tokens:
                    # Very rare: the same bytes were already merged from another split
                    # (say b"ab" + b"c" before, b"a" + b"bc" now). A second token with the
                    # same bytes would be ambiguous, so we skip this pair for good.
                    pair_counts.forbid((left, right))
                    continue
                new_id = len(token_bytes)
                pair_counts.merge((left, right), new_id)
                merges.append((left, right))
                token_bytes.append(new_token)
                known_tokens.add(new_token)
                bar.update(1)
        if len(merges) < num_merges:
            warnings.warn(
                f"the text ran out of pairs to merge after {len(merges)} merges: the vocabulary has "
                f"{len(token_bytes) + len(special_tokens)} tokens, not {vocab_size}",
                stacklevel=2,
            )
        return cls(token_bytes, pattern=pattern, special_tokens=special_tokens, name=name, merges=merges)

    @property
    def merges(self) -> list[Pair]:
        """The merges in the order they were learned: ``merges[k]`` made token ``256 + k``.

        After loading from a file (which stores only the tokens' bytes) they are recovered:
        encoding a token's bytes with the tokens learned before it ends in exactly the two
        tokens it was merged from.
        """
        if self._merges is None:
            self._merges = []
            for rank in range(NUM_BYTE_TOKENS, len(self.token_bytes)):
                parts = self._merge_bytes(self.token_bytes[rank], max_rank=rank)
                if len(parts) != 2:
                    raise ValueError(f"token {rank} ({self.token_bytes[rank]!r}) is not a merge of two earlier tokens")
                self._merges.append((parts[0], parts[1]))
        return list(self._merges)

    @property
    def num_merges(self) -> int:
        return len(self.token_bytes) - NUM_BYTE_TOKENS

    # ---------------------------------------------------------------------------------
    # The Tokenizer interface
    # ---------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes) + len(self.special_tokens)

    @property
    def tiktoken_encoding(self) -> tiktoken.Encoding:
        """A ``tiktoken.Encoding`` with our ranks, regex and special tokens (built once)."""
        if self._tiktoken_encoding is None:
            self._tiktoken_encoding = tiktoken.Encoding(
                name=self.name,
                pat_str=self.pattern,
                mergeable_ranks=self.ranks,
                special_tokens=dict(self.special_tokens),
            )
        return self._tiktoken_encoding

    def encode(self, text: str, allowed_special: AllowedSpecial = DEFAULT_ALLOWED_SPECIAL) -> list[int]:
        """Text -> ids, fast (tiktoken). Same ids as :meth:`encode_python`.

        Special tokens in the text become their ids if they are in ``allowed_special``
        (default: ``<|endoftext|>``); any other special token in the text is an error.
        """
        return encode_with_tiktoken(self.tiktoken_encoding, text, allowed_special)

    def encode_python(self, text: str, allowed_special: AllowedSpecial = DEFAULT_ALLOWED_SPECIAL) -> list[int]:
        """Text -> ids with our own pure-Python encoder: the reference :meth:`encode` must match."""
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        allowed &= set(self.special_tokens)
        for special in self.special_tokens:
            if special not in allowed and special in text:
                raise ValueError(
                    f"text contains the special token {special!r}, which is not in allowed_special. "
                    f"Pass allowed_special={{{special!r}}} (or 'all') to encode it as a special token."
                )
        if not allowed:
            return self.encode_ordinary_python(text)
        # Cut the text at the allowed special tokens (the parentheses keep them in the list).
        special_regex = regex.compile("(" + "|".join(map(regex.escape, sorted(allowed, key=len, reverse=True))) + ")")
        ids: list[int] = []
        for piece in special_regex.split(text):
            if piece in allowed:
                ids.append(self.special_tokens[piece])
            else:
                ids.extend(self.encode_ordinary_python(piece))
        return ids

    def encode_ordinary_python(self, text: str) -> list[int]:
        """Text without special tokens -> ids: split into chunks, then BPE each chunk."""
        ids: list[int] = []
        for chunk in self._chunk_regex.findall(text):
            ids.extend(self._merge_bytes(chunk.encode("utf-8")))
        return ids

    def _merge_bytes(self, chunk: bytes, max_rank: int | None = None) -> list[int]:
        """BPE one chunk: merge the neighbouring pair that forms the lowest-rank token, repeat.

        ``max_rank`` limits the merges to tokens with a smaller rank (for recovering merges).
        """
        parts = [bytes([byte]) for byte in chunk]
        while len(parts) > 1:
            best_rank, best_index = None, None
            for i in range(len(parts) - 1):
                rank = self.ranks.get(parts[i] + parts[i + 1])
                if rank is not None and (max_rank is None or rank < max_rank):
                    if best_rank is None or rank < best_rank:  # strict: the leftmost lowest wins
                        best_rank, best_index = rank, i
            if best_index is None:
                break  # no neighbouring pair forms a token: done
            parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
        return [self.ranks[part] for part in parts]

    def token_to_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's text, UTF-8 encoded)."""
        if 0 <= token_id < len(self.token_bytes):
            return self.token_bytes[token_id]
        for special, special_id in self.special_tokens.items():
            if special_id == token_id:
                return special.encode("utf-8")
        raise ValueError(f"id {token_id} is not in the vocabulary (size {self.vocab_size})")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> the raw bytes they stand for."""
        return b"".join(self.token_to_bytes(token_id) for token_id in as_token_ids(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Bytes that are not valid UTF-8 (e.g. half a character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---------------------------------------------------------------------------------
    # Saving and loading
    # ---------------------------------------------------------------------------------

    def to_config(self) -> dict[str, Any]:
        """JSON-able description, stored in checkpoints.

        ``merged_tokens`` lists the bytes of tokens 256, 257, ... in base64 (tokens are
        bytes, not always valid text). The 256 byte tokens and the merges themselves are
        implied, so this is about as compact as tiktoken's own format.
        """
        return {
            "type": self.config_type,
            "name": self.name,
            "pattern": self.pattern,
            "special_tokens": list(self.special_tokens),
            "merged_tokens": [
                base64.b64encode(token).decode("ascii") for token in self.token_bytes[NUM_BYTE_TOKENS:]
            ],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BPETokenizer:
        byte_tokens = [bytes([byte]) for byte in range(NUM_BYTE_TOKENS)]
        merged_tokens = [base64.b64decode(token, validate=True) for token in config["merged_tokens"]]
        return cls(
            byte_tokens + merged_tokens,
            pattern=config.get("pattern", GPT4_SPLIT_PATTERN),
            special_tokens=config.get("special_tokens", (ENDOFTEXT,)),
            name=config.get("name"),
        )

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Load a tokenizer written by :meth:`save` (``get_tokenizer(path)`` does the same)."""
        path = Path(path)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a tokenizer JSON file: {error}") from error
        if config.get("type") != cls.config_type:
            raise ValueError(f"{path} holds a {config.get('type')!r} tokenizer, not a {cls.config_type!r} one")
        return cls.from_config(config)

    def to_tiktoken_ranks(self) -> dict[bytes, int]:
        """``{token bytes: rank}`` for the ordinary tokens: tiktoken's ``mergeable_ranks``."""
        return dict(self.ranks)

    def save_tiktoken(self, path: str | Path) -> Path:
        """Write the ranks in tiktoken's format: ``<base64 token> <rank>`` per line.

        ``tiktoken.load.load_tiktoken_bpe(path)`` reads it back, and
        ``TiktokenTokenizer(ranks_file=path, pat_str=tok.pattern, special_tokens=tok.special_tokens)``
        encodes exactly like this tokenizer. The file holds no regex and no special
        tokens: whoever loads it must supply them (the project's defaults are ours).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{base64.b64encode(token).decode('ascii')} {rank}\n" for rank, token in enumerate(self.token_bytes)]
        path.write_text("".join(lines), encoding="ascii")
        return path
