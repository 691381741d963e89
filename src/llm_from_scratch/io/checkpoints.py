"""Our checkpoints on disk: ``.pt`` (a pickled dict) and ``.safetensors`` (weights + configs).

**What a checkpoint holds.** A dict: ``model`` (the state dict), ``model_config`` (the
architecture, ``cfg.to_dict()``), ``tokenizer`` (its config, so ids keep their meaning), and
whatever the writer adds (``step``, ``val_loss``, the optimizer...). :func:`read_checkpoint` gives
that dict for both formats, and `llm_from_scratch.loading` turns it into a model.

**``.pt``** is ``torch.save`` of the dict: anything picklable fits (optimizer state, RNG states),
which is what resuming a training run needs. Loading a pickle runs code from the file, so only
load ``.pt`` files you trust, and only PyTorch can read them.

**``.safetensors``** is a plain container: an 8-byte header length, a JSON header (each tensor's
dtype, shape and byte range, plus a ``__metadata__`` dict of strings), then the raw bytes. Nothing
is executed on load, the file can be memory-mapped, and every framework reads it. We keep the
configs in ``__metadata__`` (all strings, JSON where structured)::

    format              "pt"
    llmfs.model_config  cfg.to_dict()                  -> model_from_config(...)
    llmfs.tokenizer     tokenizer.to_config() or absent -> tokenizer_from_config(...)
    llmfs.metadata      anything else you pass (step, val_loss, ...)

A tied output head shares its matrix with the token embedding; safetensors refuses two names for
one storage, so the matrix is stored once, as ``tok_emb.weight``, and re-tied when read.

**Wrapped models.** ``torch.compile`` wraps a model in an ``OptimizedModule`` whose parameter
names start with ``_orig_mod.``; DistributedDataParallel (DDP) wraps it in a module whose names
start with ``module.``. :func:`unwrap_model` finds the plain model inside, and
:func:`clean_state_dict` strips the prefixes from a state dict, so a checkpoint of a compiled or
distributed run loads into a plain model.

Every file is written through :func:`~llm_from_scratch.io.atomic.atomic_path`: a crash never
leaves half a checkpoint where a good one was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llm_from_scratch.io.atomic import atomic_path

COMPILED_PREFIX = "_orig_mod."  # what torch.compile adds in front of every parameter name
DDP_PREFIX = "module."          # what DistributedDataParallel adds

MODEL_CONFIG_KEY = "llmfs.model_config"
TOKENIZER_KEY = "llmfs.tokenizer"
METADATA_KEY = "llmfs.metadata"
TIED_KEY = "out_head.weight"  # left out of a .safetensors file when it is the token embedding


# --------------------------------------------------------------------------------------
# Wrapped models
# --------------------------------------------------------------------------------------


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside ``torch.compile``'s and DDP's wrappers (``model`` itself if none)."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):  # DDP
            model = model.module
        else:
            return model


def clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strip wrappers' prefixes (torch.compile's `_orig_mod.`, DDP's `module.`) so a checkpoint
    of a compiled or distributed model loads into a plain one."""
    cleaned = {}
    for key, value in state_dict.items():
        stripped = None
        while stripped != key:
            stripped = key
            for prefix in (COMPILED_PREFIX, DDP_PREFIX):
                key = key.removeprefix(prefix)
        cleaned[key] = value
    return cleaned


def is_tied(model: nn.Module) -> bool:
    """True when the output head shares its matrix with the token embedding."""
    head, embedding = model.out_head.weight, model.tok_emb.weight
    return head is embedding or head.data_ptr() == embedding.data_ptr()


