"""Saving and loading checkpoints safely.

A checkpoint is written to a temporary file in the same folder and then renamed over the
target: a rename is atomic, so a crash mid-write leaves the previous checkpoint intact instead
of a truncated file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

COMPILED_PREFIX = "_orig_mod."  # what torch.compile adds in front of every parameter name


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
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


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrappers' prefixes (torch.compile's `_orig_mod.`, DDP's `module.`) so a checkpoint
    of a compiled or distributed model loads into a plain one."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in (COMPILED_PREFIX, "module."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned
