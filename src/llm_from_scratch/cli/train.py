"""`llmfs train`: pretrain a model (GPT, Llama, ...) on a corpus, the project's main job.

    llmfs train                                   # gpt-micro on Shakespeare, character tokenizer
    llmfs train --model_type gpt-mini --dataset shakespeare --tokenizer gpt2
    llmfs train --model_type llama-micro          # the Llama architecture: RoPE, RMSNorm, SwiGLU, GQA
    llmfs train --model_type gpt-micro --dataset chinese --tokenizer cl100k_base --epochs 5
    llmfs train --dataset path/to/my_texts/ --tokenizer char --max_steps 2000
    llmfs train --resume                          # continue checkpoints/<model_type>/last.pt exactly
    torchrun --nproc_per_node=2 -m llm_from_scratch train ...   # data-parallel over 2 processes

Steps: the corpus (downloaded or your files) -> tokenized once into memory-mapped token shards
-> a model from a preset of any family (gpt-*, llama-*, ...) -> the training loop (evaluation,
samples, checkpoints, TensorBoard, loss.png) in --out_dir (default checkpoints/<model_type>/).
All of it is `llm_from_scratch.pipelines.pretrain`: this command turns the flags into a
`PretrainConfig` and makes that one call.
"""

from __future__ import annotations

import argparse

from llm_from_scratch.cli.common import command_parser, add_flag, add_precision_flag, config_from_args
from llm_from_scratch.pipelines.pretraining import DEFAULTS
from llm_from_scratch.training.recipes import RECIPES


def _yes_no(text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "1", "on"):
        return True
    if value in ("no", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def add_parser(subparsers) -> None:
    from llm_from_scratch.model.registry import model_types

    p = command_parser(subparsers, "train", "pretrain a model on a corpus (the main job)", __doc__)
    g = p.add_argument_group("what to train")
    add_flag(g, "model_type", default=None, help=f"model preset (default {DEFAULTS['model_type']}): "
             f"{', '.join(model_types())}")
    add_flag(g, "dataset", default=None, help=f"corpus name or path (default {DEFAULTS['dataset']}); "
             "see `llmfs download --list`")
    add_flag(g, "tokenizer", default=None, help=f"gpt2, cl100k_base, o200k_base, char, or a tokenizer file "
             f"(default {DEFAULTS['tokenizer']}; when resuming, the checkpoint's)")
    add_flag(g, "vocab", default="auto", choices=["auto", "compact", "full"],
             help="the model's vocabulary: compact (only the ids the corpus uses, plus one for all others: a big "
                  "tokenizer on a small corpus trains many times faster), full, or auto (default: compact when the "
                  "corpus uses under half of the tokenizer's ids); see docs/10-pretraining.md")
    add_flag(g, "context_length", type=int, default=None, help="override the preset's context length")
    add_flag(g, "dropout", type=float, default=None, help="override the preset's dropout rate")
    add_flag(g, "recipe", default=None, choices=list(RECIPES),
             help="book (default): the book's GPT and AdamW; modern: the speedrun's architecture and Muon "
                  "(docs/21-speedrun.md). The flags below override a recipe's choices")
    g = p.add_argument_group("architecture switches (GPT presets; default: the recipe's, else the preset's)")
    add_flag(g, "norm", default=None, choices=["layernorm", "rmsnorm"])
    add_flag(g, "positions", default=None, choices=["learned", "rope"], help="a learned table or rotary (RoPE)")
    add_flag(g, "mlp", default=None, choices=["gelu", "relu2", "swiglu"], help="the feed-forward")
    add_flag(g, "bias", default=None, type=_yes_no, help="biases in projections and feed-forward: yes|no")
    add_flag(g, "qk_norm", default=None, type=_yes_no, help="RMS-normalize queries and keys: yes|no")
    add_flag(g, "logit_softcap", default=None, type=float, help="squash logits into (-cap, cap) with tanh; 0: no cap")
    add_flag(g, "zero_init", default=None, type=_yes_no, help="residual projections (and an untied head) "
             "start at zero: yes|no")
    add_flag(g, "tie_weights", default=None, type=_yes_no, help="the head shares the token embedding: yes|no")
    g = p.add_argument_group("how long (the first given wins)")
    add_flag(g, "max_steps", type=int, default=None,
             help=f"optimizer steps (default {DEFAULTS['max_steps']} when no length flag is given)")
    add_flag(g, "epochs", type=float, default=None, help="passes over the training tokens")
    add_flag(g, "max_tokens", type=int, default=None, help="training tokens")
    g = p.add_argument_group("optimization")
    add_flag(g, "batch_size", type=int, default=16, help="windows per batch per process (default %(default)s)")
    add_flag(g, "grad_accum", type=int, default=1, help="micro-batches per optimizer step (default %(default)s)")
    add_flag(g, "lr", type=float, default=None, help="peak learning rate (default: the recipe's, else 2e-3 for "
             "the small presets, 6e-4 for gpt2*); with Muon, AdamW's rate for embeddings, head and norms")
    add_flag(g, "optimizer", default=None, choices=["adamw", "muon"],
             help="adamw, or muon (Muon for the blocks' matrices, AdamW for the rest); default: the recipe's")
    add_flag(g, "muon_lr", type=float, default=None, help="Muon's peak learning rate (default: the recipe's, 0.02)")
    add_flag(g, "windows", default=None, choices=["grid", "random"],
             help="training windows: grid (disjoint, the book's) or random (every offset a possible start)")
    add_flag(g, "min_lr_ratio", type=float, default=0.1)
    add_flag(g, "warmup_steps", type=int, default=None)
    add_flag(g, "weight_decay", type=float, default=0.1)
    add_flag(g, "grad_clip", type=float, default=1.0)
    add_precision_flag(g)
    add_flag(g, "no_fused_loss", action="store_true",
             help="compute the loss from full logits (the book's way) instead of the fused, chunked "
                  "head + cross-entropy (same result, more memory, slower)")
    add_flag(g, "compile", action="store_true", help="torch.compile the model")
    add_flag(g, "device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, mps")
    add_flag(g, "seed", type=int, default=123)
    g = p.add_argument_group("evaluation and output")
    add_flag(g, "eval_interval", type=int, default=None,
             help="steps between evaluations (default: sized so that evaluating takes ~5%% of the run)")
    add_flag(g, "eval_batches", type=int, default=None, help="batches per evaluation (default: sized to the run)")
    add_flag(g, "final_eval_tokens", type=_final_eval_tokens, default="auto",
             help="the end-of-run validation loss (fp32) over: auto (default: sized to the run, at most 1M "
                  "tokens), all (the whole split), or a number of tokens")
    add_flag(g, "sample_prompt", default=None, help="prompt for the samples shown at each evaluation")
    add_flag(g, "out_dir", default=None, help="checkpoints, log, TensorBoard and loss.png (default checkpoints/<model_type>)")
    add_flag(g, "resume", nargs="?", const="auto", default=None,
             help="continue a run: from <out_dir>/last.pt, or from the checkpoint given")
    add_flag(g, "num_workers", type=int, default=None, help="processes for tokenizing the corpus")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from llm_from_scratch.pipelines import PretrainConfig, pretrain

    pretrain(config_from_args(PretrainConfig, args, fused_loss=not args.no_fused_loss))
    return 0


def _final_eval_tokens(text: str):
    """--final_eval_tokens: "auto", "all" or a positive number of tokens."""
    if text in ("auto", "all"):
        return text
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected auto, all or a number of tokens, got {text!r}")
    return value
