"""Chapter 2's data pipeline: one long list of token ids, cut into (input, target) windows.

A language model learns to predict the next token at every position, so for a window of
`max_length` tokens the targets are the same window shifted one token to the right:

    ids:     [ 40, 367, 2885, 1464, 1807, ...]
    input:   [ 40, 367, 2885, 1464]
    target:  [367, 2885, 1464, 1807]

Windows start every `stride` tokens (`stride == max_length`: no overlap; smaller: overlap).

Unlike the book's version, the dataset keeps the ids as one tensor and slices a window when it
is asked for one, instead of storing a separate tensor per window (which costs two Python
objects per window and `max_length/stride` times the memory).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

END_OF_TEXT = "<|endoftext|>"


def encode_text(txt: str, tokenizer) -> list[int]:
    """Tokenize, letting `<|endoftext|>` through as the special token where the tokenizer has it."""
    try:
        return tokenizer.encode(txt, allowed_special={END_OF_TEXT})
    except TypeError:  # a tokenizer whose encode takes only the text
        return tokenizer.encode(txt)


class GPTDatasetV1(Dataset):
    """(input, target) windows over a tokenized text, with the book's semantics:
    windows start at ``range(0, len(ids) - max_length, stride)``."""

    def __init__(self, txt: "str | list[int] | torch.Tensor", tokenizer, max_length: int, stride: int):
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length and stride must be positive, got {max_length} and {stride}")
        ids = txt if not isinstance(txt, str) else encode_text(txt, tokenizer)
        self.token_ids = torch.as_tensor(ids, dtype=torch.long)  # (num_tokens,)
        self.max_length = max_length
        self.stride = stride
        self.starts = range(0, len(self.token_ids) - max_length, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[idx]  # range indexing also raises IndexError past the end
        window = self.token_ids[start:start + self.max_length + 1]
        return window[:-1], window[1:]  # input (max_length,), target (max_length,)


def create_dataloader_v1(txt: str, batch_size: int = 4, max_length: int = 256, stride: int = 128,
                         shuffle: bool = True, drop_last: bool = True, num_workers: int = 0,
                         tokenizer=None) -> DataLoader:
    """The book's loader: GPT-2 tokenizer by default, batches of (input, target) windows."""
    if tokenizer is None:
        from llm_from_scratch.tokenizers import get_tokenizer
        tokenizer = get_tokenizer("gpt2")
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers)


def create_dataloaders(text: str, tokenizer, block_size: int, batch_size: int, train_ratio: float = 0.9,
                       stride: int | None = None, shuffle: bool = True, num_workers: int = 0,
                       seed: int = 123) -> tuple[DataLoader, DataLoader]:
    """Seed 001's API: `(train_loader, val_loader)` from one text.

    The split is by position, not at random: the first `train_ratio` (90%) of the *tokens*
    train, the rest validate, so no validation text leaks into training through overlapping
    windows. Training windows start every `stride` tokens (default: `block_size`, no overlap)
    and are shuffled with a seeded generator; validation windows never overlap and are not
    shuffled. Each part must hold at least one window of `block_size + 1` tokens.
    """
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be between 0 and 1, got {train_ratio}")
    ids = torch.as_tensor(encode_text(text, tokenizer), dtype=torch.long)
    split = int(train_ratio * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    needed = block_size + 1
    if len(train_ids) <= needed or len(val_ids) <= needed:
        raise ValueError(
            f"The text is too short: it has {len(ids)} tokens, split {len(train_ids)} train / "
            f"{len(val_ids)} validation, but each part needs more than block_size + 1 = {needed} "
            f"tokens. Use a longer text (at least ~{int(needed / min(train_ratio, 1 - train_ratio)) + 2} "
            "tokens) or a smaller block_size."
        )
    train_set = GPTDatasetV1(train_ids, tokenizer, block_size, stride or block_size)
    val_set = GPTDatasetV1(val_ids, tokenizer, block_size, block_size)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=shuffle, drop_last=len(train_set) > batch_size,
                              num_workers=num_workers, generator=generator)
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers)
    return train_loader, val_loader
