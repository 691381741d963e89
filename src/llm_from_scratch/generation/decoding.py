"""The one decoding loop: prefill the prompts into a KV cache, then one step per token, for one
row or many. Every way of generating in this project runs on it: `generate`, `generate_stream`,
`stream_text`, `generate_batch`, `llmfs chat`, instruction scoring, the local judge and the
server's engine.

Three pieces:

* `BatchedDecoding` runs the model. Prompts of different lengths are padded on the **left** so
  that every row's last token sits in the same column and all rows then grow together, one
  column per step::

      row 0:  [pad pad  A   B   C ] -> next tokens go in column 5, 6, ...
      row 1:  [ D   E   F   G   H ]

  The KV cache makes the padding invisible (each row gets its own positions, and no query
  attends to a padding column; see `model/kv_cache.py`), so a row computes exactly what its
  prompt alone computes. After the prefill and after every `step`, `logits[i]` holds the
  next-token logits of row i. `keep` lets finished rows leave, `join` merges another batch in
  (how a server's new request joins a running batch), and when a row outgrows the context
  window the window *slides*: the rows keep their last `context_size` tokens and are prefilled
  again (a model with learned absolute positions cannot reuse keys computed at other positions,
  so this gives exactly what generation without a cache gives).

* `DecodingRow` is one sequence's state: its `SamplingParams`, random generator, tokens so far,
  text (through an `IncrementalDetokenizer`), why it finished ("stop" or "length") and, when
  asked (`record_logprobs=True`), the log-probability the model gave each token it picked:
  log softmax(logits)[token] at temperature 1, the policy's own probability, which is what
  reinforcement learning (GRPO) and the sampled answers' scores need.

* `decode_step` is the loop's body: pick one token per row (each with its own settings), let
  each row accept it, drop the finished rows, run the model one step for the others.

A CPU or GPU multiplies a (b, emb) batch by a weight matrix in about the time it multiplies one
row: reading the weights dominates. So b rows decoded together cost little more than one.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from llm_from_scratch.generation.detokenizer import IncrementalDetokenizer
from llm_from_scratch.generation.sampling import SamplingParams, pick_tokens


def model_context_length(model) -> int | None:
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "context_length", None)


class BatchedDecoding:
    """Step-by-step decoding of several prompts in one batch (a batch of one is fine).

    `requests`: what each row stands for (default 0, 1, ...; the engine and `decode_step` use
    `DecodingRow` objects); `keep` and `join` keep them in step with the rows.

    `context_size`: the window the model sees. None: the model's context, and the longest
    prompt plus `max_new_tokens` must fit in it (a server's rule: never slide). Given: the
    window slides when a row outgrows it (`generate`'s rule, as in the book).

    `use_cache=False` (or a model without `new_kv_cache`) runs the model over the whole window
    at every step: the slow reference. It needs prompts of equal length (no padding).
    """

    def __init__(self, model, prompts: Sequence[Sequence[int]] | torch.Tensor, max_new_tokens: int,
                 pad_id: int = 0, *, requests: Sequence | None = None, context_size: int | None = None,
                 use_cache: bool = True, device: torch.device | str | None = None):
        prompts = prompts.tolist() if isinstance(prompts, torch.Tensor) else [list(p) for p in prompts]
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        model_context = model_context_length(model)
        self.slides = context_size is not None
        self.context_size = context_size if context_size is not None else model_context
        if self.context_size is None:
            raise ValueError("context_size is required for a model without a `cfg.context_length`")
        longest = max(len(p) for p in prompts)
        if not self.slides and longest + max_new_tokens > self.context_size:
            raise ValueError(f"the longest prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens}) "
                             f"exceeds the model's context of {self.context_size} tokens")
        self.model = model
        self.pad_id = pad_id
        self.device = device if device is not None else next(model.parameters()).device
        self.requests = list(requests) if requests is not None else list(range(len(prompts)))
        if len(self.requests) != len(prompts):
            raise ValueError(f"need one request per prompt ({len(prompts)}), got {len(self.requests)}")
        # each row's tokens inside the window: its prompt, then what it generated
        self.tokens = [p[-self.context_size:] for p in prompts]
        self.use_cache = use_cache and hasattr(model, "new_kv_cache")
        if not self.use_cache and len({len(t) for t in self.tokens}) > 1:
            raise ValueError("decoding without a KV cache needs prompts of equal length (no padding)")
        self.cache = None
        if self.use_cache:
            # the cache never holds more than the window: the prompt plus what we generate
            cache_len = min(self.context_size, max(len(t) for t in self.tokens) + max_new_tokens)
            with torch.inference_mode():
                self.cache = model.new_kv_cache(len(prompts), cache_len)
        self.logits = self._prefill()  # (b, vocab)

    @property
    def room(self) -> int:
        """How many more steps fit without sliding the window (with a cache: in the cache)."""
        longest = max((len(t) for t in self.tokens), default=0)
        if self.cache is None:
            return self.context_size - longest
        return min(self.cache.room, self.context_size - longest)

    def _padded_window(self) -> tuple[torch.Tensor, list[int]]:
        """(b, T) tensor of the rows' tokens, left-padded with pad_id, and the padding counts."""
        width = max(len(t) for t in self.tokens)
        pads = [width - len(t) for t in self.tokens]
        window = torch.full((len(self.tokens), width), self.pad_id, dtype=torch.long, device=self.device)
        for row, tokens in enumerate(self.tokens):
            window[row, pads[row]:] = torch.as_tensor(tokens, dtype=torch.long)
        return window, pads

    def _prefill(self) -> torch.Tensor:
        """Run the model over the whole window (the prompts, or the slid window)."""
        window, pads = self._padded_window()
        with torch.inference_mode():
            if self.cache is None:
                return self.model(window)[:, -1, :]
            self.cache.reset()
            self.cache.set_left_padding(pads)
            return self.model(window, kv_cache=self.cache, only_last=True)[:, -1, :]

    def step(self, tokens: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Append one token per row (in `requests` order); returns the new logits (b, vocab)."""
        tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1).tolist()
        if len(tokens) != len(self.requests):
            raise ValueError(f"need one token per active request ({len(self.requests)}), got {len(tokens)}")
        if not self.slides and self.room < 1:
            raise ValueError("the batch's KV cache is full: the requests reached max_new_tokens")
        for row, token in zip(self.tokens, tokens):
            row.append(token)
        if max(len(t) for t in self.tokens) > self.context_size:
            # The window slides: positions shift, so the window is prefilled again.
            self.tokens = [t[-self.context_size:] for t in self.tokens]
            self.logits = self._prefill()
        elif self.cache is None:
            self.logits = self._prefill()
        else:
            new = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]  # (b, 1)
            with torch.inference_mode():
                self.logits = self.model(new, kv_cache=self.cache, only_last=True)[:, -1, :]
        return self.logits

    def keep(self, requests: Sequence) -> None:
        """Continue with these requests only, in this order (finished ones leave the batch)."""
        rows = [self._row_of(r) for r in requests]
        self.requests = [self.requests[i] for i in rows]
        self.tokens = [self.tokens[i] for i in rows]
        self.logits = self.logits[rows]
        if self.cache is not None and rows:
            with torch.inference_mode():
                self.cache.keep_rows(rows)

    def _row_of(self, request) -> int:
        for i, r in enumerate(self.requests):  # by identity first: rows may compare equal
            if r is request:
                return i
        return self.requests.index(request)

    def join(self, other: "BatchedDecoding", extra: int) -> None:
        """Take `other`'s rows in after ours: one cache (`KVCache.merge`), our rows first.
        `extra`: free columns the merged cache keeps for new tokens."""
        if self.cache is None or other.cache is None:
            raise ValueError("only decodings with a KV cache can be joined")
        parts = [(self.cache, i) for i in range(len(self.requests))] + \
                [(other.cache, i) for i in range(len(other.requests))]
        with torch.inference_mode():
            self.cache = type(self.cache).merge(parts, extra)
        self.logits = torch.cat([self.logits, other.logits], dim=0)
        self.requests = self.requests + other.requests
        self.tokens = self.tokens + other.tokens


class DecodingRow:
    """One sequence being generated: settings, tokens so far, text, and whether it is finished.

    `stop_token_ids` applies when ``params.stop_token_ids`` is None (the caller's defaults, e.g.
    the tokenizer's end-of-text). With a `tokenizer`, the row keeps its text incrementally
    (`IncrementalDetokenizer`: whole characters, ``params.stop`` strings end it).
    """

    def __init__(self, params: SamplingParams, *, tokenizer=None, stop_token_ids: Iterable[int] = (),
                 generator: torch.Generator | None = None, record_logprobs: bool = False):
        self.params = params
        self.stop_ids = frozenset(params.stop_token_ids if params.stop_token_ids is not None else stop_token_ids)
        self.generator = generator
        self.detokenizer = IncrementalDetokenizer(tokenizer, params.stop) if tokenizer is not None else None
        self.token_ids: list[int] = []
        self.finish_reason: str | None = None  # "stop" (a stop token or string) or "length"
        self.stop_token_id: int | None = None  # the stop token that ended the row (not in token_ids)
        # log p(token) of each picked token, stop token included (so len = len(token_ids) + 1 then)
        self.logprobs: list[float] | None = [] if record_logprobs else None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def remaining(self) -> int:
        return self.params.max_tokens - len(self.token_ids)

    @property
    def text(self) -> str:
        """The text so far (cut before a stop string)."""
        return self.detokenizer.text if self.detokenizer is not None else ""

    def accept(self, token: int) -> str:
        """Add the next token; return the new text to show (maybe ""). Sets `finish_reason` when
        the row is done: a stop token (not added), a stop string, or max_tokens reached."""
        if self.finished:
            raise ValueError("this row is finished: it takes no more tokens")
        if token in self.stop_ids:
            self.stop_token_id = token
            return self.finish("stop")
        self.token_ids.append(token)
        if self.detokenizer is None:
            return self.finish("length") if self.remaining <= 0 else ""
        piece = self.detokenizer.add(token)
        if self.detokenizer.stopped:
            return piece + self.finish("stop")
        if self.remaining <= 0:
            return piece + self.finish("length")
        return piece

    def finish(self, reason: str) -> str:
        """End the row (also for a caller that stops it); returns the text held back until now."""
        rest = self.detokenizer.finish() if self.detokenizer is not None else ""
        stopped = self.detokenizer is not None and self.detokenizer.stopped
        self.finish_reason = "stop" if stopped else reason
        return rest


def decode_step(decoding: BatchedDecoding, vocab_size: int | None = None) -> list[tuple[DecodingRow, int, str]]:
    """One step of the loop for every row of `decoding` (whose `requests` are `DecodingRow`s):
    pick each row's next token with its own settings, let the row accept it, let the finished
    rows leave, and run the model one step for the others.

    Returns (row, token, new text) for every row of this step, in batch order. `vocab_size`:
    only ids below it are picked (a model may have more output rows than its tokenizer has ids).
    """
    results = accept_tokens(decoding, vocab_size)
    advance(decoding)
    return results


def accept_tokens(decoding: BatchedDecoding, vocab_size: int | None = None) -> list[tuple[DecodingRow, int, str]]:
    """The first half of `decode_step`, without the model: pick and accept one token per row.

    A server sends the new text to its clients between the two halves, so a token reaches them
    before, not after, the next forward pass."""
    rows: list[DecodingRow] = list(decoding.requests)
    if not rows:
        return []
    # A compact vocabulary's reserved id is never written (model/compact_vocab.py): it is the last row.
    limits = [n for n in (vocab_size, getattr(decoding.model, "generation_vocab_size", None)) if n is not None]
    logits = decoding.logits[:, :min(limits)] if limits else decoding.logits
    tokens = pick_tokens(logits, [r.params for r in rows], [r.generator for r in rows])
    if any(r.logprobs is not None for r in rows):
        picked = torch.tensor(tokens, device=logits.device)[:, None]                    # (b, 1)
        logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, picked)[:, 0].tolist()
        for row, logp in zip(rows, logps):
            if row.logprobs is not None:
                row.logprobs.append(logp)
    return [(row, token, row.accept(token)) for row, token in zip(rows, tokens)]


def advance(decoding: BatchedDecoding) -> None:
    """The second half of `decode_step`: the finished rows leave, the others get one model step."""
    rows: list[DecodingRow] = list(decoding.requests)
    going = [r for r in rows if not r.finished]
    if len(going) < len(rows):
        decoding.keep(going)
    if going:
        decoding.step([r.token_ids[-1] for r in going])
