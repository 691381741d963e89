"""Pretrained weights from other formats into our models (chapter 5 and beyond).

Submodules are imported only when used, so ``import llm_from_scratch.weights`` stays quick:

* :mod:`.catalog` - every pretrained model we know by name (one list for the whole project);
* :mod:`.tf_checkpoint` - reading TensorFlow checkpoints without TensorFlow (checksums: :mod:`.crc32c`);
* :mod:`.gpt2` - OpenAI's GPT-2 (all sizes) from Hugging Face or OpenAI's own files
  (:mod:`.gpt2_files`: the formats on disk; :mod:`.gpt2_names`: the tensors' names and shapes);
* :mod:`.gguf_file` - reading GGUF files (llama.cpp's format), dequantizing to float;
* :mod:`.llama` - Llama-family models (SmolLM2) from GGUF or Hugging Face safetensors.
* :mod:`.skeleton` - a model's skeleton (shapes only, no memory) for the loaders to fill.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_gpt2": "llm_from_scratch.weights.gpt2",
    "read_tf_checkpoint": "llm_from_scratch.weights.tf_checkpoint",
    "open_tf_checkpoint": "llm_from_scratch.weights.tf_checkpoint",
    "GGUFFile": "llm_from_scratch.weights.gguf_file",
    "load_llama_gguf": "llm_from_scratch.weights.llama",
    "load_llama_hf": "llm_from_scratch.weights.llama",
    "load_smollm2": "llm_from_scratch.weights.llama",
    "load_pretrained_llama": "llm_from_scratch.weights.llama",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llm_from_scratch.weights' has no attribute {name!r}")
