"""Batched (left-padded) decoding gives the same tokens as decoding each prompt alone."""

import pytest
import torch

from llm_from_scratch.generation import BatchedDecoding, generate_batch
from llm_from_scratch.generation import generate
from llm_from_scratch.model import GPTConfig, GPTModel


@pytest.fixture
def model():
    torch.manual_seed(3)
    cfg = GPTConfig(vocab_size=89, context_length=40, emb_dim=48, n_heads=4, n_layers=3, drop_rate=0.0)
    return GPTModel(cfg).eval()


def one_by_one(model, prompt, max_new_tokens, eos_id=None):
    out = generate(model, torch.tensor([prompt]), max_new_tokens, eos_id=eos_id)
    return out[0, len(prompt):].tolist()


def test_batched_greedy_equals_one_by_one(model):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 89, (n,), generator=g).tolist() for n in (1, 7, 3, 12, 5)]
    batched = generate_batch(model, prompts, max_new_tokens=10)
    assert batched == [one_by_one(model, p, 10) for p in prompts]


def test_prefill_logits_of_padded_rows_equal_unpadded(model):
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12]]
    decoding = BatchedDecoding(model, prompts, max_new_tokens=3)
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            alone = model(torch.tensor([prompt]))[0, -1]
        torch.testing.assert_close(decoding.logits[row], alone, rtol=1e-5, atol=1e-5)


def test_a_finished_request_leaves_without_disturbing_the_others(model):
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    reference = [one_by_one(model, p, 8) for p in prompts]
    eos = reference[1][2]  # make the second request stop early on its third token
    expected = []
    for ref in reference:
        expected.append(ref[:ref.index(eos)] if eos in ref else ref)
    assert len(expected[1]) < len(reference[1])  # the second request does stop early
    assert generate_batch(model, prompts, max_new_tokens=8, eos_id=eos) == expected


def test_keep_drops_rows_and_step_continues(model):
    decoding = BatchedDecoding(model, [[1, 2], [3, 4, 5], [6]], max_new_tokens=4)
    decoding.keep([0, 2])
    assert decoding.requests == [0, 2] and decoding.logits.shape[0] == 2
    logits = decoding.step([7, 8])
    assert logits.shape == (2, 89)
    with pytest.raises(ValueError, match="one token per active request"):
        decoding.step([1, 2, 3])


def test_too_long_a_request_is_a_clear_error(model):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        BatchedDecoding(model, [[1] * 35], max_new_tokens=10)
    with pytest.raises(ValueError, match="at least one token"):
        BatchedDecoding(model, [[1], []], max_new_tokens=1)


def test_batched_greedy_equals_one_by_one_for_llama():
    from llm_from_scratch.model.llama import LlamaConfig, LlamaModel

    torch.manual_seed(4)
    cfg = LlamaConfig(vocab_size=71, context_length=48, emb_dim=48, n_heads=4, n_kv_heads=2, n_layers=2,
                      hidden_dim=96, rope_base=10000.0)
    llama = LlamaModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 71, (n,), generator=g).tolist() for n in (2, 9, 5)]
    assert generate_batch(llama, prompts, max_new_tokens=8) == [one_by_one(llama, p, 8) for p in prompts]


def test_one_decoding_loop_slides_the_window_of_padded_rows_like_generate(model):
    """Rows of different lengths that outgrow a 10-token window: each row's greedy tokens equal
    `generate` with the same window, alone (the window slides and the rows are prefilled again)."""
    from llm_from_scratch.generation import DecodingRow, SamplingParams, decode_step

    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [16]]
    rows = [DecodingRow(SamplingParams(max_tokens=14)) for _ in prompts]
    decoding = BatchedDecoding(model, prompts, 14, requests=rows, context_size=10)
    while decoding.requests:
        decode_step(decoding)
    for row, prompt in zip(rows, prompts):
        expected = generate(model, torch.tensor([prompt]), 14, context_size=10)[0, len(prompt):].tolist()
        assert row.token_ids == expected and row.finish_reason == "length"


def test_rows_with_their_own_settings_share_a_batch(model):
    """A sampled row does not disturb the greedy rows beside it; its seed gives the same tokens alone."""
    from llm_from_scratch.generation import DecodingRow, SamplingParams, decode_step

    def run(prompts, params):
        rows = [DecodingRow(p, generator=p.make_generator()) for p in params]
        decoding = BatchedDecoding(model, prompts, 6, requests=rows)
        while decoding.requests:
            decode_step(decoding)
        return [r.token_ids for r in rows]
    greedy, sampled = SamplingParams(max_tokens=6), SamplingParams(max_tokens=6, temperature=1.0, seed=4)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    together = run(prompts, [greedy, sampled, greedy])
    assert together[0] == one_by_one(model, prompts[0], 6) and together[2] == one_by_one(model, prompts[2], 6)
    assert together[1] == run([prompts[1]], [sampled])[0]


def test_no_cache_decoding_needs_rows_of_equal_length(model):
    with pytest.raises(ValueError, match="equal length"):
        BatchedDecoding(model, [[1, 2], [3]], 2, use_cache=False)
