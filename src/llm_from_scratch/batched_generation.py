"""Generating for several prompts at once, in one batch (what a server does with concurrent requests).

A CPU or GPU multiplies a (b, emb) batch by a weight matrix in about the time it multiplies one
row: reading the weights dominates. So b requests decoded together cost little more than one.

Prompts have different lengths; a batch needs one rectangle. We pad on the **left** so that
every row's last prompt token sits in the same column and all rows then grow together, one
column per step:

    row 0:  [pad pad  A   B   C ] -> next tokens go in column 5, 6, ...
    row 1:  [ D   E   F   G   H ]

Two things make the padding invisible to the model (both handled by `KVCache`):

* positions: a row's first real token is its position 0 (`KVCache.positions`), so learned
  position embeddings and RoPE see exactly what they would see without padding;
* attention: no query may attend to a padding column (`KVCache.attention_mask`).

A finished request leaves the batch (`keep`), the others go on. With greedy decoding the tokens
are the same as generating each prompt alone (`tests/test_batched_generation.py`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from llm_from_scratch.generation import sample_next_token


class BatchedDecoding:
    """Step-by-step decoding of several prompts in one batch, with one KV cache.

    After construction (the prefill of all prompts) and after every `step`, `logits[i]` holds the
    next-token logits of `requests[i]`. The caller picks the tokens (each request may sample
    differently), calls `step(tokens)`, and `keep(...)` to drop finished requests.
    """

    def __init__(self, model, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 pad_id: int = 0):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        context = model.cfg.context_length
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > context:
            raise ValueError(f"the longest prompt ({longest} tokens) plus max_new_tokens ({max_new_tokens}) "
                             f"exceeds the model's context of {context} tokens")
        self.model = model
        device = next(model.parameters()).device
        self.requests = list(range(len(prompts)))  # which request each batch row belongs to
        self.cache = model.new_kv_cache(len(prompts), longest + max_new_tokens)
        self.cache.set_left_padding([longest - len(p) for p in prompts])
        batch = torch.full((len(prompts), longest), pad_id, dtype=torch.long, device=device)
        for row, prompt in enumerate(prompts):
            batch[row, longest - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
        self.logits = self._forward(batch)  # (b, vocab)

    def _forward(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(tokens, kv_cache=self.cache, only_last=True)[:, -1, :]

    @property
    def room(self) -> int:
        """How many more steps the cache holds."""
        return self.cache.max_len - self.cache.length

    def step(self, tokens: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Append one token per active request (in `requests` order); returns the new logits."""
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.logits.device).reshape(-1, 1)
        if tokens.shape[0] != len(self.requests):
            raise ValueError(f"need one token per active request ({len(self.requests)}), got {tokens.shape[0]}")
        if self.room < 1:
            raise ValueError("the batch's KV cache is full: the requests reached max_new_tokens")
        self.logits = self._forward(tokens)
        return self.logits

    def keep(self, requests: Sequence[int]) -> None:
        """Continue with these requests only (finished ones leave the batch)."""
        rows = [self.requests.index(r) for r in requests]
        self.cache.keep_rows(rows)
        self.logits = self.logits[rows]
        self.requests = [self.requests[r] for r in rows]


def generate_batch(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
                   top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
                   generator: torch.Generator | None = None, stop_ids=()) -> list[list[int]]:
    """New tokens for each prompt (without the prompt), decoded together in one batch.

    A request stops at `eos_id` or any of `stop_ids` (not included), or after `max_new_tokens`.
    """
    stops = set(stop_ids) | ({eos_id} if eos_id is not None else set())
    decoding = BatchedDecoding(model, prompts, max_new_tokens)
    outputs: list[list[int]] = [[] for _ in prompts]
    while decoding.requests:
        tokens = sample_next_token(decoding.logits, temperature, top_k, top_p, generator)[:, 0].tolist()
        still_going = []
        for request, token in zip(decoding.requests, tokens):
            if token in stops:
                continue
            outputs[request].append(token)
            if len(outputs[request]) < max_new_tokens:
                still_going.append(request)
        if not still_going:
            break
        if len(still_going) < len(decoding.requests):
            decoding.keep(still_going)
        decoding.step([outputs[r][-1] for r in still_going])
    return outputs
