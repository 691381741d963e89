"""Generation: decoding strategies, the KV cache against no cache, stopping and streaming."""

import pytest
import torch

from llm_from_scratch.generation import (
    filter_top_k, filter_top_p, generate, generate_stream, generate_text_simple, sample_next_token,
    stream_text, text_to_token_ids, token_ids_to_text,
)
from llm_from_scratch.model import GPTModel, KVCache


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    model = GPTModel(cfg).eval()
    # Spread the logits: with N(0, 0.02) weights many tokens tie for argmax within float noise.
    with torch.no_grad():
        model.out_head.weight.mul_(50)
    return model


@pytest.mark.parametrize("prompt_len, new_tokens", [(1, 10), (5, 11), (16, 5), (23, 20), (3, 40)])
def test_kv_cache_greedy_equals_no_cache_and_the_reference_loop(tiny_cfg, prompt_len, new_tokens):
    # context_length is 16: these cover prompts shorter than, equal to and longer than the window,
    # and generations that slide past it.
    model = _model(tiny_cfg)
    idx = torch.randint(0, tiny_cfg.vocab_size, (2, prompt_len))
    reference = generate_text_simple(model, idx, new_tokens, context_size=tiny_cfg.context_length)
    no_cache = generate(model, idx, new_tokens, use_cache=False)
    cached = generate(model, idx, new_tokens, use_cache=True)
    assert torch.equal(no_cache, reference)
    assert torch.equal(cached, reference)
    assert cached.shape == (2, prompt_len + new_tokens)


def test_kv_cache_with_smaller_context_size_argument(tiny_cfg):
    model = _model(tiny_cfg, seed=3)
    idx = torch.randint(0, tiny_cfg.vocab_size, (1, 4))
    reference = generate_text_simple(model, idx, 20, context_size=6)
    assert torch.equal(generate(model, idx, 20, context_size=6, use_cache=True), reference)


def test_cached_logits_match_full_forward(tiny_cfg):
    model = _model(tiny_cfg)
    x = torch.randint(0, tiny_cfg.vocab_size, (2, 12))
    full = model(x)
    cache = model.new_kv_cache(2)
    parts = [model(x[:, :5], kv_cache=cache), model(x[:, 5:6], kv_cache=cache), model(x[:, 6:], kv_cache=cache)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 12


def test_kv_cache_overflow_is_a_clear_error():
    cache = KVCache(1, 1, 1, 2, max_len=3)
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.update(0, torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    out = filter_top_k(logits, 2)
    assert torch.isfinite(out).tolist() == [[False, True, False, True, False]]
    assert filter_top_k(logits, 100).isfinite().all()


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.75)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.95)).tolist() == [[True, True, True, False]]
    # order in the vocabulary does not matter
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isfinite(filter_top_p(shuffled, 0.75)).tolist() == [[False, True, False, True]]


def test_sampling_respects_filters_and_is_seeded():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0, 1.0]]).repeat(500, 1)
    draws = sample_next_token(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(draws.flatten().tolist()) == {1, 2}
    again = sample_next_token(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    greedy = sample_next_token(logits[:1], temperature=0.0)
    assert greedy.item() == 1


def test_high_temperature_flattens_low_sharpens():
    logits = torch.tensor([[2.0, 1.0, 0.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    cold = sample_next_token(logits, temperature=0.1, generator=g)
    hot = sample_next_token(logits, temperature=5.0, generator=g)
    assert (cold == 0).float().mean() > 0.99
    assert 0.25 < (hot == 2).float().mean() < 0.4


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p"),
    (dict(context_size=1000), "context_length"),
])
def test_bad_generation_arguments(tiny_cfg, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(GPTModel(tiny_cfg), torch.zeros(1, 2, dtype=torch.long), 3, **kwargs)


def test_eos_stops_each_sequence_and_the_batch(tiny_cfg):
    model = _model(tiny_cfg)
    idx = torch.randint(0, tiny_cfg.vocab_size, (3, 4))
    free = generate(model, idx, 12)
    eos = int(free[1, 6])  # the third token that row 1 generates
    stopped = generate(model, idx, 12, eos_id=eos)
    for row in range(3):
        new = free[row, 4:].tolist()
        if eos in new:
            cut = new.index(eos)
            # tokens before the eos are unchanged, everything after is eos padding
            assert stopped[row, 4:4 + cut].tolist() == new[:cut]
            assert set(stopped[row, 4 + cut:].tolist()) <= {eos}
        else:
            assert stopped[row, 4:].tolist() == new[:stopped.shape[1] - 4]


def test_batch_of_one_stops_without_appending_eos_like_the_book(tiny_cfg):
    model = _model(tiny_cfg)
    idx = torch.randint(0, tiny_cfg.vocab_size, (1, 3))
    free = generate(model, idx, 10)
    eos = int(free[0, 5])
    first = free[0, 3:].tolist().index(eos)
    out = generate(model, idx, 10, eos_id=eos)
    assert out.shape[1] == 3 + first
    assert torch.equal(out, free[:, :3 + first])


def test_stream_yields_the_same_tokens_one_by_one(tiny_cfg):
    model = _model(tiny_cfg)
    idx = torch.randint(0, tiny_cfg.vocab_size, (2, 3))
    steps = list(generate_stream(model, idx, 7))
    assert len(steps) == 7 and all(s.shape == (2, 1) for s in steps)
    assert torch.equal(torch.cat([idx, *steps], 1), generate(model, idx, 7))


def test_generation_restores_training_mode(tiny_cfg):
    model = GPTModel(tiny_cfg).train()
    generate(model, torch.zeros(1, 2, dtype=torch.long), 2)
    assert model.training


class ByteTokenizer:
    """UTF-8 bytes as tokens: multi-byte characters span several tokens."""
    vocab_size, eot_id = 256, None

    def encode(self, text, allowed_special=None):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def test_stream_text_never_yields_half_a_character():
    tok = ByteTokenizer()
    target = list("人工智能 ok 🙂".encode("utf-8"))

    class Parrot(torch.nn.Module):  # "predicts" the target bytes in order
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, idx):
            step = idx.shape[1] - 1
            logits = torch.full((idx.shape[0], idx.shape[1], 256), -1e9)
            logits[:, -1, target[min(step, len(target) - 1)]] = 0
            return logits

    pieces = list(stream_text(Parrot(), tok, "x", max_new_tokens=len(target), context_size=64))
    assert "".join(pieces) == "人工智能 ok 🙂"
    assert all("\ufffd" not in p for p in pieces)
    assert pieces[0] == "人"


def test_text_token_round_trip_helpers():
    tok = ByteTokenizer()
    ids = text_to_token_ids("hi", tok)
    assert ids.shape == (1, 2)
    assert token_ids_to_text(ids, tok) == "hi"
