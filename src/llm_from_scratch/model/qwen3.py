"""Qwen3 (dense): a third model family that needed no new model code.

Qwen3 is Llama's architecture (RMSNorm, RoPE, SwiGLU, grouped key/value heads, no biases) with
two changes, both switches of the decoder core:

* **QK-norm**: each head's queries and keys are RMS-normalized (over the head's dimensions,
  with a learned scale) before RoPE. It keeps attention logits from growing large, which
  stabilizes training at scale; Qwen3 dropped Qwen2's qkv biases for it.
* **Its own head size**: heads are 128 wide whatever the model width (Qwen3-0.6B: width 1024,
  16 query heads of 128 = 2048), so `head_dim` is set instead of derived from emb_dim / n_heads.

RoPE's base is 1,000,000 (long contexts), norms use eps 1e-6, and the small models tie the
output head to the embedding. The presets below are the published architectures; their weights
load with `llm_from_scratch.weights.qwen3` (a Hugging Face folder, or the hub by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from llm_from_scratch.model.llama import LlamaConfig, LlamaModel

MODEL_TYPE = "qwen3"


@dataclass
class Qwen3Config(LlamaConfig):
    """A `LlamaConfig` with Qwen3's defaults (Qwen3-0.6B's sizes); checkpoints say "qwen3"."""

    vocab_size: int = 151936
    context_length: int = 40960
    emb_dim: int = 1024
    n_heads: int = 16
    n_kv_heads: int = 8
    n_layers: int = 28
    hidden_dim: int = 3072
    rope_base: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_weights: bool = True
    head_dim: int | None = 128
    qk_norm: bool = True

    model_type: ClassVar[str] = MODEL_TYPE


QWEN3_PRESETS: dict[str, dict[str, Any]] = {
    # Qwen/Qwen3-0.6B and Qwen3-0.6B-Base: 596M parameters (440M without the tied embedding).
    "qwen3-0.6b": dict(vocab_size=151936, context_length=40960, emb_dim=1024, n_heads=16, n_kv_heads=8,
                       n_layers=28, hidden_dim=3072, head_dim=128),
}

# A small Qwen3 to train from scratch (`llmfs train --model_type qwen3-micro`): gpt-micro's sizes.
QWEN3_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "qwen3-micro": dict(context_length=128, emb_dim=128, n_heads=4, n_kv_heads=2, n_layers=4, hidden_dim=352,
                        head_dim=32, rope_base=10000.0, tie_weights=True, drop_rate=0.0),
}


class Qwen3Model(LlamaModel):
    """The decoder core built from a `Qwen3Config` (nothing else differs from `LlamaModel`)."""

    config_class: ClassVar[type] = Qwen3Config
    presets: ClassVar[dict[str, dict[str, Any]]] = {**QWEN3_PRESETS, **QWEN3_TRAIN_PRESETS}
