"""Exporting our models to the formats other tools load.

* :mod:`.hf` - a Hugging Face `transformers` folder (GPT2LMHeadModel + tokenizer.json);
* :mod:`.gguf_export` - one GGUF file for llama.cpp (architecture ``gpt2``);
* :mod:`.safetensors_io` - our own checkpoints as ``.safetensors`` (weights + configs, no pickle).

See ``docs/13-export.md``. The submodules are imported on first use, so importing this
package does not need `transformers` or `gguf`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ExportError": "llm_from_scratch.export.hf",
    "export_hf": "llm_from_scratch.export.hf",
    "export_checkpoint_hf": "llm_from_scratch.export.hf",
    "export_gguf": "llm_from_scratch.export.gguf_export",
    "export_checkpoint_gguf": "llm_from_scratch.export.gguf_export",
    "save_model_safetensors": "llm_from_scratch.export.safetensors_io",
    "load_model_safetensors": "llm_from_scratch.export.safetensors_io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
