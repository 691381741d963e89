"""A Llama-family model: what changed in decoder-only transformers after GPT-2.

The overall shape is GPT-2's (chapter 4): token embedding, a stack of pre-norm transformer blocks,
a final norm, a linear head to the vocabulary. Five parts are different:

    GPT-2                               Llama (and SmolLM2, Mistral, Qwen, ... with small variations)
    ---------------------------------   ------------------------------------------------------------
    LayerNorm (scale + shift)           RMSNorm (scale only, no mean subtraction)
    learned position embedding table    rotary position embedding (RoPE) applied to queries and keys
    GELU MLP, 4x wide                   SwiGLU MLP: silu(gate(x)) * up(x), then down
    every head has its own keys/values  grouped-query attention (GQA): heads share key/value heads
    biases in every Linear              no biases at all

The class and attribute names are those of our `GPTModel` (`tok_emb`, `trf_blocks[i].att/.ff/.norm1
/.norm2`, `final_norm`, `out_head`, `cfg.context_length`, `forward(in_idx, kv_cache, only_last,
targets)`, `hidden_states`, `new_kv_cache`), so `generation.generate`, the trainer and fine-tuning
code work with both.

Layout of one block (x is (b, T, emb_dim) throughout):

    x = x + att(norm1(x))      att: qkv projection -> RoPE on q, k -> causal SDPA (GQA) -> out_proj
    x = x + ff(norm2(x))       ff:  fc3(silu(fc1(x)) * fc2(x))

Loading real weights (Hugging Face safetensors, GGUF files) lives in `llm_from_scratch.weights.llama`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_from_scratch.model.kv_cache import KVCache
from llm_from_scratch.model.linear_cross_entropy import linear_cross_entropy

MODEL_TYPE = "llama"


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass
class LlamaConfig:
    """Hyperparameters of a Llama-style model, with the same names as `GPTConfig` where they overlap.

    `to_dict()` adds ``"model_type": "llama"`` so a checkpoint says which architecture it holds
    (a GPT checkpoint's config has no such key); `from_dict` accepts and checks it.
    """

    vocab_size: int = 49152
    context_length: int = 2048   # longest input (size of the precomputed RoPE tables)
    emb_dim: int = 576           # width of every token vector ("hidden_size" in HF)
    n_heads: int = 9             # query heads
    n_kv_heads: int = 3          # key/value heads; n_heads must be a multiple (GQA). = n_heads: plain MHA
    n_layers: int = 30
    hidden_dim: int = 1536       # width inside the SwiGLU feed-forward ("intermediate_size" in HF)
    rope_base: float = 10000.0   # RoPE's theta: the longest wavelength is about 2*pi*rope_base tokens
    rms_norm_eps: float = 1e-5
    tie_weights: bool = True     # share tok_emb and out_head (SmolLM2 does; Llama-2-7B does not)
    drop_rate: float = 0.0       # dropout on attention weights and residual branches (for fine-tuning)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_kv_heads", "n_layers", "hidden_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LlamaConfig.{name} must be a positive integer, got {value!r}")
        if self.emb_dim % self.n_heads != 0:
            raise ValueError(f"emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}): "
                             "each head gets emb_dim // n_heads dimensions")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim = emb_dim // n_heads = {self.head_dim} must be even: "
                             "RoPE rotates pairs of dimensions")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads}): "
                             "each key/value head serves an equal group of query heads")
        if not self.rope_base > 0:
            raise ValueError(f"rope_base must be positive, got {self.rope_base!r}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps must be positive, got {self.rms_norm_eps!r}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    @property
    def n_groups(self) -> int:
        """How many query heads share one key/value head."""
        return self.n_heads // self.n_kv_heads

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "LlamaConfig":
        cfg = dict(cfg)
        model_type = cfg.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"this configuration is for a {model_type!r} model, not a Llama model")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise TypeError(f"LlamaConfig got unknown settings {unknown}. Known settings: {sorted(known)}")
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **asdict(self)}

    def replace(self, **changes: Any) -> "LlamaConfig":
        return LlamaConfig.from_dict({**self.to_dict(), **changes})


# Published architectures. Their weights load with llm_from_scratch.weights.llama.
LLAMA_PRESETS: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M(-Instruct): 134.5M parameters.
    "smollm2-135m": dict(vocab_size=49152, context_length=8192, emb_dim=576, n_heads=9, n_kv_heads=3,
                         n_layers=30, hidden_dim=1536, rope_base=100000.0, rms_norm_eps=1e-5, tie_weights=True),
}


def is_llama_config(cfg: Any) -> bool:
    """True for a LlamaConfig or a dict saved by `LlamaConfig.to_dict()` (e.g. a checkpoint's model_config)."""
    if isinstance(cfg, LlamaConfig):
        return True
    return isinstance(cfg, Mapping) and cfg.get("model_type") == MODEL_TYPE


def as_llama_config(cfg: LlamaConfig | Mapping[str, Any]) -> LlamaConfig:
    return cfg if isinstance(cfg, LlamaConfig) else LlamaConfig.from_dict(cfg)


# --------------------------------------------------------------------------------------
# RMSNorm
# --------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm: divide each token vector by its RMS, then scale.

        y = weight * x / sqrt(mean(x^2) + eps)

    Unlike LayerNorm it neither subtracts the mean nor adds a shift. Zhang & Sennrich (2019) found
    the re-centering contributes little; dropping it saves a reduction and a parameter vector and
    trains as well. The statistics are computed in float32 even for bf16/fp16 activations: the
    mean of squares of a few hundred values overflows or loses precision in 16 bits.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


# --------------------------------------------------------------------------------------
# Rotary position embedding (RoPE)
# --------------------------------------------------------------------------------------


def rope_frequencies(head_dim: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """The head_dim / 2 rotation speeds theta_i = base^(-2i / head_dim), i = 0 .. head_dim/2 - 1 (float32)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (base ** exponents)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1), where x1/x2 are the first/second half of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + d/2]) of x by the angle position * theta_i.

    x: (b, heads, T, head_dim); cos, sin: (T, head_dim), broadcast over batch and heads (or
    (b, 1, T, head_dim) when each row has its own positions).
    This is the "rotate-half" pairing used by Hugging Face Llama. Meta's original code (and
    llama.cpp) pair neighbours (x[2i], x[2i+1]) instead; the two are the same model up to a fixed
    permutation of the query/key projection rows, which is why GGUF files store Q and K permuted
    (see `weights.llama.unpermute_qk_rows`).
    """
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables for every position up to context_length.

    Why RoPE instead of GPT-2's learned position table? A query at position m and a key at
    position n, both rotated by their own position, have a dot product that depends only on
    m - n: attention sees *relative* positions, there is no table to learn, and nothing ties the
    model to one maximal length (the tables are just recomputed).

    The tables are non-persistent buffers: they follow `.to(device)` but are not saved in
    state_dicts (they are a function of the config). They are kept in float32: if the model is
    cast to bf16, they are rebuilt in float32 on first use, because bf16 angles lose precision
    after a few hundred positions.
    """

    def __init__(self, head_dim: int, context_length: int, base: float):
        super().__init__()
        self.head_dim = head_dim
        self.context_length = context_length
        self.base = base
        if torch.empty(0).device.type == "meta":
            # Built inside `with torch.device("meta")` (the loaders do this to skip random init):
            # placeholders only; `rebuild()` computes the real tables once weights are loaded.
            cos = sin = torch.empty(context_length, head_dim)
        else:
            cos, sin = self._tables()
        self.register_buffer("cos", cos, persistent=False)  # (context_length, head_dim)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = rope_frequencies(self.head_dim, self.base, device)             # (head_dim/2,)
        positions = torch.arange(self.context_length, device=device, dtype=torch.float32)
        angles = torch.outer(positions, inv_freq)                                  # (ctx, head_dim/2)
        angles = torch.cat((angles, angles), dim=-1)                               # (ctx, head_dim)
        return angles.cos(), angles.sin()

    def rebuild(self) -> None:
        """Recompute the tables in float32 on the buffers' device (after a dtype cast or meta init)."""
        device = self.cos.device if self.cos.device.type != "meta" else torch.device("cpu")
        self.cos, self.sin = self._tables(device)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (float32) for these positions: (T,) -> (T, head_dim) each, shared by the batch;
        (b, T) (left-padded rows, see `KVCache.positions`) -> (b, 1, T, head_dim), one per row."""
        if self.cos.dtype != torch.float32 or self.cos.device.type == "meta":
            self.rebuild()
        cos, sin = self.cos[positions], self.sin[positions]
        if positions.dim() == 2:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over the heads
        return cos, sin


# --------------------------------------------------------------------------------------
# Grouped-query attention
# --------------------------------------------------------------------------------------

# PyTorch >= 2.5 lets scaled_dot_product_attention share key/value heads itself (enable_gqa).
def _sdpa_supports_gqa() -> bool:
    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # pragma: no cover - a C function without a Python signature
        version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
        return version >= (2, 5)


_SDPA_HAS_GQA = _sdpa_supports_gqa()


class GroupedQueryAttention(nn.Module):
    """Causal self-attention where groups of query heads share one key/value head.

    With n_heads query heads and n_kv_heads < n_heads key/value heads, the key/value projections
    and the KV cache are n_heads / n_kv_heads times smaller (3x for SmolLM2). At generation time
    reading the cache is the bottleneck, so GQA is mostly a speed/memory win; quality stays close
    to full multi-head attention (Ainslie et al., 2023). n_kv_heads == n_heads is plain MHA,
    n_kv_heads == 1 is multi-query attention.

    Like our GPT attention, one fused Linear `qkv` computes queries, keys and values; its output
    rows are [queries (n_heads * head_dim); keys (n_kv_heads * head_dim); values (same)].
    """

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_dim = cfg.n_heads * cfg.head_dim
        self.kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.dropout = cfg.drop_rate
        self.qkv = nn.Linear(cfg.emb_dim, self.q_dim + 2 * self.kv_dim, bias=False)
        self.out_proj = nn.Linear(self.q_dim, cfg.emb_dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        b, num_tokens, _ = x.shape                                         # x: (b, T, emb_dim)
        queries, keys, values = self.qkv(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        queries = queries.view(b, num_tokens, self.n_heads, self.head_dim).transpose(1, 2)   # (b, H, T, hd)
        keys = keys.view(b, num_tokens, self.n_kv_heads, self.head_dim).transpose(1, 2)      # (b, Hkv, T, hd)
        values = values.view(b, num_tokens, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (b, Hkv, T, hd)

        # Rotate queries and keys by their absolute positions; values carry content, not position.
        cos, sin = cos.to(queries.dtype), sin.to(queries.dtype)
        queries, keys = apply_rope(queries, cos, sin), apply_rope(keys, cos, sin)

        attn_mask, is_causal = None, num_tokens > 1  # plain causal attention over this call's tokens
        if kv_cache is not None:
            # After a cached prefix (or with left-padded rows) the cache says who sees whom,
            # exactly as in our GPT attention. It stores keys already rotated, so old keys never
            # need recomputing.
            attn_mask = kv_cache.attention_mask(num_tokens)
            is_causal = attn_mask is None and kv_cache.length == 0 and num_tokens > 1
            keys, values = kv_cache.update(layer_idx, keys, values)        # (b, Hkv, past + T, hd)

        dropout_p = self.dropout if self.training else 0.0
        if self.n_kv_heads == self.n_heads:
            context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask,
                                                     dropout_p=dropout_p, is_causal=is_causal)
        elif _SDPA_HAS_GQA:
            context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask,
                                                     dropout_p=dropout_p, is_causal=is_causal, enable_gqa=True)
        else:  # pragma: no cover - torch < 2.5: give every query head its own copy of its group's k/v
            groups = self.n_heads // self.n_kv_heads
            keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
            context = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask,
                                                     dropout_p=dropout_p, is_causal=is_causal)
        # context: (b, H, T, hd) -> (b, T, H * hd)
        context = context.transpose(1, 2).reshape(b, num_tokens, self.q_dim)
        return self.out_proj(context)                                      # (b, T, emb_dim)


# --------------------------------------------------------------------------------------
# SwiGLU feed-forward
# --------------------------------------------------------------------------------------


class SwiGLUFeedForward(nn.Module):
    """ff(x) = fc3(silu(fc1(x)) * fc2(x)): a gated MLP (Shazeer, 2020).

    fc1 ("gate") and fc2 ("up") both widen emb_dim -> hidden_dim; the SiLU of the gate multiplies
    the up projection element by element, so the network can switch features on and off per token;
    fc3 ("down") projects back. Three matrices instead of two, so hidden_dim is usually ~8/3 *
    emb_dim instead of 4x to keep the parameter count; at equal size it trains to a lower loss than
    GELU. Names fc1/fc2/fc3 as in the book's Llama code; HF calls them gate_proj/up_proj/down_proj.
    """

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)  # gate
        self.fc2 = nn.Linear(cfg.emb_dim, cfg.hidden_dim, bias=False)  # up
        self.fc3 = nn.Linear(cfg.hidden_dim, cfg.emb_dim, bias=False)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (b, T, emb) -> (b, T, hidden) -> (b, T, emb)
        return self.fc3(F.silu(self.fc1(x)) * self.fc2(x))


# --------------------------------------------------------------------------------------
# Block and model
# --------------------------------------------------------------------------------------


class LlamaBlock(nn.Module):
    """Pre-norm block, as in GPT-2: x + att(norm1(x)), then x + ff(norm2(x))."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.att = GroupedQueryAttention(cfg)
        self.ff = SwiGLUFeedForward(cfg)
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.rms_norm_eps)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.rms_norm_eps)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None, layer_idx: int = 0) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), cos, sin, kv_cache, layer_idx))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class LlamaModel(nn.Module):
    """token ids (b, T) -> logits (b, T, vocab_size). Same interface as `GPTModel`.

    No position embedding table: positions enter through RoPE inside every attention layer, so
    the only embedding is `tok_emb`. With `cfg.tie_weights`, `out_head.weight` *is*
    `tok_emb.weight`.
    """

    def __init__(self, cfg: LlamaConfig | Mapping[str, Any]):
        super().__init__()
        self.cfg = cfg = as_llama_config(cfg)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.context_length, cfg.rope_base)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[LlamaBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.rms_norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "LlamaModel":
        if name not in LLAMA_PRESETS:
            raise ValueError(f"unknown Llama preset {name!r}; choose one of {', '.join(LLAMA_PRESETS)}")
        return cls(LlamaConfig(**{**LLAMA_PRESETS[name], **overrides}))

    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, residual output projections scaled by 1/sqrt(2 * n_layers) (as our
        GPT), norms at 1. Only matters when training from scratch; loaders overwrite everything."""
        if self.tok_emb.weight.device.type == "meta":
            return
        residual_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual_out = name.endswith("att.out_proj") or name.endswith("ff.fc3")
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual_out else 0.02)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def tie_weights(self) -> None:
        """(Re-)tie the head to the embedding, e.g. after `load_state_dict(..., assign=True)`."""
        if self.cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameters counted once (a tied embedding/head matrix counts once)."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in params.values())

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty cache with n_kv_heads heads (n_heads / n_kv_heads times smaller than MHA's)."""
        cfg = self.cfg
        weight = self.tok_emb.weight
        return KVCache(cfg.n_layers, batch_size, cfg.n_kv_heads, cfg.head_dim,
                       max_len or cfg.context_length, dtype=weight.dtype, device=weight.device)

    def forward(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None,
                only_last: bool = False, targets: torch.Tensor | None = None) -> torch.Tensor:
        """in_idx: (b, T) token ids -> logits (b, T, vocab_size), or (b, 1, vocab_size) with only_last.

        With a `kv_cache`, `in_idx` holds only the new tokens; their positions continue after
        the cached ones. With `targets` (b, T) it returns the mean cross-entropy loss instead,
        without building the logits (as `GPTModel` does; see `linear_cross_entropy`).
        """
        x = self.hidden_states(in_idx, kv_cache)
        if targets is not None:
            return linear_cross_entropy(x, self.out_head.weight, targets)
        if only_last:
            x = x[:, -1:, :]  # the head is the most expensive matmul: skip positions we don't need
        return self.out_head(x)                         # (b, T, vocab_size)

    def hidden_states(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Everything but the output head: (b, T) token ids -> (b, T, emb_dim) after the final norm."""
        _, seq_len = in_idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + seq_len > self.cfg.context_length:
            raise ValueError(
                f"Input of {start + seq_len} tokens is longer than the model's context_length "
                f"({self.cfg.context_length}). Keep only the last {self.cfg.context_length} tokens "
                "(generate() does this for you) or build the model with a larger context_length."
            )
        if kv_cache is None:
            positions = torch.arange(seq_len, device=in_idx.device)
        else:
            positions = kv_cache.positions(seq_len)     # (T,), or (b, T) for left-padded rows
        cos, sin = self.rope(positions)                 # shared by all layers
        x = self.drop_emb(self.tok_emb(in_idx))         # (b, T, emb_dim)
        for layer_idx, block in enumerate(self.trf_blocks):
            x = block(x, cos, sin, kv_cache, layer_idx)
        if kv_cache is not None:
            kv_cache.advance(seq_len)
        return self.final_norm(x)
