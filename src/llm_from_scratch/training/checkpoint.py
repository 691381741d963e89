"""Saving and loading training checkpoints: the names the trainer (and chapter 5) uses.

The work is done by :mod:`llm_from_scratch.io.checkpoints`, the one place that reads and writes
our checkpoints (``.pt`` and ``.safetensors``); this module keeps the training package's names.
A checkpoint is written to a temporary file and renamed over the target
(:mod:`llm_from_scratch.io.atomic`), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from llm_from_scratch.io.checkpoints import COMPILED_PREFIX, clean_state_dict, load_checkpoint, save_checkpoint

__all__ = ["COMPILED_PREFIX", "clean_state_dict", "load_checkpoint", "save_checkpoint", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """Every random generator training draws from (torch, Python, NumPy, CUDA): saved with a
    checkpoint, so that a resumed run draws the same dropout masks and shuffles."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
