"""Our checkpoints as ``.safetensors``: now part of :mod:`llm_from_scratch.io.checkpoints`.

Reading and writing our own checkpoints is not exporting, so it lives with the ``.pt`` format in
the I/O layer; these names stay importable from here (``docs/13-export.md`` shows them).

A model with a compact vocabulary (`tokenizers.compact.CompactTokenizer`) is saved **as it is**,
compact: the file is our own format, its header holds the tokenizer's config (the full
tokenizer and the kept ids), and `load_model_safetensors` / ``llmfs generate --checkpoint
X.safetensors`` rebuild both. Only the formats other tools read (`hf`, `gguf`) are written over
the full vocabulary (`model.compact_vocab.expand_to_full_vocabulary`).
"""

from __future__ import annotations

from llm_from_scratch.io.checkpoints import (
    METADATA_KEY,
    MODEL_CONFIG_KEY,
    TIED_KEY,
    TOKENIZER_KEY,
    load_model_safetensors,
    read_safetensors_checkpoint,
    save_model_safetensors,
)

__all__ = ["METADATA_KEY", "MODEL_CONFIG_KEY", "TIED_KEY", "TOKENIZER_KEY", "load_model_safetensors",
           "read_safetensors_checkpoint", "save_model_safetensors"]
