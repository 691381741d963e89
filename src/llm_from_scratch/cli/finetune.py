"""`llmfs finetune`: turn a pretrained model into an instruction follower or a text classifier.

    llmfs finetune instruct --model smollm2-135m-instruct --data synthetic
    llmfs finetune instruct --model gpt2-medium --data book --style alpaca --epochs 2
    llmfs finetune instruct --checkpoint checkpoints/gpt-mini/best_model.pt --data my-instructions.json --lora
    llmfs finetune classify --model smollm2-135m-instruct --dataset sms_spam
    llmfs finetune classify --model gpt2 --dataset reviews.csv --text_column review --label_column stars

Both use the shared training loop (progress, checkpoints in --out_dir, --resume, TensorBoard,
loss plots) with the material's settings as defaults (AdamW, lr 5e-5, weight decay 0.1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llm_from_scratch.cli.common import add_flag, add_precision_flag, sigterm_as_ctrl_c
from llm_from_scratch.cli.generate import add_model_flags, load_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a model: instruction following or classification",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    _add_instruct(tasks)
    from llm_from_scratch.cli import classify
    classify.add_finetune_parser(tasks)
    p.set_defaults(handler=lambda args: (p.print_help(), 0)[1])


def add_training_flags(p, epochs: float, lr: float, eval_interval: int | None, eval_batches: int) -> None:
    g = p.add_argument_group("training")
    add_flag(g, "epochs", type=float, default=epochs, help="passes over the training data (default %(default)s)")
    add_flag(g, "max_steps", type=int, default=None, help="stop after this many optimizer steps instead")
    add_flag(g, "lr", type=float, default=lr, help="peak learning rate (default %(default)s)")
    add_flag(g, "weight_decay", type=float, default=0.1)
    add_flag(g, "warmup_steps", type=int, default=0)
    add_flag(g, "batch_size", type=int, default=8)
    add_flag(g, "grad_accum", type=int, default=1)
    add_flag(g, "eval_interval", type=int, default=eval_interval, help="steps between evaluations")
    add_flag(g, "eval_batches", type=int, default=eval_batches, help="batches per evaluation (default %(default)s)")
    add_flag(g, "lora", action="store_true", help="train LoRA adapters instead of the weights")
    add_flag(g, "lora_rank", type=int, default=16)
    add_flag(g, "lora_alpha", type=float, default=16.0)
    add_flag(g, "out_dir", default=None)
    add_flag(g, "resume", action="store_true", help="continue <out_dir>/last.pt exactly")
    add_flag(g, "seed", type=int, default=123)
    add_flag(g, "device", default="auto")
    add_precision_flag(g)
    add_flag(g, "progress", action=argparse.BooleanOptionalAction, default=True)


def _add_instruct(tasks) -> None:
    p = tasks.add_parser("instruct", help="instruction fine-tuning (Alpaca-format data)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    add_flag(p, "data", default="synthetic",
             help="instruction data: a .json/.jsonl file of {instruction, input, output}, 'book' (the "
                  "material's 1,100 entries, downloaded) or 'synthetic' (made here; default)")
    add_flag(p, "num_examples", type=int, default=1100, help="size of the synthetic set (default %(default)s)")
    add_flag(p, "style", default="auto", choices=["auto", "alpaca", "phi3", "chat"],
             help="prompt format: auto = the model's chat template if it has one, else alpaca")
    add_flag(p, "mask_prompt", action="store_true", help="leave the instruction tokens out of the loss")
    add_flag(p, "allowed_max_length", type=int, default=None, help="truncate examples (default: the context)")
    add_flag(p, "max_new_tokens", type=int, default=32, help="longest answer generated for the test set")
    add_flag(p, "skip_baseline", action="store_true", help="do not score the model before fine-tuning")
    add_training_flags(p, epochs=2, lr=5e-5, eval_interval=None, eval_batches=5)
    p.set_defaults(handler=run_instruct)


def run_instruct(args: argparse.Namespace) -> int:
    from llm_from_scratch.data.instructions import load_instruction_data
    from llm_from_scratch.data.synthetic_instructions import make_instruction_set
    from llm_from_scratch.finetune.instruct import (generate_responses, instruction_loaders, prompt_style_for,
                                                    save_results, score_exact_match)
    from llm_from_scratch.training.trainer import GPTTrainer, auto_device

    started = time.perf_counter()
    device = auto_device(args.device)
    loaded = load_from_args(args, device)
    model, tokenizer = loaded.model, loaded.tokenizer
    entries = make_instruction_set(args.num_examples, seed=args.seed) if args.data == "synthetic" \
        else load_instruction_data(args.data)
    style = prompt_style_for(tokenizer, args.style)
    context = model.cfg.context_length
    allowed = min(args.allowed_max_length or context, context)
    train_loader, val_loader, splits = instruction_loaders(entries, tokenizer, style, batch_size=args.batch_size,
                                                           mask_prompt=args.mask_prompt,
                                                           allowed_max_length=allowed, seed=args.seed)
    name = Path(loaded.name).stem if args.checkpoint else loaded.name
    out_dir = Path(args.out_dir or f"checkpoints/instruct-{name}")
    print(f"llmfs finetune instruct: {loaded.name} ({model.num_parameters():,} parameters), {args.data}: "
          f"{len(splits.train)} train / {len(splits.validation)} validation / {len(splits.test)} test entries, "
          f"prompt style {style.name}{', prompt masked' if args.mask_prompt else ''}; output in {out_dir}")

    scores: dict = {}
    if not args.skip_baseline and not args.resume:
        before = generate_responses(model, tokenizer, splits.test, style, max_new_tokens=args.max_new_tokens,
                                    progress=args.progress)
        save_results(out_dir / "test-responses-before.json", before)
        scores["before"] = score_exact_match(before)
        print(f"before fine-tuning: exact match {scores['before']['exact_match']:.1%}, answer contained "
              f"{scores['before']['contains_answer']:.1%} on {len(before)} test entries")

    task = {"type": "instruct", "style": style.name, "mask_prompt": args.mask_prompt}
    lora_info = None
    if args.lora:
        import torch

        from llm_from_scratch.finetune.lora import apply_lora, count_parameters
        torch.manual_seed(args.seed)  # LoRA's A matrices start the same in every run
        apply_lora(model, args.lora_rank, args.lora_alpha)
        lora_info = {"rank": args.lora_rank, "alpha": args.lora_alpha}
        trainable, total = count_parameters(model)
        print(f"LoRA rank {args.lora_rank}: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})")
    model.train()
    trainer = GPTTrainer(
        model, train_loader, val_loader, tokenizer=tokenizer, max_steps=args.max_steps,
        epochs=None if args.max_steps else args.epochs, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, grad_accum_steps=args.grad_accum, eval_interval=args.eval_interval,
        eval_batches=args.eval_batches, out_dir=str(out_dir), seed=args.seed, device=str(device),
        resume_from=str(out_dir / "last.pt") if args.resume else None, progress=args.progress,
        precision=args.precision, extra_checkpoint_info={"task": task, "model_type": name, "lora": lora_info},
    )
    print(f"device {trainer.device}, {trainer.precision_choice.describe()}")
    with sigterm_as_ctrl_c():          # `kill` saves last.pt like Ctrl-C does
        trainer.train()
    model.eval()
    after = generate_responses(model, tokenizer, splits.test, style, max_new_tokens=args.max_new_tokens,
                               progress=args.progress)
    save_results(out_dir / "test-responses.json", after)
    scores["after"] = score_exact_match(after)
    if args.lora:
        from llm_from_scratch.finetune.lora import merge_lora, save_lora
        save_lora(model, out_dir / "lora_adapters.safetensors", args.lora_rank, args.lora_alpha)
        merge_lora(model)
    from llm_from_scratch.training.checkpoint import save_checkpoint
    save_checkpoint(out_dir / "final_model.pt", {"model": model.state_dict(), "model_config": model.cfg.to_dict(),
                                                 "tokenizer": tokenizer.to_config(), "task": task,
                                                 "model_type": name})
    scores["minutes"] = (time.perf_counter() - started) / 60
    scores["precision"] = trainer.precision
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    line = (f"after fine-tuning: exact match {scores['after']['exact_match']:.1%}, answer contained "
            f"{scores['after']['contains_answer']:.1%}")
    if "before" in scores:
        line += (f" (before: {scores['before']['exact_match']:.1%} and "
                 f"{scores['before']['contains_answer']:.1%})")
    print(f"{line}\n  {out_dir / 'test-responses.json'}\n  {out_dir / 'final_model.pt'} "
          f"(llmfs chat --checkpoint {out_dir / 'final_model.pt'})\n  {out_dir / 'loss.png'}\n"
          f"done in {scores['minutes']:.1f} min")
    return 0
