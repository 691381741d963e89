"""The fast multi-head causal self-attention used by `GPTModel`.

It computes exactly what the teaching `attention.MultiHeadAttention` computes (a test proves
it, given the same weights), but faster:

* one fused matrix multiply produces queries, keys and values together (`qkv`), instead of
  three separate ones;
* `torch.nn.functional.scaled_dot_product_attention` does scaling, causal masking, softmax,
  dropout on the attention weights and the weighted sum in one optimized kernel (FlashAttention
  or memory-efficient attention when available), without materializing the mask buffer;
* an optional `KVCache` lets generation process one new token per step.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_from_scratch.model.kv_cache import KVCache


class FusedMultiHeadAttention(nn.Module):
    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length
        self.dropout = dropout
        # One projection for all three; its output rows are ordered [query; key; value].
        self.qkv = nn.Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        b, num_tokens, _ = x.shape  # x: (b, T, d_in)

        qkv = self.qkv(x)  # (b, T, 3 * d_out)
        # (b, T, 3, heads, head_dim) -> (3, b, heads, T, head_dim)
        qkv = qkv.view(b, num_tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        queries, keys, values = qkv.unbind(0)  # each (b, heads, T, head_dim)

        attn_mask, is_causal = None, num_tokens > 1  # plain causal attention over this call's tokens
        if kv_cache is not None:
            # After a cached prefix (or with left-padded rows) the cache says who sees whom;
            # one new token after a prefix may look at every cached position: no mask at all.
            attn_mask = kv_cache.attention_mask(num_tokens)
            is_causal = attn_mask is None and kv_cache.length == 0 and num_tokens > 1
            keys, values = kv_cache.update(layer_idx, keys, values)  # (b, heads, past + T, head_dim)

        context = F.scaled_dot_product_attention(
            queries, keys, values,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # (b, heads, T, head_dim)
        context = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)  # (b, T, d_out)
        return self.out_proj(context)
