"""llm-from-scratch: build, train, fine-tune and serve GPT-style language models from first principles.

The most used names are importable from the top level (loaded on first use, so that
`llmfs --help` stays quick):

    from llm_from_scratch import GPTModel, GPTConfig, get_tokenizer, generate
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GPTModel": "llm_from_scratch.model.gpt",
    "GPT": "llm_from_scratch.model.gpt",
    "GPTConfig": "llm_from_scratch.model.config",
    "preset_config": "llm_from_scratch.model.config",
    "get_tokenizer": "llm_from_scratch.tokenizers",
    "GPTDatasetV1": "llm_from_scratch.data.sliding_window",
    "create_dataloader_v1": "llm_from_scratch.data.sliding_window",
    "create_dataloaders": "llm_from_scratch.data.sliding_window",
    "generate": "llm_from_scratch.generation",
    "generate_stream": "llm_from_scratch.generation",
    "text_to_token_ids": "llm_from_scratch.generation",
    "token_ids_to_text": "llm_from_scratch.generation",
    "GPTTrainer": "llm_from_scratch.training.trainer",
    "load_pretrained": "llm_from_scratch.loading",
    "load_model": "llm_from_scratch.loading",
    "load_gpt2": "llm_from_scratch.weights.gpt2",
    "LlamaModel": "llm_from_scratch.model.llama",
    "LlamaConfig": "llm_from_scratch.model.llama",
    "export_hf": "llm_from_scratch.export",
    "export_gguf": "llm_from_scratch.export",
    "save_model_safetensors": "llm_from_scratch.export",
    "TrainerConfig": "llm_from_scratch.training.trainer",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llm_from_scratch' has no attribute {name!r}")
