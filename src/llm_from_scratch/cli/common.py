"""Small helpers shared by the subcommands: flag spellings, the model flags, flags -> a config.

* `add_flag`: every flag in two spellings, `--some_flag` and `--some-flag`.
* `add_precision_flag`: `--precision`, the same for every command that trains.
* `add_model_flags` / `load_from_args`: `--model NAME | --checkpoint PATH`, for every command
  that uses a model (generate, chat, serve, evaluate, export, finetune); `add_inference_flags`:
  `--dtype fp32|bf16`, `--quantize` (none, or a format of `quantize.formats.FORMATS`) and
  `--compile` for those that only run it.
* `config_from_args`: a pipeline config (`llm_from_scratch.pipelines`) from the parsed flags
  of the same names: the whole job of a command that runs a pipeline stage.
* `CommandError`: bad input, printed by `main.py` as one line (exit code 2). It is the pipelines'
  `PipelineError` under the name the commands use, so a stage's error reads the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from llm_from_scratch.pipelines.common import PipelineError, sigterm_as_ctrl_c

CommandError = PipelineError
__all__ = ["CommandError", "sigterm_as_ctrl_c", "command_parser", "add_flag", "add_precision_flag", "add_model_flags",
           "add_inference_flags", "add_sampling_flags", "load_from_args", "config_from_args"]


def command_parser(subparsers, name: str, help: str, doc: str | None) -> argparse.ArgumentParser:
    """A command's (or sub-command's) parser: its one-line `help` in the list of commands, and the
    module docstring `doc`, formatted as written, as its --help page."""
    return subparsers.add_parser(name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add `--some_flag` with its `--some-flag` twin (seed 002 uses underscores, litgpt dashes)."""
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*spellings, dest=name, **kwargs)


def add_precision_flag(parser) -> None:
    """--precision, the same for every command that trains (see training/precision.py)."""
    add_flag(parser, "precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
             help="auto (default: bf16 on GPUs, and on AMX CPUs when a measured step of this model is "
                  "faster in bf16; else fp32), fp32, bf16 (autocast, CPU or GPU) or fp16 (CUDA, with a "
                  "gradient scaler). LLMFS_CPU_BF16=1|0 forces auto's choice on a CPU")


def add_model_flags(p, inference: bool = False) -> None:
    """--model NAME | --checkpoint PATH (exactly one), shared by every command that uses a model;
    with `inference`, also --dtype, --quantize and --compile (`add_inference_flags`)."""
    add_flag(p, "model", default=None,
             help="a pretrained model: gpt2, gpt2-medium, gpt2-large, gpt2-xl (or 124M...1558M), "
                  "smollm2-135m-instruct, qwen3-0.6b, qwen3-0.6b-base, or a path to a Hugging Face folder "
                  "(GPT-2, Llama, Qwen3) / .gguf file")
    add_flag(p, "checkpoint", default=None, help="a best_model.pt / last.pt written by llmfs train or finetune")
    if inference:
        add_inference_flags(p)


def add_inference_flags(p) -> None:
    """--dtype and --quantize, shared by every command that runs a model for inference
    (generate, chat, serve, evaluate): see docs/20-quantization.md."""
    add_flag(p, "dtype", default="fp32", choices=["fp32", "bf16"],
             help="float dtype of the weights and activations (default fp32; bf16 halves the memory and "
                  "is faster on most CPUs for generation)")
    from llm_from_scratch.quantize.formats import FORMATS, QUANTIZE_MODES

    formats = "; ".join(f"{fmt.name}: {fmt.description}" for fmt in FORMATS.values())
    add_flag(p, "quantize", default="none", choices=list(QUANTIZE_MODES),
             help=f"weight-only quantization for inference ({formats}). A GGUF model's 4/8-bit blocks "
                  "load straight into it (default none)")
    add_flag(p, "compile", action="store_true",
             help="compile the one-token decode step with torch.compile (takes a minute first; measure "
                  "whether it pays on your machine: benchmarks/bench_generation.py)")


def add_sampling_flags(p, defaults: dict, max_new_tokens_help: str) -> None:
    """--max_new_tokens, --temperature, --top_k, --top_p and --seed, with a surface's defaults
    (`generation.defaults.SURFACE_DEFAULTS`), shared by generate and chat."""
    add_flag(p, "max_new_tokens", type=int, default=defaults["max_tokens"],
             help=f"{max_new_tokens_help} (default %(default)s)")
    add_flag(p, "temperature", type=float, default=defaults["temperature"], help="0 = greedy (default %(default)s)")
    add_flag(p, "top_k", type=int, default=defaults["top_k"],
             help="sample among the k most likely tokens (default %(default)s; 0 or None = off)")
    add_flag(p, "top_p", type=float, default=defaults["top_p"],
             help="nucleus sampling: smallest set with this much probability (default %(default)s)")
    add_flag(p, "seed", type=int, default=None, help="make sampling repeatable")


def load_from_args(args, device) -> "LoadedModel":  # noqa: F821
    """The model that --model / --checkpoint names (with --tokenizer / --model_type checks, when
    the command has those flags, and --dtype / --quantize when it has `add_inference_flags`), as
    a `loading.LoadedModel`."""
    from llm_from_scratch.loading import load_model

    if (args.model is None) == (args.checkpoint is None):
        raise CommandError("give --model NAME (a pretrained model) or --checkpoint PATH (one of ours), "
                           f"{'not both' if args.model else 'one of them'}")
    inference = hasattr(args, "quantize")  # (export's --dtype means the file's precision instead)
    try:
        loaded = load_model(model=args.model, checkpoint=args.checkpoint, device=device,
                            dtype=args.dtype if inference else "fp32", quantize=args.quantize if inference else "none",
                            tokenizer_name=getattr(args, "tokenizer", None), model_type=getattr(args, "model_type", None))
    except ValueError as exc:  # a mismatch, an unsupported combination, or a file that is no checkpoint of ours
        raise CommandError(str(exc)) from exc
    import sys

    if getattr(args, "compile", False):
        from llm_from_scratch.generation.compiled import compile_decoding
        print(compile_decoding(loaded.model), file=sys.stderr)
    elif inference and hasattr(loaded.model, "arch"):  # which decode step runs here, and if not native, why
        from llm_from_scratch.model.native_decode import decode_path_of
        print(decode_path_of(loaded.model), file=sys.stderr)
    return loaded


def config_from_args(config_class, args: argparse.Namespace, **changes: Any):
    """`config_class(...)` (a dataclass) from the flags named like its fields; `changes` set the
    fields whose flag has another name or meaning (`fused_loss=not args.no_fused_loss`)."""
    given = vars(args)
    values = {f.name: given[f.name] for f in dataclasses.fields(config_class) if f.name in given}
    return config_class(**{**values, **changes})


def human_size(num_bytes: float) -> str:
    """1536 -> "1.5 KB": file and text sizes in messages."""
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:,.0f} {unit}" if unit == "B" else f"{num_bytes:,.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")
