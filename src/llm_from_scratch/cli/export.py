"""`llmfs export`: our models out, in the formats other tools read.

    llmfs export --checkpoint checkpoints/gpt-micro/best_model.pt --format hf --out exported/gpt-micro
    llmfs export --checkpoint checkpoints/gpt-micro/best_model.pt --format gguf --dtype f16 --out gpt-micro.gguf
    llmfs export --checkpoint checkpoints/llama-micro/best_model.pt --format gguf --dtype q8_0 --out llama-micro.gguf
    llmfs export --checkpoint checkpoints/gpt-micro/best_model.pt --format safetensors --out gpt-micro.safetensors

* hf: a folder that `transformers.AutoModelForCausalLM.from_pretrained` and `AutoTokenizer`
  load (GPT-2, Llama or Qwen3 architecture: config.json, model.safetensors, tokenizer files).
* gguf: one file for llama.cpp / Ollama (architecture gpt2 for GPT models, llama or qwen3 for the
  Llama family), matrices in f32, f16, bf16 or q8_0 (GGML's 8-bit blocks: 32 weights share one
  scale); norms and biases stay f32. Export the float model: one quantized for inference is refused.
* safetensors: our checkpoint without the training state, readable without running pickle code;
  `llmfs generate --checkpoint X.safetensors` loads it.

A model trained with a compact vocabulary (only the ids its corpus used, plus one reserved id
for the others; `tokenizers/compact.py`) is written to hf and gguf over the tokenizer's full
vocabulary, with the full tokenizer: every id the corpus never had gets the reserved id's rows.
The safetensors file keeps it compact, with its tokenizer config: llmfs reloads it as it was.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_from_scratch.cli.common import command_parser, CommandError, add_flag, add_model_flags, load_from_args

FORMATS = ("hf", "gguf", "safetensors")
# = export.gguf_export.GGUF_DTYPES, spelled out so that building the parser imports no export code
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "export", "export a model to Hugging Face, GGUF or safetensors", __doc__)
    add_model_flags(p)
    add_flag(p, "format", required=True, choices=FORMATS)
    add_flag(p, "out", required=True, help="output folder (hf) or file (gguf, safetensors)")
    add_flag(p, "dtype", default="f32", choices=list(GGUF_DTYPES),
             help="gguf only: precision of the matrices (q8_0: GGML 8-bit blocks; norms stay f32)")
    add_flag(p, "overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from llm_from_scratch.export.hf import ExportError

    if args.dtype != "f32" and args.format != "gguf":
        raise CommandError(f"--dtype applies to --format gguf only (--dtype {args.dtype} with --format "
                           f"{args.format}); drop --dtype, or export --format gguf")
    if args.format == "gguf" and Path(args.out).is_file() and not args.overwrite:  # before loading the model
        raise CommandError(f"{args.out} exists: pass --overwrite to replace it")
    loaded = load_from_args(args, "cpu")
    note = _vocabulary_note(loaded.tokenizer, args.format)
    if note:
        print(note)
    try:
        if args.format == "hf":
            from llm_from_scratch.export.hf import export_hf
            out = export_hf(loaded.model, loaded.tokenizer, args.out, overwrite=args.overwrite)
            print(f"wrote {out}/ (load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}))")
        elif args.format == "gguf":
            from llm_from_scratch.export.gguf_export import export_gguf
            out = export_gguf(loaded.model, loaded.tokenizer, args.out, args.dtype, overwrite=args.overwrite)
            print(f"wrote {out} ({args.dtype}; llama.cpp: llama-cli -m {out})")
        else:
            from llm_from_scratch.export.safetensors_io import save_model_safetensors
            if Path(args.out).exists() and not args.overwrite:
                raise CommandError(f"{args.out} exists: pass --overwrite to replace it")
            info = {k: v for k, v in loaded.checkpoint.items()
                    if k in ("model_type", "dataset", "best_val_loss") and v is not None}
            out = save_model_safetensors(loaded.model, args.out, info, tokenizer=loaded.tokenizer)
            print(f"wrote {out} (llmfs generate --checkpoint {out})")
    except (ExportError, TypeError) as exc:
        raise CommandError(str(exc)) from exc
    return 0


def _vocabulary_note(tokenizer, fmt: str) -> str | None:
    """What happens to a compact vocabulary in this format (None for a full one)."""
    from llm_from_scratch.model.compact_vocab import is_compact

    if not is_compact(tokenizer):
        return None
    if fmt == "safetensors":
        return f"{tokenizer.describe()}: kept compact, with its tokenizer config (llmfs reloads it as it is)"
    return (f"{tokenizer.describe()}: written over all {tokenizer.full_vocab_size:,} ids with the full "
            f"tokenizer (ids the corpus never had share the reserved id's rows)")
