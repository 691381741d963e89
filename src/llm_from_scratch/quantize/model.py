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

**Peak memory.** The GGUF loader hands `quantized_model_from_state` a state whose values are
*readers*: functions that read a tensor from the file when called. Each matrix is then read just
before its layer is built and dropped right after, so at most one matrix exists outside its
quantized layer at any time (instead of the whole file's blocks next to the growing model), and
the token embedding, the largest matrix and the one whose conversion needs the most scratch
memory, goes first, while the model is still empty. The model itself starts as a skeleton on the
meta device (`weights.skeleton`): no float copy of the model is ever allocated.

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

from llm_from_scratch.allocator import trim_freed_memory
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


def _quantize_layers(model: nn.Module, fmt: QuantFormat, take: Callable, tied: bool, dtype: torch.dtype
                     ) -> nn.Module:
    """Replace the model's matrices by `fmt`'s layers, one at a time and the token embedding first.

    `take(name)` gives (weight, bias) of the layer `name` ("tok_emb", "out_head",
    "trf_blocks.0.att.qkv"...): a float tensor or GGUF blocks, and None without a bias. The head
    is taken only when not `tied` (a tied head reads the embedding's table). `dtype`: the
    activations' float dtype (what the embedding gives)."""
    model.tok_emb = fmt.embedding(take("tok_emb")[0], dtype)
    model.out_head = model.tok_emb.as_head() if tied else fmt.head(*take("out_head"))
    for prefix, parent in list(model.trf_blocks.named_modules(prefix="trf_blocks")):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, fmt.layer(*take(f"{prefix}.{name}")))
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

    def take(name: str):
        layer = model.get_submodule(name)
        return layer.weight, getattr(layer, "bias", None)

    return _quantize_layers(model, fmt, take, tied, model.tok_emb.weight.dtype)


def _value(entry):
    """A state entry's value: the entry itself, or what it reads when it is a reader (a function)."""
    return entry() if callable(entry) else entry


@torch.no_grad()
def quantized_model_from_state(cfg, state: dict, mode: str | QuantFormat, dtype: torch.dtype = torch.float32
                               ) -> nn.Module:
    """A quantized model of configuration `cfg` straight from a state dict: no float copy of the model
    is ever made (the GGUF loader's path). Returns it in eval mode, on the CPU.

    Each value of `state` is a float tensor, GGUF blocks (`GroupValues`), or a *reader*: a function
    without arguments that returns one of those (the GGUF loader's readers read the file). The dict
    is consumed (emptied) as the layers are built, and a reader is called only when its layer is
    built, so each matrix's source values exist only while its layer is made: pass the dict without
    keeping another reference to it."""
    from llm_from_scratch.weights.skeleton import model_skeleton

    fmt = resolve_format(mode, "cpu")
    if fmt is None:
        raise ValueError("quantized_model_from_state needs a format: one of " + ", ".join(QUANTIZE_MODES[1:]))
    if not cfg.tie_weights and "out_head.weight" not in state:
        raise ValueError("the weights lack out_head.weight (the model's head is not tied to the embedding)")
    if cfg.tie_weights:
        state.pop("out_head.weight", None)  # a tied head reads the embedding's table
    model = model_skeleton(cfg)  # shapes only: the layers below replace its matrices

    def take(name: str):
        trim_freed_memory()  # the previous layer's scratch memory goes back to the system (allocator.py)
        weight, bias = _value(state.pop(name + ".weight")), state.pop(name + ".bias", None)
        return weight, (_value(bias).to(dtype) if bias is not None else None)

    _quantize_layers(model, fmt, take, cfg.tie_weights, dtype)
    floats = {name: _value(entry).to(dtype) for name, entry in state.items()}  # norms (and biases)
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
