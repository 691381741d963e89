"""The generation functions people call (chapters 4-5), all driving the one loop of `decoding.py`.

* `generate_text_simple`: chapter 4's greedy loop written out, without any cache: the reference
  everything else is tested against.
* `generate` / `generate_stream`: the book's interface on token tensors: (b, T) ids in, the new
  tokens out (all at once, or one (b, 1) tensor per step). The window slides past the context.
* `stream_text`: text pieces as they are produced (whole characters only), for one prompt.
* `generate_batch`: new token ids for several prompts of different lengths, decoded together.

With ``use_cache=True`` (our models) the model keeps the keys/values of earlier tokens in a
`KVCache` and each step processes a single new token; the tokens are the same as without it.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from llm_from_scratch.generation.decoding import BatchedDecoding, DecodingRow, decode_step, model_context_length
from llm_from_scratch.generation.sampling import SamplingParams


def text_to_token_ids(text: str, tokenizer) -> torch.Tensor:
    """'Hello' -> tensor of shape (1, num_tokens) (a batch of one)."""
    encoded = tokenizer.encode(text)
    return torch.tensor(encoded, dtype=torch.long).unsqueeze(0)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer) -> str:
    """tensor (1, num_tokens) or (num_tokens,) -> text."""
    return tokenizer.decode(token_ids.squeeze(0).tolist())


def generate_text_simple(model, idx: torch.Tensor, max_new_tokens: int, context_size: int) -> torch.Tensor:
    """Chapter 4's greedy loop, written out without any cache: the reference everything else
    is tested against."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # crop to the context the model supports
        with torch.no_grad():
            logits = model(idx_cond)       # (b, T, vocab)
        # (b, vocab): only the last position predicts the next token (a compact vocabulary's
        # reserved id, its last row, is never written: model/compact_vocab.py)
        logits = logits[:, -1, :getattr(model, "generation_vocab_size", None)]
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (b, 1)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def _window_size(model, context_size: int | None) -> int:
    model_context = model_context_length(model)
    if context_size is None:
        context_size = model_context
    if context_size is None:
        raise ValueError("context_size is required for a model without a `cfg.context_length`")
    if model_context is not None and context_size > model_context:
        raise ValueError(f"context_size {context_size} is larger than the model's context_length {model_context}")
    return context_size


def _check_max_new_tokens(max_new_tokens: int) -> None:
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def generate_stream(model, idx: torch.Tensor, max_new_tokens: int, context_size: int | None = None,
                    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                    eos_id: int | None = None, use_cache: bool = True,
                    generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield the next tokens as they are produced, one (b, 1) tensor per step.

    A sequence that has produced `eos_id` is finished: from then on it receives `eos_id` as
    padding while the others go on; the iterator stops when every sequence is finished (the
    step that finishes the last one yields nothing, as in the book's batch-of-one loop).
    """
    _check_max_new_tokens(max_new_tokens)
    params = SamplingParams(max_tokens=max(1, max_new_tokens), temperature=temperature, top_k=top_k,
                            top_p=top_p, stop_token_ids=() if eos_id is None else (eos_id,))
    context_size = _window_size(model, context_size)
    if idx.dim() != 2:
        raise ValueError(f"idx must be a (batch, num_tokens) tensor of token ids, got shape {tuple(idx.shape)}")
    if max_new_tokens == 0:
        return
    rows = [DecodingRow(params, generator=generator) for _ in range(idx.shape[0])]
    was_training = model.training
    model.eval()
    try:
        decoding = BatchedDecoding(model, idx, max_new_tokens, requests=rows, context_size=context_size,
                                   use_cache=use_cache, device=idx.device)
        while decoding.requests:
            results = decode_step(decoding)
            if all(token in row.stop_ids for row, token, _ in results):
                return  # the last rows produced eos: the step that finishes them yields nothing
            picked = {id(row): token for row, token, _ in results}
            # rows that finished in an earlier step get eos as padding
            yield torch.tensor([[picked.get(id(row), eos_id)] for row in rows], dtype=torch.long,
                               device=idx.device)
    finally:
        model.train(was_training)


def generate(model, idx: torch.Tensor, max_new_tokens: int, context_size: int | None = None,
             temperature: float = 0.0, top_k: int | None = None, eos_id: int | None = None,
             top_p: float | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The book's `generate`: returns idx with the new tokens appended, shape (b, T + new).

    Stops early when every sequence produced `eos_id` (the eos token itself is not appended for
    the sequence that finishes last; earlier finishers are padded with eos_id).
    """
    new_tokens = list(generate_stream(model, idx, max_new_tokens, context_size, temperature,
                                      top_k, top_p, eos_id, use_cache, generator))
    return torch.cat([idx, *new_tokens], dim=1) if new_tokens else idx


def stream_text(model, tokenizer, prompt: str | list[int], max_new_tokens: int = 100,
                stop_ids=None, *, stop: Sequence[str] = (), context_size: int | None = None,
                temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                eos_id: int | None = None, use_cache: bool = True,
                generator: torch.Generator | None = None) -> Iterator[str]:
    """Yield decoded text pieces as tokens arrive (batch of one).

    `prompt` is text or token ids; generation ends at the tokenizer's end-of-text (or `eos_id`),
    at any token in `stop_ids` (a chat model's end-of-turn token) and at any `stop` string;
    none of them is yielded.

    Byte-level BPE can split one character (say, a Chinese character or an emoji) over several
    tokens; we only yield text once it decodes to complete characters (`IncrementalDetokenizer`).
    """
    _check_max_new_tokens(max_new_tokens)
    eos_id = eos_id if eos_id is not None else getattr(tokenizer, "eot_id", None)
    stops = set(stop_ids or ()) | ({eos_id} if eos_id is not None else set())
    params = SamplingParams(max_tokens=max(1, max_new_tokens), temperature=temperature, top_k=top_k,
                            top_p=top_p, stop=tuple(stop), stop_token_ids=tuple(stops))
    context_size = _window_size(model, context_size)
    if max_new_tokens == 0:
        return
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    row = DecodingRow(params, tokenizer=tokenizer, generator=generator)
    was_training = model.training
    model.eval()
    try:
        decoding = BatchedDecoding(model, [ids], max_new_tokens, requests=[row], context_size=context_size,
                                   use_cache=use_cache, device=device)
        while not row.finished:
            ((_, _, text),) = decode_step(decoding)
            if text:
                yield text
    finally:
        model.train(was_training)


def generate_batch(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
                   top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
                   generator: torch.Generator | None = None, stop_ids=()) -> list[list[int]]:
    """New tokens for each prompt (without the prompt), decoded together in one batch.

    A request stops at `eos_id` or any of `stop_ids` (not included), or after `max_new_tokens`.
    With greedy decoding the tokens are the same as generating each prompt alone.
    """
    stops = set(stop_ids) | ({eos_id} if eos_id is not None else set())
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            stop_token_ids=tuple(stops))
    rows = [DecodingRow(params, generator=generator) for _ in prompts]
    decoding = BatchedDecoding(model, prompts, max_new_tokens, requests=rows)
    while decoding.requests:
        decode_step(decoding)
    return [row.token_ids for row in rows]
