"""Model configuration: one dataclass, the book's names, nanoGPT's names as aliases, and presets.

The book describes a model with a dict::

    GPT_CONFIG_124M = {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768,
                       "n_heads": 12, "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}

nanoGPT-style code (and seed 001) says ``GPTConfig(vocab_size=..., n_embd=..., n_layer=...,
n_head=..., block_size=...)``. Both describe the same thing, so `GPTConfig` accepts both and
exposes both sets of names; there is one model underneath.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

# nanoGPT / seed-001 name -> our (book) name
ALIASES = {
    "n_embd": "emb_dim",
    "n_layer": "n_layers",
    "n_head": "n_heads",
    "block_size": "context_length",
    "dropout": "drop_rate",
}


@dataclass(init=False)
class GPTConfig:
    vocab_size: int = 50257
    context_length: int = 1024  # longest input the model accepts (size of the position table)
    emb_dim: int = 768          # width of every token vector
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False      # bias in the query/key/value projection (True in OpenAI's GPT-2)
    tie_weights: bool = False   # share the token embedding matrix with the output head (GPT-2 does)
    # Switches of the decoder core that GPT-2 did not have (the "modern" training recipe sets them,
    # training/recipes.py); the defaults are GPT-2's, and a checkpoint without them means these.
    norm: str = "layernorm"     # "layernorm" | "rmsnorm"
    positions: str = "learned"  # "learned" (a position table) | "rope" (rotary, in the attention)
    rope_base: float = 10000.0
    mlp: str = "gelu"           # "gelu" | "relu2" (ReLU squared), both 4x wide | "swiglu" (8/3 x wide)
    bias: bool = True           # biases in the attention's output projection and the feed-forward
    qk_norm: bool = False       # RMS-normalize each head's queries and keys
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap)
    zero_init: bool = False     # projections into the residual stream (and an untied head) start at zero

    def __init__(self, **kwargs: Any):
        known = {f.name for f in fields(self)}
        for key, value in kwargs.items():
            name = ALIASES.get(key, key)
            if name not in known:
                raise TypeError(
                    f"GPTConfig got an unknown setting {key!r}. Known settings: "
                    f"{sorted(known)} (nanoGPT aliases: {sorted(ALIASES)})"
                )
            setattr(self, name, value)
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.emb_dim % self.n_heads != 0:
            raise ValueError(
                f"emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads}): "
                "each head gets emb_dim // n_heads dimensions"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        from llm_from_scratch.model.decoder import check_switches

        check_switches(self, "GPTConfig")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"head_dim = emb_dim // n_heads = {self.head_dim} must be even for RoPE")
        if self.logit_softcap is not None and not self.logit_softcap > 0:
            raise ValueError(f"logit_softcap must be a positive number or None, got {self.logit_softcap!r}")

    def changed_switches(self) -> dict[str, Any]:
        """The later switches (`MODERN_SWITCHES`) set to something else than GPT-2's, with their values."""
        defaults = GPTConfig.__dataclass_fields__
        return {name: getattr(self, name) for name in MODERN_SWITCHES if getattr(self, name) != defaults[name].default}

    def is_gpt2(self) -> bool:
        """True when the architecture is GPT-2's exactly (none of the later switches is set): only
        then do OpenAI's weights load and the Hugging Face GPT-2 export apply."""
        return not self.changed_switches()

    def mlp_hidden_dim(self) -> int:
        """4 x emb_dim; a SwiGLU feed-forward (three matrices) 8/3 x emb_dim, rounded up to a
        multiple of 32, so that both have about the same number of parameters."""
        if self.mlp == "swiglu":
            return -(-8 * self.emb_dim // 3 // 32) * 32
        return 4 * self.emb_dim

    # nanoGPT-style read access: config.n_embd, config.block_size, ...
    n_embd = property(lambda self: self.emb_dim)
    n_layer = property(lambda self: self.n_layers)
    n_head = property(lambda self: self.n_heads)
    block_size = property(lambda self: self.context_length)
    dropout = property(lambda self: self.drop_rate)

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def architecture(self):
        """GPT-2 as a configuration of the decoder core: LayerNorm, learned positions, GELU
        feed-forward 4x wide, biases everywhere (the qkv bias is optional), every head with its
        own keys and values; or what the switches after `tie_weights` choose instead."""
        from llm_from_scratch.model.decoder import Architecture

        return Architecture(
            vocab_size=self.vocab_size, context_length=self.context_length, emb_dim=self.emb_dim,
            n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_heads, head_dim=self.head_dim,
            hidden_dim=self.mlp_hidden_dim(), norm=self.norm, norm_eps=1e-5, positions=self.positions,
            mlp=self.mlp, qkv_bias=self.qkv_bias, out_bias=self.bias, mlp_bias=self.bias,
            tie_weights=self.tie_weights, drop_rate=self.drop_rate, rope_base=self.rope_base,
            qk_norm=self.qk_norm, logit_softcap=self.logit_softcap, zero_init=self.zero_init)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "GPTConfig":
        """Accept the book's dict (or a dict saved by `to_dict`)."""
        return cls(**dict(cfg))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> "GPTConfig":
        return GPTConfig(**{**self.to_dict(), **changes})


#: The fields above that GPT-2 did not have (see `GPTConfig.is_gpt2`).
MODERN_SWITCHES = ("norm", "positions", "rope_base", "mlp", "bias", "qk_norm", "logit_softcap", "zero_init")


def as_config(cfg: "GPTConfig | Mapping[str, Any]") -> GPTConfig:
    return cfg if isinstance(cfg, GPTConfig) else GPTConfig.from_dict(cfg)


# The book's dict for the 124M model, kept for learners who follow along.
GPT_CONFIG_124M = {
    "vocab_size": 50257, "context_length": 1024, "emb_dim": 768,
    "n_heads": 12, "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False,
}

# Presets. The gpt2* ones are OpenAI's GPT-2 architecture exactly (biased qkv, tied embeddings),
# so their weights load and export. The small ones are for training on a laptop CPU; their
# parameter counts depend on the tokenizer (vocab_size), see `docs/04-gpt-model.md`.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2":        dict(context_length=1024, emb_dim=768,  n_heads=12, n_layers=12, qkv_bias=True, tie_weights=True),
    "gpt2-medium": dict(context_length=1024, emb_dim=1024, n_heads=16, n_layers=24, qkv_bias=True, tie_weights=True),
    "gpt2-large":  dict(context_length=1024, emb_dim=1280, n_heads=20, n_layers=36, qkv_bias=True, tie_weights=True),
    "gpt2-xl":     dict(context_length=1024, emb_dim=1600, n_heads=25, n_layers=48, qkv_bias=True, tie_weights=True),
    "gpt-micro":   dict(context_length=128,  emb_dim=128,  n_heads=4,  n_layers=4,  drop_rate=0.0, tie_weights=True),
    "gpt-mini":    dict(context_length=256,  emb_dim=256,  n_heads=8,  n_layers=6,  drop_rate=0.1, tie_weights=True),
    "gpt-small":   dict(context_length=512,  emb_dim=512,  n_heads=8,  n_layers=8,  drop_rate=0.1, tie_weights=True),
}
# The book's size names for the GPT-2 family.
PRESET_ALIASES = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl",
                  "gpt2-small": "gpt2"}


def preset_config(name: str, **overrides: Any) -> GPTConfig:
    """`preset_config("gpt-mini", vocab_size=tokenizer.vocab_size)`"""
    key = PRESET_ALIASES.get(name, name)
    if key not in PRESETS:
        raise ValueError(
            f"Unknown model preset {name!r}. Choose one of: {', '.join(PRESETS)} "
            f"(or the book's sizes {', '.join(PRESET_ALIASES)})."
        )
    return GPTConfig(**{**PRESETS[key], **overrides})
