"""Exporting a `GPTModel` as one GGUF file that llama.cpp (and everything built on it) runs.

**GGUF** is llama.cpp's single-file format: a header, then key/value *metadata* (the
architecture's hyperparameters and the whole tokenizer), then a table of *tensor infos*
(name, shape, element type, offset), then the tensor data, each tensor aligned to 32 bytes
so the file can be memory-mapped and used in place.

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
(``token_embd``, ``output``, ``attn_qkv``, ``attn_output``, ``ffn_up``, ``ffn_down``) take the
chosen ``dtype``: ``f32``, ``f16`` or ``bf16``.

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
  may split differently).

A tokenizer with another regex is refused unless you name a llama.cpp pre-tokenizer
yourself (``llama_cpp_pre=``). The character tokenizer is written as a BPE vocabulary of
single characters whose multi-byte characters are assembled from their bytes by merges
(llama.cpp drops characters that are not in the vocabulary, where our tokenizer raises).
The model's embedding table may have more rows than the tokenizer has ids (e.g. padded to a
multiple of 64): those rows become unused ``[PAD<id>]`` tokens, as in llama.cpp's converter.
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
)
from llm_from_scratch.io.atomic import atomic_path
from llm_from_scratch.io.checkpoints import is_tied
from llm_from_scratch.tokenizers.base import Tokenizer

GGUF_DTYPES = ("f32", "f16", "bf16")

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


def convert_dtype(array: np.ndarray, dtype: str) -> tuple[np.ndarray, object]:
    """float32 array -> (array to write, GGMLQuantizationType). bf16 is rounded to nearest even."""
    gguf = _import_gguf()
    qtype = gguf.GGMLQuantizationType
    if dtype == "f32":
        return np.ascontiguousarray(array, dtype=np.float32), qtype.F32
    if dtype == "f16":
        return np.ascontiguousarray(array.astype(np.float16)), qtype.F16
    if dtype == "bf16":
        # torch rounds float32 -> bfloat16 to nearest even; the raw 16 bits go into the file
        bits = torch.from_numpy(np.ascontiguousarray(array)).to(torch.bfloat16).view(torch.int16).numpy()
        return np.ascontiguousarray(bits.view(np.uint16)), qtype.BF16
    raise ExportError(f"unsupported GGUF dtype {dtype!r}; choose one of {', '.join(GGUF_DTYPES)}")


# --------------------------------------------------------------------------------------
# Tokenizer metadata
# --------------------------------------------------------------------------------------


def llama_cpp_pre_tokenizer(vocab: ExportVocab) -> str:
    """The name of llama.cpp's built-in pre-split regex closest to the tokenizer's (see the docstring)."""
    from llm_from_scratch.tokenizers.tiktoken_bpe import read_tiktoken_recipe

    if vocab.kind == "char":
        return "gpt-2"  # merges never cross a character, so any split gives the same ids
    known = {
        read_tiktoken_recipe("gpt2").pat_str: "gpt-2",
        read_tiktoken_recipe("cl100k_base").pat_str: "llama-bpe",
        read_tiktoken_recipe("o200k_base").pat_str: "gpt-4o",
    }
    if vocab.pattern not in known:
        raise ExportError(
            f"llama.cpp has no built-in pre-tokenizer for the regex {vocab.pattern!r:.80}. "
            "Supported: the gpt2, cl100k_base (GPT-4, our BPETokenizer default) and o200k_base "
            "patterns; or pass llama_cpp_pre='gpt-2' (or another llama.cpp name) to accept a close one."
        )
    return known[vocab.pattern]


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


def gguf_vocab(tokenizer: Tokenizer, n_vocab: int, llama_cpp_pre: str | None = None) -> dict:
    """Tokens, token types, merges, pre-tokenizer and special ids for ``n_vocab`` embedding rows."""
    gguf = _import_gguf()
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
        "eot_id": vocab.eot_id,
    }


# --------------------------------------------------------------------------------------
# Writing the file
# --------------------------------------------------------------------------------------


def export_gguf(model: nn.Module, tokenizer: Tokenizer, out_path: str | Path, dtype: str = "f32", *,
                overwrite: bool = False, name: str | None = None, llama_cpp_pre: str | None = None) -> Path:
    """Write ``model`` + ``tokenizer`` as one GGUF file (architecture ``gpt2``); returns the path.

    ``dtype`` (``"f32"``, ``"f16"``, ``"bf16"``) applies to the big matrices; norms, biases and
    the position table stay float32. ``llama_cpp_pre`` overrides the pre-tokenizer name
    (see :func:`llama_cpp_pre_tokenizer`). Refuses an existing file unless ``overwrite``.
    The file is written next to its target and renamed, so it is never half there.
    """
    gguf = _import_gguf()
    if dtype not in GGUF_DTYPES:
        raise ExportError(f"unsupported GGUF dtype {dtype!r}; choose one of {', '.join(GGUF_DTYPES)}")
    model = exportable_gpt(model)
    out_path = Path(out_path)
    check_output_file(out_path, overwrite)
    cfg = model.cfg
    tensors = gguf_tensors(model)
    tok = gguf_vocab(tokenizer, cfg.vocab_size, llama_cpp_pre)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16}[dtype]

    with atomic_path(out_path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
        writer.add_name(name or f"llm-from-scratch gpt2 {cfg.n_layers}x{cfg.emb_dim}")
        writer.add_context_length(cfg.context_length)
        writer.add_embedding_length(cfg.emb_dim)
        writer.add_feed_forward_length(4 * cfg.emb_dim)
        writer.add_block_count(cfg.n_layers)
        writer.add_head_count(cfg.n_heads)
        writer.add_layer_norm_eps(1e-5)
        writer.add_file_type(int(file_type))

        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(tok["pre"])
        writer.add_token_list(tok["tokens"])
        writer.add_token_types(tok["types"])
        writer.add_token_merges(tok["merges"])
        if tok["eot_id"] is not None:
            writer.add_bos_token_id(tok["eot_id"])
            writer.add_eos_token_id(tok["eot_id"])
        writer.add_add_bos_token(False)  # our models never saw a BOS in front of a prompt
        writer.add_add_eos_token(False)

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

    if dtype not in GGUF_DTYPES:  # before the (slow) checkpoint load
        raise ExportError(f"unsupported GGUF dtype {dtype!r}; choose one of {', '.join(GGUF_DTYPES)}")
    model, tokenizer, _ = load_checkpoint_model(checkpoint_path)
    return export_gguf(model, tokenizer, out_path, dtype, overwrite=overwrite)
