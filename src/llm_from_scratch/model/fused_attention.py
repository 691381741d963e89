"""The fast causal self-attention of every model family, with its KV cache.

It computes exactly what the teaching `attention.MultiHeadAttention` computes (a test proves
it, given the same weights), but faster:

* one fused matrix multiply produces queries, keys and values together (`qkv`), instead of
  three separate ones; its output rows are [queries; keys; values];
* `torch.nn.functional.scaled_dot_product_attention` does scaling, causal masking, softmax,
  dropout on the attention weights and the weighted sum in one optimized kernel, without
  materializing the mask buffer;
* an optional `KVCache` lets generation process one new token per step.

One class serves GPT-2, Llama and Qwen3; the configuration switches what differs between them:

| switch | GPT-2 | Llama / SmolLM2 | Qwen3 |
|---|---|---|---|
| key/value heads (`n_kv_heads`) | = query heads | fewer: grouped-query attention | fewer |
| biases (`qkv_bias`, `out_bias`) | yes | no | no |
| positions | added to the embeddings before the blocks | RoPE on queries and keys (`rope`) | RoPE |
| `qk_norm` | no | no | RMSNorm on each head's queries and keys |
| `sliding_window` | no | no (Mistral: yes) | optional |

Grouped-query attention (Ainslie et al., 2023): with n_kv_heads < n_heads, groups of query
heads share one key/value head, so the key/value projections and the KV cache are
n_heads / n_kv_heads times smaller; at generation time reading the cache is the bottleneck.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_from_scratch.model.kv_cache import KVCache, sliding_window_mask
from llm_from_scratch.model.layers import RMSNorm
from llm_from_scratch.model.rope import apply_rope


def _sdpa_supports_gqa() -> bool:
    """PyTorch >= 2.5 lets scaled_dot_product_attention share key/value heads itself (enable_gqa)."""
    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # pragma: no cover - a C function without a Python signature
        version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
        return version >= (2, 5)


_SDPA_HAS_GQA = _sdpa_supports_gqa()


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: (b, T, emb_dim) -> (b, T, out_dim).

    `rope` (cos, sin) is given by the model for the tokens of this call when it uses rotary
    positions; None for models with learned positions.
    """

    def __init__(self, emb_dim: int, n_heads: int, n_kv_heads: int | None = None, head_dim: int | None = None, *,
                 out_dim: int | None = None, qkv_bias: bool = False, out_bias: bool = False, qk_norm: bool = False,
                 norm_eps: float = 1e-6, dropout: float = 0.0, sliding_window: int | None = None):
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if head_dim is None:
            if emb_dim % n_heads != 0:
                raise ValueError(f"emb_dim ({emb_dim}) must be divisible by n_heads ({n_heads})")
            head_dim = emb_dim // n_heads
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.q_dim, self.kv_dim = n_heads * head_dim, n_kv_heads * head_dim
        self.dropout = dropout
        self.sliding_window = sliding_window
        # One projection for all three; its output rows are ordered [queries; keys; values].
        self.qkv = nn.Linear(emb_dim, self.q_dim + 2 * self.kv_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(self.q_dim, out_dim or emb_dim, bias=out_bias)
        if qk_norm:  # Qwen3: each head's queries and keys are RMS-normalized before RoPE
            self.q_norm = RMSNorm(head_dim, norm_eps)
            self.k_norm = RMSNorm(head_dim, norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        b, num_tokens, _ = x.shape                                            # x: (b, T, emb_dim)
        queries, keys, values = self.qkv(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        queries = queries.view(b, num_tokens, self.n_heads, self.head_dim)    # (b, T, H, hd)
        keys = keys.view(b, num_tokens, self.n_kv_heads, self.head_dim)       # (b, T, Hkv, hd)
        values = values.view(b, num_tokens, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            queries, keys = self.q_norm(queries), self.k_norm(keys)
        queries, keys, values = (t.transpose(1, 2) for t in (queries, keys, values))  # (b, heads, T, hd)
        if rope is not None:  # rotate queries and keys by their positions; values carry content only
            cos, sin = (t.to(queries.dtype) for t in rope)
            queries, keys = apply_rope(queries, cos, sin), apply_rope(keys, cos, sin)

        attn_mask, is_causal = None, num_tokens > 1  # plain causal attention over this call's tokens
        if kv_cache is not None:
            # With a cache, the cache says who sees whom (`prepare`, once per forward pass: after
            # a prefix, with left-padded rows, a sliding window); one new token after a prefix
            # may look at every cached column: no mask at all. The cache stores keys already
            # rotated, so old keys never need recomputing.
            attn_mask, is_causal = kv_cache.step_mask, kv_cache.step_is_causal
            keys, values = kv_cache.update(layer_idx, keys, values)          # (b, Hkv, past + T, hd)
        elif self.sliding_window is not None and num_tokens > self.sliding_window:
            attn_mask = sliding_window_mask(num_tokens, 0, self.sliding_window, x.device)
            is_causal = False

        dropout_p = self.dropout if self.training else 0.0
        grouped = self.n_kv_heads != self.n_heads
        if grouped and not _SDPA_HAS_GQA:  # pragma: no cover - torch < 2.5: copy each group's k/v
            groups = self.n_heads // self.n_kv_heads
            keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
            grouped = False
        extra = {"enable_gqa": True} if grouped else {}
        context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask,
                                                 dropout_p=dropout_p, is_causal=is_causal, **extra)
        context = context.transpose(1, 2).reshape(b, num_tokens, self.q_dim)  # (b, H, T, hd) -> (b, T, H*hd)
        return self.out_proj(context)                                          # (b, T, out_dim)


class FusedMultiHeadAttention(CausalSelfAttention):
    """GPT-2's attention with the teaching `MultiHeadAttention`'s constructor arguments:
    every head has its own keys and values, and the output projection has a bias."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        super().__init__(d_in, num_heads, num_heads, d_out // num_heads, out_dim=d_out, qkv_bias=qkv_bias,
                         out_bias=True, dropout=dropout)
        self.d_out = d_out
        self.num_heads = num_heads
        self.context_length = context_length
