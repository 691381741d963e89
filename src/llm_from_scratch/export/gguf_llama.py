"""What goes into a GGUF file for a Llama-family model (llama.cpp's ``llama`` and ``qwen3``).

`gguf_export.export_gguf` writes the file for every family; this module only says, for our
`LlamaModel` and `Qwen3Model` (the decoder core with RMSNorm, RoPE and SwiGLU switched on), which
tensors go in under which names, and which hyperparameters. It is the exact inverse of the GGUF
loader in `weights/llama.py`: export, then `load_llama_gguf`, gives the model back (tested).

**Names** (from the `gguf` package's tables, ``gguf.MODEL_TENSORS[MODEL_ARCH.LLAMA]``)::

    token_embd.weight                        <- tok_emb         output.weight <- out_head (not when tied)
    blk.N.attn_norm.weight                   <- norm1           output_norm.weight <- final_norm
    blk.N.attn_q / attn_k / attn_v.weight    <- att.qkv, split  (its rows are [queries; keys; values])
    blk.N.attn_output.weight                 <- att.out_proj
    blk.N.ffn_norm.weight                    <- norm2
    blk.N.ffn_gate / ffn_up / ffn_down       <- ff.fc1 / ff.fc2 / ff.fc3   (silu(gate) * up, then down)
    blk.N.attn_q_norm / attn_k_norm.weight   <- att.q_norm / att.k_norm    (qwen3 only: QK-norm)

Our attention computes q, k and v with one fused matrix; llama.cpp keeps three (it can fuse
them itself), so the export cuts ``att.qkv.weight`` at n_heads*head_dim and
n_kv_heads*head_dim rows.

**The rotary permutation (llama only).** Our RoPE rotates the pairs (x[i], x[i + d/2]) of a
head ("rotate half", as Hugging Face does); llama.cpp's ``llama`` architecture rotates
neighbours (x[2i], x[2i+1]), the convention of Meta's original code. llama.cpp's converter
therefore reorders the rows of the query and key matrices inside every head: row
``half * d/2 + i`` goes to row ``2*i + half``. `permute_qk_rows` does the same, and the loader's
`unpermute_qk_rows` undoes it. q·k is a sum over a head's dimensions, so reordering q and k
alike changes no attention score. ``qwen3`` is run by llama.cpp with "rotate half" (its NEOX
rope type), so its q and k go in unchanged.

**Metadata**: ``{arch}.context_length``, ``embedding_length``, ``block_count``,
``feed_forward_length``, ``attention.head_count``, ``attention.head_count_kv``,
``rope.freq_base``, ``rope.dimension_count``, ``attention.layer_norm_rms_epsilon``,
``vocab_size``; ``attention.key_length`` / ``value_length`` when the head size is not
emb_dim / n_heads (Qwen3); ``rope.scaling.type = linear`` and its factor when positions are
interpolated. A model whose configuration llama.cpp's architecture cannot express (QK-norm on
a ``llama`` model, a sliding window, biases) is refused with the reason.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from llm_from_scratch.export.hf import ExportError
from llm_from_scratch.io.checkpoints import is_tied

# our tensor (inside trf_blocks.N., without ".weight") -> gguf.MODEL_TENSOR member name
_BLOCK_TENSORS = {
    "norm1": "ATTN_NORM", "att.out_proj": "ATTN_OUT", "norm2": "FFN_NORM",
    "ff.fc1": "FFN_GATE", "ff.fc2": "FFN_UP", "ff.fc3": "FFN_DOWN",
}
_QK_NORMS = {"att.q_norm": "ATTN_Q_NORM", "att.k_norm": "ATTN_K_NORM"}
# Matrices that take the chosen dtype; norms stay float32.
_MATRICES = {"TOKEN_EMBD", "OUTPUT", "ATTN_Q", "ATTN_K", "ATTN_V", "ATTN_OUT", "FFN_GATE", "FFN_UP", "FFN_DOWN"}


def llama_gguf_arch(gguf, model: nn.Module):
    """``gguf.MODEL_ARCH.LLAMA`` or ``.QWEN3`` for the model; ExportError for what they cannot hold."""
    cfg, arch = model.cfg, model.arch
    switches = (arch.norm, arch.positions, arch.mlp)
    if switches != ("rmsnorm", "rope", "swiglu"):
        raise ExportError(f"a Llama-family GGUF needs RMSNorm, RoPE and SwiGLU, this model has {switches}")
    if arch.qkv_bias or arch.out_bias or arch.mlp_bias:
        raise ExportError("llama.cpp's llama and qwen3 architectures have no biases; this model has some")
    if arch.sliding_window is not None:
        raise ExportError(f"the model attends through a sliding window of {arch.sliding_window} tokens, which "
                          "llama.cpp's llama/qwen3 architectures do not do; export a model without one")
    if cfg.model_type == "qwen3":
        if not hasattr(gguf.MODEL_ARCH, "QWEN3"):
            raise ExportError("this version of the gguf package does not know the qwen3 architecture: "
                              "pip install -U gguf")
        if not arch.qk_norm:
            raise ExportError("a qwen3 GGUF needs QK-norm (attn_q_norm/attn_k_norm); this Qwen3 model has none")
        return gguf.MODEL_ARCH.QWEN3
    if cfg.model_type != "llama":
        raise ExportError(f"no GGUF architecture for model_type {cfg.model_type!r}; supported: llama, qwen3")
    if arch.qk_norm:
        raise ExportError("llama.cpp's llama architecture has no QK-norm; a Llama model with qk_norm=True cannot "
                          "be exported to GGUF (a Qwen3Config model can, as qwen3)")
    return gguf.MODEL_ARCH.LLAMA


def permute_qk_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Our (Hugging Face) q/k row order -> llama.cpp's, the inverse of `weights.llama.unpermute_qk_rows`.

    weight: (n_heads * head_dim, in_features). Inside a head, row half*(head_dim/2) + i moves to
    row 2*i + half: view the rows as (head, half, i), swap the last two axes to (head, i, half).
    """
    rows, in_features = weight.shape
    head_dim = rows // n_heads
    return (weight.reshape(n_heads, 2, head_dim // 2, in_features)
                  .transpose(0, 2, 1, 3)
                  .reshape(rows, in_features))


def _name(gguf, arch, member: str, block: int | None = None) -> str:
    """``"blk.3.attn_q.weight"`` from gguf's own table, checked against the architecture's list."""
    tensor = gguf.MODEL_TENSOR[member]
    if tensor not in gguf.MODEL_TENSORS[arch]:
        raise ExportError(f"the gguf package does not list {member} for {gguf.MODEL_ARCH_NAMES[arch]}; "
                          "update the export")
    base = gguf.TENSOR_NAMES[tensor]
    return (base.format(bid=block) if block is not None else base) + ".weight"


def llama_gguf_tensors(gguf, model: nn.Module, arch) -> dict[str, tuple[np.ndarray, bool]]:
    """``{gguf name: (float32 array, (out, in) order, is_big_matrix)}`` for a Llama-family model."""
    cfg = model.cfg
    state = {key: value.detach().to("cpu", torch.float32).numpy() for key, value in model.state_dict().items()}
    permute = arch == gguf.MODEL_ARCH.LLAMA  # qwen3 keeps rotate-half order (see the docstring)
    result: dict[str, tuple[np.ndarray, bool]] = {}

    def add(member: str, array: np.ndarray, block: int | None = None) -> None:
        result[_name(gguf, arch, member, block)] = (np.ascontiguousarray(array), member in _MATRICES)

    add("TOKEN_EMBD", state["tok_emb.weight"])
    add("OUTPUT_NORM", state["final_norm.weight"])
    if not is_tied(model):
        add("OUTPUT", state["out_head.weight"])  # absent: llama.cpp reuses token_embd
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for i in range(cfg.n_layers):
        prefix = f"trf_blocks.{i}."
        qkv = state[prefix + "att.qkv.weight"]
        if qkv.shape[0] != q_dim + 2 * kv_dim:
            raise ExportError(f"{prefix}att.qkv.weight has {qkv.shape[0]} rows, the configuration says "
                              f"{q_dim} + 2 * {kv_dim}")
        q, k, v = qkv[:q_dim], qkv[q_dim:q_dim + kv_dim], qkv[q_dim + kv_dim:]
        if permute:
            q, k = permute_qk_rows(q, cfg.n_heads), permute_qk_rows(k, cfg.n_kv_heads)
        add("ATTN_Q", q, i)
        add("ATTN_K", k, i)
        add("ATTN_V", v, i)
        for ours, member in _BLOCK_TENSORS.items():
            add(member, state[f"{prefix}{ours}.weight"], i)
        if cfg.qk_norm:
            for ours, member in _QK_NORMS.items():
                add(member, state[f"{prefix}{ours}.weight"], i)
    return result


def add_llama_metadata(writer, cfg) -> None:
    """The hyperparameters llama.cpp (and `weights.llama.llama_config_from_gguf`) read, under the
    writer's architecture prefix (``llama.`` or ``qwen3.``)."""
    import gguf

    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.emb_dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_freq_base(float(cfg.rope_base))
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    if cfg.head_dim * cfg.n_heads != cfg.emb_dim:
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
    if cfg.rope_scaling != 1.0:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(cfg.rope_scaling))
