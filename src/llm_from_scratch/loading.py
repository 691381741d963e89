"""One way to get a ready-to-use model: by name (pretrained) or from one of our checkpoints.

Every command that uses a model (`generate`, `chat`, `serve`, `finetune`, `evaluate`, `export`)
goes through `load_model`, so they all accept the same things:

* ``model="gpt2"`` (also ``gpt2-medium``/``-large``/``-xl`` and the book's ``124M``... names):
  OpenAI's GPT-2 (`weights/gpt2.py`); ``model="smollm2-135m-instruct"``: a Llama-family chat
  model (`weights/llama.py`); or a path to a Hugging Face folder, a GGUF file, or OpenAI's
  TensorFlow checkpoint folder.
* ``checkpoint="checkpoints/gpt-micro/best_model.pt"`` (or a ``.safetensors`` written by us):
  a model we trained or fine-tuned. The checkpoint records the architecture (GPT or Llama) and
  the tokenizer, so nothing else is needed.

This module only decides *what* to load; the work is elsewhere: names come from the catalog
(`weights/catalog.py`), files are read by `weights/` (pretrained) and `io/checkpoints.py` (ours),
and models are built by `model/registry.py` from the configuration a checkpoint records.

``quantize="int8"`` (a name of `quantize.formats.FORMATS`) is checked once, where it comes in
(`resolve_format`: unknown names, devices the format does not run on), and travels on as its
`QuantFormat`: a float model is quantized once it is loaded (`quantize_model`); a GGUF file's
blocks go straight into the quantized layers inside the GGUF loader (`weights/llama.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_from_scratch.allocator import give_back_freed_memory, trim_freed_memory
from llm_from_scratch.io.checkpoints import clean_state_dict, read_checkpoint
from llm_from_scratch.model.registry import model_from_config
from llm_from_scratch.quantize.formats import QuantFormat, resolve_format
from llm_from_scratch.quantize.model import quantize_model
from llm_from_scratch.weights.catalog import find_pretrained, pretrained_names

__all__ = ["LoadedModel", "load_model", "load_pretrained", "load_checkpoint_model", "model_from_config",
           "pretrained_names", "GPT2_NAMES"]

#: The names of OpenAI's GPT-2 models (the catalog's "gpt2" family, with the book's sizes).
GPT2_NAMES = tuple(pretrained_names("gpt2"))


@dataclass
class LoadedModel:
    """A model in eval mode with what belongs to it."""

    model: torch.nn.Module
    tokenizer: Any
    name: str                      # "gpt2-medium", "smollm2-135m-instruct", or the checkpoint's path
    checkpoint: dict[str, Any] = field(default_factory=dict)  # the checkpoint's other entries, if any

    @property
    def chat_template(self) -> str | None:
        """The model's chat template (Jinja), if it is a chat model."""
        return getattr(self.tokenizer, "chat_template", None)

    @property
    def context_length(self) -> int:
        return self.model.cfg.context_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_pretrained(name: str, *, dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
                    quantize: str | QuantFormat | None = "none"):
    """(model in eval mode, tokenizer) for a pretrained model name or a path to pretrained files.

    `dtype`: the float dtype of the weights and activations (fp32 or bf16). `quantize`: "int8" or
    "int4" stores the matrices quantized (`llm_from_scratch.quantize`); a GGUF file's 4/8-bit
    blocks then go straight into the quantized layers.

    Names: ``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl`` (the book's ``124M``, ``355M``,
    ``774M``, ``1558M``), ``smollm2-135m-instruct``, ``qwen3-0.6b``, ``qwen3-0.6b-base``. Paths: a
    Hugging Face model folder (GPT-2, Llama or Qwen3 architecture, from its config.json), a ``.gguf`` file (Llama architecture),
    or OpenAI's GPT-2 TensorFlow checkpoint folder.
    """
    from llm_from_scratch.weights.gpt2 import as_dtype

    dtype = as_dtype(dtype)
    fmt = resolve_format(quantize, device)  # None: not quantized
    known = find_pretrained(name)
    path = Path(name).expanduser()
    gguf = (known is not None and known.family == "llama") or (path.suffix == ".gguf" and path.is_file())
    if fmt is None or gguf:  # (the GGUF loader builds the quantized layers from the file's blocks)
        return _load_pretrained(name, dtype, device, fmt)
    model, tokenizer = _load_pretrained(name, dtype, "cpu", None)
    return quantize_model(model, fmt).to(device), tokenizer


