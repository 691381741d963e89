"""`llmfs finetune`: turn a pretrained model into an instruction follower or a text classifier, and
tune it further from preferences (DPO) or from verifiable rewards (GRPO).

    llmfs finetune instruct --model smollm2-135m-instruct --data synthetic
    llmfs finetune instruct --model gpt2-medium --data book --style alpaca --epochs 2
    llmfs finetune instruct --checkpoint checkpoints/gpt-mini/best_model.pt --data my-instructions.json --lora
    llmfs finetune classify --model smollm2-135m-instruct --dataset sms_spam
    llmfs finetune classify --model gpt2 --dataset reviews.csv --text_column review --label_column stars
    llmfs finetune classify --model gpt2 --dataset data/ --trainable lora     # data/ holds train/validation/test.csv
    llmfs finetune grpo --model smollm2-135m-instruct --tasks count_letters --lora --max_steps 100
    llmfs finetune dpo --model smollm2-135m-instruct --tasks count_letters --lora      # pairs sampled on-policy
    llmfs finetune dpo --model smollm2-135m-instruct --data pairs.jsonl --tasks none   # {prompt, chosen, rejected}

Both use the shared training loop (progress, checkpoints in --out_dir, --resume, TensorBoard,
loss plots) with the material's settings as defaults (AdamW, lr 5e-5, weight decay 0.1).

The SMS Spam Collection is prepared as in the material: all 5,574 messages, ham undersampled to
the 747 spam, a seeded 70/10/20 split. A single CSV of your own is split the same way; a folder
with train.csv, validation.csv and test.csv is used as it is.

DPO and GRPO have their own loop (`finetune/policy_trainer.py`: the same checkpoints, --resume,
TensorBoard and plots) and score held-out task questions before, during and after training.

The work is done by `llm_from_scratch.pipelines.finetune_instruct`, `.finetune_classifier`,
`.finetune_dpo` and `.finetune_grpo`:
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
    _add_dpo(tasks)
    _add_grpo(tasks)
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


def add_policy_flags(p, lr_help: str) -> None:
    """The flags of `pipelines.policy.PolicyConfig` (DPO and GRPO)."""
    g = p.add_argument_group("training")
    add_flag(g, "max_steps", type=int, default=100, help="optimizer steps (default %(default)s)")
    add_flag(g, "lr", type=float, default=None, help=lr_help)
    add_flag(g, "weight_decay", type=float, default=0.0)
    add_flag(g, "warmup_steps", type=int, default=0)
    add_flag(g, "grad_clip", type=float, default=1.0)
    add_flag(g, "lora", action="store_true", help="train LoRA adapters instead of all weights")
    add_flag(g, "lora_rank", type=int, default=16)
    add_flag(g, "lora_alpha", type=float, default=32.0)
    add_flag(g, "max_new_tokens", type=int, default=96, help="longest sampled answer (default %(default)s)")
    add_flag(g, "batch_size", type=int, default=64, help="answers decoded together (default %(default)s)")
    add_flag(g, "micro_batch", type=int, default=16, help="rows per forward/backward pass (default %(default)s)")
    add_flag(g, "eval_tasks", default="all", help="held-out families scored before/during/after (all, a list, none)")
    add_flag(g, "eval_examples", type=int, default=50, help="held-out questions per family (default %(default)s)")
    add_flag(g, "eval_interval", type=int, default=None, help="steps between held-out scorings (default: 5 per run)")
    add_flag(g, "out_dir", default=None)
    add_flag(g, "resume", action="store_true", help="continue <out_dir>/last.pt exactly")
    add_flag(g, "seed", type=int, default=123)
    add_flag(g, "device", default="auto")
    add_flag(g, "precision", default="auto", choices=["auto", "fp32", "bf16"])
    add_flag(g, "progress", action=argparse.BooleanOptionalAction, default=True)


def _add_dpo(tasks) -> None:
    p = tasks.add_parser("dpo", help="preference tuning (DPO) on pairs from a file or sampled on-policy",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    add_flag(p, "data", default=None, help="a JSONL file of {prompt, chosen, rejected} (then --tasks none)")
    add_flag(p, "tasks", default="count_letters",
             help="task families whose sampled answers make the pairs (default %(default)s; none with --data)")
    add_flag(p, "difficulty", type=int, default=None, choices=[1, 2, 3])
    add_flag(p, "num_prompts", type=int, default=256, help="training questions sampled for pairs (default %(default)s)")
    add_flag(p, "samples_per_prompt", type=int, default=8, help="answers per question (default %(default)s)")
    add_flag(p, "temperature", type=float, default=1.0)
    add_flag(p, "beta", type=float, default=0.1, help="DPO's beta: larger keeps the model nearer the reference")
    add_flag(p, "pairs_per_step", type=int, default=8)
    add_policy_flags(p, "peak learning rate (default 2e-4 with --lora, 2e-6 for all weights)")
    p.set_defaults(handler=run_dpo)


def _add_grpo(tasks) -> None:
    p = tasks.add_parser("grpo", help="reinforcement learning with verifiable rewards (GRPO) on the tasks",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    add_flag(p, "tasks", default="count_letters", help="training task families (default %(default)s; or all)")
    add_flag(p, "difficulty", type=int, default=None, choices=[1, 2, 3])
    add_flag(p, "prompts_per_step", type=int, default=8, help="questions per step (default %(default)s)")
    add_flag(p, "group_size", type=int, default=8, help="answers sampled per question, G (default %(default)s)")
    add_flag(p, "temperature", type=float, default=1.0)
    add_flag(p, "top_p", type=float, default=None)
    add_flag(p, "clip_eps", type=float, default=0.2, help="clipping of the policy ratio (default %(default)s)")
    add_flag(p, "kl_coef", type=float, default=0.0, help="KL penalty to the start model (default 0: off)")
    add_flag(p, "format_reward", type=float, default=0.0, help="reward for the asked answer format (default 0)")
    add_flag(p, "grade_truncated", action="store_true",
             help="grade answers cut off at --max_new_tokens too (default: they get reward 0)")
    add_flag(p, "inner_steps", type=int, default=1, help="gradient steps per batch of answers (default 1)")
    add_flag(p, "scale_rewards", action=argparse.BooleanOptionalAction, default=True,
             help="divide advantages by the group's std (default on)")
    add_flag(p, "aggregation", default="token", choices=["token", "sequence"])
    add_policy_flags(p, "peak learning rate (default 2e-4 with --lora, 2e-6 for all weights)")
    p.set_defaults(handler=run_grpo)


def run_dpo(args: argparse.Namespace) -> int:
    from llm_from_scratch.pipelines import DPOConfig, finetune_dpo

    finetune_dpo(config_from_args(DPOConfig, args, tasks=None if args.tasks in ("none", "") else args.tasks))
    return 0


def run_grpo(args: argparse.Namespace) -> int:
    from llm_from_scratch.pipelines import GRPOConfig, finetune_grpo

    finetune_grpo(config_from_args(GRPOConfig, args))
    return 0


def run_instruct(args: argparse.Namespace) -> int:
    from llm_from_scratch.pipelines import InstructConfig, finetune_instruct

    finetune_instruct(config_from_args(InstructConfig, args))
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from llm_from_scratch.pipelines import ClassifierConfig, finetune_classifier

    finetune_classifier(config_from_args(ClassifierConfig, args, trainable="lora" if args.lora else args.trainable))
    return 0
