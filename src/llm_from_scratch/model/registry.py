"""Model families and presets by name: the one place that turns a name or a saved config into a model.

    create_model("gpt-micro", vocab_size=65)        # a preset of any family, untrained
    model_from_config(checkpoint["model_config"])   # the architecture a checkpoint recorded
    model_types()                                   # every preset name `llmfs train --model_type` accepts

A family is a configuration class plus a model class over the one decoder core (`decoder.py`).
Checkpoints record ``cfg.to_dict()``: a Llama or Qwen3 config says its ``model_type``, a GPT
config (the first family, from before there were others) says none. The presets of every
family share one name space, so commands never need to know which family a name belongs to.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch


def _families() -> dict[str, tuple[type, type]]:
    """model_type -> (config class, model class), for the families that record a model_type."""
    from llm_from_scratch.model.llama import LlamaConfig, LlamaModel
    from llm_from_scratch.model.qwen3 import Qwen3Config, Qwen3Model

    return {"llama": (LlamaConfig, LlamaModel), "qwen3": (Qwen3Config, Qwen3Model)}


def _presets() -> dict[str, tuple[type, dict[str, Any]]]:
    """Preset name -> (config class, settings) for the families other than GPT."""
    from llm_from_scratch.model.llama import LLAMA_PRESETS, LLAMA_TRAIN_PRESETS, LlamaConfig
    from llm_from_scratch.model.qwen3 import QWEN3_PRESETS, QWEN3_TRAIN_PRESETS, Qwen3Config

    return {**{n: (LlamaConfig, s) for n, s in {**LLAMA_TRAIN_PRESETS, **LLAMA_PRESETS}.items()},
            **{n: (Qwen3Config, s) for n, s in {**QWEN3_TRAIN_PRESETS, **QWEN3_PRESETS}.items()}}


def model_types() -> list[str]:
    """Every preset name, of every family (what `llmfs train --model_type` accepts)."""
    from llm_from_scratch.model.config import PRESETS

    return [*PRESETS, *_presets()]


def preset_model_config(name: str, **overrides: Any):
    """The configuration of a preset of any family, with overrides (e.g. vocab_size, context_length,
    drop_rate). An unknown name is a ValueError that lists the known ones."""
    from llm_from_scratch.model.config import PRESET_ALIASES, PRESETS, preset_config

    if name in PRESETS or name in PRESET_ALIASES:
        return preset_config(name, **overrides)
    others = _presets()
    if name in others:
        config_class, settings = others[name]
        return config_class(**{**settings, **overrides})
    raise ValueError(f"Unknown model preset {name!r}. Choose one of: {', '.join(model_types())} "
                     f"(or the book's sizes {', '.join(PRESET_ALIASES)}).")


def create_model(name: str, **overrides: Any) -> torch.nn.Module:
    """An untrained model of a preset of any family."""
    return model_from_config(preset_model_config(name, **overrides))


def config_from_dict(model_config: Mapping[str, Any]):
    """The configuration object a checkpoint's ``model_config`` dict describes."""
    from llm_from_scratch.model.config import GPTConfig

    model_type = model_config.get("model_type")
    if model_type is None:
        return GPTConfig.from_dict(model_config)
    families = _families()
    if model_type not in families:
        raise ValueError(f"unknown model_type {model_type!r} in the model configuration; this version knows "
                         f"gpt (no model_type) and {', '.join(families)}")
    return families[model_type][0].from_dict(model_config)


def model_from_config(model_config: Any) -> torch.nn.Module:
    """An untrained model of the architecture a config (object, or a checkpoint's dict) describes."""
    from llm_from_scratch.model.config import GPTConfig
    from llm_from_scratch.model.gpt import GPTModel

    if isinstance(model_config, Mapping):
        model_config = config_from_dict(model_config)
    if isinstance(model_config, GPTConfig):
        return GPTModel(model_config)
    for config_class, model_class in reversed(_families().values()):  # subclasses (Qwen3) first
        if isinstance(model_config, config_class):
            return model_class(model_config)
    raise TypeError(f"not a model configuration: {type(model_config).__name__}")