def _load_pretrained(name: str, dtype: torch.dtype, device: str | torch.device, quantize: QuantFormat | None):
    known = find_pretrained(name)
    if known is not None and known.family == "gpt2":
        from llm_from_scratch.weights.gpt2 import load_gpt2

        return load_gpt2(known.name, dtype=dtype, device=device)
    if known is not None and known.family == "llama":
        from llm_from_scratch.weights.llama import load_pretrained_llama

        model, tokenizer, _ = load_pretrained_llama(known.name, dtype, quantize=quantize)
        return model.to(device).eval(), tokenizer
    if known is not None and known.family == "qwen3":
        from llm_from_scratch.weights.qwen3 import load_pretrained_qwen3

        model, tokenizer = load_pretrained_qwen3(known.name, dtype)
        return model.to(device).eval(), tokenizer
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        from llm_from_scratch.weights.llama import load_llama_gguf

        model, tokenizer = load_llama_gguf(path, dtype, quantize=quantize)
        return model.to(device).eval(), tokenizer
    if path.is_dir() and (path / "config.json").is_file():
        import json

        model_type = json.loads((path / "config.json").read_text()).get("model_type")
        if model_type == "llama":
            from llm_from_scratch.weights.llama import load_llama_hf

            model, tokenizer = load_llama_hf(path, dtype)
            return model.to(device).eval(), tokenizer
        if model_type == "qwen3":
            from llm_from_scratch.weights.qwen3 import load_qwen3_hf

            model, tokenizer = load_qwen3_hf(path, dtype)
            return model.to(device).eval(), tokenizer
        if model_type != "gpt2":
            raise ValueError(f"{path} holds a {model_type!r} model; we load the 'gpt2', 'llama' and 'qwen3' "
                             "architectures")
    if path.exists() or path.with_name(path.name + ".index").is_file():
        from llm_from_scratch.weights.gpt2 import load_gpt2

        return load_gpt2(path, dtype=dtype, device=device)
    raise ValueError(f"unknown model {name!r}: use one of {', '.join(pretrained_names())}, a Hugging Face "
                     "model folder, a .gguf file, or --checkpoint for a checkpoint written by llmfs")