# --------------------------------------------------------------------------------------
# .pt
# --------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save(state)`` to ``path``, atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        torch.save(state, file)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict in a ``.pt`` checkpoint; clear errors for a missing, damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}. Train one first (llmfs train ...) or check the path.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated zip, pickle garbage, ...
        raise ValueError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc}). "
                         "It may be truncated or not a PyTorch file; use another checkpoint "
                         "(last.pt / best_model.pt) or retrain.") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a checkpoint dict (found {type(state).__name__})")
    return state


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint dict from a ``.pt`` file or a ``.safetensors`` file written by us."""
    if Path(path).suffix == ".safetensors":
        return read_safetensors_checkpoint(path, map_location)
    return load_checkpoint(path, map_location)


# --------------------------------------------------------------------------------------
# .safetensors
# --------------------------------------------------------------------------------------


def save_model_safetensors(model: nn.Module, path: str | Path, metadata: Mapping[str, Any] | None = None, *,
                           tokenizer: Any = None) -> Path:
    """Write ``model``'s weights and config (and ``tokenizer``'s config) to ``path``; returns the path.

    ``model`` is one of our models (`GPTModel`, `LlamaModel`; compiled or DDP-wrapped is fine).
    ``metadata``: more JSON-able information to keep (e.g. ``{"step": 1000}``); a ``"tokenizer"``
    entry in it is taken as the tokenizer config when ``tokenizer`` is not given, so a training
    checkpoint's fields can be passed as they are.
    """
    from safetensors.torch import save_file

    model = unwrap_model(model)
    if not hasattr(getattr(model, "cfg", None), "to_dict"):
        raise TypeError(f"save_model_safetensors saves one of our models (GPTModel, LlamaModel), "
                        f"got {type(model).__name__}")
    extra = dict(metadata or {})
    if tokenizer is None:
        tokenizer = extra.pop("tokenizer", None)
    tokenizer_config = tokenizer.to_config() if hasattr(tokenizer, "to_config") else tokenizer

    tied = is_tied(model)
    if tied != model.cfg.tie_weights:
        raise ValueError(
            f"the model's config says tie_weights={model.cfg.tie_weights} but its head and embedding are "
            f"{'' if tied else 'not '}the same tensor; fix the config before saving"
        )
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()
               if not (name == TIED_KEY and tied)}
    header = {"format": "pt", MODEL_CONFIG_KEY: json.dumps(model.cfg.to_dict())}
    if tokenizer_config is not None:
        header[TOKENIZER_KEY] = json.dumps(dict(tokenizer_config), ensure_ascii=False)
    if extra:
        try:
            header[METADATA_KEY] = json.dumps(extra, ensure_ascii=False)
        except TypeError as error:
            raise TypeError(f"metadata must be JSON-serialisable (numbers, strings, lists, dicts): {error}") from None

    path = Path(path)
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=header)
    return path


def read_safetensors_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint-shaped dict from a file written by :func:`save_model_safetensors`.

    Keys as in a training checkpoint: ``model`` (state dict, ``out_head.weight`` restored when
    tied), ``model_config``, ``tokenizer`` (config dict or None), plus the saved metadata.
    Raises FileNotFoundError, or ValueError for a damaged file or one we did not write.
    """
    from safetensors import SafetensorError, safe_open

    from llm_from_scratch.model.registry import config_from_dict

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
    if config_from_dict(model_config).tie_weights and TIED_KEY not in state and "tok_emb.weight" in state:
        state[TIED_KEY] = state["tok_emb.weight"]
    return {**extra, "model": state, "model_config": model_config, "tokenizer": tokenizer_config}


def load_model_safetensors(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any, dict]:
    """(model in eval mode, tokenizer or None, checkpoint-shaped dict) from :func:`save_model_safetensors`'s file."""
    from llm_from_scratch.model.registry import model_from_config
    from llm_from_scratch.tokenizers.base import tokenizer_from_config

    ckpt = read_safetensors_checkpoint(path, device)
    model = model_from_config(ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit the recorded configuration "
                         f"({str(error).splitlines()[0]}); the file may be damaged") from error
    model.to(device)
    tokenizer = tokenizer_from_config(ckpt["tokenizer"]) if ckpt["tokenizer"] else None
    return model.eval(), tokenizer, ckpt
