"""Turning a trained model into text (chapters 4-5), and the one decoding loop every surface uses.

The modules, in reading order:

* `defaults` - each surface's sampling defaults (`SURFACE_DEFAULTS`), in one table;
* `sampling` - how the next token is picked (greedy, temperature, top-k, top-p) and the settings
  of one generation (`SamplingParams`, checked once);
* `detokenizer` - tokens to text as they arrive: whole characters only, stop strings held back;
* `decoding` - the loop: prefill prompts into a KV cache, then one step per token, for one row
  or many (`BatchedDecoding`, `DecodingRow`, `decode_step`);
* `api` - the functions people call: `generate`, `generate_stream`, `stream_text`,
  `generate_batch`, and chapter 4's reference loop `generate_text_simple`;
* `completions` - many sampled answers per prompt, with per-token log-probabilities
  (`sample_completions`): what voting, GRPO and on-policy DPO sample with.

`generate`, `stream_text`, `llmfs chat`, instruction scoring, the local judge and the server's
engine all run on `decoding`, so a fix or a speed-up there reaches every one of them.

``from llm_from_scratch.generation import generate`` works as usual; the names are loaded on
first use, so that reading `SURFACE_DEFAULTS` (the command-line parsers do) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "generate": "api", "generate_batch": "api", "generate_stream": "api", "generate_text_simple": "api",
    "stream_text": "api", "text_to_token_ids": "api", "token_ids_to_text": "api",
    "BatchedDecoding": "decoding", "DecodingRow": "decoding", "decode_step": "decoding",
    "IncrementalDetokenizer": "detokenizer", "MAX_PENDING_TOKENS": "detokenizer",
    "SamplingParams": "sampling", "filter_top_k": "sampling", "filter_top_p": "sampling",
    "pick_tokens": "sampling", "sample_next_token": "sampling",
    "SURFACE_DEFAULTS": "defaults", "surface_default": "defaults",
    "Completion": "completions", "sample_completions": "completions",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
