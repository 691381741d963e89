"""Chapter 5's loss: cross-entropy between the predicted next-token distribution and the real next token."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def calc_loss_batch(input_batch: torch.Tensor, target_batch: torch.Tensor, model, device) -> torch.Tensor:
    """Mean cross-entropy over every position of the batch. inputs/targets: (b, T)."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (b, T, vocab)
    # cross_entropy wants (N, classes) and (N,): flatten batch and time together. Low-precision
    # logits (bf16/fp16) are summed in fp32 at least; fp64 stays fp64.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


@torch.no_grad()
def calc_loss_loader(data_loader, model, device, num_batches: int | None = None) -> float:
    """Average loss over the first `num_batches` batches (all when None); NaN for an empty loader."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i >= num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / num_batches


def perplexity(loss: float) -> float:
    """exp(loss): the effective number of tokens the model hesitates between."""
    return math.exp(loss) if loss < 50 else float("inf")
