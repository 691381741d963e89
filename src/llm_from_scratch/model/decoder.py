"""The one decoder-only language model every family is built from (GPT-2, Llama, Qwen3, ...).

    token ids (b, T)
      -> token embedding (+ learned position embedding, for GPT-2)   (b, T, emb_dim)
      -> dropout
      -> n_layers x DecoderBlock:                                  (b, T, emb_dim)
             x = x + attention(norm1(x))      (RoPE inside, for Llama-family models)
             x = x + feed_forward(norm2(x))
      -> final norm
      -> output head (linear to the vocabulary)                    (b, T, vocab_size) = logits

Everything that differs between families is a switch of `Architecture`: which norm (LayerNorm
or RMSNorm), how positions enter (a learned table or RoPE with its base and scaling), the
attention's key/value heads, biases, QK-norm and sliding window, the feed-forward (GELU or
SwiGLU), and whether the head shares the embedding matrix. A family is then only a
configuration class with an `architecture()` method (`config.py`: GPT-2, `llama.py`: Llama,
`qwen3.py`: Qwen3) plus a map from its published weight names to ours (`weights/`).

Attribute names are the book's (`tok_emb`, `pos_emb`, `trf_blocks`, `att`, `ff`, `norm1`,
`norm2`, `final_norm`, `out_head`), so checkpoints of every earlier version keep loading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from llm_from_scratch.model.fused_attention import CausalSelfAttention
from llm_from_scratch.model.kv_cache import KVCache
from llm_from_scratch.model.layers import FeedForward, LayerNorm, RMSNorm, SwiGLUFeedForward
from llm_from_scratch.model.linear_cross_entropy import linear_cross_entropy, soft_cap
from llm_from_scratch.model.native_decode import native_decoder_for, native_step_for
from llm_from_scratch.model.rope import RotaryEmbedding


#: The values each named switch of the core accepts.
SWITCH_CHOICES = {"norm": ("layernorm", "rmsnorm"), "positions": ("learned", "rope"), "mlp": ("gelu", "relu2", "swiglu")}


def check_switches(config, owner: str) -> None:
    """A clear ValueError when `config` (an Architecture or a family's config) sets one of the
    named switches to a value the core does not have."""
    for name, allowed in SWITCH_CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{owner}.{name} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")


@dataclass(frozen=True)
class Architecture:
    """Every switch of the decoder core; each family's config says how to set them."""
    vocab_size: int
    context_length: int
    emb_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int               # width inside the feed-forward
    norm: str                     # "layernorm" | "rmsnorm"
    norm_eps: float
    positions: str                # "learned" | "rope"
    mlp: str                      # "gelu" | "swiglu"
    qkv_bias: bool
    out_bias: bool                # bias of the attention's output projection
    mlp_bias: bool
    tie_weights: bool
    drop_rate: float
    rope_base: float = 10000.0
    rope_scaling: float = 1.0
    qk_norm: bool = False
    sliding_window: int | None = None
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap) (Gemma 2, modded-nanogpt)
    zero_init: bool = False       # residual-stream projections (and an untied head) start at zero

    def __post_init__(self) -> None:
        check_switches(self, "Architecture")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even: RoPE rotates pairs of dimensions")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window must be a positive number of tokens, got {self.sliding_window}")


def make_norm(arch: Architecture, dim: int) -> nn.Module:
    return LayerNorm(dim, arch.norm_eps) if arch.norm == "layernorm" else RMSNorm(dim, arch.norm_eps)


