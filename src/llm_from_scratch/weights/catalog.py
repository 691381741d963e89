"""Every pretrained model we know by name, in one catalog.

``llmfs generate --model gpt2-medium``, `llm_from_scratch.loading.load_pretrained` and the loaders
in this package all look names up here, so a name means the same thing everywhere and the list
of names in an error message is always complete. An entry says which *family* of loader reads
the model (``"gpt2"``: :mod:`.gpt2`, ``"llama"``: :mod:`.llama`) and which other names it answers
to: the book's sizes (``"355M"``) and the Hugging Face repository (``"openai-community/gpt2-medium"``).

This module imports nothing heavy: it is only names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PretrainedModel:
    """One pretrained model: its name, the family of loader that reads it, and its other names."""

    name: str                  # the canonical name: "gpt2-medium", "smollm2-135m-instruct"
    family: str                # "gpt2" (weights/gpt2.py), "llama" (weights/llama.py), "qwen3" (weights/qwen3.py)
    hub_repo: str              # where Hugging Face keeps it
    aliases: tuple[str, ...] = ()  # other short names, e.g. the book's "355M"
    description: str = ""


#: GPT-2's sizes: the Hugging Face name -> the folder name OpenAI used (and the book uses).
GPT2_SIZES = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}

PRETRAINED_MODELS: dict[str, PretrainedModel] = {
    model.name: model
    for model in (
        *(PretrainedModel(name, "gpt2", f"openai-community/{name}", (size,), f"OpenAI's GPT-2 {size} (2019)")
          for name, size in GPT2_SIZES.items()),
        PretrainedModel("smollm2-135m-instruct", "llama", "HuggingFaceTB/SmolLM2-135M-Instruct",
                        description="SmolLM2-135M-Instruct, a small Llama-architecture chat model (2024)"),
        PretrainedModel("qwen3-0.6b", "qwen3", "Qwen/Qwen3-0.6B",
                        description="Qwen3-0.6B, a Llama-like model with QK-norm, chat and reasoning (2025)"),
        PretrainedModel("qwen3-0.6b-base", "qwen3", "Qwen/Qwen3-0.6B-Base",
                        description="Qwen3-0.6B-Base, the pretrained model before chat tuning (2025)"),
    )
}

_BY_ANY_NAME = {alias: model for model in PRETRAINED_MODELS.values()
                for alias in (model.name, *model.aliases, model.hub_repo)}


def find_pretrained(name: str, family: str | None = None) -> PretrainedModel | None:
    """The catalog entry for any of a model's names (of ``family``, if given); None if unknown."""
    model = _BY_ANY_NAME.get(name.strip()) if isinstance(name, str) else None
    return model if model is not None and family in (None, model.family) else None


def pretrained_names(family: str | None = None) -> list[str]:
    """The canonical names and short aliases (not the hub repositories), of ``family`` if given."""
    models = [model for model in PRETRAINED_MODELS.values() if family in (None, model.family)]
    return [model.name for model in models] + [alias for model in models for alias in model.aliases]
