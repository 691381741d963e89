"""Qwen3 weights: a Hugging Face Qwen3ForCausalLM folder (or the hub, by name) into our decoder core.

Qwen3's tensors are named like Llama's (`weights/llama.py`), plus each layer's
``self_attn.q_norm.weight`` / ``self_attn.k_norm.weight`` (the QK-norm scales), so the weight
map is Llama's with two more names. `config.json` says ``"model_type": "qwen3"``; its
``head_dim`` is set (128) rather than derived from the width.

    model, tokenizer = load_qwen3_hf("path/to/Qwen3-0.6B")          # a downloaded folder
    model, tokenizer = load_pretrained("qwen3-0.6b")                  # from the hub (downloads 1.5 GB)

No package ships Qwen3 weights, so offline the named models fail with a clear error that says
how to point at a local folder; the tests use folders that `transformers` writes from random
small configurations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from llm_from_scratch.model.qwen3 import Qwen3Config
from llm_from_scratch.weights.catalog import PRETRAINED_MODELS
from llm_from_scratch.weights.llama import HF_NAMES, TensorNames, hf_tokenizer_from_dir, model_from_state_dict

QWEN3_HF_NAMES = TensorNames(
    embedding=HF_NAMES.embedding, final_norm=HF_NAMES.final_norm, head=HF_NAMES.head, block=HF_NAMES.block,
    block_names={**HF_NAMES.block_names, "self_attn.q_norm.weight": "att.q_norm.weight",
                 "self_attn.k_norm.weight": "att.k_norm.weight"},
    qkv=HF_NAMES.qkv,
)

# name -> Hugging Face repository (both are Qwen3-0.6B's architecture), from the one catalog
QWEN3_HUB_REPOS = {model.name: model.hub_repo for model in PRETRAINED_MODELS.values() if model.family == "qwen3"}
QWEN3_HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def qwen3_config_from_hf(config: Mapping[str, Any]) -> Qwen3Config:
    """Our Qwen3Config from a Hugging Face Qwen3 config dict (config.json or `hf_config.to_dict()`)."""
    if config.get("model_type") != "qwen3":
        raise ValueError(f"config.json describes a {config.get('model_type')!r} model, not 'qwen3'")
    if config.get("attention_bias"):
        raise ValueError("attention_bias=true is not supported (Qwen3 has no biases)")
    if config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported (Qwen3 uses silu)")
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ("default", "linear"):
        raise ValueError(f"RoPE scaling {rope_type!r} is not supported (plain or linear RoPE)")
    # Layer i attends through the sliding window when i >= max_window_layers (or as layer_types say).
    n_layers = int(config["num_hidden_layers"])
    sliding = config.get("sliding_window") if config.get("use_sliding_window") else None
    layer_types = config.get("layer_types") or [
        "sliding_attention" if sliding is not None and i >= int(config.get("max_window_layers", n_layers))
        else "full_attention" for i in range(n_layers)]
    windowed = sum(kind == "sliding_attention" for kind in layer_types)
    if 0 < windowed < n_layers:
        raise ValueError("a sliding window on only some layers is not supported (all layers or none)")
    sliding = sliding if windowed else None
    emb_dim, n_heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    return Qwen3Config(
        vocab_size=int(config["vocab_size"]),
        context_length=int(config.get("max_position_embeddings", 40960)),
        emb_dim=emb_dim, n_heads=n_heads,
        n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
        n_layers=int(config["num_hidden_layers"]),
        hidden_dim=int(config["intermediate_size"]),
        head_dim=int(config.get("head_dim") or emb_dim // n_heads),
        rope_base=float(rope.get("rope_theta", config.get("rope_theta", 1_000_000.0))),
        rope_scaling=float(rope.get("factor", 1.0)) if rope_type == "linear" else 1.0,
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        tie_weights=bool(config.get("tie_word_embeddings", False)),
        sliding_window=int(sliding) if sliding else None,
    )


def state_dict_from_hf(tensors: Mapping[str, torch.Tensor], cfg: Qwen3Config) -> dict[str, torch.Tensor]:
    """Our state dict from a Qwen3ForCausalLM state dict; unknown or missing tensors are an error."""
    needed = QWEN3_HF_NAMES.names(cfg, head=not cfg.tie_weights)
    names = set(tensors)
    missing = sorted(needed - names)
    extra = sorted(n for n in names - needed if n != QWEN3_HF_NAMES.head and not n.endswith("inv_freq"))
    if missing or extra:
        raise ValueError(f"the Qwen3 weights do not fit: missing {missing[:6]}, unknown {extra[:6]}")
    return QWEN3_HF_NAMES.state_dict(tensors.__getitem__, cfg)


def qwen3_from_hf_model(hf_model: Any, dtype: torch.dtype = torch.float32):
    """Our Qwen3Model from a `transformers.Qwen3ForCausalLM` instance (weights copied)."""
    cfg = qwen3_config_from_hf(hf_model.config.to_dict())
    state = {name: tensor.detach().clone() for name, tensor in hf_model.state_dict().items()}
    return model_from_state_dict(cfg, state_dict_from_hf(state, cfg), dtype)


def load_qwen3_hf(directory: str | Path, dtype: torch.dtype = torch.float32, *, tokenizer: bool = True,
                  context_length: int | None = None):
    """(Qwen3Model in eval mode, tokenizer or None) from a Hugging Face Qwen3ForCausalLM folder
    (config.json, model.safetensors or its shards, tokenizer.json with its chat template)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json: is it a Hugging Face model folder?")
    cfg = qwen3_config_from_hf(json.loads((directory / "config.json").read_text(encoding="utf-8")))
    if context_length is not None:
        cfg = cfg.replace(context_length=context_length)
    index = directory / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else ["model.safetensors"]
    if not all((directory / f).is_file() for f in files):
        raise FileNotFoundError(f"{directory} lacks {files}: Qwen3 loads from safetensors files")
    tensors: dict[str, torch.Tensor] = {}
    for file_name in files:
        tensors.update(load_file(str(directory / file_name)))
    model = model_from_state_dict(cfg, state_dict_from_hf(tensors, cfg), dtype)
    loaded_tokenizer = hf_tokenizer_from_dir(directory) if tokenizer else None
    return model, loaded_tokenizer


