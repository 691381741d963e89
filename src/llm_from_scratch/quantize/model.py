"""Quantizing a whole model for inference: which layers change, from a float model or from a file.

`quantize_model(model, "int8")` replaces, in place:

* every `nn.Linear` of the decoder blocks (attention's qkv and output projection, the
  feed-forward's matrices) by the format's layer (`QuantFormat.linear`: `Int8Linear`, or
  `Int4Linear` with ``"int4"`` where the int4 kernel takes the matrix's shape);
* the token embedding by the format's embedding (`Int8Embedding`) and the output head by its
  head (`Int8Linear`). A tied head reads the embedding's int8 table (one copy, as in the float
  model).

`quantized_model_from_state(cfg, state, "int4")` builds the same model straight from a state dict
whose matrices may be GGUF blocks (`gguf_blocks.GroupValues`): the GGUF loader's path, on which
the float model never exists. Both go through `_quantize_layers`, so a format's layers are the
same whichever way a model comes.

Which formats exist, and the check of a ``--quantize`` value, are in `formats.py`. Everything
else (norms, biases, position embeddings, RoPE tables) stays in the model's float dtype, and so
do the activations and the KV cache. A quantized model is for inference: it cannot be trained
(`DecoderLM.forward` with targets refuses it) or exported (export the float model and quantize
when loading).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from llm_from_scratch.quantize.formats import (QUANTIZE_MODES, QuantFormat, check_quantize, int4_format,
                                               resolve_format)
from llm_from_scratch.quantize.int4 import Int4Linear
from llm_from_scratch.quantize.int8 import Int8Embedding, Int8Linear

__all__ = ["QUANTIZE_MODES", "QUANTIZED_TYPES", "check_quantize", "is_quantized", "quantization_of",
           "quantize_model", "quantized_model_from_state"]

QUANTIZED_TYPES = (Int8Linear, Int4Linear, Int8Embedding)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QUANTIZED_TYPES) for m in model.modules())


def quantization_of(model: nn.Module) -> str:
    """"none", "int8" or "int4": how a model's weights are stored."""
    return getattr(model, "quantization", "none") if is_quantized(model) else "none"


def _quantize_layers(model: nn.Module, fmt: QuantFormat, take: Callable, embedding, head, tied: bool,
                     dtype: torch.dtype) -> nn.Module:
    """Replace the model's matrices by `fmt`'s layers. `take(key, linear)` gives (weight, bias) of the
    decoder blocks' linear layer `key` (a float tensor or GGUF blocks); `embedding` / `head` are the
    token table and the untied head's weight (ignored when `tied`)."""
    for prefix, parent in list(model.trf_blocks.named_modules(prefix="trf_blocks")):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, fmt.layer(*take(f"{prefix}.{name}", child)))
    model.tok_emb = fmt.embedding(embedding, dtype)
    model.out_head = model.tok_emb.as_head() if tied else fmt.head(*head)
    model.quantization = fmt.name
    return model.eval()


@torch.no_grad()
def quantize_model(model: nn.Module, mode: str | QuantFormat | None = "int8", *,
                   group_size: int | None = None) -> nn.Module:
    """Quantize a `DecoderLM` (any family) in place for inference; returns it, in eval mode.

    ``mode``: a name of `formats.FORMATS` ("int8", "int4"), or a `QuantFormat` already checked by
    `resolve_format`; "none" / None returns the model unchanged. `group_size`: int4's group size
    (32 by default; 64, 128 or 256). The float weights are released as each layer is replaced.
    """
    fmt = resolve_format(mode, next(model.parameters()).device)
    if fmt is None:
        return model
    if group_size is not None:
        if fmt.name != "int4":
            raise ValueError(f"group_size applies to int4 only, not to {fmt.name}")
        fmt = int4_format(group_size)
    if is_quantized(model):
        raise ValueError("this model is already quantized")
    tied = model.out_head.weight is model.tok_emb.weight
    return _quantize_layers(model, fmt, lambda key, linear: (linear.weight, linear.bias),
                            model.tok_emb.weight, (model.out_head.weight, model.out_head.bias), tied,
                            model.tok_emb.weight.dtype)


@torch.no_grad()
def quantized_model_from_state(cfg, state: dict, mode: str | QuantFormat, dtype: torch.dtype = torch.float32
                               ) -> nn.Module:
    """A quantized model of configuration `cfg` straight from a state dict whose matrices may be
    float tensors or GGUF `GroupValues`: no float copy of the model is ever made (the GGUF loader's
    path; peak memory stays near the quantized size). Returns it in eval mode, on the CPU.

    The dict is consumed (emptied) as the layers are built, so each matrix's source values are
    freed as soon as its layer exists: pass it without keeping another reference."""
    from llm_from_scratch.model.registry import model_from_config

    fmt = resolve_format(mode, "cpu")
    if fmt is None:
        raise ValueError("quantized_model_from_state needs a format: one of " + ", ".join(QUANTIZE_MODES[1:]))
    with torch.device("meta"):
        model = model_from_config(cfg)

    def take(key: str, linear: nn.Linear):
        bias = state.pop(key + ".bias", None)
        return state.pop(key + ".weight"), (bias.to(dtype) if bias is not None else None)

    head = state.pop("out_head.weight", None)
    if head is None and not cfg.tie_weights:
        raise ValueError("the weights lack out_head.weight (the model's head is not tied to the embedding)")
    _quantize_layers(model, fmt, take, state.pop("tok_emb.weight"), (head, None), cfg.tie_weights, dtype)
    floats = {name: tensor.to(dtype) for name, tensor in state.items()}
    state.clear()
    result = model.load_state_dict(floats, strict=False, assign=True)
    built = {name for name, module in model.named_modules() if isinstance(module, QUANTIZED_TYPES)}
    missing = [k for k in result.missing_keys if k.rpartition(".")[0] not in built]  # (their tensors are in place)
    if missing or result.unexpected_keys:
        raise ValueError(f"the weights do not fit the configuration: missing {missing[:6]}, "
                         f"unexpected {result.unexpected_keys[:6]}")
    if hasattr(model, "rope"):
        model.rope.rebuild()  # the RoPE tables were built on the meta device
    return model
