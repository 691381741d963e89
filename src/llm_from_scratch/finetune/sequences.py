"""Prompt + completion sequences and how likely the model finds each completion.

Preference tuning (DPO, `dpo.py`) and reinforcement learning with verifiable rewards (GRPO,
`grpo.py`) both ask the same question of a model, many times: *how probable is this
completion, given this prompt?* A language model answers it token by token. For a row

    x = prompt tokens p_1 .. p_m, then completion tokens c_1 .. c_k

the chain rule of probability gives

    log p(completion | prompt) = sum_{j=1..k} log p(c_j | p_1 .. p_m, c_1 .. c_{j-1})

and each term is one entry of the model's next-token distribution: the log-softmax of the
logits at the position *before* c_j, read at the id of c_j. So the work is:

1. `pack_completions`: put prompt and completion side by side in one row, pad the rows of a
   batch to one length, and record which *targets* are completion tokens (the prompt is given,
   not generated: its tokens are not scored).
2. `token_logprobs`: one forward pass, then log p(x_{t+1} | x_1 .. x_t) for every position t.
3. `sequence_logprob`: the sum of the completion's terms, one number per row.

Shapes: a batch of n rows of T tokens gives T - 1 next-token predictions per row (the last
token predicts nothing we have), so masks and per-token log-probs are (n, T - 1); entry t
belongs to the *target* ``input_ids[:, t + 1]``.

Why right padding is safe: the model is causal, position t only sees positions <= t. Padding
placed after the real tokens can not change the log-probs of the real tokens, and the mask
leaves the padding's own predictions out of every sum (the tests check both).

Memory: the next-token distributions of a batch are (n, T - 1, vocab) numbers. With SmolLM2's
49,152 tokens, 8 rows of 1,024 tokens that is 1.6 GB in float32, and autograd would keep it for
the backward pass. `token_logprobs` runs the transformer once, then applies the output head and
the log-softmax to `chunk_size` positions at a time and keeps only the one number per position
that we need. With gradients on, each chunk is *recomputed* in the backward pass
(`torch.utils.checkpoint`) instead of stored, so at no time does more than one chunk of
(chunk_size, vocab) logits exist. The cost is one extra head matmul per chunk.

Speed: the head is a (d, vocab) matmul per position - for SmolLM2 a fifth of the model's work.
Given the completion mask (`only=`), it runs at the completion positions only; a prompt is
often longer than its answer, so this saves most of the head's work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK = 1024  # positions per chunk: 1024 x 49,152 float32 logits = 201 MB at most


@dataclass
class PackedCompletions:
    """A batch of prompt + completion rows, right-padded, with the mask of completion targets."""

    input_ids: torch.Tensor        # (n, T) long: prompt tokens, completion tokens, then pad_id
    completion_mask: torch.Tensor  # (n, T - 1) float32: 1.0 where the target input_ids[:, t + 1]
                                   # is a completion token, 0.0 for prompt targets and padding
    prompt_lengths: list[int]      # prompt tokens kept in each row (after left truncation)
    completion_lengths: list[int]  # completion tokens in each row (never truncated)


def pack_completions(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                     pad_id: int, max_length: int | None = None) -> PackedCompletions:
    """Rows of ``prompt + completion``, right-padded with ``pad_id`` to the longest row.

    With `max_length`, a row that is too long loses tokens from the *left* of its prompt: the
    completion is what we score, so it stays whole, and the end of the prompt (the question
    and the chat template's "assistant:" header) matters most to it. A completion that leaves
    no room for even one prompt token is an error.

    Every prompt needs at least one token: the first completion token is predicted from the
    token before it (a chat template's header or a BOS token). A completion may be empty
    (its mask row is all zero); in practice the caller appends the end-of-turn token to every
    sampled completion, so the model is also trained on *when to stop*, and a completion that
    stopped at once is then one token long.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        raise ValueError("pack_completions needs at least one prompt + completion pair")
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be at least 2 (one prompt token and one completion token), "
                         f"got {max_length}")
    rows, prompt_lengths, completion_lengths = [], [], []
    for index, (prompt, completion) in enumerate(zip(prompts, completions)):
        prompt, completion = [int(t) for t in prompt], [int(t) for t in completion]
        if not prompt:
            raise ValueError(f"prompt {index} is empty: the first completion token needs a token before "
                             "it to be predicted from (use the chat template's header or a BOS token)")
        if max_length is not None and len(prompt) + len(completion) > max_length:
            room_for_prompt = max_length - len(completion)
            if room_for_prompt < 1:
                raise ValueError(
                    f"completion {index} has {len(completion)} tokens, which leaves no room for its prompt "
                    f"within max_length={max_length}; raise max_length or generate shorter completions")
            prompt = prompt[-room_for_prompt:]        # drop the oldest prompt tokens
        rows.append(prompt + completion)
        prompt_lengths.append(len(prompt))
        completion_lengths.append(len(completion))

    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)           # (n, T)
    completion_mask = torch.zeros(len(rows), max(longest - 1, 0), dtype=torch.float32)  # (n, T-1)
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        # completion token j sits at position prompt_len + j and is predicted at position
        # prompt_len + j - 1: mask entries prompt_len - 1 .. prompt_len + completion_len - 2
        first = prompt_lengths[i] - 1
        completion_mask[i, first:first + completion_lengths[i]] = 1.0
    return PackedCompletions(input_ids, completion_mask, prompt_lengths, completion_lengths)


