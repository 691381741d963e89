"""Our checkpoints as ``.safetensors``: weights plus the configs needed to rebuild model and tokenizer.

A ``.pt`` checkpoint is a pickle: loading one runs code from the file, so it must come from
someone you trust, and only PyTorch can read it. **safetensors** is a plain container: an
8-byte header length, a JSON header (each tensor's dtype, shape and byte range, plus a
``__metadata__`` dict of strings), then the raw tensor bytes. Nothing is executed on load,
the file can be memory-mapped, and every framework reads it.

What we put in ``__metadata__`` (all strings, JSON where structured)::

    format              "pt"
    llmfs.model_config  GPTConfig.to_dict()            -> GPTModel(GPTConfig.from_dict(...))
    llmfs.tokenizer     tokenizer.to_config() or absent -> tokenizer_from_config(...)
    llmfs.metadata      anything else you pass (step, val_loss, ...)

A tied output head shares its matrix with the token embedding; safetensors refuses two
names for one storage (a reader could not tell they must stay one), so the matrix is stored
once, as ``tok_emb.weight``, and ``GPTModel`` re-ties ``out_head`` when it is rebuilt.

The file is written under a temporary name next to the target and renamed, so a crash never
leaves half a file where a good one was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llm_from_scratch.model.config import GPTConfig
from llm_from_scratch.model.gpt import GPTModel
from llm_from_scratch.tokenizers.base import Tokenizer, tokenizer_from_config

MODEL_CONFIG_KEY = "llmfs.model_config"
TOKENIZER_KEY = "llmfs.tokenizer"
METADATA_KEY = "llmfs.metadata"
TIED_KEY = "out_head.weight"  # left out of the file when it is the token embedding


def _unwrap(model: nn.Module) -> GPTModel:
    while hasattr(model, "_orig_mod"):  # torch.compile
        model = model._orig_mod
    if not isinstance(model, GPTModel):
        raise TypeError(f"save_model_safetensors saves a GPTModel, got {type(model).__name__}")
    return model


def save_model_safetensors(model: nn.Module, path: str | Path, metadata: Mapping[str, Any] | None = None, *,
                           tokenizer: Tokenizer | Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and config (and ``tokenizer``'s config) to ``path``; returns the path.

    ``metadata``: more JSON-able information to keep (e.g. ``{"step": 1000}``); a
    ``"tokenizer"`` entry in it is taken as the tokenizer config when ``tokenizer`` is not
    given, so a training checkpoint's fields can be passed as they are.
    """
    from safetensors.torch import save_file

    from llm_from_scratch.export.hf import _atomic_save, is_tied

    model = _unwrap(model)
    extra = dict(metadata or {})
    if tokenizer is None:
        tokenizer = extra.pop("tokenizer", None)
    tokenizer_config = tokenizer.to_config() if isinstance(tokenizer, Tokenizer) else tokenizer

    tied = is_tied(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name == TIED_KEY and tied:
            continue
        tensors[name] = tensor.detach().to("cpu").contiguous()
    header = {"format": "pt", MODEL_CONFIG_KEY: json.dumps(model.cfg.to_dict())}
    if tokenizer_config is not None:
        header[TOKENIZER_KEY] = json.dumps(dict(tokenizer_config), ensure_ascii=False)
    if extra:
        try:
            header[METADATA_KEY] = json.dumps(extra, ensure_ascii=False)
        except TypeError as error:
            raise TypeError(f"metadata must be JSON-serialisable (numbers, strings, lists, dicts): {error}") from None
    if tied != model.cfg.tie_weights:
        raise ValueError(
            f"the model's config says tie_weights={model.cfg.tie_weights} but its head and embedding are "
            f"{'' if tied else 'not '}the same tensor; fix the config before saving"
        )

    path = Path(path)
    _atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    return path


def read_safetensors_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint-shaped dict from a file written by :func:`save_model_safetensors`.

    Keys as in a training checkpoint: ``model`` (state dict, ``out_head.weight`` restored when
    tied), ``model_config``, ``tokenizer`` (config dict or None), plus the saved metadata.
    Raises FileNotFoundError, or ValueError for a damaged file or one we did not write.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no safetensors file at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as file:
            header = file.metadata() or {}
            state = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable safetensors file ({type(error).__name__}: {error}). It may be "
            "truncated or damaged: write it again (save_model_safetensors) or use the .pt checkpoint."
        ) from error
    if MODEL_CONFIG_KEY not in header:
        raise ValueError(
            f"{path} has no {MODEL_CONFIG_KEY!r} metadata, so the model cannot be rebuilt from it: it was not "
            "written by save_model_safetensors (a Hugging Face model.safetensors? load that folder with "
            "transformers, or hf_gpt2.gpt_from_hf_model)."
        )
    try:
        model_config = json.loads(header[MODEL_CONFIG_KEY])
        tokenizer_config = json.loads(header[TOKENIZER_KEY]) if TOKENIZER_KEY in header else None
        extra = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the metadata is not valid JSON ({error}); the file is damaged") from error
    cfg = GPTConfig.from_dict(model_config)
    if cfg.tie_weights and TIED_KEY not in state and "tok_emb.weight" in state:
        state[TIED_KEY] = state["tok_emb.weight"]
    return {**extra, "model": state, "model_config": model_config, "tokenizer": tokenizer_config}


def load_model_safetensors(path: str | Path, device: str | torch.device = "cpu"
                           ) -> tuple[GPTModel, Tokenizer | None, dict[str, Any]]:
    """(model in eval mode, tokenizer or None, checkpoint-shaped dict) from :func:`save_model_safetensors`'s file."""
    ckpt = read_safetensors_checkpoint(path, device)
    model = GPTModel(GPTConfig.from_dict(ckpt["model_config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit the recorded configuration "
                         f"({str(error).splitlines()[0]}); the file may be damaged") from error
    model.to(device)
    tokenizer = tokenizer_from_config(ckpt["tokenizer"]) if ckpt["tokenizer"] else None
    return model.eval(), tokenizer, ckpt
