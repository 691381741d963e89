"""Exporting our models as one GGUF file that llama.cpp (and everything built on it) runs.

**GGUF** is llama.cpp's single-file format: a header, then key/value *metadata* (the
architecture's hyperparameters and the whole tokenizer), then a table of *tensor infos*
(name, shape, element type, offset), then the tensor data, each tensor aligned to 32 bytes
so the file can be memory-mapped and used in place.

This module writes the file for every family and holds what they share (the dtypes, Q8_0,
the tokenizer); what is particular to GPT-2 (names below) is here too, what is particular to
the Llama family (``llama`` / ``qwen3``: separate q/k/v, SwiGLU, RoPE's row order) lives in
:mod:`.gguf_llama`, which says what goes into the file and leaves the writing to this module.

**Names and layout.** llama.cpp knows GPT-2 as the architecture ``gpt2``; its loader looks
for these tensors (names from the `gguf` package, ``gguf.MODEL_TENSORS[MODEL_ARCH.GPT2]``)::

    token_embd.weight       (vocab, emb)      <- tok_emb         position_embd.weight  <- pos_emb
    blk.N.attn_norm.weight/.bias              <- norm1 scale/shift
    blk.N.attn_qkv.weight   (3*emb, emb)      <- att.qkv (.bias: zeros if the model has none)
    blk.N.attn_output.weight/.bias            <- att.out_proj
    blk.N.ffn_norm.weight/.bias               <- norm2 scale/shift
    blk.N.ffn_up.weight     (4*emb, emb)      <- ff.layers.0     blk.N.ffn_down  <- ff.layers.2
    output_norm.weight/.bias                  <- final_norm      output.weight   <- out_head
                                                                  (left out when tied)

The shapes above are NumPy/PyTorch order, ``(rows, columns)`` = ``nn.Linear``'s ``(out, in)``.
GGML lists dimensions the other way round, fastest-varying first (``ne[0]`` is the length
of a row), so the same ``ffn_up`` matrix is ``{emb, 4*emb}`` in llama.cpp's loader and in
GGUF's tensor table; the bytes are identical, only the order in which the dimensions are
*listed* differs. `gguf.GGUFWriter` reverses the shape for us. `transformers`' GPT-2 stores
these matrices transposed (Conv1D, ``(in, out)``), which is why llama.cpp's converter
transposes them; ours are already ``nn.Linear``, so they go in as they are.

**Types.** Norm weights and all biases stay float32 (llama.cpp expects 1-D tensors in f32),
and so does ``position_embd``, as llama.cpp's own converter keeps it; the big matrices
(``token_embd``, ``output``, ``attn_qkv``, ``attn_output``, ``ffn_up``, ``ffn_down``; for the
Llama family also ``attn_q/k/v`` and ``ffn_gate``) take the chosen ``dtype``: ``f32``, ``f16``,
``bf16`` or ``q8_0``, GGML's 8-bit blocks (`quantize_q8_0`: 32 values share one float16
scale). A matrix whose rows are not a multiple of 32 long cannot be cut into Q8_0 blocks and
is written as f16 instead, as llama.cpp's converter does.

**Float weights only.** A model whose layers were quantized for inference (`Int8Linear` and
the like hold integer tensors instead of a float ``.weight``) is refused (`refuse_quantized`):
its rounding is not GGUF's, so re-quantizing it would round twice. Export the float model and
let ``dtype="q8_0"`` do the quantizing.

**Tokenizer.** ``tokenizer.ggml.model = "gpt2"`` is llama.cpp's byte-level BPE: the tokens in
GPT-2's byte-level spelling, their types (normal, control for special tokens, unused for
padding rows), the merges as ``"left right"`` strings (recovered from the ranks, see
:mod:`.hf`) and ``tokenizer.ggml.pre``, the *name* of a pre-split regex built into llama.cpp
(it cannot read a regex from the file). We pick the closest one:

* GPT-2's pattern -> ``gpt-2`` (the same regex);
* cl100k_base's pattern (also our BPETokenizer's default) -> ``llama-bpe``, Llama 3's regex,
  which is cl100k_base's written without possessive quantifiers; in principle runs mixing
  spaces and newlines can group differently (scripts/check_gguf_with_llama_cpp.py found none);
* o200k_base's pattern -> ``gpt-4o``, llama.cpp's rewrite of it for its own regex engine
  (upper-case letters are spelled "letters other than a-z", so non-ASCII lower-case letters
  may split differently);
* SmolLM2's (digits split one by one, then GPT-2's) -> ``smollm``; Qwen's -> ``qwen2``.

A tokenizer with another regex is refused unless you name a llama.cpp pre-tokenizer
yourself (``llama_cpp_pre=``). The character tokenizer is written as a BPE vocabulary of
single characters whose multi-byte characters are assembled from their bytes by merges
(llama.cpp drops characters that are not in the vocabulary, where our tokenizer raises).
A tokenizer read from a GGUF or ``tokenizer.json`` (`HFBPETokenizer`, e.g. SmolLM2's) already
has tokens and merges in this form: they are written as they are, with its bos/eos tokens and
chat template.
The model's embedding table may have more rows than the tokenizer has ids (e.g. padded to a
multiple of 64): those rows become unused ``[PAD<id>]`` tokens, as in llama.cpp's converter.
A model with a compact vocabulary (a `CompactTokenizer`: the ids its corpus used plus one
reserved id) is written over the full vocabulary with the full tokenizer, every unseen id taking
the reserved id's rows (`hf.full_vocabulary`, `model.compact_vocab`): llama.cpp knows only the
tokenizer's own ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from llm_from_scratch.export.hf import (
    ExportError,
    ExportVocab,
    byte_level,
    check_output_file,
    exportable_gpt,
    export_vocab,
    full_state_dict,
    full_vocabulary,
)
from llm_from_scratch.io.atomic import atomic_path
from llm_from_scratch.io.checkpoints import is_tied, unwrap_model
from llm_from_scratch.tokenizers.base import Tokenizer

GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")

# our tensor (state-dict prefix) -> gguf.MODEL_TENSOR member name, per block and at the top
_BLOCK_TENSORS = {
    "norm1": "ATTN_NORM", "att.qkv": "ATTN_QKV", "att.out_proj": "ATTN_OUT",
    "norm2": "FFN_NORM", "ff.layers.0": "FFN_UP", "ff.layers.2": "FFN_DOWN",
}
_TOP_TENSORS = {"tok_emb": "TOKEN_EMBD", "pos_emb": "POS_EMBD", "final_norm": "OUTPUT_NORM", "out_head": "OUTPUT"}
# Matrices that take the chosen dtype; everything else is float32 (see the module docstring).
_MATRICES = {"TOKEN_EMBD", "OUTPUT", "ATTN_QKV", "ATTN_OUT", "FFN_UP", "FFN_DOWN"}


def _import_gguf():
    try:
        import gguf
    except ImportError as error:
        raise ExportError("exporting to GGUF needs the 'gguf' package: pip install 'llm-from-scratch[export]'") \
            from error
    return gguf


def _check_dtype(dtype: str) -> None:
    if dtype not in GGUF_DTYPES:
        raise ExportError(f"unsupported GGUF dtype {dtype!r}; choose one of {', '.join(GGUF_DTYPES)}")


def gguf_tensor_name(gguf, member: str, suffix: str, block: int | None = None) -> str:
    """``"blk.3.attn_qkv.weight"`` from gguf's own name table (so the names follow llama.cpp)."""
    tensor = gguf.MODEL_TENSOR[member]
    if tensor not in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.GPT2]:
        raise ExportError(f"the gguf package does not list {member} for GPT-2; update the export")
    base = gguf.TENSOR_NAMES[tensor]
    return (base.format(bid=block) if block is not None else base) + "." + suffix


