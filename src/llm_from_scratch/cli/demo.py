"""`llmfs demo`: the whole pipeline in a couple of minutes, with nothing to download.

Text (the built-in tiny stories) -> character tokenizer -> sliding windows -> a gpt-micro model
-> training with evaluation and checkpoints -> a loss plot -> samples from the trained model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from llm_from_scratch.cli.common import add_precision_flag, sigterm_as_ctrl_c


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train a tiny model on built-in text and print samples (no download)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-steps", "--max_steps", dest="max_steps", type=int, default=1000,
                   help="optimizer steps (default: %(default)s, about two minutes on 2 CPU cores)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=16)
    p.add_argument("--out-dir", "--out_dir", dest="out_dir", default="checkpoints/demo",
                   help="where checkpoints, the log and loss.png go (default: %(default)s)")
    p.add_argument("--prompt", default="Mia went to", help="prompt for the samples (default: %(default)r)")
    p.add_argument("--seed", type=int, default=123)
    add_precision_flag(p)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from llm_from_scratch.data import create_dataloaders
    from llm_from_scratch.data.tiny_stories import tiny_stories
    from llm_from_scratch.generation import generate, text_to_token_ids, token_ids_to_text
    from llm_from_scratch.model import GPTModel
    from llm_from_scratch.tokenizers import CharTokenizer
    from llm_from_scratch.training import GPTTrainer
    from llm_from_scratch.training.trainer import validation_summary

    torch.manual_seed(args.seed)
    text = tiny_stories(num_stories=2000)
    tokenizer = CharTokenizer(text)
    model = GPTModel.from_preset("gpt-micro", vocab_size=tokenizer.vocab_size)
    block_size = model.cfg.context_length
    train_loader, val_loader = create_dataloaders(text, tokenizer, block_size=block_size,
                                                  batch_size=args.batch_size, seed=args.seed)
    print(f"llmfs demo: {len(text):,} characters of built-in stories, character tokenizer "
          f"({tokenizer.vocab_size} symbols), gpt-micro model ({model.num_parameters():,} parameters), "
          f"{args.max_steps} steps of {args.batch_size} x {block_size} tokens")
    started = time.perf_counter()
    trainer = GPTTrainer(model, train_loader, val_loader, tokenizer=tokenizer, max_steps=args.max_steps,
                         lr=2e-3, eval_interval=max(1, args.max_steps // 10), sample_prompt=args.prompt,
                         out_dir=args.out_dir, seed=args.seed, progress=args.progress, precision=args.precision,
                         extra_checkpoint_info={"model_type": "gpt-micro"})
    print(f"device {trainer.device}, {trainer.precision_choice.describe()}")
    with sigterm_as_ctrl_c():
        history = trainer.train()
    minutes = (time.perf_counter() - started) / 60
    print(f"\nDone in {minutes:.1f} min: train loss {history[-1]['train_loss']:.3f}, {validation_summary(history)}. "
          f"Checkpoints, log and loss.png are in {Path(args.out_dir).resolve()}")

    generator = torch.Generator(device=trainer.device).manual_seed(args.seed)
    idx = text_to_token_ids(args.prompt, tokenizer).to(trainer.device)
    print("\nSamples (temperature 0.8, top-k 20):")
    for _ in range(3):
        out = generate(model, idx, max_new_tokens=160, temperature=0.8, top_k=20, generator=generator)
        print("  " + token_ids_to_text(out, tokenizer).replace("\n", " "))
    return 0
