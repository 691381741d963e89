"""Perplexity of a model on any text: how many tokens, on average, it hesitates between.

perplexity = exp(mean cross-entropy of predicting each token from the ones before it).

A text longer than the model's context cannot be scored in one pass. Cutting it into disjoint
windows is cheap but unfair: the first tokens of every window are predicted from almost no
context. **Strided windows** fix that: windows of `context_length` tokens start every `stride`
tokens, and each window scores only the tokens that the previous window did not score, so every
token is scored exactly once, with at least `context_length - stride` tokens of context
(except at the very start). stride = context_length gives disjoint windows; a smaller stride
gives better estimates for more compute.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def sequence_nll(model, token_ids: Sequence[int] | torch.Tensor, stride: int | None = None,
                 context_length: int | None = None, max_tokens: int | None = None) -> tuple[float, int]:
    """(sum of the negative log-likelihoods, number of scored tokens) over `token_ids`.

    Every token but the first is scored once (see the module doc for the windows).
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if ids.numel() < 2:
        raise ValueError("perplexity needs a text of at least 2 tokens")
    context = context_length or model.cfg.context_length
    stride = stride or context
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be between 1 and the context length {context}, got {stride}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    offset = getattr(model, "logit_offset", None)   # log(unseen ids) at a compact vocabulary's reserved id
    position = 1  # the next token to score; ids[0] is never predicted
    while position < ids.numel():
        end = min(position + stride, ids.numel())          # score ids[position:end] in this window
        begin = max(0, end - context - 1)                  # the model reads at most `context` tokens
        window = ids[begin:end].to(device)
        logits = model(window[None, :-1])[0].float()       # (len - 1, vocab): predicts window[1:]
        targets = window[1:].clone()                        # targets[j] is ids[begin + 1 + j]
        targets[:position - begin - 1] = -100               # scored by an earlier window
        total += F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum").item()
        if offset is not None:   # a compact vocabulary: a reserved-id target is one particular unseen
            total += float(offset[targets[targets != -100].cpu()].sum())   # token: 1/n of the reserved mass
        count += end - position
        position = end
    model.train(was_training)
    return total, count


def perplexity_of_ids(model, token_ids, stride: int | None = None, max_tokens: int | None = None) -> float:
    """exp(mean negative log-likelihood per token)."""
    total, count = sequence_nll(model, token_ids, stride=stride, max_tokens=max_tokens)
    return math.exp(total / count)


def perplexity_of_text(model, tokenizer, text: str, stride: int | None = None,
                       max_tokens: int | None = None) -> dict[str, float]:
    """Perplexity and mean loss of `text` (with the number of tokens scored)."""
    total, count = sequence_nll(model, tokenizer.encode(text), stride=stride, max_tokens=max_tokens)
    return {"perplexity": math.exp(total / count), "loss": total / count, "tokens": count}
