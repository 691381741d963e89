"""The GPT model (chapter 4): embeddings, a stack of transformer blocks, a final norm, an output head.

    token ids (b, T)
      -> token embedding + position embedding          (b, T, emb_dim)
      -> dropout
      -> n_layers x TransformerBlock                   (b, T, emb_dim)
      -> final LayerNorm
      -> output head (linear to the vocabulary)        (b, T, vocab_size)   = logits

GPT-2 is one configuration of the project's decoder core (`decoder.py`): LayerNorm, a learned
position table, GELU feed-forward, biases, every head with its own keys and values. This module
gives it the book's names: `GPTModel(cfg)` with the book's config dict or a `GPTConfig`, and
`TransformerBlock(cfg)`. Attribute names follow the book (`tok_emb`, `pos_emb`, `trf_blocks`,
`final_norm`, `out_head`, `att`, `ff`, `norm1`, `norm2`). The attention is the fused one; see
`fused_attention.py` and its proof of equality with the teaching `attention.MultiHeadAttention`.
"""

from __future__ import annotations

from typing import Any, Mapping

from llm_from_scratch.model.config import GPTConfig, as_config, preset_config
from llm_from_scratch.model.decoder import DecoderBlock, DecoderLM


class TransformerBlock(DecoderBlock):
    """Pre-norm block: x + attention(norm(x)), then x + feedforward(norm(x)), built from a GPT config.

    The residual ("shortcut") connections let gradients flow straight through deep stacks.
    """

    def __init__(self, cfg: GPTConfig | Mapping[str, Any]):
        super().__init__(as_config(cfg).architecture())


class GPTModel(DecoderLM):
    """GPT-2's architecture: `GPTModel(GPT_CONFIG_124M)` or `GPTModel(GPTConfig(...))`."""

    def __init__(self, cfg: GPTConfig | Mapping[str, Any]):
        super().__init__(as_config(cfg))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "GPTModel":
        return cls(preset_config(name, **overrides))


class GPT(GPTModel):
    """nanoGPT-style constructor (seed 001): ``GPT(vocab_size=, n_embd=, n_layer=, n_head=, block_size=)``.

    The same `GPTModel` underneath; only the spelling of the arguments differs. `GPT(config)`
    works too. Dropout defaults to 0.0 here, as in nanoGPT.
    """

    def __init__(self, config: GPTConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        if config is None:
            kwargs.setdefault("dropout", 0.0)
            config = GPTConfig(**kwargs)
        elif kwargs:
            config = as_config(config).replace(**kwargs)
        super().__init__(config)
