"""Turning a trained model into text (chapters 4-5): decoding strategies, a KV cache, streaming.

The loop is always the same: run the model on the tokens so far, look at the logits of the last
position, pick the next token, append it, repeat. What changes is how the token is picked:

* greedy (``temperature=0``): the most likely token; deterministic.
* temperature: divide the logits by T before the softmax; T < 1 sharpens, T > 1 flattens.
* top-k: only the k most likely tokens may be sampled.
* top-p (nucleus): only the smallest set of tokens whose probabilities add up to p.

With ``use_cache=True`` (our `GPTModel`) the model keeps the keys/values of earlier tokens in a
`KVCache` and each step processes a single new token. When the text grows past the context
window, the window slides: a model with learned absolute position embeddings must then
recompute the window from scratch (the cached keys were computed at other positions), exactly as
generation without a cache does, so both give the same tokens.
"""

from __future__ import annotations

from typing import Iterator

import torch


def text_to_token_ids(text: str, tokenizer) -> torch.Tensor:
    """'Hello' -> tensor of shape (1, num_tokens) (a batch of one)."""
    encoded = tokenizer.encode(text)
    return torch.tensor(encoded, dtype=torch.long).unsqueeze(0)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer) -> str:
    """tensor (1, num_tokens) or (num_tokens,) -> text."""
    return tokenizer.decode(token_ids.squeeze(0).tolist())


def filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the top_k largest logits per row; set the rest to -inf. logits: (b, vocab)."""
    top_k = min(top_k, logits.shape[-1])
    kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (b, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches top_p."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Mass of the tokens strictly before each position; a token is kept while that is < top_p,
    # so the most likely token is always kept.
    mass_before = torch.cumsum(probs, dim=-1) - probs
    remove_sorted = mass_before >= top_p
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def sample_next_token(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits of the last position (b, vocab) -> next token ids (b, 1)."""
    if temperature <= 0.0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = logits.float()
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    logits = logits / temperature
    if top_p is not None and top_p < 1.0:
        logits = filter_top_p(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def _check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _model_context_length(model) -> int | None:
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "context_length", None)


def generate_stream(model, idx: torch.Tensor, max_new_tokens: int, context_size: int | None = None,
                    temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                    eos_id: int | None = None, use_cache: bool = True,
                    generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield the next tokens as they are produced, one (b, 1) tensor per step.

    A sequence that has produced `eos_id` is finished: from then on it receives `eos_id` as
    padding while the others go on; the iterator stops when every sequence is finished (the
    step that finishes the last one yields nothing, as in the book's batch-of-one loop).
    """
    _check_sampling_args(temperature, top_k, top_p)
    model_context = _model_context_length(model)
    if context_size is None:
        context_size = model_context
    if context_size is None:
        raise ValueError("context_size is required for a model without a `cfg.context_length`")
    if model_context is not None and context_size > model_context:
        raise ValueError(f"context_size {context_size} is larger than the model's context_length {model_context}")
    if idx.dim() != 2:
        raise ValueError(f"idx must be a (batch, num_tokens) tensor of token ids, got shape {tuple(idx.shape)}")
    use_cache = use_cache and hasattr(model, "new_kv_cache")

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            finished = torch.zeros(idx.shape[0], 1, dtype=torch.bool, device=idx.device)
            window = idx[:, -context_size:]  # the tokens the model sees next step
            # The cache never holds more than the window: the prompt plus what we generate.
            cache_len = min(context_size, window.shape[1] + max_new_tokens)
            cache = model.new_kv_cache(idx.shape[0], cache_len) if use_cache else None
            pending = window                 # the tokens it has not processed yet (with a cache)
            for _ in range(max_new_tokens):
                if cache is None:
                    logits = model(window)[:, -1, :]
                else:
                    logits = model(pending, kv_cache=cache, only_last=True)[:, -1, :]
                next_token = sample_next_token(logits, temperature, top_k, top_p, generator)  # (b, 1)
                if eos_id is not None:
                    is_eos = next_token == eos_id
                    if bool((finished | is_eos).all()):
                        return
                    next_token = next_token.masked_fill(finished, eos_id)
                    finished = finished | is_eos
                yield next_token
                window = torch.cat([window, next_token], dim=1)
                pending = next_token
                if window.shape[1] > context_size:
                    # The window slides: positions shift, so the cache must be rebuilt.
                    window = window[:, -context_size:]
                    if cache is not None:
                        cache.reset()
                        pending = window
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


def generate_text_simple(model, idx: torch.Tensor, max_new_tokens: int, context_size: int) -> torch.Tensor:
    """Chapter 4's greedy loop, written out without any cache: the reference everything else
    is tested against."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # crop to the context the model supports
        with torch.no_grad():
            logits = model(idx_cond)       # (b, T, vocab)
        logits = logits[:, -1, :]          # (b, vocab): only the last position predicts the next token
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (b, 1)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def stream_text(model, tokenizer, prompt: str | list[int], max_new_tokens: int = 100,
                stop_ids=None, **kwargs) -> Iterator[str]:
    """Yield decoded text pieces as tokens arrive (batch of one).

    `prompt` is text or token ids; generation ends at the tokenizer's end-of-text (or `eos_id`)
    and at any token in `stop_ids` (a chat model's end-of-turn token), which are not yielded.

    Byte-level BPE can split one character (say, a Chinese character or an emoji) over several
    tokens; we only yield text once it decodes to complete characters.
    """
    device = next(model.parameters()).device
    idx = text_to_token_ids(prompt, tokenizer).to(device) if isinstance(prompt, str) else \
        torch.tensor([list(prompt)], dtype=torch.long, device=device)
    eos_id = kwargs.pop("eos_id", getattr(tokenizer, "eot_id", None))
    stop_ids = set(stop_ids or ())
    generated: list[int] = []
    emitted = ""
    for token in generate_stream(model, idx, max_new_tokens, eos_id=eos_id, **kwargs):
        if int(token[0, 0]) in stop_ids:
            break
        generated.append(int(token[0, 0]))
        text = tokenizer.decode(generated)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for more tokens
            continue
        yield text[len(emitted):]
        emitted = text
    text = tokenizer.decode(generated)
    if len(text) > len(emitted):
        yield text[len(emitted):]