def _head_of(model) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(features (b, T, d), head) such that head(features[..]) are the logits.

    A `DecoderLM` gives its final hidden states and its output head, so the big (vocab-wide)
    step can be done in chunks; any other model gives its full logits and an identity head."""
    if hasattr(model, "hidden_states") and hasattr(model, "logits"):
        return model.hidden_states, model.logits
    return model, (lambda logits: logits)


def token_logprobs_and_entropy(model, input_ids: torch.Tensor, *, chunk_size: int = DEFAULT_CHUNK,
                               temperature: float = 1.0, with_entropy: bool = True,
                               only: torch.Tensor | None = None,
                               vocab_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(n, T) ids -> (log-probs (n, T - 1), entropies (n, T - 1) or None).

    `only` (n, T - 1), optional: compute just the entries where it is nonzero (the completion
    mask); the others come out as 0. Every masked sum and mean gives the same result, faster.
    `vocab_size`: the distribution over the first `vocab_size` ids only, as sampling uses it
    when the model's embedding has more rows than the tokenizer has tokens.

    log-prob[i, t] = log softmax(logits[i, t] / temperature)[input_ids[i, t + 1]], differentiable.
    entropy[i, t] = -sum_v p_v log p_v of the same distribution, computed without gradients
    (it is for logging: a collapsing entropy is the first sign of a policy that stopped exploring).

    Both come out in float32 whatever the model's dtype: log-probs of long completions are
    summed and subtracted (DPO, GRPO's ratios), where bfloat16's 3 significant digits are not enough.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n, seq_len = input_ids.shape
    features_of, head = _head_of(model)
    features = features_of(input_ids)[:, :-1]          # (n, T-1, d): position t predicts t + 1
    targets = input_ids[:, 1:].reshape(-1)             # (n*(T-1),)
    features = features.reshape(n * (seq_len - 1), -1)  # (n*(T-1), d)
    kept = None
    if only is not None:
        if only.shape != (n, seq_len - 1):
            raise ValueError(f"only must be (n, T - 1) = {(n, seq_len - 1)}, got {tuple(only.shape)}")
        kept = only.reshape(-1).nonzero().squeeze(-1)  # (m,) the positions that count
        features, targets = features[kept], targets[kept]  # (m, d), (m,)

    def one_chunk(chunk_features: torch.Tensor, chunk_targets: torch.Tensor):
        logits = head(chunk_features.unsqueeze(0))[0][..., :vocab_size].float() / temperature  # (c, vocab)
        log_probs = F.log_softmax(logits, dim=-1)                               # (c, vocab)
        picked = log_probs.gather(-1, chunk_targets.unsqueeze(-1)).squeeze(-1)  # (c,)
        if not with_entropy:
            return picked, None
        with torch.no_grad():
            entropy = -(log_probs.exp() * log_probs).sum(-1)                    # (c,)
        return picked, entropy

    # Recompute chunks in the backward pass instead of storing their (c, vocab) activations.
    recompute = torch.is_grad_enabled() and features.requires_grad
    picked_chunks, entropy_chunks = [], []
    for start in range(0, features.shape[0], chunk_size):
        args = (features[start:start + chunk_size], targets[start:start + chunk_size])
        if recompute:
            picked, entropy = checkpoint(one_chunk, *args, use_reentrant=False)
        else:
            picked, entropy = one_chunk(*args)
        picked_chunks.append(picked)
        entropy_chunks.append(entropy)

    def full(chunks: list[torch.Tensor]) -> torch.Tensor:
        """The chunks' values back in (n, T - 1) shape (zeros where `only` left a position out)."""
        values = torch.cat(chunks) if chunks else features.new_zeros(0, dtype=torch.float32)
        if kept is not None:
            values = values.new_zeros(n * (seq_len - 1)).index_put((kept,), values)
        return values.view(n, seq_len - 1)

    return full(picked_chunks), (full(entropy_chunks) if with_entropy else None)


def token_logprobs(model, input_ids: torch.Tensor, *, chunk_size: int = DEFAULT_CHUNK,
                   temperature: float = 1.0, only: torch.Tensor | None = None,
                   vocab_size: int | None = None) -> torch.Tensor:
    """(n, T) ids -> (n, T - 1) float32: log p(input_ids[:, t + 1] | input_ids[:, :t + 1]).

    Differentiable. Use the *sampling* temperature for GRPO's ratios: the probabilities must be
    those of the distribution the completions were drawn from. `only`, `vocab_size`: as in
    `token_logprobs_and_entropy` (0 outside the mask)."""
    logps, _ = token_logprobs_and_entropy(model, input_ids, chunk_size=chunk_size, temperature=temperature,
                                          with_entropy=False, only=only, vocab_size=vocab_size)
    return logps


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` is nonzero (same shapes); 0 when the mask is empty."""
    keep = mask.bool()
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    return total / keep.sum().clamp(min=1)


def token_entropy(model, input_ids: torch.Tensor, mask: torch.Tensor, *, chunk_size: int = DEFAULT_CHUNK,
                  temperature: float = 1.0) -> float:
    """Mean entropy (nats) of the next-token distribution over the masked positions, for logging."""
    with torch.no_grad():
        _, entropies = token_logprobs_and_entropy(model, input_ids, chunk_size=chunk_size,
                                                  temperature=temperature)
    return float(masked_mean(entropies, mask.to(entropies.device)))


def sequence_logprob(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n, T - 1) per-token log-probs and completion mask -> (n,): log p(completion | prompt).

    Positions outside the mask are left out (not multiplied by 0, so that even a -inf there
    can not turn the sum into NaN)."""
    if token_logps.shape != mask.shape:
        raise ValueError(f"token_logps {tuple(token_logps.shape)} and mask {tuple(mask.shape)} differ in shape")
    keep = mask.bool()
    return torch.where(keep, token_logps, torch.zeros_like(token_logps)).sum(-1)
