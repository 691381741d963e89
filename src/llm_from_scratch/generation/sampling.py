"""Choosing the next token: decoding strategies, the settings of one generation, and their defaults.

The model gives logits over the vocabulary for the next token; how one token is picked from them
is the decoding strategy:

* greedy (``temperature=0``): the most likely token; deterministic.
* temperature: divide the logits by T before the softmax; T < 1 sharpens, T > 1 flattens.
* top-k: only the k most likely tokens may be sampled.
* top-p (nucleus): only the smallest set of tokens whose probabilities add up to p.

`SamplingParams` gathers these settings (plus how long to generate, where to stop and the random
seed) for one generation. It is checked once, when it is made, so every surface (the Python
functions, `llmfs generate`/`chat`, the server's OpenAI and Ollama routes) gets the same rules
and the same error messages.

Each surface has its own defaults, on purpose: the Python API is greedy (reproducible, as the
book's chapters are), the OpenAI and Ollama routes use *their* APIs' documented defaults so that
clients written for them behave as they expect. They are all in one table, `SURFACE_DEFAULTS`
(in `defaults.py`, which the command line reads without importing torch).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Sequence

import torch

from llm_from_scratch.generation.defaults import SURFACE_DEFAULTS

@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is generated. Checked when made: a bad value is a ValueError saying what
    is wrong and what to give instead.

    ``stop`` strings end the text where they appear (they are not part of it). ``stop_token_ids``
    end it at a token (not part of it either: the end-of-text "eos" and a chat model's
    end-of-turn); None means the tokenizer's own (see `chat_template.stop_token_ids`), ``()``
    means none. ``seed`` makes sampling repeatable (None: a fresh random seed).
    """

    max_tokens: int
    temperature: float = SURFACE_DEFAULTS["python"]["temperature"]
    top_k: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] | None = None
    seed: int | None = None

    def __post_init__(self):
        # tuples, also when lists were given (the dataclass is frozen, hence object.__setattr__)
        object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens (max_new_tokens) must be a whole number of at least 1, got "
                             f"{self.max_tokens!r}: ask for at least one new token")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0 or self.temperature != self.temperature:
            raise ValueError(f"temperature must be a number >= 0, got {self.temperature!r}: use 0 for greedy "
                             "decoding, about 0.7-1.0 for varied text")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):
            raise ValueError(f"top_k must be a positive whole number, got {self.top_k!r}: leave it out "
                             "(None) to sample from the whole vocabulary")
        if self.top_p is not None and not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}: e.g. 0.9 keeps the most likely "
                             "tokens that make up 90% of the probability; leave it out (None) to turn it off")
        if self.seed is not None and not (isinstance(self.seed, int) and -2**63 <= self.seed < 2**64):
            raise ValueError(f"seed must be a whole number that fits in 64 bits, got {self.seed!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {list(self.stop)!r}: "
                             "remove the empty ones")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def make_generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """A random generator for this sequence alone (None when greedy): seeded with `seed`, or a
        fresh random seed (not torch.seed(), which would reseed the global generator)."""
        if self.greedy:
            return None
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed if self.seed is not None else secrets.randbits(63))
        return generator


def filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the top_k largest logits per row; set the rest to -inf. logits: (b, vocab)."""
    top_k = min(top_k, logits.shape[-1])
    kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (b, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches top_p."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Mass of the tokens strictly before each position; a token is kept while that is < top_p,
    # so the most likely token is always kept.
    mass_before = torch.cumsum(probs, dim=-1) - probs
    remove_sorted = mass_before >= top_p
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def sample_next_token(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits of the last position (b, vocab) -> next token ids (b, 1)."""
    if temperature <= 0.0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = logits.float()
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    logits = logits / temperature
    if top_p is not None and top_p < 1.0:
        logits = filter_top_p(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def pick_tokens(logits: torch.Tensor, params: Sequence[SamplingParams],
                generators: Sequence[torch.Generator | None]) -> list[int]:
    """One next token per row of `logits` (b, vocab), row i with params[i] and generators[i].

    Rows that share their settings and their generator (one `generate` call) are sampled in one
    call, exactly as `sample_next_token` would; rows with settings of their own (a server's
    requests) are sampled one by one, so each request's seed gives the same text alone or in a
    batch.
    """
    first, gen = params[0], generators[0]
    shared = all((p.temperature, p.top_k, p.top_p) == (first.temperature, first.top_k, first.top_p)
                 for p in params) and all(g is gen for g in generators)
    if shared:
        return sample_next_token(logits, first.temperature, first.top_k, first.top_p, gen)[:, 0].tolist()
    tokens = torch.argmax(logits, dim=-1).tolist()  # greedy for every row first
    for i, (p, g) in enumerate(zip(params, generators)):
        if not p.greedy:
            tokens[i] = int(sample_next_token(logits[i:i + 1], p.temperature, p.top_k, p.top_p, g)[0, 0])
    return tokens