def load_pretrained_qwen3(name: str, dtype: torch.dtype = torch.float32, *, context_length: int | None = None):
    """(model, tokenizer) for "qwen3-0.6b" / "qwen3-0.6b-base", downloaded from the Hugging Face hub
    into the cache (about 1.5 GB). There is no offline copy: offline, the error says how to use a
    folder downloaded elsewhere."""
    from llm_from_scratch.assets import Source, cache_dir, download, load_from_sources

    if name not in QWEN3_HUB_REPOS:
        raise ValueError(f"unknown Qwen3 model {name!r}; known: {', '.join(QWEN3_HUB_REPOS)}")
    repo = QWEN3_HUB_REPOS[name]

    def from_hub():
        folder = cache_dir("hf", repo.replace("/", "--"))
        for file_name in QWEN3_HF_FILES:
            download(f"https://huggingface.co/{repo}/resolve/main/{file_name}", folder / file_name)
        return load_qwen3_hf(folder, dtype, context_length=context_length)

    sources = [Source(f"Hugging Face hub: {repo} ({', '.join(QWEN3_HF_FILES)})", from_hub, online_only=True)]
    how_to_fix = [
        "connect to the internet (and unset LLMFS_OFFLINE) to download from huggingface.co",
        f"download {repo} yourself (e.g. `huggingface-cli download {repo}`) and load the folder: "
        "load_pretrained('path/to/folder') or llmfs generate --model path/to/folder",
    ]
    return load_from_sources(f"the {name!r} model", sources, how_to_fix)