def gguf_tensors(model: nn.Module) -> dict[str, tuple[np.ndarray, bool]]:
    """``{gguf name: (float32 array in PyTorch's (out, in) order, is_big_matrix)}`` for the model."""
    gguf = _import_gguf()
    model = exportable_gpt(model)
    state = full_state_dict(model)
    tied = is_tied(model)
    result: dict[str, tuple[np.ndarray, bool]] = {}

    def add(member: str, ours: str, block: int | None = None) -> None:
        for our_suffix, suffix in (("weight", "weight"), ("scale", "weight"), ("bias", "bias"), ("shift", "bias")):
            key = f"{ours}.{our_suffix}"
            if key in state:
                array = state[key].detach().to("cpu", torch.float32).numpy()
                result[gguf_tensor_name(gguf, member, suffix, block)] = (array, member in _MATRICES and array.ndim == 2)

    for ours, member in _TOP_TENSORS.items():
        if ours == "out_head" and tied:
            continue  # llama.cpp reuses token_embd when there is no output.weight
        add(member, ours)
    for i in range(model.cfg.n_layers):
        for ours, member in _BLOCK_TENSORS.items():
            add(member, f"trf_blocks.{i}.{ours}", block=i)
    return result


# --------------------------------------------------------------------------------------
# Element types: f32, f16, bf16 and Q8_0 blocks
# --------------------------------------------------------------------------------------