def load_checkpoint_model(path: str | Path, device: str | torch.device | None = None,
                          tokenizer_name: str | None = None, model_type: str | None = None):
    """(model in eval mode, tokenizer, checkpoint dict) from a checkpoint of ours (.pt or .safetensors).

    `tokenizer_name` / `model_type`, when given, must agree with what the checkpoint records.
    """
    from llm_from_scratch.tokenizers import get_tokenizer, tokenizer_from_config

    path = Path(path)
    ckpt = read_checkpoint(path, map_location="cpu")
    if "model" not in ckpt or not ckpt.get("model_config"):
        raise ValueError(f"{path} has no model weights and configuration: is it a checkpoint written by llmfs?")
    saved_type = ckpt.get("model_type")
    if model_type and saved_type and model_type != saved_type:
        raise ValueError(f"{path} holds a {saved_type} model, not {model_type}: drop --model_type "
                         "(the checkpoint knows its model).")
    if ckpt.get("tokenizer"):
        tokenizer = tokenizer_from_config(ckpt["tokenizer"])
        own = getattr(tokenizer, "base", tokenizer)    # a compact vocabulary's tokenizer is its base's
        if tokenizer_name and tokenizer_name != "char" and \
                get_tokenizer(tokenizer_name).to_config() != own.to_config():
            raise ValueError(f"{path} was trained with the {tokenizer.name!r} tokenizer, not {tokenizer_name!r}: "
                             "ids would mean different text. Drop --tokenizer to use the checkpoint's.")
    elif tokenizer_name:
        tokenizer = get_tokenizer(tokenizer_name)
    else:
        raise ValueError(f"{path} does not record its tokenizer: pass --tokenizer (the one it was trained with).")
    if (ckpt.get("task") or {}).get("type") == "classification":
        raise ValueError(f"{path} is a classifier (llmfs finetune classify): use llmfs classify, or "
                         "finetune.classifier.load_classifier in Python")
    model = model_from_config(ckpt["model_config"])
    if ckpt.get("lora"):  # trained with LoRA adapters: rebuild them, load, then fold them in
        from llm_from_scratch.finetune.lora import apply_lora
        apply_lora(model, ckpt["lora"]["rank"], ckpt["lora"]["alpha"])
    if tokenizer.vocab_size > model.cfg.vocab_size:
        raise ValueError(f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids but the model only "
                         f"{model.cfg.vocab_size}: they do not belong together.")
    try:
        model.load_state_dict(clean_state_dict(ckpt["model"]))
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit the recorded configuration "
                         f"({str(exc).splitlines()[0]}); the file may be damaged.") from exc
    if ckpt.get("lora"):
        from llm_from_scratch.finetune.lora import merge_lora
        merge_lora(model)
    from llm_from_scratch.model.compact_vocab import attach_vocabulary
    attach_vocabulary(model, tokenizer)   # a compact vocabulary's reserved id (derived, not saved)
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer, ckpt


def load_model(model: str | None = None, checkpoint: str | Path | None = None, *,
               device: str | torch.device | None = None, dtype: torch.dtype | str = torch.float32,
               tokenizer_name: str | None = None, model_type: str | None = None,
               quantize: str | QuantFormat | None = "none") -> LoadedModel:
    """A `LoadedModel` from a pretrained name/path (`model`) or a checkpoint of ours (`checkpoint`).

    `dtype`: "fp32" (default) or "bf16" for the weights and activations. `quantize`: "none"
    (default), "int8" (per-channel int8 matrices) or "int4" (groups of 32, CPU only): weight-only
    quantization for inference (`quantize.formats.FORMATS`, docs/20-quantization.md)."""
    if (model is None) == (checkpoint is None):
        raise ValueError("give either a pretrained model (--model NAME) or a checkpoint (--checkpoint PATH), "
                         f"not {'both' if model else 'neither'}. Pretrained names: {', '.join(pretrained_names())}")
    from llm_from_scratch.training.trainer import auto_device

    device = auto_device(str(device) if device is not None else "auto")
    fmt = resolve_format(quantize, device)  # the one check of the --quantize value
    give_back_freed_memory()  # the loading's temporaries go back to the system (allocator.py)
    try:
        return _load_model(model, checkpoint, device, dtype, tokenizer_name, model_type, fmt)
    finally:
        trim_freed_memory()


def _load_model(model, checkpoint, device, dtype, tokenizer_name, model_type,
                fmt: QuantFormat | None) -> LoadedModel:
    if checkpoint is not None:
        net, tokenizer, ckpt = load_checkpoint_model(checkpoint, "cpu" if fmt is not None else device,
                                                     tokenizer_name, model_type)
        if dtype not in (torch.float32, "fp32", "float32"):
            from llm_from_scratch.weights.gpt2 import as_dtype
            net = net.to(as_dtype(dtype))
        if fmt is not None:  # quantized on the CPU, then moved
            net = quantize_model(net, fmt).to(device)
        info = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler", "rng")}
        return LoadedModel(net, tokenizer, str(checkpoint), info)
    net, tokenizer = load_pretrained(model, dtype=dtype, device=device, quantize=fmt)
    return LoadedModel(net, tokenizer, model)
