"""`llmfs chat`: a conversation in the terminal with a chat model, answers streamed as they come.

    llmfs chat --model smollm2-135m-instruct
    llmfs chat --model smollm2-135m-instruct --system "You answer in one sentence." --temperature 0.7

Each turn renders the whole conversation with the model's chat template (its own, from the
model files; ChatML for models without one), generates until the end-of-turn token, and adds the
answer to the history. When the conversation outgrows the model's context, the oldest turns are
dropped (the system message stays). Type /reset to start over, /exit (or Ctrl-D) to leave.
"""

from __future__ import annotations

import argparse
import sys

from llm_from_scratch.cli.common import (command_parser, CommandError, add_flag, add_model_flags,
                                         add_sampling_flags, load_from_args)
from llm_from_scratch.generation.defaults import SURFACE_DEFAULTS

DEFAULTS = SURFACE_DEFAULTS["chat"]  # this command's sampling defaults


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "chat", "talk with a chat model in the terminal", __doc__)
    add_model_flags(p, inference=True)
    add_flag(p, "system", default=None, help="a system message that sets the assistant's behaviour")
    add_sampling_flags(p, DEFAULTS, "longest answer")
    add_flag(p, "device", default="auto")
    p.set_defaults(handler=run)


def fit_to_context(tokenizer, messages: list[dict], room: int) -> tuple[list[dict], list[int]]:
    """Drop the oldest turns (never the system message nor the last user turn) until the rendered
    conversation leaves `room` tokens for the answer; returns the kept messages and their ids."""
    from llm_from_scratch.tokenizers.chat_template import encode_chat

    messages = list(messages)
    while True:
        ids = encode_chat(tokenizer, messages)
        first = 1 if messages and messages[0]["role"] == "system" else 0
        if len(ids) <= room or len(messages) - first <= 1:
            return messages, ids
        del messages[first]


def run(args: argparse.Namespace) -> int:
    import torch

    from llm_from_scratch.tokenizers.chat_template import stop_token_ids
    from llm_from_scratch.generation import SamplingParams, stream_text
    from llm_from_scratch.training.trainer import auto_device

    try:  # the settings are checked before the model loads
        params = SamplingParams(max_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k or None, top_p=args.top_p, seed=args.seed)
    except ValueError as exc:
        raise CommandError(f"{exc} (see llmfs chat --help)") from None
    device = auto_device(args.device)
    loaded = load_from_args(args, device)
    if loaded.chat_template is None:
        print(f"note: {loaded.name} has no chat template of its own (it is not a chat model); "
              "using ChatML, so expect continuations rather than answers.", file=sys.stderr)
    generator = torch.Generator(device=device)  # one for the whole conversation
    generator.manual_seed(params.seed if params.seed is not None else torch.seed())
    stop_ids = stop_token_ids(loaded.tokenizer)
    room = loaded.context_length - args.max_new_tokens
    if room < 1:
        raise CommandError(f"--max_new_tokens {args.max_new_tokens} leaves no room for the conversation in "
                           f"the model's context of {loaded.context_length} tokens")
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    interactive = sys.stdin.isatty()
    print(f"Chatting with {loaded.name}. /reset starts over, /exit leaves.")
    while True:
        try:
            user = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not interactive:
            print(f"you> {user}")
        user = user.strip()
        if not user:
            continue
        if user in ("/exit", "/quit"):
            return 0
        if user == "/reset":
            messages = list(system)
            print("(conversation cleared)")
            continue
        messages.append({"role": "user", "content": user})
        messages, ids = fit_to_context(loaded.tokenizer, messages, room)
        sys.stdout.write("assistant> ")
        answer = []
        try:
            for piece in stream_text(loaded.model, loaded.tokenizer, ids, params.max_tokens, stop_ids=stop_ids,
                                     temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                                     generator=generator):
                answer.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:  # Ctrl-C stops the answer, not the chat
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(answer).strip()})
