"""`llmfs train`: pretrain a GPT on a corpus, the project's main job.

    llmfs train                                   # gpt-micro on Shakespeare with the GPT-2 tokenizer
    llmfs train --model_type gpt-mini --dataset shakespeare --tokenizer gpt2
    llmfs train --model_type gpt-micro --dataset chinese --tokenizer cl100k_base --epochs 5
    llmfs train --dataset path/to/my_texts/ --tokenizer char --max_steps 2000
    llmfs train --resume                          # continue checkpoints/<model_type>/last.pt exactly
    torchrun --nproc_per_node=2 -m llm_from_scratch train ...   # data-parallel over 2 processes

Steps: the corpus (downloaded or your files) -> tokenized once into memory-mapped token shards
-> a model from a preset -> the training loop (evaluation, samples, checkpoints, TensorBoard,
loss.png) in --out_dir (default checkpoints/<model_type>/).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from llm_from_scratch.cli.common import CommandError, add_flag, add_precision_flag, sigterm_as_ctrl_c

# The no-flag main job: a character-level gpt-micro on Shakespeare, a few minutes on a CPU. (With
# the GPT-2 tokenizer the same model runs ~29x slower on a CPU: its 50,257-way output layer
# dwarfs a 0.8M-parameter body. `--tokenizer gpt2` is one flag away.)
DEFAULTS = dict(model_type="gpt-micro", dataset="shakespeare", tokenizer="char", max_steps=2000)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="pretrain a GPT on a corpus (the main job)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to train")
    add_flag(g, "model_type", default=None, help=f"model preset (default {DEFAULTS['model_type']}): "
             "gpt-micro, gpt-mini, gpt-small, gpt2, gpt2-medium, gpt2-large, gpt2-xl")
    add_flag(g, "dataset", default=None, help=f"corpus name or path (default {DEFAULTS['dataset']}); "
             "see `llmfs download --list`")
    add_flag(g, "tokenizer", default=None, help=f"gpt2, cl100k_base, o200k_base, char, or a tokenizer file "
             f"(default {DEFAULTS['tokenizer']}; when resuming, the checkpoint's)")
    add_flag(g, "context_length", type=int, default=None, help="override the preset's context length")
    add_flag(g, "dropout", type=float, default=None, help="override the preset's dropout rate")
    g = p.add_argument_group("how long (the first given wins)")
    add_flag(g, "max_steps", type=int, default=None,
             help=f"optimizer steps (default {DEFAULTS['max_steps']} when no length flag is given)")
    add_flag(g, "epochs", type=float, default=None, help="passes over the training tokens")
    add_flag(g, "max_tokens", type=int, default=None, help="training tokens")
    g = p.add_argument_group("optimization")
    add_flag(g, "batch_size", type=int, default=16, help="windows per batch per process (default %(default)s)")
    add_flag(g, "grad_accum", type=int, default=1, help="micro-batches per optimizer step (default %(default)s)")
    add_flag(g, "lr", type=float, default=None, help="peak learning rate (default 2e-3 for the small presets, 6e-4 for gpt2*)")
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
    add_flag(g, "eval_interval", type=int, default=None, help="steps between evaluations (default: 10 per run)")
    add_flag(g, "eval_batches", type=int, default=20)
    add_flag(g, "sample_prompt", default=None, help="prompt for the samples shown at each evaluation")
    add_flag(g, "out_dir", default=None, help="checkpoints, log, TensorBoard and loss.png (default checkpoints/<model_type>)")
    add_flag(g, "resume", nargs="?", const="auto", default=None,
             help="continue a run: from <out_dir>/last.pt, or from the checkpoint given")
    add_flag(g, "num_workers", type=int, default=None, help="processes for tokenizing the corpus")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(handler=run)


def _default_lr(model_type: str) -> float:
    return 6e-4 if model_type.startswith("gpt2") else 2e-3


def _resolve_resume(args, out_dir: Path) -> Path | None:
    if args.resume is None:
        return None
    path = out_dir / "last.pt" if args.resume == "auto" else Path(args.resume)
    if not path.is_file():
        raise CommandError(f"--resume: no checkpoint at {path}. Start without --resume, or point --resume "
                           "at a last.pt written by an earlier run.")
    return path


def _archive_previous_run(out_dir: Path) -> None:
    """A fresh run in a folder that holds an earlier one moves the old files aside: nothing is lost."""
    old = [p for p in (out_dir / n for n in ("best_model.pt", "last.pt", "log.jsonl", "loss.png", "tensorboard"))
           if p.exists()]
    if not old:
        return
    target = out_dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for p in old:
        shutil.move(str(p), str(target / p.name))
    print(f"{out_dir} held an earlier run: moved it to {target} (use --resume to continue a run instead).")


def _build_tokenizer(name: str, corpus):
    from llm_from_scratch.tokenizers import CharTokenizer, get_tokenizer

    if name == "char":  # a character vocabulary is built from the corpus itself
        text = corpus.train.read_text(encoding="utf-8") + corpus.validation.read_text(encoding="utf-8")
        return CharTokenizer(text)
    return get_tokenizer(name)


def _same_tokenizer(a: dict, b: dict) -> bool:
    return a == b


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from llm_from_scratch.data.corpora import corpus_files
    from llm_from_scratch.data.shards import TokenWindowDataset, check_shard_tokenizer, prepare_shards
    from llm_from_scratch.model import GPTModel
    from llm_from_scratch.model.config import GPTConfig, preset_config
    from llm_from_scratch.tokenizers import tokenizer_from_config
    from llm_from_scratch.training import GPTTrainer, load_checkpoint
    from llm_from_scratch.training.trainer import validation_summary
    from llm_from_scratch.training.distributed import init_distributed
    from llm_from_scratch.training.trainer import auto_device

    started = time.perf_counter()
    dist_info = init_distributed(auto_device(args.device).type)

    def barrier():
        if dist_info.is_distributed:
            torch.distributed.barrier()

    model_type = args.model_type or DEFAULTS["model_type"]
    out_dir = Path(args.out_dir or Path("checkpoints") / model_type)
    resume_path = _resolve_resume(args, out_dir)
    checkpoint = load_checkpoint(resume_path) if resume_path else None
    if checkpoint is not None:
        saved_type = checkpoint.get("model_type")
        if args.model_type and saved_type and args.model_type != saved_type:
            raise CommandError(f"{resume_path} is a {saved_type} checkpoint, not {args.model_type}: drop "
                               "--model_type or resume another checkpoint.")
        model_type = saved_type or model_type
    dataset = args.dataset or (checkpoint or {}).get("dataset") or DEFAULTS["dataset"]

    # Rank 0 downloads and tokenizes; the other ranks wait, then reuse what it wrote.
    if dist_info.is_main:
        corpus = corpus_files(dataset)
    barrier()
    if not dist_info.is_main:
        corpus = corpus_files(dataset)

    if checkpoint is not None and checkpoint.get("tokenizer"):
        tokenizer = tokenizer_from_config(checkpoint["tokenizer"])
        if args.tokenizer and args.tokenizer != "char":
            requested = _build_tokenizer(args.tokenizer, corpus)
            if not _same_tokenizer(requested.to_config(), tokenizer.to_config()):
                raise CommandError(f"{resume_path} was trained with the {tokenizer.name!r} tokenizer, not "
                                   f"{args.tokenizer!r}: drop --tokenizer to use the checkpoint's.")
    else:
        tokenizer = _build_tokenizer(args.tokenizer or DEFAULTS["tokenizer"], corpus)

    if dist_info.is_main:
        shards = prepare_shards(corpus.train, corpus.validation, tokenizer, name=corpus.name,
                                num_workers=args.num_workers, progress=args.progress)
    barrier()
    if not dist_info.is_main:
        shards = prepare_shards(corpus.train, corpus.validation, tokenizer, name=corpus.name, progress=False)
    check_shard_tokenizer(shards.meta, tokenizer)

    if checkpoint is not None and checkpoint.get("model_config"):
        cfg = GPTConfig.from_dict(checkpoint["model_config"])
    else:
        overrides = {"vocab_size": tokenizer.vocab_size}
        if args.context_length:
            overrides["context_length"] = args.context_length
        if args.dropout is not None:
            overrides["drop_rate"] = args.dropout
        cfg = preset_config(model_type, **overrides)
    if cfg.vocab_size < tokenizer.vocab_size:
        raise CommandError(f"the model's vocabulary ({cfg.vocab_size}) is smaller than the tokenizer's "
                           f"({tokenizer.vocab_size}): they do not belong together.")

    train_set = TokenWindowDataset(shards.train, cfg.context_length)
    val_set = TokenWindowDataset(shards.validation, cfg.context_length)
    if len(train_set) < args.batch_size * dist_info.world_size:
        raise CommandError(f"the training split has {len(train_set)} windows of {cfg.context_length} tokens, fewer "
                           f"than one batch of {args.batch_size * dist_info.world_size}: use a smaller --batch_size "
                           "or --context_length, or more text.")
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, shuffle=False)

    torch.manual_seed(args.seed)
    model = GPTModel(cfg)
    if dist_info.is_main and checkpoint is None:
        _archive_previous_run(out_dir)
    barrier()
    if dist_info.is_main:
        print(f"llmfs train: {model_type} ({model.num_parameters():,} parameters, context {cfg.context_length}) on "
              f"{corpus.name} ({shards.meta['counts']['train']:,} train / {shards.meta['counts']['validation']:,} "
              f"validation tokens, tokenizer {tokenizer.name}, vocabulary {tokenizer.vocab_size:,}); "
              f"batch {args.batch_size} x {dist_info.world_size} process(es) x {args.grad_accum} accumulation; "
              f"output in {out_dir}")

    sample_prompt = args.sample_prompt or _default_prompt(corpus.name)
    trainer = GPTTrainer(
        model, train_loader, val_loader, tokenizer=tokenizer,
        max_steps=_max_steps(args), epochs=args.epochs, max_tokens=args.max_tokens,
        lr=args.lr or _default_lr(model_type), min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, grad_accum_steps=args.grad_accum,
        eval_interval=args.eval_interval, eval_batches=args.eval_batches, sample_prompt=sample_prompt,
        out_dir=str(out_dir), resume_from=str(resume_path) if resume_path else None, device=args.device,
        precision=args.precision, compile=args.compile, seed=args.seed, progress=args.progress,
        fused_loss=not args.no_fused_loss,
        extra_checkpoint_info={"model_type": model_type, "dataset": corpus.name},
    )
    if dist_info.is_main:
        print(f"device {trainer.device}, {trainer.precision_choice.describe()}"
              f"{', fused head + loss' if trainer.fused_loss else ''}")
    with sigterm_as_ctrl_c():
        history = trainer.train()
    if dist_info.is_main and history:
        last = history[-1]
        print(f"\nDone in {(time.perf_counter() - started) / 60:.1f} min: step {last['step']}, "
              f"{last['tokens']:,} tokens, train loss {last['train_loss']:.3f}, {validation_summary(history)}.\n"
              f"  {out_dir / 'best_model.pt'}\n  {out_dir / 'last.pt'}\n  {out_dir / 'loss.png'}\n"
              f"  tensorboard --logdir {out_dir / 'tensorboard'}\n"
              f"Generate: llmfs generate --checkpoint {out_dir / 'best_model.pt'} --prompt {sample_prompt!r}")
    if dist_info.is_distributed:
        torch.distributed.destroy_process_group()
    return 0


def _max_steps(args) -> int | None:
    if args.max_steps is None and args.epochs is None and args.max_tokens is None:
        return DEFAULTS["max_steps"]
    return args.max_steps


def _default_prompt(corpus_name: str) -> str:
    return {"shakespeare": "KING", "chinese": "中国", "wikitext2": "The history of",
            "the-verdict": "I had always"}.get(corpus_name, "The")
