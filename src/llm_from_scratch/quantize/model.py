"""Quantizing a whole model for inference: which layers become int8 or int4, and the checks.

`quantize_model(model, "int8")` replaces, in place:

* every `nn.Linear` of the decoder blocks (attention's qkv and output projection, the
  feed-forward's matrices) by an `Int8Linear` (or `Int4Linear` with ``"int4"``);
* the token embedding by an `Int8Embedding`, and the output head by an `Int8Linear`. A tied
  head reads the embedding's int8 table (one copy, as in the float model). The embedding and
  head stay int8 in the int4 mode too: the head decides every next token and is where 4 bits
  cost the most quality, and GPT-2's vocabulary (50,257 rows) does not fit the int4 kernel.

Everything else (norms, biases, position embeddings, RoPE tables) stays in the model's float
dtype, and so do the activations and the KV cache. A quantized model is for inference: it
cannot be trained (`DecoderLM.forward` with targets refuses it) or exported (export the float
model and quantize when loading).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from llm_from_scratch.quantize.int4 import DEFAULT_GROUP_SIZE, Int4Linear, check_int4_device, int4_fits, quantize_groups
from llm_from_scratch.quantize.int8 import Int8Embedding, Int8Linear, quantize_per_channel

#: The choices of `--quantize` (and `load_model(quantize=...)`).
QUANTIZE_MODES = ("none", "int8", "int4")

QUANTIZED_TYPES = (Int8Linear, Int4Linear, Int8Embedding)


def check_quantize(mode: str | None, device: torch.device | str = "cpu") -> str:
    """The mode, checked against the choices and the device (a clear error for bad combinations)."""
    mode = "none" if mode is None else str(mode).lower()
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantization {mode!r}: use one of {', '.join(QUANTIZE_MODES)}")
    if mode == "int4":
        check_int4_device(device)
    return mode


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QUANTIZED_TYPES) for m in model.modules())


def quantize_linear(linear: nn.Linear, mode: str, group_size: int = DEFAULT_GROUP_SIZE) -> nn.Module:
    """One layer: int4 where the kernel takes its shape, int8 otherwise."""
    if mode == "int4" and int4_fits(linear.out_features, linear.in_features, group_size):
        return Int4Linear.from_linear(linear, group_size)
    return Int8Linear.from_linear(linear)


@torch.no_grad()
def quantize_model(model: nn.Module, mode: str = "int8", *, group_size: int = DEFAULT_GROUP_SIZE) -> nn.Module:
    """Quantize a `DecoderLM` (any family) in place for inference; returns it, in eval mode.

    ``mode``: "int8" (per-channel) or "int4" (groups of `group_size`, CPU only); "none" returns
    the model unchanged. The float weights are released as each layer is replaced.
    """
    device = next(model.parameters()).device
    mode = check_quantize(mode, device)
    if mode == "none":
        return model
    if is_quantized(model):
        raise ValueError("this model is already quantized")
    for block in model.trf_blocks:
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, quantize_linear(child, mode, group_size))
    tied = model.out_head.weight is model.tok_emb.weight
    model.tok_emb = Int8Embedding.from_embedding(model.tok_emb)
    model.out_head = model.tok_emb.as_head() if tied else Int8Linear.from_linear(model.out_head)
    model.quantization = mode
    return model.eval()


def quantization_of(model: nn.Module) -> str:
    """"none", "int8" or "int4": how a model's weights are stored."""
    return getattr(model, "quantization", "none") if is_quantized(model) else "none"


def _int8_parts(value) -> tuple[torch.Tensor, torch.Tensor]:
    from llm_from_scratch.quantize.gguf_blocks import GroupValues

    return value.to_int8() if isinstance(value, GroupValues) else quantize_per_channel(value)


def _quantized_layer(value, mode: str, bias: torch.Tensor | None) -> nn.Module:
    """A layer from a matrix given as float or as GGUF `GroupValues` (4-bit ones go in unchanged)."""
    from llm_from_scratch.quantize.gguf_blocks import GroupValues

    rows, cols = value.shape
    if mode == "int4" and bias is None and int4_fits(rows, cols):
        if isinstance(value, GroupValues) and value.exact_int4:
            return Int4Linear.from_groups(value.values(), value.scale.float(), value.minimum.float())
        if not isinstance(value, GroupValues):
            return Int4Linear(*quantize_groups(value), bias)
    return Int8Linear(*_int8_parts(value), bias)


@torch.no_grad()
def quantized_model_from_state(cfg, state: dict, mode: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A quantized model of configuration `cfg` straight from a state dict whose matrices may be
    float tensors or GGUF `GroupValues`: no float copy of the model is ever made (the GGUF loader's
    path; peak memory stays near the quantized size). Returns it in eval mode.

    The dict is consumed (emptied) as the layers are built, so each matrix's source values are
    freed as soon as its layer exists: pass it without keeping another reference."""
    from llm_from_scratch.model.registry import model_from_config

    mode = check_quantize(mode)
    if mode == "none":
        raise ValueError("quantized_model_from_state needs mode 'int8' or 'int4'")
    with torch.device("meta"):
        model = model_from_config(cfg)
    for prefix, parent in list(model.trf_blocks.named_modules(prefix="trf_blocks")):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                key = f"{prefix}.{name}"
                bias = state.pop(key + ".bias", None)
                layer = _quantized_layer(state.pop(key + ".weight"), mode, bias.to(dtype) if bias is not None else None)
                setattr(parent, name, layer)
    model.tok_emb = Int8Embedding(*_int8_parts(state.pop("tok_emb.weight")), dtype)
    head = state.pop("out_head.weight", None)
    if cfg.tie_weights:
        model.out_head = model.tok_emb.as_head()
    elif head is None:
        raise ValueError("the weights lack out_head.weight (the model's head is not tied to the embedding)")
    else:
        model.out_head = Int8Linear(*_int8_parts(head))
    floats = {name: tensor.to(dtype) for name, tensor in state.items()}
    state.clear()
    result = model.load_state_dict(floats, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.endswith((".q", ".scale", ".packed", ".scales_and_zeros"))]
    if missing or result.unexpected_keys:
        raise ValueError(f"the weights do not fit the configuration: missing {missing[:6]}, "
                         f"unexpected {result.unexpected_keys[:6]}")
    if hasattr(model, "rope"):
        model.rope.rebuild()  # the RoPE tables were built on the meta device
    model.quantization = mode
    return model.eval()
