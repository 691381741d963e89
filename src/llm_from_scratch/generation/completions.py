"""Many answers to many prompts at once: the sampling that evaluation and reinforcement learning need.

Self-consistency voting samples k answers per question; GRPO samples a *group* of G answers per
prompt and learns from how they compare; on-policy DPO samples answers and keeps a good and a
bad one. All of them ask the same thing: "give me n completions of each of these prompts, with
the tokens, the text, why each one ended and (for learning) the log-probability of every token".

`sample_completions` does that on the project's one decoding loop (`decoding.py`): the prompts,
each repeated `num_samples` times, are cut into batches of `batch_size` rows and every batch is
decoded together (left-padded prompts, one KV cache, finished rows leave the batch). So a group
of 8 answers costs little more than one answer: a CPU reads the weights once per step for all
rows.

Repeatability: the rows of one batch share a random generator seeded from ``(seed, batch
index)`` (`batch_seed`), so the same call gives the same answers (greedy needs no generator at
all), and calls with nearby seeds share no stream.

A `Completion` keeps the stop token that ended it (`stop_token_id`) apart from its tokens, like
every surface here; `training_ids` puts it back, because a model trained on its own answers
must also learn *when to stop*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from llm_from_scratch.generation.decoding import BatchedDecoding, DecodingRow, decode_step
from llm_from_scratch.generation.sampling import SamplingParams


@dataclass
class Completion:
    """One sampled answer to one prompt."""

    token_ids: list[int]            # the generated tokens, without the stop token
    text: str                       # their text (cut before a stop string)
    finish_reason: str              # "stop" (a stop token or string) or "length" (max_tokens reached)
    stop_token_id: int | None = None  # the end-of-turn/end-of-text token that ended it, if one did
    logprobs: list[float] | None = None  # log p of each token of `training_ids`, when recorded

    @property
    def training_ids(self) -> list[int]:
        """The tokens a model should learn to produce: the answer and the stop token that ended it."""
        return self.token_ids + ([self.stop_token_id] if self.stop_token_id is not None else [])


def sampling_vocab_size(model, tokenizer) -> int:
    """The ids a sampled token can take: the tokenizer's, where the model's embedding has more
    rows (padded to a round number); the log-probabilities of GRPO use the same ids."""
    limits = [model.cfg.vocab_size, getattr(tokenizer, "vocab_size", model.cfg.vocab_size),
              getattr(model, "generation_vocab_size", None)]   # (a compact vocabulary: not its reserved id)
    return min(n for n in limits if n is not None)


def batch_seed(seed: int, batch_index: int) -> int:
    """The seed of one batch's random generator: (seed, batch) mixed by NumPy's SeedSequence, so
    that nearby seeds give unrelated streams (seed + batch_index would give batch 1 of seed s
    the stream of batch 0 of seed s + 1, and GRPO seeds its steps s, s + 1, ...)."""
    import numpy as np

    return int(np.random.SeedSequence([seed % 2**63, batch_index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def answer_length(requested: int | None, prompts: Sequence[Sequence[int]], context_length: int,
                  default: int) -> int:
    """How many tokens an answer may have: `requested`, or by default `default` or what the model's
    context leaves after the longest prompt, whichever is smaller. A requested length that does
    not fit, or a prompt that leaves no room, is an error that says the largest length that fits."""
    longest = max((len(p) for p in prompts), default=0)
    room = context_length - longest
    if room < 1:
        raise ValueError(f"the longest prompt has {longest} tokens, which leaves no room for an answer in the "
                         f"model's context of {context_length} tokens: use a model with a longer context")
    if requested is None:
        return min(default, room)
    if requested > room:
        raise ValueError(f"--max_new_tokens {requested} does not fit: the longest prompt has {longest} tokens and "
                         f"the model's context is {context_length}, so at most {room} (--max_new_tokens {room}; "
                         f"leave it out to get min({default}, {room}))")
    return requested


def sample_completions(model, tokenizer, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
                       num_samples: int = 1, batch_size: int = 32, stop_ids: Sequence[int] | None = None,
                       record_logprobs: bool = False, progress: bool = False,
                       desc: str = "sampling") -> list[list[Completion]]:
    """`num_samples` completions of each prompt (token ids), decoded in batches of `batch_size` rows.

    Returns one list per prompt, its samples in order. `params` gives the length, temperature,
    top-k/top-p and `seed`; `stop_ids` (default: the tokenizer's end-of-text and end-of-turn
    tokens) end an answer. With `record_logprobs`, each completion carries the model's
    log-probability (temperature 1) of every token of `training_ids`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if stop_ids is None:
        from llm_from_scratch.tokenizers.chat_template import stop_token_ids
        stop_ids = stop_token_ids(tokenizer)
    vocab = sampling_vocab_size(model, tokenizer)
    # (prompt index, its tokens) for every row to decode: each prompt num_samples times in a row
    jobs = [(i, list(p)) for i, p in enumerate(prompts) for _ in range(num_samples)]
    results: list[list[Completion]] = [[] for _ in prompts]
    starts = range(0, len(jobs), batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc=desc, unit="answer", dynamic_ncols=True)
    was_training = model.training
    model.eval()
    try:
        for batch_index, start in enumerate(starts):
            chunk = jobs[start:start + batch_size]
            generator = None
            if not params.greedy:
                generator = torch.Generator(device=next(model.parameters()).device)
                seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
                generator.manual_seed(batch_seed(seed, batch_index))
            rows = [DecodingRow(params, tokenizer=tokenizer, stop_token_ids=stop_ids, generator=generator,
                                record_logprobs=record_logprobs) for _ in chunk]
            decoding = BatchedDecoding(model, [tokens for _, tokens in chunk], params.max_tokens, requests=rows)
            while decoding.requests:
                decode_step(decoding, vocab_size=vocab)
            for (prompt_index, _), row in zip(chunk, rows):
                results[prompt_index].append(Completion(row.token_ids, row.text, row.finish_reason,
                                                        row.stop_token_id, row.logprobs))
            if bar is not None:
                bar.update(len(chunk))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return results
