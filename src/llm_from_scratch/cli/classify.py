"""`llmfs classify`: label texts with a classifier fine-tuned by `llmfs finetune classify`.

    llmfs classify --checkpoint checkpoints/classify-smollm2-135m-instruct/best_model.pt \\
        "You are a winner you have been specially selected to receive $1000 cash" --probs
    llmfs classify --checkpoint clf.pt "first text" "second text"     # one line per text

The checkpoint records the classifier's head, its label names and the longest text it was
trained on, so only the texts are needed. Training one is `llmfs finetune classify`
(cli/finetune.py, pipelines/classifier.py).
"""

from __future__ import annotations

import argparse

from llm_from_scratch.cli.common import command_parser, CommandError, add_flag


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "classify", "label texts with a fine-tuned classifier", __doc__)
    add_flag(p, "checkpoint", required=True, help="a checkpoint written by llmfs finetune classify")
    p.add_argument("texts", nargs="+", help="the texts to classify")
    add_flag(p, "probs", action="store_true", help="also print the probability of every class")
    add_flag(p, "device", default="auto")
    p.set_defaults(handler=run_classify)


def load_classifier_from_args(args: argparse.Namespace):
    """(model, tokenizer, task, device) for --checkpoint / --device; a bad checkpoint is a CommandError."""
    from llm_from_scratch.finetune.classifier import load_classifier
    from llm_from_scratch.training.trainer import auto_device

    device = auto_device(args.device)
    try:
        model, tokenizer, ckpt = load_classifier(args.checkpoint, device)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    return model, tokenizer, ckpt["task"], device


def run_classify(args: argparse.Namespace) -> int:
    from llm_from_scratch.finetune.classifier import classify_texts

    model, tokenizer, task, device = load_classifier_from_args(args)
    names = task.get("label_names") or [str(i) for i in range(task["num_classes"])]
    probabilities = classify_texts(model, tokenizer, args.texts, task.get("max_length"), device)
    for text, probs in zip(args.texts, probabilities):
        label = names[int(probs.argmax())]
        extra = "  (" + ", ".join(f"{n} {p:.3f}" for n, p in zip(names, probs.tolist())) + ")" if args.probs else ""
        print(f"{label}{extra}" if len(args.texts) == 1 else f"{label}\t{text}{extra}")
    return 0
