"""Sliding-window datasets: the book's semantics without a tensor per window."""

import pytest
import torch

from llm_from_scratch.data import GPTDatasetV1, TokenAndPositionEmbedding, create_dataloader_v1, create_dataloaders


class WordIds:
    """A stand-in tokenizer: one id per character code (keeps these tests independent)."""
    def encode(self, text, allowed_special=None):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def book_windows(ids, max_length, stride):
    """The book's list-building loop, written out as the reference."""
    inputs, targets = [], []
    for i in range(0, len(ids) - max_length, stride):
        inputs.append(torch.tensor(ids[i:i + max_length]))
        targets.append(torch.tensor(ids[i + 1:i + max_length + 1]))
    return inputs, targets


@pytest.mark.parametrize("length, max_length, stride", [(50, 4, 1), (50, 4, 4), (51, 8, 3), (9, 8, 1), (8, 8, 1)])
def test_windows_equal_the_books_loop(length, max_length, stride):
    text = "".join(chr(65 + i % 26) for i in range(length))
    ds = GPTDatasetV1(text, WordIds(), max_length, stride)
    inputs, targets = book_windows(WordIds().encode(text), max_length, stride)
    assert len(ds) == len(inputs)
    for i in range(len(ds)):
        x, y = ds[i]
        assert torch.equal(x, inputs[i]) and torch.equal(y, targets[i])
        assert torch.equal(x[1:], y[:-1])  # targets are inputs shifted by one
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataset_stores_one_tensor_not_one_per_window():
    ds = GPTDatasetV1("x" * 10_000, WordIds(), max_length=64, stride=1)
    tensors = [v for v in vars(ds).values() if isinstance(v, torch.Tensor)]
    assert len(tensors) == 1 and tensors[0].numel() == 10_000
    assert not any(isinstance(v, list) for v in vars(ds).values())


def test_loader_batches_have_the_right_shape():
    text = "".join(chr(65 + i % 26) for i in range(300))
    loader = create_dataloader_v1(text, batch_size=4, max_length=8, stride=8, shuffle=False, tokenizer=WordIds())
    x, y = next(iter(loader))
    assert x.shape == y.shape == (4, 8)
    assert len(loader.dataset) == len(range(0, 300 - 8, 8)) and len(loader) == len(loader.dataset) // 4


def test_create_dataloaders_splits_by_position_without_leaks(sample_text):
    tok = WordIds()
    train, val = create_dataloaders(sample_text, tok, block_size=32, batch_size=4)
    ids = torch.tensor(tok.encode(sample_text))
    split = int(0.9 * len(ids))
    assert torch.equal(train.dataset.token_ids, ids[:split])
    assert torch.equal(val.dataset.token_ids, ids[split:])
    assert val.dataset.stride == 32
    x, y = next(iter(train))
    assert x.shape == (4, 32)


def test_create_dataloaders_shuffle_is_seeded(sample_text):
    first = [x for x, _ in create_dataloaders(sample_text, WordIds(), 16, 4)[0]]
    second = [x for x, _ in create_dataloaders(sample_text, WordIds(), 16, 4)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_too_short_text_says_what_to_do():
    with pytest.raises(ValueError, match="too short.*smaller block_size"):
        create_dataloaders("Your training text here...", WordIds(), block_size=64, batch_size=8)


def test_token_and_position_embedding_adds_positions():
    emb = TokenAndPositionEmbedding(vocab_size=10, emb_dim=4, context_length=6)
    ids = torch.tensor([[3, 3, 3]])
    out = emb(ids)
    assert out.shape == (1, 3, 4)
    # the same token at different positions gets different vectors: position information
    assert not torch.allclose(out[0, 0], out[0, 1])
    torch.testing.assert_close(out[0, 1] - out[0, 0], emb.pos_emb.weight[1] - emb.pos_emb.weight[0])
