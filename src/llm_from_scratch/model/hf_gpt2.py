"""Converting between Hugging Face `transformers`' GPT-2 and our `GPTModel`.

Two differences in layout, none in math:

* GPT-2's original code stores its linear layers as `Conv1D` with weights shaped
  (in_features, out_features); `nn.Linear` stores (out_features, in_features): transpose.
* `c_attn` already holds query, key and value side by side, which is exactly our fused `qkv`.

Names map as follows (``h.{i}`` is block i)::

    transformer.wte            -> tok_emb              transformer.wpe  -> pos_emb
    h.{i}.ln_1 weight/bias     -> norm1 scale/shift    h.{i}.ln_2       -> norm2
    h.{i}.attn.c_attn          -> att.qkv              h.{i}.attn.c_proj -> att.out_proj
    h.{i}.mlp.c_fc             -> ff.layers.0          h.{i}.mlp.c_proj -> ff.layers.2
    transformer.ln_f           -> final_norm           lm_head          -> out_head (tied to wte)
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from llm_from_scratch.model.config import GPTConfig

_BLOCK_NAMES = {  # HF suffix -> (our suffix, is Conv1D weight that needs a transpose)
    "ln_1.weight": ("norm1.scale", False), "ln_1.bias": ("norm1.shift", False),
    "ln_2.weight": ("norm2.scale", False), "ln_2.bias": ("norm2.shift", False),
    "attn.c_attn.weight": ("att.qkv.weight", True), "attn.c_attn.bias": ("att.qkv.bias", False),
    "attn.c_proj.weight": ("att.out_proj.weight", True), "attn.c_proj.bias": ("att.out_proj.bias", False),
    "mlp.c_fc.weight": ("ff.layers.0.weight", True), "mlp.c_fc.bias": ("ff.layers.0.bias", False),
    "mlp.c_proj.weight": ("ff.layers.2.weight", True), "mlp.c_proj.bias": ("ff.layers.2.bias", False),
}
_TOP_NAMES = {
    "wte.weight": "tok_emb.weight", "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "final_norm.scale", "ln_f.bias": "final_norm.shift",
}


def config_from_hf(hf_config: Any) -> GPTConfig:
    """Our config from a `transformers.GPT2Config` (or its dict form, e.g. a `config.json`)."""
    get = hf_config.get if isinstance(hf_config, Mapping) else lambda k, d=None: getattr(hf_config, k, d)
    n_embd = get("n_embd")
    unsupported = {
        "activation_function": (get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "n_inner": (get("n_inner"), (None, 4 * n_embd)),
        "layer_norm_epsilon": (get("layer_norm_epsilon", 1e-5), (1e-5,)),
        "scale_attn_by_inverse_layer_idx": (get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "reorder_and_upcast_attn": (get("reorder_and_upcast_attn", False), (False,)),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise ValueError(f"GPT-2 config has {key}={value!r}; GPTModel supports only {allowed}")
    return GPTConfig(
        vocab_size=get("vocab_size"), context_length=get("n_positions"), emb_dim=n_embd,
        n_heads=get("n_head"), n_layers=get("n_layer"), drop_rate=get("resid_pdrop", 0.1),
        qkv_bias=True, tie_weights=bool(get("tie_word_embeddings", True)),
    )


def state_dict_from_hf(hf_state: Mapping[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Rename (and transpose) a GPT2LMHeadModel / GPT2Model state dict into ours."""
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in hf_state.items():
        key = name.removeprefix("transformer.")
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old checkpoints store the causal mask as a buffer; we build it on the fly
        if key == "lm_head.weight":
            ours["out_head.weight"] = tensor
        elif key in _TOP_NAMES:
            ours[_TOP_NAMES[key]] = tensor
        elif key.startswith("h."):
            _, layer, suffix = key.split(".", 2)
            if suffix not in _BLOCK_NAMES:
                raise KeyError(f"Unexpected GPT-2 weight {name!r}")
            our_suffix, transpose = _BLOCK_NAMES[suffix]
            ours[f"trf_blocks.{layer}.{our_suffix}"] = tensor.t() if transpose else tensor
        else:
            raise KeyError(f"Unexpected GPT-2 weight {name!r}")
    if "out_head.weight" not in ours:  # GPT-2 ties its head to the token embedding
        ours["out_head.weight"] = ours["tok_emb.weight"]
    expected_blocks = {f"trf_blocks.{i}.{s}" for i in range(cfg.n_layers) for s, _ in _BLOCK_NAMES.values()}
    missing = sorted(expected_blocks - ours.keys())
    if missing:
        raise KeyError(f"GPT-2 state dict is missing {len(missing)} weights, e.g. {missing[:3]}")
    return ours


def state_dict_to_hf(our_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reverse mapping, for exporting our models to `GPT2LMHeadModel`."""
    top = {v: k for k, v in _TOP_NAMES.items()}
    block = {v[0]: (k, v[1]) for k, v in _BLOCK_NAMES.items()}
    hf: dict[str, torch.Tensor] = {}
    for name, tensor in our_state.items():
        if name == "out_head.weight":
            hf["lm_head.weight"] = tensor
        elif name in top:
            hf["transformer." + top[name]] = tensor
        elif name.startswith("trf_blocks."):
            _, layer, suffix = name.split(".", 2)
            hf_suffix, transpose = block[suffix]
            hf[f"transformer.h.{layer}.{hf_suffix}"] = tensor.t().contiguous() if transpose else tensor
    return hf


def gpt_from_hf_model(hf_model) -> "GPTModel":
    """Build a `GPTModel` holding the weights of an in-memory `transformers` GPT-2 model."""
    from llm_from_scratch.model.gpt import GPTModel

    cfg = config_from_hf(hf_model.config)
    model = GPTModel(cfg)
    state = state_dict_from_hf(hf_model.state_dict(), cfg)
    if cfg.tie_weights:
        state.pop("out_head.weight", None)
    result = model.load_state_dict(state, strict=False)
    unexpected = [k for k in result.missing_keys if not (cfg.tie_weights and k == "out_head.weight")]
    if unexpected or result.unexpected_keys:
        raise KeyError(f"weights did not match: missing {unexpected}, unexpected {result.unexpected_keys}")
    return model
