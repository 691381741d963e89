"""The GPT model (chapter 4): embeddings, a stack of transformer blocks, a final norm, an output head.

    token ids (b, T)
      -> token embedding + position embedding          (b, T, emb_dim)
      -> dropout
      -> n_layers x TransformerBlock                   (b, T, emb_dim)
      -> final LayerNorm
      -> output head (linear to the vocabulary)        (b, T, vocab_size)   = logits

Attribute names follow the book (`tok_emb`, `pos_emb`, `trf_blocks`, `final_norm`, `out_head`,
`att`, `ff`, `norm1`, `norm2`). The attention is the fused one; see `fused_attention.py` and its
proof of equality with the teaching `attention.MultiHeadAttention`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn as nn

from llm_from_scratch.model.config import GPTConfig, as_config, preset_config
from llm_from_scratch.model.fused_attention import FusedMultiHeadAttention
from llm_from_scratch.model.kv_cache import KVCache
from llm_from_scratch.model.layers import FeedForward, LayerNorm
from llm_from_scratch.model.linear_cross_entropy import linear_cross_entropy


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + feedforward(norm(x)).

    The residual ("shortcut") connections let gradients flow straight through deep stacks.
    """

    def __init__(self, cfg: GPTConfig | Mapping[str, Any]):
        super().__init__()
        cfg = as_config(cfg)
        self.att = FusedMultiHeadAttention(
            d_in=cfg.emb_dim, d_out=cfg.emb_dim, context_length=cfg.context_length,
            dropout=cfg.drop_rate, num_heads=cfg.n_heads, qkv_bias=cfg.qkv_bias,
        )
        self.ff = FeedForward(cfg.emb_dim)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        # x: (b, T, emb_dim) throughout
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache, layer_idx))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    def __init__(self, cfg: GPTConfig | Mapping[str, Any]):
        super().__init__()
        self.cfg = cfg = as_config(cfg)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_weights:
            # GPT-2 reuses the input embedding matrix as the output projection: the same
            # vector space for "this token is here" and "this token comes next".
            self.out_head.weight = self.tok_emb.weight

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "GPTModel":
        return cls(preset_config(name, **overrides))

    def reset_parameters(self) -> None:
        """GPT-2's initialization: N(0, 0.02) weights, zero biases, and residual output
        projections scaled down by 1/sqrt(2 * n_layers) so the residual stream's variance does
        not grow with depth. (The book keeps PyTorch's defaults; this trains better from scratch.)"""
        residual_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual_out = name.endswith("att.out_proj") or name.endswith("ff.layers.2")
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual_out else 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameters counted once (a tied embedding/head matrix counts once)."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in params.values())

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty cache sized for this model (dtype and device of its weights)."""
        cfg = self.cfg
        weight = self.tok_emb.weight
        return KVCache(cfg.n_layers, batch_size, cfg.n_heads, cfg.head_dim,
                       max_len or cfg.context_length, dtype=weight.dtype, device=weight.device)

    def forward(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None,
                only_last: bool = False, targets: torch.Tensor | None = None) -> torch.Tensor:
        """in_idx: (b, T) token ids -> logits (b, T, vocab_size), or (b, 1, vocab_size) with only_last.

        With a `kv_cache`, `in_idx` holds only the new tokens; their positions continue after
        the cached ones.

        With `targets` (b, T) it returns the training loss instead (a scalar: the mean
        cross-entropy, ignoring targets of -100), computed by `linear_cross_entropy` without
        ever building the (b, T, vocab_size) logits; equal to
        ``F.cross_entropy(self(in_idx).flatten(0, 1), targets.flatten())``.
        """
        x = self.hidden_states(in_idx, kv_cache)
        if targets is not None:
            return linear_cross_entropy(x, self.out_head.weight, targets)
        if only_last:
            x = x[:, -1:, :]  # the head is the most expensive matmul: skip positions we don't need
        return self.out_head(x)  # (b, T, vocab_size)

    def hidden_states(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Everything but the output head: (b, T) token ids -> (b, T, emb_dim) after the final norm."""
        batch_size, seq_len = in_idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + seq_len > self.cfg.context_length:
            raise ValueError(
                f"Input of {start + seq_len} tokens is longer than the model's context_length "
                f"({self.cfg.context_length}). Keep only the last {self.cfg.context_length} tokens "
                "(generate() does this for you) or use a model with a longer context."
            )
        if kv_cache is None:
            positions = torch.arange(seq_len, device=in_idx.device)
        else:
            positions = kv_cache.positions(seq_len)  # (T,), or (b, T) for left-padded rows
        x = self.tok_emb(in_idx) + self.pos_emb(positions)  # (b, T, emb_dim)
        x = self.drop_emb(x)
        for layer_idx, block in enumerate(self.trf_blocks):
            x = block(x, kv_cache, layer_idx)
        if kv_cache is not None:
            kv_cache.advance(seq_len)
        return self.final_norm(x)


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
