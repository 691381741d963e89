"""`llmfs generate`: text from a trained checkpoint.

    llmfs generate --checkpoint checkpoints/gpt-micro/best_model.pt --prompt "ROMEO:"
    llmfs generate --checkpoint ckpt.pt --prompt "人工智能" --stream --temperature 0.8 --top_k 50
    llmfs generate --checkpoint ckpt.pt --prompt "Once" --num_samples 3 --seed 1

The checkpoint records the model configuration and the tokenizer, so neither needs to be given;
`--tokenizer` / `--model_type`, when given, must match what the checkpoint says. Generation uses
the KV cache; a prompt longer than the model's context keeps its last `context_length` tokens.
"""

from __future__ import annotations

import argparse
import sys

from llm_from_scratch.cli.common import CommandError, add_flag


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate text from a checkpoint", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(p, "checkpoint", required=True, help="a best_model.pt / last.pt written by llmfs train")
    add_flag(p, "prompt", default="", help="text to continue (default: start from nothing but end-of-text)")
    add_flag(p, "max_new_tokens", type=int, default=100)
    add_flag(p, "temperature", type=float, default=0.8, help="0 = greedy (default %(default)s)")
    add_flag(p, "top_k", type=int, default=50, help="sample among the k most likely tokens (default %(default)s; 0 = off)")
    add_flag(p, "top_p", type=float, default=None, help="nucleus sampling: smallest set with this much probability")
    add_flag(p, "seed", type=int, default=None, help="make sampling repeatable")
    add_flag(p, "num_samples", type=int, default=1)
    add_flag(p, "stream", action="store_true", help="print tokens as they are generated")
    add_flag(p, "tokenizer", default=None, help="only to check: must match the checkpoint's tokenizer")
    add_flag(p, "model_type", default=None, help="only to check: must match the checkpoint's model preset")
    add_flag(p, "device", default="auto")
    p.set_defaults(handler=run)


def load_model_from_checkpoint(path: str, device=None, tokenizer_name: str | None = None,
                               model_type: str | None = None):
    """(model in eval mode, tokenizer, checkpoint dict) from a training checkpoint, checked."""
    from llm_from_scratch.model import GPTModel
    from llm_from_scratch.model.config import GPTConfig
    from llm_from_scratch.tokenizers import get_tokenizer, tokenizer_from_config
    from llm_from_scratch.training import load_checkpoint
    from llm_from_scratch.training.checkpoint import clean_state_dict

    ckpt = load_checkpoint(path, map_location="cpu")
    if "model" not in ckpt or not ckpt.get("model_config"):
        raise CommandError(f"{path} has no model weights and configuration: is it a checkpoint written by llmfs train?")
    saved_type = ckpt.get("model_type")
    if model_type and saved_type and model_type != saved_type:
        raise CommandError(f"{path} holds a {saved_type} model, not {model_type}: drop --model_type "
                           "(the checkpoint knows its model).")
    if ckpt.get("tokenizer"):
        tokenizer = tokenizer_from_config(ckpt["tokenizer"])
        if tokenizer_name and tokenizer_name != "char" and \
                get_tokenizer(tokenizer_name).to_config() != tokenizer.to_config():
            raise CommandError(f"{path} was trained with the {tokenizer.name!r} tokenizer, not {tokenizer_name!r}: "
                               "ids would mean different text. Drop --tokenizer to use the checkpoint's.")
    elif tokenizer_name:
        tokenizer = get_tokenizer(tokenizer_name)
    else:
        raise CommandError(f"{path} does not record its tokenizer: pass --tokenizer (the one it was trained with).")
    cfg = GPTConfig.from_dict(ckpt["model_config"])
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CommandError(f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids but the model only "
                           f"{cfg.vocab_size}: they do not belong together.")
    model = GPTModel(cfg)
    try:
        model.load_state_dict(clean_state_dict(ckpt["model"]))
    except RuntimeError as exc:
        raise CommandError(f"{path}: the weights do not fit the recorded configuration "
                           f"({str(exc).splitlines()[0]}); the file may be damaged.") from exc
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer, ckpt


def run(args: argparse.Namespace) -> int:
    import torch

    from llm_from_scratch.generation import generate, stream_text, text_to_token_ids, token_ids_to_text
    from llm_from_scratch.training.trainer import auto_device

    if args.max_new_tokens < 1:
        raise CommandError("--max_new_tokens must be at least 1")
    if args.num_samples < 1:
        raise CommandError("--num_samples must be at least 1")
    device = auto_device(args.device)
    model, tokenizer, _ = load_model_from_checkpoint(args.checkpoint, device, args.tokenizer, args.model_type)
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