Q8_0_BLOCK_SIZE = 32    # values per block
Q8_0_BLOCK_BYTES = 34   # 2 bytes of float16 scale + 32 int8 values


def _round_half_away_from_zero(x: np.ndarray) -> np.ndarray:
    """C's ``roundf``: 2.5 -> 3, -2.5 -> -3 (NumPy's ``round`` would give 2 and -2)."""
    magnitude = np.abs(x)
    whole = np.floor(magnitude)
    whole += (magnitude - whole) >= 0.5   # the fraction is exact in float32, so no tie is misjudged
    return np.copysign(whole, x)


def quantize_q8_0(weights: np.ndarray) -> np.ndarray:
    """GGML's Q8_0: every row cut into blocks of 32 values, each block stored as one scale + 32 bytes.

    For a block of values x_1 .. x_32::

        d   = max_i |x_i| / 127          the block's scale, stored as float16 (2 bytes)
        q_i = round(x_i / d)             an int8 in -127..127 (32 bytes)

    and reading it back gives x_i ~ d * q_i. That is 34 bytes for 32 weights (8.5 bits each
    instead of 32), and the error of a value is at most d/2 (plus the float16 rounding of d,
    at most 127 * d * 2^-11): 1/254 of the block's largest magnitude. Because every block
    has its own scale, one large weight only coarsens its 31 neighbours, not the whole matrix.
    A block of zeros has d = 0; its q are 0 (no division by zero).

    To give llama.cpp's bytes exactly, this follows ggml's reference ``quantize_row_q8_0``:
    d is computed in float32, q_i as x_i * (1/d) with that float32 d (rounded to float16 only
    for storing), and round() goes half away from zero (C's ``roundf``).

    weights: float array whose last axis (a row) is a multiple of 32 long, else ValueError
    (callers write such a tensor as f16 instead). Returns uint8 of shape
    ``(*weights.shape[:-1], row_length // 32 * 34)``: per block, d's two little-endian bytes
    then the 32 values.
    """
    x = np.asarray(weights, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % Q8_0_BLOCK_SIZE:
        raise ValueError(f"Q8_0 needs rows whose length is a multiple of {Q8_0_BLOCK_SIZE}, got shape {x.shape}")
    blocks = x.reshape(-1, Q8_0_BLOCK_SIZE)                            # (n_blocks, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)   # (n_blocks, 1), float32
    if not np.isfinite(d).all() or (d > np.finfo(np.float16).max).any():
        raise ValueError("Q8_0 cannot store this tensor: it has inf/nan values or a block scale beyond float16")
    inverse = np.zeros_like(d)
    np.divide(np.float32(1), d, out=inverse, where=d != 0)            # 1/d, and 0 for all-zero blocks
    q = _round_half_away_from_zero(blocks * inverse).astype(np.int8)  # (n_blocks, 32)
    scale_bytes = d.astype("<f2").view(np.uint8)                      # (n_blocks, 2)
    packed = np.concatenate([scale_bytes, q.view(np.uint8)], axis=1)  # (n_blocks, 34)
    return packed.reshape(*x.shape[:-1], -1)


def dequantize_q8_0(packed: np.ndarray) -> np.ndarray:
    """The float32 values Q8_0 blocks stand for, d * q_i (shape: rows, row_length)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    blocks = packed.reshape(-1, Q8_0_BLOCK_BYTES)
    d = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)   # (n_blocks, 1)
    q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)  # (n_blocks, 32)
    row_blocks = packed.shape[-1] // Q8_0_BLOCK_BYTES
    return (d * q).reshape(*packed.shape[:-1], row_blocks * Q8_0_BLOCK_SIZE)


def convert_dtype(array: np.ndarray, dtype: str) -> tuple[np.ndarray, object]:
    """float32 array -> (array to write, GGMLQuantizationType). bf16 is rounded to nearest even.

    ``q8_0`` gives Q8_0 blocks (`quantize_q8_0`), or float16 when the rows are not a multiple
    of 32 long (llama.cpp's converter falls back the same way).
    """
    gguf = _import_gguf()
    qtype = gguf.GGMLQuantizationType
    _check_dtype(dtype)
    if dtype == "f32":
        return np.ascontiguousarray(array, dtype=np.float32), qtype.F32
    if dtype == "f16" or (dtype == "q8_0" and array.shape[-1] % Q8_0_BLOCK_SIZE):
        return np.ascontiguousarray(array.astype(np.float16)), qtype.F16
    if dtype == "q8_0":
        try:
            return quantize_q8_0(array), qtype.Q8_0
        except ValueError as error:
            raise ExportError(str(error)) from error
    # bf16: torch rounds float32 -> bfloat16 to nearest even; the raw 16 bits go into the file
    bits = torch.from_numpy(np.ascontiguousarray(array)).to(torch.bfloat16).view(torch.int16).numpy()
    return np.ascontiguousarray(bits.view(np.uint16)), qtype.BF16


# --------------------------------------------------------------------------------------
# Which models: GPT-2 here, the Llama family in gguf_llama; float weights only
# --------------------------------------------------------------------------------------

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def refuse_quantized(model: nn.Module) -> None:
    """ExportError if a layer holds quantized weights (integer tensors, or no float ``.weight``).

    An inference-quantized model replaces its ``nn.Linear`` layers by modules that keep int8 or
    packed int4 values plus scales. Those cannot be written as GGUF tensors as they are, and
    re-quantizing their rounded values would round twice; the float model is what to export.
    """
    model = unwrap_model(model)
    for name, module in model.named_modules():
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        odd = [(tensor_name, tensor.dtype) for tensor_name, tensor in tensors if tensor.dtype not in _FLOAT_DTYPES]
        weight = getattr(module, "weight", None)
        no_float_weight = isinstance(module, (nn.Linear, nn.Embedding)) and not (
            isinstance(weight, torch.Tensor) and weight.is_floating_point())
        if odd or no_float_weight:
            what = ", ".join(f"{n}: {str(d).removeprefix('torch.')}" for n, d in odd) or "no float weight"
            raise ExportError(
                f"layer {name or '(model)'} ({type(module).__name__}) holds {what}: the model was quantized "
                "for inference. GGUF export needs the float weights: export the float model instead (load the "
                "checkpoint without --quantize / quantize='none'), and pass dtype 'q8_0' (--dtype q8_0) to "
                "quantize while exporting."
            )


def check_state_keys(model: nn.Module) -> None:
    """ExportError unless the model's weights are exactly those its configuration builds.

    Extra weights are typically LoRA adapters that were not merged (they would be left out of
    the file silently); missing ones, layers replaced by quantized modules without tensors of
    their own.
    """
    from llm_from_scratch.model.registry import model_from_config

    model = unwrap_model(model)
    cfg = getattr(model, "cfg", None)
    try:
        with torch.device("meta"):
            expected = set(model_from_config(cfg).state_dict())
    except (TypeError, ValueError):
        return  # not one of our configurations: the family checks say what is wrong
    present = set(model.state_dict())
    unexpected, missing = sorted(present - expected), sorted(expected - present)
    if unexpected:
        raise ExportError(
            f"the model has weights its architecture does not have, e.g. {unexpected[:3]}. If these are LoRA "
            "adapters, merge them into the base weights first (finetune.lora.merge_lora); other additions "
            "cannot be exported."
        )
    if missing:
        raise ExportError(
            f"the model lacks the float weights {missing[:3]}: were its layers replaced (quantized for "
            "inference)? Export the float model instead, with dtype 'q8_0' to quantize while exporting."
        )


def _is_llama_family(model: nn.Module) -> bool:
    from llm_from_scratch.model.llama import LlamaConfig

    return isinstance(getattr(model, "cfg", None), LlamaConfig)


# --------------------------------------------------------------------------------------
# Tokenizer metadata
# --------------------------------------------------------------------------------------

#: Qwen2/Qwen3's splitting regex (their tokenizer.json), which llama.cpp has built in as "qwen2".
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def llama_cpp_pre_name(pattern: str | None) -> str | None:
    """The llama.cpp pre-tokenizer whose regex is (closest to) ``pattern``; None if there is none."""
    from llm_from_scratch.tokenizers.hf_bpe import DIGITS_THEN_GPT2_PATTERN, GPT2_PATTERN
    from llm_from_scratch.tokenizers.tiktoken_bpe import read_tiktoken_recipe

    known = {
        read_tiktoken_recipe("gpt2").pat_str: "gpt-2",
        GPT2_PATTERN: "gpt-2",
        read_tiktoken_recipe("cl100k_base").pat_str: "llama-bpe",
        read_tiktoken_recipe("o200k_base").pat_str: "gpt-4o",
        DIGITS_THEN_GPT2_PATTERN: "smollm",
        QWEN2_PATTERN: "qwen2",
    }
    return known.get(pattern)


def _refuse_pattern(pattern: str | None) -> ExportError:
    return ExportError(
        f"llama.cpp has no built-in pre-tokenizer for the regex {pattern!r:.80}. "
        "Supported: the gpt2, cl100k_base (GPT-4, our BPETokenizer default), o200k_base, SmolLM2 and Qwen "
        "patterns; or pass llama_cpp_pre='gpt-2' (or another llama.cpp name) to accept a close one."
    )


def llama_cpp_pre_tokenizer(vocab: ExportVocab) -> str:
    """The name of llama.cpp's built-in pre-split regex closest to the tokenizer's (see the docstring)."""
    if vocab.kind == "char":
        return "gpt-2"  # merges never cross a character, so any split gives the same ids
    name = llama_cpp_pre_name(vocab.pattern)
    if name is None:
        raise _refuse_pattern(vocab.pattern)
    return name


def char_merges(chars: list[str]) -> list[str]:
    """Merges that rebuild each multi-byte character from its bytes: ``é`` = ``Ã`` + ``©``.

    llama.cpp starts every word from its single bytes (byte-level spelled), so a character
    of k bytes needs k-1 merges: bytes 1+2, then (1+2)+3, ... Two characters never share a
    merge across their boundary because a UTF-8 lead byte fixes the character's length.
    """
    merges: dict[str, None] = {}
    for char in chars:
        spelled = byte_level(char.encode("utf-8"))
        for end in range(1, len(spelled)):
            merges[f"{spelled[:end]} {spelled[end]}"] = None
    if not merges:
        # llama.cpp refuses a BPE vocabulary without merges, and an empty GGUF array cannot be
        # written. "ĠĠ" never exists (no merge makes it), so this merge can never apply.
        merges["ĠĠ ĠĠ"] = None
    return list(merges)


def _hf_bpe_gguf_vocab(gguf, tokenizer, n_vocab: int, llama_cpp_pre: str | None) -> dict:
    """`gguf_vocab` for an `HFBPETokenizer`: its tokens and merges are already GGUF's spelling."""
    if tokenizer.vocab_size > n_vocab:
        raise ExportError(f"the tokenizer uses ids up to {tokenizer.vocab_size - 1} but the model has only "
                          f"{n_vocab} embedding rows: they do not belong together")
    by_id = {token_id: text for text, token_id in tokenizer.special_tokens.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(int(gguf.TokenType.CONTROL))
        elif i < len(tokenizer.tokens):
            tokens.append(tokenizer.tokens[i])
            types.append(int(gguf.TokenType.NORMAL))
        else:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
    pre = llama_cpp_pre or llama_cpp_pre_name(tokenizer.pattern)
    if pre is None:
        raise _refuse_pattern(tokenizer.pattern)
    merges = [f"{left} {right}" for left, right in tokenizer.merges] or char_merges([])
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre, "eot_id": tokenizer.eot_id,
            "bos_id": tokenizer.bos_id, "chat_template": tokenizer.chat_template}


def gguf_vocab(tokenizer: Tokenizer, n_vocab: int, llama_cpp_pre: str | None = None) -> dict:
    """Tokens, token types, merges, pre-tokenizer, special ids (and chat template) for ``n_vocab`` rows."""
    from llm_from_scratch.tokenizers.hf_bpe import HFBPETokenizer

    gguf = _import_gguf()
    if isinstance(tokenizer, HFBPETokenizer):
        return _hf_bpe_gguf_vocab(gguf, tokenizer, n_vocab, llama_cpp_pre)
    vocab = export_vocab(tokenizer)
    if vocab.size > n_vocab:
        raise ExportError(
            f"the tokenizer uses ids up to {vocab.size - 1} but the model has only {n_vocab} embedding rows: "
            "they do not belong together"
        )
    special_ids = set(vocab.special_tokens.values())
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i in vocab.tokens:
            if vocab.kind == "char":
                tokens.append(byte_level(vocab.tokens[i].encode("utf-8")))
            else:
                tokens.append(vocab.tokens[i])
            types.append(int(gguf.TokenType.CONTROL if i in special_ids else gguf.TokenType.NORMAL))
        else:  # an embedding row no token uses (padding, or a hole such as cl100k_base's 100256)
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
    if vocab.kind == "char":
        merges = char_merges(list(vocab.tokens.values()))
    else:
        merges = [f"{a} {b}" for a, b in vocab.merges]
    return {
        "tokens": tokens, "types": types, "merges": merges,
        "pre": llama_cpp_pre or llama_cpp_pre_tokenizer(vocab),
        "eot_id": vocab.eot_id, "bos_id": vocab.eot_id, "chat_template": None,
    }


def _add_tokenizer(writer, tok: dict) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(tok["pre"])
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    if tok["bos_id"] is not None:
        writer.add_bos_token_id(tok["bos_id"])
    if tok["eot_id"] is not None:
        writer.add_eos_token_id(tok["eot_id"])
    writer.add_add_bos_token(False)  # our models never saw a BOS in front of a prompt
    writer.add_add_eos_token(False)
    if tok["chat_template"]:
        writer.add_chat_template(tok["chat_template"])


# --------------------------------------------------------------------------------------
# Writing the file
# --------------------------------------------------------------------------------------


def _exportable_gpt_for_gguf(model: nn.Module) -> nn.Module:
    try:
        return exportable_gpt(model)
    except ExportError as error:
        raise ExportError(f"{error} GGUF export also takes LlamaModel and Qwen3Model "
                          "(llama.cpp's llama and qwen3 architectures).") from None


def _add_gpt2_metadata(writer, cfg) -> None:
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.emb_dim)
    writer.add_feed_forward_length(4 * cfg.emb_dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_head_count(cfg.n_heads)
    writer.add_layer_norm_eps(1e-5)


def export_gguf(model: nn.Module, tokenizer: Tokenizer, out_path: str | Path, dtype: str = "f32", *,
                overwrite: bool = False, name: str | None = None, llama_cpp_pre: str | None = None) -> Path:
    """Write ``model`` + ``tokenizer`` as one GGUF file; returns the path.

    The architecture follows the model: ``gpt2`` for a `GPTModel`, ``llama`` for a `LlamaModel`,
    ``qwen3`` for a `Qwen3Model` (see :mod:`.gguf_llama`). ``dtype`` (``"f32"``, ``"f16"``,
    ``"bf16"``, ``"q8_0"``) applies to the big matrices; norms, biases and the position table
    stay float32. ``llama_cpp_pre`` overrides the pre-tokenizer name (see
    :func:`llama_cpp_pre_tokenizer`). A model with a compact vocabulary (``tokenizer`` a
    `CompactTokenizer`) is written over the full vocabulary with the full tokenizer
    (`full_vocabulary`). Refuses an existing file unless ``overwrite``, and a model quantized
    for inference (`refuse_quantized`). The file is written next to its target and renamed, so
    it is never half there.
    """
    from llm_from_scratch.export import gguf_llama

    gguf = _import_gguf()
    _check_dtype(dtype)
    model = unwrap_model(model)
    refuse_quantized(model)
    check_state_keys(model)
    out_path = Path(out_path)
    if _is_llama_family(model):  # what cannot be written is refused before any copying
        gguf_llama.llama_gguf_arch(gguf, model)
    else:
        model = _exportable_gpt_for_gguf(model)
    model, tokenizer = full_vocabulary(model, tokenizer)
    if _is_llama_family(model):
        arch = gguf_llama.llama_gguf_arch(gguf, model)
        tensors = gguf_llama.llama_gguf_tensors(gguf, model, arch)
        arch_name = gguf.MODEL_ARCH_NAMES[arch]

        def add_metadata(writer) -> None:
            gguf_llama.add_llama_metadata(writer, model.cfg)
    else:
        tensors = gguf_tensors(model)
        arch_name = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2]

        def add_metadata(writer) -> None:
            _add_gpt2_metadata(writer, model.cfg)
    check_output_file(out_path, overwrite)
    cfg = model.cfg
    tok = gguf_vocab(tokenizer, cfg.vocab_size, llama_cpp_pre)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]

    with atomic_path(out_path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch=arch_name)
        writer.add_name(name or f"llm-from-scratch {arch_name} {cfg.n_layers}x{cfg.emb_dim}")
        add_metadata(writer)
        writer.add_file_type(int(file_type))
        _add_tokenizer(writer, tok)
        for tensor_name, (array, is_matrix) in tensors.items():
            data, qtype = convert_dtype(array, dtype if is_matrix else "f32")
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out_path


def export_checkpoint_gguf(checkpoint_path: str | Path, out_path: str | Path, dtype: str = "f32", *,
                           overwrite: bool = False) -> Path:
    """`export_gguf` for a training checkpoint (``best_model.pt``): model and tokenizer come from it."""
    from llm_from_scratch.loading import load_checkpoint_model

    _check_dtype(dtype)  # before the (slow) checkpoint load
    model, tokenizer, _ = load_checkpoint_model(checkpoint_path)
    return export_gguf(model, tokenizer, out_path, dtype, overwrite=overwrite)
