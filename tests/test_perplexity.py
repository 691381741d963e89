"""Strided-window perplexity scores every token once, with the context the windows promise."""

import math

import pytest
import torch
import torch.nn.functional as F

from llm_from_scratch.model import GPTConfig, GPTModel
from llm_from_scratch.evaluation.perplexity import perplexity_of_ids, perplexity_of_text, sequence_nll
from llm_from_scratch.tokenizers import CharTokenizer


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPTModel(GPTConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=2, n_layers=2,
                              drop_rate=0.0)).eval()


def naive_nll(model, ids, context):
    """Token by token: ids[t] predicted from the (at most `context`) tokens before it."""
    total = 0.0
    with torch.no_grad():
        for t in range(1, len(ids)):
            prefix = torch.tensor([ids[max(0, t - context):t]])
            total += F.cross_entropy(model(prefix)[0, -1], torch.tensor(ids[t])).item()
    return total


def test_stride_one_equals_token_by_token_scoring(model):
    ids = torch.randint(0, 40, (30,)).tolist()
    total, count = sequence_nll(model, ids, stride=1)
    assert count == 29
    assert total == pytest.approx(naive_nll(model, ids, 8), rel=1e-5)


def test_a_text_that_fits_is_one_pass(model):
    ids = torch.randint(0, 40, (9,))
    with torch.no_grad():
        direct = F.cross_entropy(model(ids[None, :-1])[0], ids[1:]).item()
    assert perplexity_of_ids(model, ids) == pytest.approx(math.exp(direct), rel=1e-5)


@pytest.mark.parametrize("stride", [3, 8])
def test_every_token_is_scored_once_and_more_context_does_not_hurt_counts(model, stride):
    ids = torch.randint(0, 40, (50,))
    total, count = sequence_nll(model, ids, stride=stride)
    assert count == 49 and math.isfinite(total)


def test_perplexity_of_text_and_bad_input(model):
    tokenizer = CharTokenizer("abcdefghij klmnop")
    result = perplexity_of_text(model, tokenizer, "abc def ghij klm nop " * 3, stride=4)
    assert result["tokens"] == len("abc def ghij klm nop " * 3) - 1
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        sequence_nll(model, [3])
    with pytest.raises(ValueError, match="stride"):
        sequence_nll(model, [1, 2, 3], stride=9)
