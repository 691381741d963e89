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

Like GPT-2, Llama is a configuration of the project's one decoder core (`decoder.py`): this
module holds `LlamaConfig` (whose `architecture()` sets the five switches above), the presets,
and `LlamaModel`, the core built from a `LlamaConfig`. The building blocks live where every
family finds them: `layers.py` (RMSNorm, SwiGLU), `rope.py`, `fused_attention.py` (attention with
grouped key/value heads). Names are those of our `GPTModel` (`tok_emb`, `trf_blocks[i].att/.ff/
.norm1/.norm2`, `final_norm`, `out_head`), so generation, the trainer and fine-tuning code work
with both.

Layout of one block (x is (b, T, emb_dim) throughout):

    x = x + att(norm1(x))      att: qkv projection -> RoPE on q, k -> causal SDPA (GQA) -> out_proj
    x = x + ff(norm2(x))       ff:  fc3(silu(fc1(x)) * fc2(x))

Loading real weights (Hugging Face safetensors, GGUF files) lives in `llm_from_scratch.weights.llama`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping

from llm_from_scratch.model.decoder import Architecture, DecoderLM
from llm_from_scratch.model.layers import RMSNorm, SwiGLUFeedForward
from llm_from_scratch.model.rope import RotaryEmbedding, apply_rope, rope_frequencies, rotate_half

MODEL_TYPE = "llama"
__all__ = ["LlamaConfig", "LlamaModel", "LLAMA_PRESETS", "LLAMA_TRAIN_PRESETS", "is_llama_config", "as_llama_config",
           "RMSNorm", "SwiGLUFeedForward", "RotaryEmbedding", "apply_rope", "rope_frequencies", "rotate_half"]


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
    head_dim: int | None = None  # width of one head; None: emb_dim // n_heads (Qwen3 sets its own)
    qk_norm: bool = False        # RMSNorm on each head's queries and keys (Qwen3)
    sliding_window: int | None = None  # each token attends to at most this many recent tokens
    rope_scaling: float = 1.0    # linear position interpolation: positions are divided by this

    model_type: ClassVar[str] = MODEL_TYPE  # what checkpoints record, to rebuild the right family

    def __post_init__(self) -> None:
        # A head size that follows from emb_dim / n_heads is not stored (to_dict leaves it out),
        # so `replace(emb_dim=...)` recomputes it.
        self._derived_head_dim = self.head_dim is None
        if self.head_dim is None and isinstance(self.emb_dim, int) and isinstance(self.n_heads, int) \
                and self.n_heads > 0 and self.emb_dim % self.n_heads == 0:
            self.head_dim = self.emb_dim // self.n_heads
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_kv_heads", "n_layers", "hidden_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LlamaConfig.{name} must be a positive integer, got {value!r}")
        if self.head_dim is None:
            raise ValueError(f"emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}): "
                             "each head gets emb_dim // n_heads dimensions (or set head_dim)")
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise ValueError(f"head_dim must be a positive integer, got {self.head_dim!r}")
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
    def n_groups(self) -> int:
        """How many query heads share one key/value head."""
        return self.n_heads // self.n_kv_heads

    def architecture(self) -> Architecture:
        """The decoder core's switches for this family: RMSNorm, RoPE, SwiGLU, no biases,
        grouped key/value heads (and QK-norm or a sliding window where configured)."""
        return Architecture(
            vocab_size=self.vocab_size, context_length=self.context_length, emb_dim=self.emb_dim,
            n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, head_dim=self.head_dim,
            hidden_dim=self.hidden_dim, norm="rmsnorm", norm_eps=self.rms_norm_eps, positions="rope", mlp="swiglu",
            qkv_bias=False, out_bias=False, mlp_bias=False, tie_weights=self.tie_weights, drop_rate=self.drop_rate,
            rope_base=self.rope_base, rope_scaling=self.rope_scaling, qk_norm=self.qk_norm,
            sliding_window=self.sliding_window)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "LlamaConfig":
        cfg = dict(cfg)
        model_type = cfg.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"this configuration is for a {model_type!r} model, not a "
                             f"{cls.__name__.removesuffix('Config')} model")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise TypeError(f"{cls.__name__} got unknown settings {unknown}. Known settings: {sorted(known)}")
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if self._derived_head_dim:
            values.pop("head_dim")
        return {"model_type": self.model_type, **values}

    def replace(self, **changes: Any) -> "LlamaConfig":
        return type(self).from_dict({**self.to_dict(), **changes})


# Published architectures. Their weights load with llm_from_scratch.weights.llama.
LLAMA_PRESETS: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M(-Instruct): 134.5M parameters.
    "smollm2-135m": dict(vocab_size=49152, context_length=8192, emb_dim=576, n_heads=9, n_kv_heads=3,
                         n_layers=30, hidden_dim=1536, rope_base=100000.0, rms_norm_eps=1e-5, tie_weights=True),
}


# Small Llama-architecture models to train from scratch (`llmfs train --model_type llama-micro`):
# the sizes of the GPT presets of the same name, with RoPE, RMSNorm, SwiGLU and 2 key/value heads.
LLAMA_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "llama-micro": dict(context_length=128, emb_dim=128, n_heads=4, n_kv_heads=2, n_layers=4, hidden_dim=352,
                        rope_base=10000.0, tie_weights=True, drop_rate=0.0),
}


def is_llama_config(cfg: Any) -> bool:
    """True for a LlamaConfig or a dict saved by `LlamaConfig.to_dict()` (e.g. a checkpoint's model_config)."""
    if isinstance(cfg, LlamaConfig):
        return True
    return isinstance(cfg, Mapping) and cfg.get("model_type") == MODEL_TYPE


def as_llama_config(cfg: LlamaConfig | Mapping[str, Any]) -> LlamaConfig:
    return cfg if isinstance(cfg, LlamaConfig) else LlamaConfig.from_dict(cfg)


class LlamaModel(DecoderLM):
    """token ids (b, T) -> logits (b, T, vocab_size): the decoder core built from a `LlamaConfig`.

    No position embedding table: positions enter through RoPE inside every attention layer
    (`model.rope` holds the tables), so the only embedding is `tok_emb`. With
    `cfg.tie_weights`, `out_head.weight` *is* `tok_emb.weight`.
    """

    config_class: ClassVar[type] = LlamaConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {**LLAMA_PRESETS, **LLAMA_TRAIN_PRESETS}

    def __init__(self, cfg: LlamaConfig | Mapping[str, Any]):
        config_class = type(self).config_class
        super().__init__(cfg if isinstance(cfg, config_class) else config_class.from_dict(cfg))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "LlamaModel":
        if name not in cls.presets:
            raise ValueError(f"unknown {cls.config_class.model_type} preset {name!r}; choose one of "
                             f"{', '.join(cls.presets)}")
        return cls(cls.config_class(**{**cls.presets[name], **overrides}))
