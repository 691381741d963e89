"""Exporting our models to the formats other tools load.

* :mod:`.hf` - a Hugging Face `transformers` folder (GPT2LMHeadModel + tokenizer.json);
* :mod:`.gguf_export` - one GGUF file for llama.cpp (architecture ``gpt2``);
* our own checkpoints as ``.safetensors`` (weights + configs, no pickle) are read and written by
  :mod:`llm_from_scratch.io.checkpoints`; ``save_model_safetensors`` / ``load_model_safetensors``
  are importable from here too.

See ``docs/13-export.md``. `transformers`, `tokenizers` and `gguf` are imported only when an
export runs, so importing this package does not need them.
"""

from __future__ import annotations

from llm_from_scratch.export.gguf_export import export_checkpoint_gguf, export_gguf
from llm_from_scratch.export.hf import ExportError, export_checkpoint_hf, export_hf
from llm_from_scratch.io.checkpoints import load_model_safetensors, save_model_safetensors

__all__ = ["ExportError", "export_checkpoint_gguf", "export_checkpoint_hf", "export_gguf", "export_hf",
           "load_model_safetensors", "save_model_safetensors"]
