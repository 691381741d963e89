"""Saving and loading training checkpoints: the names the trainer (and chapter 5) uses.

The work is done by :mod:`llm_from_scratch.io.checkpoints`, the one place that reads and writes
our checkpoints (``.pt`` and ``.safetensors``); this module keeps the training package's names.
A checkpoint is written to a temporary file and renamed over the target
(:mod:`llm_from_scratch.io.atomic`), so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

from llm_from_scratch.io.checkpoints import COMPILED_PREFIX, clean_state_dict, load_checkpoint, save_checkpoint

__all__ = ["COMPILED_PREFIX", "clean_state_dict", "load_checkpoint", "save_checkpoint"]
