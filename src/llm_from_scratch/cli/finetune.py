"""`llmfs finetune`: turn a pretrained model into an instruction follower or a text classifier.

    llmfs finetune instruct --model smollm2-135m-instruct --data synthetic
    llmfs finetune instruct --model gpt2-medium --data book --style alpaca --epochs 2
    llmfs finetune instruct --checkpoint checkpoints/gpt-mini/best_model.pt --data my-instructions.json --lora
    llmfs finetune classify --model smollm2-135m-instruct --dataset sms_spam
    llmfs finetune classify --model gpt2 --dataset reviews.csv --text_column review --label_column stars
    llmfs finetune classify --model gpt2 --dataset data/ --trainable lora     # data/ holds train/validation/test.csv

Both use the shared training loop (progress, checkpoints in --out_dir, --resume, TensorBoard,
loss plots) with the material's settings as defaults (AdamW, lr 5e-5, weight decay 0.1).

The SMS Spam Collection is prepared as in the material: all 5,574 messages, ham undersampled to
the 747 spam, a seeded 70/10/20 split. A single CSV of your own is split the same way; a folder
with train.csv, validation.csv and test.csv is used as it is.

The work is done by `llm_from_scratch.pipelines.finetune_instruct` and `.finetune_classifier`:
each task here turns its flags into the pipeline's config and makes that one call. A fine-tuned
classifier is used with `llmfs classify` (cli/classify.py).
"""

from __future__ import annotations

import argparse

from llm_from_scratch.cli.common import add_flag, add_model_flags, add_precision_flag, config_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a model: instruction following or classification",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    _add_instruct(tasks)
    _add_classify(tasks)
    p.set_defaults(handler=lambda args: (p.print_help(), 0)[1])


def add_training_flags(p, epochs: float, lr: float, eval_interval: int | None, eval_batches: int) -> None:
    """The flags of `pipelines.finetuning.FinetuneConfig`, with each task's defaults."""
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


def _add_classify(tasks) -> None:
    from llm_from_scratch.finetune.classifier import POOLING, TRAINABLE

    p = tasks.add_parser("classify", help="fine-tune a text classifier (SMS spam or your CSV)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    add_flag(p, "dataset", default="sms_spam",
             help="sms_spam (default), a CSV file (split 70/10/20), or a folder with train/validation/test.csv")
    add_flag(p, "text_column", default="text")
    add_flag(p, "label_column", default="label")
    add_flag(p, "trainable", default="last_block", choices=TRAINABLE,
             help="what trains: the last block + final norm + head (the material's default), all, head, "
                  "lora (--lora means the same)")
    add_flag(p, "pool", default="last_token", choices=POOLING,
             help="read the head at the last real token (default) or at the last position (the material)")
    add_flag(p, "max_length", type=int, default=None, help="truncate texts (default: the longest, capped at the context)")
    add_training_flags(p, epochs=5, lr=5e-5, eval_interval=50, eval_batches=5)
    p.set_defaults(handler=run_classify)


def run_instruct(args: argparse.Namespace) -> int:
    from llm_from_scratch.pipelines import InstructConfig, finetune_instruct

    finetune_instruct(config_from_args(InstructConfig, args))
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from llm_from_scratch.pipelines import ClassifierConfig, finetune_classifier

    finetune_classifier(config_from_args(ClassifierConfig, args, trainable="lora" if args.lora else args.trainable))
    return 0
