"""The sampling defaults of every surface: the one place they are written down.

A setting a caller leaves out takes its surface's value here (``None``: off). The surfaces differ
on purpose: the Python API is greedy (repeatable, as the book's chapters are); the command line
samples (varied text from a base model, focused answers in a chat); the server's OpenAI and
Ollama routes use *those APIs'* documented defaults, so that clients written for them get what
they expect; task evaluation and RL sample for their own reasons (the named constants below).

==============  ===========  =====  =====  ==========  ==================================================
surface         temperature  top_k  top_p  max tokens  used by
==============  ===========  =====  =====  ==========  ==================================================
python          0.0          -      -      (required)  `generate`, `stream_text`, `generate_batch`, ...
generate        0.8          50     -      100         `llmfs generate`
chat            0.2          -      0.9    256         `llmfs chat`
openai          1.0          -      -      (server)    /v1 routes of `llmfs serve` (OpenAI's defaults)
ollama          0.8          40     0.9    (server)    /api routes of `llmfs serve` (Ollama's defaults)
tasks           0.7          -      -      128         `llmfs evaluate tasks`' sampled answers (pass@k, vote)
policy          0.8          -      -      (its own)   answers GRPO, DPO and RFT sample (`llmfs finetune grpo/dpo/rft`)
==============  ===========  =====  =====  ==========  ==================================================

"(server)": the server's ``--max_tokens`` limit, or what the context leaves. "(its own)": the
fine-tuning pipeline's answer budget. Code reads a surface's row (``SURFACE_DEFAULTS["chat"]``,
``surface_default("chat", "top_p")``) or, in Python signatures and configs, the named constants.
This module imports nothing heavy, so the command-line parsers can read it while `llmfs --help`
stays quick.
"""

from __future__ import annotations

TASK_EVAL_TEMPERATURE = 0.7        # pass@k/vote@k need tries that differ (> 0) yet stay sensible (< 1)
TASK_EVAL_MAX_NEW_TOKENS = 128     # room for a short worked answer and its "Answer: ..." line
POLICY_SAMPLING_TEMPERATURE = 0.8  # GRPO/DPO/RFT's answers; the log-probs are those of this very distribution.
                                   # Measured (docs 22, the ablations): at 1.0 SmolLM2-135M's answers ramble
                                   # (entropy 2.5, a quarter cut off) and 70% of GRPO's groups carry no signal

SURFACE_DEFAULTS: dict[str, dict[str, float | int | None]] = {
    "python": {"temperature": 0.0, "top_k": None, "top_p": None},
    "generate": {"temperature": 0.8, "top_k": 50, "top_p": None, "max_tokens": 100},
    "chat": {"temperature": 0.2, "top_k": None, "top_p": 0.9, "max_tokens": 256},
    "openai": {"temperature": 1.0, "top_k": None, "top_p": None},
    "ollama": {"temperature": 0.8, "top_k": 40, "top_p": 0.9},
    "tasks": {"temperature": TASK_EVAL_TEMPERATURE, "top_k": None, "top_p": None,
              "max_tokens": TASK_EVAL_MAX_NEW_TOKENS},
    "policy": {"temperature": POLICY_SAMPLING_TEMPERATURE, "top_k": None, "top_p": None},
}


def surface_default(surface: str, name: str):
    """The default of one setting on one surface: ``surface_default("ollama", "top_k") == 40``."""
    if surface not in SURFACE_DEFAULTS:
        raise ValueError(f"unknown surface {surface!r}: one of {', '.join(SURFACE_DEFAULTS)}")
    return SURFACE_DEFAULTS[surface].get(name)