class DecoderBlock(nn.Module):
    """Pre-norm block: x + attention(norm1(x)), then x + feed_forward(norm2(x)).

    The residual ("shortcut") connections let gradients flow straight through deep stacks.
    """

    def __init__(self, arch: Architecture):
        super().__init__()
        self.att = CausalSelfAttention(arch.emb_dim, arch.n_heads, arch.n_kv_heads, arch.head_dim,
                                       qkv_bias=arch.qkv_bias, out_bias=arch.out_bias, qk_norm=arch.qk_norm,
                                       norm_eps=arch.norm_eps, dropout=arch.drop_rate,
                                       sliding_window=arch.sliding_window)
        if arch.mlp in ("gelu", "relu2"):
            self.ff = FeedForward(arch.emb_dim, arch.hidden_dim, activation=arch.mlp, bias=arch.mlp_bias)
        else:
            self.ff = SwiGLUFeedForward(arch.emb_dim, arch.hidden_dim, bias=arch.mlp_bias)
        self.norm1 = make_norm(arch, arch.emb_dim)
        self.norm2 = make_norm(arch, arch.emb_dim)
        self.drop_shortcut = nn.Dropout(arch.drop_rate)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # x: (b, T, emb_dim) throughout
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache, layer_idx, rope))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class DecoderLM(nn.Module):
    """token ids (b, T) -> logits (b, T, vocab_size), for any family's configuration.

    `cfg` is the family's configuration object (`GPTConfig`, `LlamaConfig`, `Qwen3Config`); it
    is kept as `model.cfg` (checkpoints record `cfg.to_dict()`), and `cfg.architecture()` says
    how to build the model.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.arch = arch = cfg.architecture()
        self.tok_emb = nn.Embedding(arch.vocab_size, arch.emb_dim)
        if arch.positions == "learned":
            self.pos_emb = nn.Embedding(arch.context_length, arch.emb_dim)
        else:
            self.rope = RotaryEmbedding(arch.head_dim, arch.context_length, arch.rope_base, arch.rope_scaling)
        self.drop_emb = nn.Dropout(arch.drop_rate)
        self.trf_blocks = nn.Sequential(*[DecoderBlock(arch) for _ in range(arch.n_layers)])
        self.final_norm = make_norm(arch, arch.emb_dim)
        self.out_head = nn.Linear(arch.emb_dim, arch.vocab_size, bias=False)
        self.reset_parameters()
        self.tie_weights()

    def reset_parameters(self) -> None:
        """GPT-2's initialization: N(0, 0.02) weights, zero biases, norms at 1 (and 0), and the
        projections back into the residual stream scaled down by 1/sqrt(2 * n_layers) so the
        residual stream's variance does not grow with depth. (The book keeps PyTorch's
        defaults; this trains better from scratch.) Loaders of pretrained weights overwrite it.

        With `zero_init` those projections, and an untied head, start at exactly zero instead
        (modded-nanogpt): every block begins as the identity and the first logits are uniform;
        the gradients still reach them, and the blocks grow in as they learn."""
        if self.tok_emb.weight.device.type == "meta":
            return
        residual_std = 0.0 if self.arch.zero_init else 0.02 / math.sqrt(2 * self.arch.n_layers)
        residual_out = {id(m) for block in self.trf_blocks for m in (block.att.out_proj, block.ff.output_layer)}
        if self.arch.zero_init and not self.arch.tie_weights:
            residual_out.add(id(self.out_head))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if id(module) in residual_out else 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def tie_weights(self) -> None:
        """With a tied configuration the head reuses the input embedding matrix (GPT-2 and
        SmolLM2 do): the same vector space for "this token is here" and "this token comes next".
        Call again after `load_state_dict(..., assign=True)`, which unties them."""
        if self.arch.tie_weights and isinstance(self.tok_emb, nn.Embedding):  # (quantized: already shared)
            self.out_head.weight = self.tok_emb.weight

    def _apply(self, fn, recurse=True):
        # .to(...), .float(), .cuda(): the native step's pointers would be stale; the next cache rebuilds it
        self.__dict__.pop("native_decoder", None)
        return super()._apply(fn, recurse)

    def __getstate__(self):
        # copy.deepcopy (DPO's frozen reference) and pickle: the native step holds C pointers into
        # *these* weights, so a copy leaves it behind and builds its own with its next cache
        state = dict(self.__dict__)
        state.pop("native_decoder", None)
        return state

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameters counted once (a tied embedding/head matrix counts once)."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in params.values())

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty cache sized for this model (n_kv_heads heads; the dtype and device of its
        activations, which are those of its norms also when the matrices are quantized).

        With a compiled decode step (`generation.compiled.compile_decoding`) the cache has a fixed
        width, rounded up to a power of two (at most the context), so that generations of
        different lengths share one compiled graph."""
        arch, weight = self.arch, next(self.final_norm.parameters())
        max_len = max_len or arch.context_length
        fixed = self.__dict__.get("compiled_layers") is not None
        if fixed:
            max_len = min(arch.context_length, 1 << max(max_len - 1, 1).bit_length())
        if not fixed:  # the native one-token step, described for the model as it is now (or None)
            self.__dict__["native_decoder"] = native_decoder_for(self)
        return KVCache(arch.n_layers, batch_size, arch.n_kv_heads, arch.head_dim, max_len,
                       dtype=weight.dtype, device=weight.device, fixed_width=fixed)

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
            if not isinstance(self.out_head, nn.Linear):
                raise ValueError("this model is quantized for inference (llm_from_scratch.quantize): train "
                                 "the float model, and quantize it when loading it for generation")
            return linear_cross_entropy(x, self.out_head.weight, targets, softcap=self.arch.logit_softcap,
                                        bias=self.logit_offset)
        if only_last:
            x = x[:, -1:, :]  # the head is the most expensive matmul: skip positions we don't need
        return self.logits(x)  # (b, T, vocab_size)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output head on final hidden states (b, T, emb_dim) -> (b, T, vocab_size); with
        `logit_softcap`, squashed smoothly into (-cap, cap): no logit can run away in training;
        plus `logit_offset` when the model has one (a compact vocabulary: model/compact_vocab.py)."""
        logits = soft_cap(self.out_head(x), self.arch.logit_softcap)
        if self.logit_offset is not None:
            logits = logits + self.logit_offset.to(device=logits.device, dtype=logits.dtype)
        return logits

    #: (vocab,) float32 added to the logits, or None. A plain attribute, not a buffer: not saved
    #: with the weights, and not rounded by .to(torch.bfloat16) (see set_logit_offset).
    logit_offset: torch.Tensor | None = None

    #: Decoding samples only ids below this (None: all): a compact vocabulary's reserved id stands
    #: for any unseen token and is never written (set by compact_vocab.attach_vocabulary).
    generation_vocab_size: int | None = None

    def set_logit_offset(self, offset: torch.Tensor | None) -> None:
        """A constant added to every logit row (vocab,), not trained and not saved with the weights:
        it is derived from the tokenizer (`compact_vocab.attach_vocabulary`). None removes it."""
        self.logit_offset = None if offset is None else torch.as_tensor(offset, dtype=torch.float32)

    def hidden_states(self, in_idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Everything but the output head: (b, T) token ids -> (b, T, emb_dim) after the final norm.

        The Python bookkeeping (checks, the cache's `prepare` and `advance`) happens here; the
        tensor work is `layers`, which a compiled decode step replaces for one-token steps."""
        _, seq_len = in_idx.shape
        context = self.arch.context_length
        start = kv_cache.length if kv_cache is not None else 0
        if start + seq_len > context:
            raise ValueError(
                f"Input of {start + seq_len} tokens is longer than the model's context_length "
                f"({context}). Keep only the last {context} tokens (generate() does this for you) "
                "or use a model with a longer context."
            )
        if kv_cache is None:
            positions = torch.arange(seq_len, device=in_idx.device)
        else:
            kv_cache.prepare(seq_len, self.arch.sliding_window)
            positions = kv_cache.step_positions      # (T,), or (b, T) for left-padded rows
        run = self.layers
        compiled = self.__dict__.get("compiled_layers")
        if compiled is not None and seq_len == 1 and kv_cache is not None and kv_cache.fixed_width:
            run = compiled
        else:  # one token: all blocks in one C call; a prompt: BLAS products with C in between
            run = native_step_for(self, in_idx, kv_cache) or run  # (model/native_decode.py; None: PyTorch)
        x = run(in_idx, positions, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(seq_len)
        return x

    def layers(self, in_idx: torch.Tensor, positions: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """Token ids (b, T) at `positions` -> (b, T, emb_dim): embedding, the blocks, the final norm."""
        x = self.tok_emb(in_idx)                     # (b, T, emb_dim)
        rope = None
        if self.arch.positions == "learned":
            x = x + self.pos_emb(positions)
        else:
            rope = self.rope(positions)              # cos, sin: shared by all layers
        x = self.drop_emb(x)
        for layer_idx, block in enumerate(self.trf_blocks):
            x = block(x, kv_cache, layer_idx, rope)
        return self.final_norm(x)
