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

#: The one GPT-2 name table: Hugging Face suffix inside ``h.{i}.`` -> (our suffix inside
#: ``trf_blocks.{i}.``, True for a Conv1D weight that needs a transpose). `weights.gpt2` (loading
#: OpenAI's files) and `export.hf` (writing transformers' files) use it too.
HF_BLOCK_NAMES = {
    "ln_1.weight": ("norm1.scale", False), "ln_1.bias": ("norm1.shift", False),
    "ln_2.weight": ("norm2.scale", False), "ln_2.bias": ("norm2.shift", False),
    "attn.c_attn.weight": ("att.qkv.weight", True), "attn.c_attn.bias": ("att.qkv.bias", False),
    "attn.c_proj.weight": ("att.out_proj.weight", True), "attn.c_proj.bias": ("att.out_proj.bias", False),
    "mlp.c_fc.weight": ("ff.layers.0.weight", True), "mlp.c_fc.bias": ("ff.layers.0.bias", False),
    "mlp.c_proj.weight": ("ff.layers.2.weight", True), "mlp.c_proj.bias": ("ff.layers.2.bias", False),
}
#: Hugging Face names outside the blocks (without ``transformer.``) -> ours. The head
#: ``lm_head.weight`` is ``out_head.weight``; GPT-2 ties it to ``wte``.
HF_TOP_NAMES = {
    "wte.weight": "tok_emb.weight", "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "final_norm.scale", "ln_f.bias": "final_norm.shift",
    "lm_head.weight": "out_head.weight",
}
_OUR_BLOCK_NAMES = {ours: (hf, transpose) for hf, (ours, transpose) in HF_BLOCK_NAMES.items()}
_OUR_TOP_NAMES = {ours: hf for hf, ours in HF_TOP_NAMES.items()}


def hf_to_our_name(hf_name: str) -> tuple[str, bool]:
    """``h.3.attn.c_attn.weight`` -> (``trf_blocks.3.att.qkv.weight``, True = transpose it).

    Accepts names with or without ``transformer.``; KeyError for a name GPT-2 does not have.
    """
    name = hf_name.removeprefix("transformer.")
    if name in HF_TOP_NAMES:
        return HF_TOP_NAMES[name], False
    block, layer, suffix = name.split(".", 2) if name.count(".") >= 2 else ("", "", name)
    if block != "h" or not layer.isdigit() or suffix not in HF_BLOCK_NAMES:
        raise KeyError(f"Unexpected GPT-2 weight {hf_name!r}")
    our_suffix, transpose = HF_BLOCK_NAMES[suffix]
    return f"trf_blocks.{layer}.{our_suffix}", transpose


def our_to_hf_name(our_name: str) -> tuple[str, bool]:
    """``trf_blocks.3.att.qkv.weight`` -> (``h.3.attn.c_attn.weight``, True); the reverse of `hf_to_our_name`."""
    if our_name in _OUR_TOP_NAMES:
        return _OUR_TOP_NAMES[our_name], False
    _, layer, suffix = our_name.split(".", 2)
    hf_suffix, transpose = _OUR_BLOCK_NAMES[suffix]
    return f"h.{layer}.{hf_suffix}", transpose


def gpt2_state_keys(cfg: GPTConfig) -> list[str]:
    """Our state-dict names of a GPT-2-shaped `GPTModel` with this config (qkv bias if it has one)."""
    keys = [ours for ours in HF_TOP_NAMES.values()]
    for i in range(cfg.n_layers):
        keys += [f"trf_blocks.{i}.{ours}" for ours, _ in HF_BLOCK_NAMES.values()
                 if cfg.qkv_bias or ours != "att.qkv.bias"]
    return keys


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
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old checkpoints store the causal mask as a buffer; we build it on the fly
        our_name, transpose = hf_to_our_name(name)
        ours[our_name] = tensor.t() if transpose else tensor
    if "out_head.weight" not in ours:  # GPT-2 ties its head to the token embedding
        ours["out_head.weight"] = ours["tok_emb.weight"]
    missing = [key for key in gpt2_state_keys(cfg) if key not in ours]
    if missing:
        raise KeyError(f"GPT-2 state dict is missing {len(missing)} weights, e.g. {missing[:3]}")
    return ours


def state_dict_to_hf(our_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reverse mapping, for exporting our models to `GPT2LMHeadModel`."""
    hf: dict[str, torch.Tensor] = {}
    for name, tensor in our_state.items():
        hf_name, transpose = our_to_hf_name(name)
        prefix = "" if hf_name == "lm_head.weight" else "transformer."
        hf[prefix + hf_name] = tensor.t().contiguous() if transpose else tensor
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
