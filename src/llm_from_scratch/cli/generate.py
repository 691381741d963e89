"""`llmfs generate`: text from a trained checkpoint or a pretrained model.

    llmfs generate --checkpoint checkpoints/gpt-micro/best_model.pt --prompt "ROMEO:"
    llmfs generate --model smollm2-135m-instruct --prompt "The capital of France is" --temperature 0
    llmfs generate --model gpt2-medium --prompt "Every effort moves you"
    llmfs generate --checkpoint ckpt.pt --prompt "人工智能" --stream --temperature 0.8 --top_k 50
    llmfs generate --checkpoint ckpt.pt --prompt "Once" --num_samples 3 --seed 1

The checkpoint records the model configuration and the tokenizer, so neither needs to be given;
`--tokenizer` / `--model_type`, when given, must match what the checkpoint says. Generation uses
the KV cache; a prompt longer than the model's context keeps its last `context_length` tokens.
"""

from __future__ import annotations

import argparse
import sys

from llm_from_scratch.cli.common import (command_parser, CommandError, add_flag, add_model_flags,
                                         add_sampling_flags, load_from_args)
from llm_from_scratch.generation.defaults import SURFACE_DEFAULTS

DEFAULTS = SURFACE_DEFAULTS["generate"]  # this command's sampling defaults


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "generate", "generate text from a checkpoint or a pretrained model", __doc__)
    add_model_flags(p, inference=True)
    add_flag(p, "prompt", default="", help="text to continue (default: start from nothing but end-of-text)")
    add_sampling_flags(p, DEFAULTS, "tokens to add")
    add_flag(p, "num_samples", type=int, default=1)
    add_flag(p, "stream", action="store_true", help="print tokens as they are generated")
    add_flag(p, "tokenizer", default=None, help="only to check: must match the checkpoint's tokenizer")
    add_flag(p, "model_type", default=None, help="only to check: must match the checkpoint's model preset")
    add_flag(p, "device", default="auto")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from llm_from_scratch.generation import generate, stream_text, text_to_token_ids, token_ids_to_text
    from llm_from_scratch.training.trainer import auto_device

    if args.max_new_tokens < 1:
        raise CommandError("--max_new_tokens must be at least 1")
    if args.num_samples < 1:
        raise CommandError("--num_samples must be at least 1")
    device = auto_device(args.device)
    loaded = load_from_args(args, device)
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt = args.prompt
    if not prompt:
        if tokenizer.eot_id is None:
            raise CommandError("give a --prompt: this tokenizer has no end-of-text token to start from")
        prompt = "<|endoftext|>"
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed if args.seed is not None else torch.seed())
    options = dict(temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p, generator=generator)
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        if args.stream:
            sys.stdout.write(args.prompt)
            for piece in stream_text(model, tokenizer, prompt, args.max_new_tokens, **options):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        else:
            idx = text_to_token_ids(prompt, tokenizer).to(device)
            out = generate(model, idx, args.max_new_tokens, eos_id=tokenizer.eot_id, **options)
            text = token_ids_to_text(out, tokenizer)
            print(text.removeprefix("<|endoftext|>") if not args.prompt else text)
    return 0
