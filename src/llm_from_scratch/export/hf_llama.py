"""Exporting a Llama-family model (Llama, SmolLM2-like, Qwen3) as a Hugging Face folder.

The reverse of `weights/llama.py` and `weights/qwen3.py`: the same name tables read backwards,
and our fused ``att.qkv`` matrix split into ``q_proj`` / ``k_proj`` / ``v_proj`` (its rows are
[queries; keys; values]). `config.json` says ``LlamaForCausalLM`` or ``Qwen3ForCausalLM`` with
our sizes, so `transformers.AutoModelForCausalLM.from_pretrained(folder)` loads it and computes
the same logits (tested). `hf.export_hf` writes the folder for every family: these two
functions only say what goes into it.
"""

from __future__ import annotations

from typing import Any

import torch

from llm_from_scratch.model.llama import LlamaConfig, LlamaModel


def hf_llama_config(cfg: LlamaConfig, tokenizer, dtype: torch.dtype) -> dict[str, Any]:
    """``config.json`` for LlamaForCausalLM / Qwen3ForCausalLM with our sizes."""
    eot = tokenizer.eot_id if tokenizer is not None else None
    qwen3 = cfg.model_type == "qwen3"
    config: dict[str, Any] = {
        "architectures": ["Qwen3ForCausalLM" if qwen3 else "LlamaForCausalLM"],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.context_length,
        "hidden_size": cfg.emb_dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_base,
        "attention_bias": False,
        "attention_dropout": cfg.drop_rate,
        "tie_word_embeddings": cfg.tie_weights,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    if cfg.rope_scaling != 1.0:
        config["rope_scaling"] = {"rope_type": "linear", "factor": cfg.rope_scaling}
    if qwen3:
        config.update(use_sliding_window=cfg.sliding_window is not None, sliding_window=cfg.sliding_window,
                      max_window_layers=0 if cfg.sliding_window is not None else cfg.n_layers)
    elif cfg.qk_norm or cfg.sliding_window is not None:
        raise ValueError("a Llama model with QK-norm or a sliding window has no Hugging Face Llama equivalent")
    else:
        config["mlp_bias"] = False
    return config


def hf_llama_state_dict(model: LlamaModel) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face's names (a tied head stored once), contiguous, on CPU."""
    from llm_from_scratch.weights.llama import HF_NAMES
    from llm_from_scratch.weights.qwen3 import QWEN3_HF_NAMES

    cfg = model.cfg
    names = QWEN3_HF_NAMES if cfg.model_type == "qwen3" else HF_NAMES
    ours = model.state_dict()
    hf = {names.embedding: ours["tok_emb.weight"], names.final_norm: ours["final_norm.weight"]}
    if not cfg.tie_weights:
        hf[names.head] = ours["out_head.weight"]
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for layer in range(cfg.n_layers):
        prefix, mine = names.block.format(layer), f"trf_blocks.{layer}."
        for hf_name, our_name in names.block_names.items():
            hf[prefix + hf_name] = ours[mine + our_name]
        q, k, v = ours[mine + "att.qkv.weight"].split([q_dim, kv_dim, kv_dim], dim=0)
        for hf_name, tensor in zip(names.qkv, (q, k, v)):
            hf[prefix + hf_name] = tensor
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in hf.items()}
