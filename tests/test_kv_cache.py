"""The KV cache's own operations: merge (rows of several caches in one batch), keep_rows, slide.

Each is checked against what the model computes without those operations: merged rows against
prefilling the same rows together, kept rows against the rows alone. All in fp32, where left
padding and merging are exact up to float rounding in a different summation order: logits agree
to 1e-5.
"""

import pytest
import torch

from llm_from_scratch.model import GPTConfig, GPTModel, KVCache

ATOL = RTOL = 1e-5  # fp32


@pytest.fixture
def model():
    torch.manual_seed(7)
    cfg = GPTConfig(vocab_size=61, context_length=32, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    return GPTModel(cfg).eval()


def prefill(model, prompts, max_len=24):
    """A left-padded cache holding `prompts`, and the next-token logits (b, vocab)."""
    longest = max(len(p) for p in prompts)
    cache = model.new_kv_cache(len(prompts), max_len)
    cache.set_left_padding([longest - len(p) for p in prompts])
    batch = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])
    with torch.inference_mode():
        logits = model(batch, kv_cache=cache, only_last=True)[:, -1]
    return cache, logits


def step(model, cache, tokens):
    with torch.inference_mode():
        return model(torch.tensor(tokens)[:, None], kv_cache=cache, only_last=True)[:, -1]


def alone(model, sequence):
    with torch.inference_mode():
        return model(torch.tensor([sequence]))[0, -1]


PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14], [15, 16, 17, 18]]


def test_merge_equals_prefilling_the_rows_together(model):
    a, _ = prefill(model, PROMPTS[:2])
    b, _ = prefill(model, PROMPTS[2:])
    merged = KVCache.merge([(b, 1), (a, 0), (b, 0), (a, 1)], extra=4)
    together, _ = prefill(model, [PROMPTS[3], PROMPTS[0], PROMPTS[2], PROMPTS[1]])
    assert merged.row_lengths() == together.row_lengths() == [4, 3, 1, 6]
    assert merged.length == 6 and merged.room == 4
    tokens = [20, 21, 22, 23]
    torch.testing.assert_close(step(model, merged, tokens), step(model, together, tokens), atol=ATOL, rtol=RTOL)


def test_merge_keeps_each_rows_generated_tokens_and_positions(model):
    a, _ = prefill(model, PROMPTS[:2])
    step(model, a, [30, 31])                 # both rows have generated a token
    b, _ = prefill(model, [PROMPTS[2]])
    merged = KVCache.merge([(a, 0), (a, 1), (b, 0)], extra=2)
    logits = step(model, merged, [40, 41, 42])
    expected = [PROMPTS[0] + [30, 40], PROMPTS[1] + [31, 41], PROMPTS[2] + [42]]
    for row, sequence in enumerate(expected):
        torch.testing.assert_close(logits[row], alone(model, sequence), atol=ATOL, rtol=RTOL)
    with pytest.raises(ValueError, match="at least one"):
        KVCache.merge([], extra=1)


def test_keep_rows_continues_the_kept_rows_exactly_and_drops_shared_padding(model):
    cache, _ = prefill(model, PROMPTS)       # paddings 3, 0, 5, 2
    cache.keep_rows([3, 0])                  # paddings 2, 3: both begin with 2 padding columns
    assert cache.left_padding.tolist() == [0, 1] and cache.length == 4
    assert cache.row_lengths() == [4, 3]
    logits = step(model, cache, [50, 51])
    torch.testing.assert_close(logits[0], alone(model, PROMPTS[3] + [50]), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(logits[1], alone(model, PROMPTS[0] + [51]), atol=ATOL, rtol=RTOL)


def test_slide_over_padding_is_exact_and_makes_room(model):
    cache, _ = prefill(model, [[5, 6], [7, 8, 9, 10]])
    cache.keep_rows([0])                     # the padding of a row left alone: dropped by keep_rows
    assert cache.left_padding is None and cache.length == 2
    cache, _ = prefill(model, [[5, 6], [7, 8, 9, 10]])
    room = cache.room
    cache.slide(1)                           # row 0 has 2 padding columns, row 1 none: not all padding
    assert cache.room == room + 1 and cache.length == 3
    assert cache.left_padding.tolist() == [1, 0]
    with pytest.raises(ValueError, match="can slide by 0..3"):
        cache.slide(4)


def test_slide_after_which_every_row_keeps_its_tokens(model):
    both, _ = prefill(model, [[5, 6], [7, 8, 9, 10]])
    single, _ = prefill(model, [[5, 6]])
    both.keep_rows([0])
    torch.testing.assert_close(step(model, both, [11]), step(model, single, [11]), atol=ATOL, rtol=RTOL)


def test_reset_forgets_everything_and_the_cache_fields_are_read_only(model):
    cache, _ = prefill(model, [[1, 2], [3, 4, 5]])
    cache.reset()
    assert cache.length == 0 and cache.left_padding is None
    for field in ("keys", "values", "length", "left_padding", "max_len"):
        with pytest.raises(AttributeError):
            setattr(cache, field, None)


def test_update_refuses_to_overflow():
    cache = KVCache(1, 1, 1, 2, max_len=3)
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.update(0, torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))
