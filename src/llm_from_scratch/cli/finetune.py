"""`llmfs finetune`: turn a pretrained model into an instruction follower or a text classifier, and
tune it further from preferences (DPO) or from verifiable rewards (GRPO).

    llmfs finetune instruct --model smollm2-135m-instruct --data synthetic
    llmfs finetune instruct --model gpt2-medium --data book --style alpaca --epochs 2
    llmfs finetune instruct --checkpoint checkpoints/gpt-mini/best_model.pt --data my-instructions.json --lora
    llmfs finetune classify --model smollm2-135m-instruct --dataset sms_spam
    llmfs finetune classify --model gpt2 --dataset reviews.csv --text_column review --label_column stars
    llmfs finetune classify --model gpt2 --dataset data/ --trainable lora     # data/ holds train/validation/test.csv
    llmfs finetune grpo --model smollm2-135m-instruct --max_steps 38 --warmup_steps 3   # docs 22's measured run
    llmfs finetune grpo --model smollm2-135m-instruct --tasks count_letters,compare --lora --max_steps 100
    llmfs finetune rft --model smollm2-135m-instruct --questions 128 --temperature 0.7  # the baseline to beat
    llmfs finetune dpo --model smollm2-135m-instruct --num_prompts 128                  # pairs sampled on-policy
    llmfs finetune dpo --model smollm2-135m-instruct --data pairs.jsonl --tasks none   # {prompt, chosen, rejected}

All five train through the project's one training loop (progress, checkpoints in --out_dir,
--resume, Ctrl-C saves, TensorBoard, plots) and share one set of training flags; instruct and
classify start from the material's settings (AdamW, lr 5e-5, weight decay 0.1).

The SMS Spam Collection is prepared as in the material: all 5,574 messages, ham undersampled to
the 747 spam, a seeded 70/10/20 split. A single CSV of your own is split the same way; a folder
with train.csv, validation.csv and test.csv is used as it is.

DPO, GRPO and RFT score held-out task questions before and after training (DPO and GRPO also
during it), on the same questions, with a paired test per family.

The work is done by `llm_from_scratch.pipelines.finetune_instruct`, `.finetune_classifier`,
`.finetune_dpo` and `.finetune_grpo`:
each task here turns its flags into the pipeline's config and makes that one call. A fine-tuned
classifier is used with `llmfs classify` (cli/classify.py).
"""

from __future__ import annotations

import argparse

from llm_from_scratch.cli.common import command_parser, add_flag, add_model_flags, add_precision_flag, config_from_args
from llm_from_scratch.tasks import GROUPS, POLICY_TRAINING_TASKS

TRAINING_MIX = ",".join(GROUPS[POLICY_TRAINING_TASKS])   # the families of the default training mix


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "finetune", "fine-tune a model: instruction following or classification", __doc__)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    _add_instruct(tasks)
    _add_classify(tasks)
    _add_dpo(tasks)
    _add_grpo(tasks)
    _add_rft(tasks)
    p.set_defaults(handler=lambda args: (p.print_help(), 0)[1])


# What each training flag means; the defaults are read from the stage's config class (pipelines/),
# so a default is written once, where the library call sees it too.
TRAINING_FLAG_HELP = {
    "epochs": "passes over the training data",
    "max_steps": "optimizer steps (for instruct/classify: instead of --epochs)",
    "lr": "peak learning rate",
    "weight_decay": "AdamW weight decay on the weight matrices",
    "warmup_steps": "steps of linear learning-rate warmup",
    "grad_clip": "clip the gradient norm to this",
    "batch_size": "rows per batch (DPO/GRPO: answers decoded together)",
    "grad_accum": "micro-batches whose gradients add up to one step",
    "micro_batch": "rows per forward/backward pass (gradients add up)",
    "eval_interval": "steps between evaluations (default: sized to the run)",
    "eval_batches": "batches per evaluation (default: sized to the run)",
    "eval_tasks": "held-out families scored before and after training, DPO/GRPO also during (all, a list, none)",
    "eval_examples": "held-out questions per family, scored before and after (paired test)",
    "eval_curve_examples": "of those, per family, also scored every --eval_interval steps (the curve)",
    "eval_seed": "which held-out questions (0: those of llmfs evaluate tasks)",
    "policy_max_new_tokens": "longest sampled answer (default: 96, or what the model's context leaves after the prompt)",
    "lora": "train LoRA adapters instead of the weights",
    "lora_rank": "rank of the LoRA adapters",
    "lora_alpha": "LoRA scale: the adapters' output is multiplied by alpha / rank",
    "out_dir": "where checkpoints, logs and pictures go (default: checkpoints/<task>-<model>)",
    "resume": "continue <out_dir>/last.pt exactly",
    "seed": "seed of everything random in the run",
    "device": "auto, cpu, cuda or mps",
}


def add_training_flags(p, config_class, lr_help: str | None = None) -> None:
    """The training flags of `config_class` (a `TrainingSettings` dataclass), with its defaults."""
    import dataclasses

    from llm_from_scratch.pipelines.policy import PolicyConfig

    fields = {f.name: f for f in dataclasses.fields(config_class)}
    g = p.add_argument_group("training")
    for key, help_text in TRAINING_FLAG_HELP.items():
        name = key.removeprefix("policy_")       # DPO/GRPO's max_new_tokens (instruct has its own meaning)
        if name not in fields or (key != name and not issubclass(config_class, PolicyConfig)):
            continue
        default = fields[name].default
        if name == "lr" and lr_help:
            help_text = lr_help
        if isinstance(default, bool):
            add_flag(g, name, action="store_true", help=help_text)
            continue
        kind = {"epochs": float, "lr": float, "weight_decay": float, "grad_clip": float, "lora_alpha": float,
                "out_dir": str, "device": str, "eval_tasks": str}.get(name, int)
        shown = "" if default is None else " (default %(default)s)"
        add_flag(g, name, type=kind, default=default, help=help_text + shown)
    add_precision_flag(g)
    add_flag(g, "progress", action=argparse.BooleanOptionalAction, default=True)


def _add_instruct(tasks) -> None:
    from llm_from_scratch.pipelines import InstructConfig

    p = command_parser(tasks, "instruct", "instruction fine-tuning (Alpaca-format data)", __doc__)
    add_model_flags(p)
    add_flag(p, "data", default="synthetic",
             help="instruction data: a .json/.jsonl file of {instruction, input, output}, 'book' (the "
                  "material's 1,100 entries, downloaded) or 'synthetic' (made here; default)")
    add_flag(p, "num_examples", type=int, default=1100, help="size of the synthetic set (default %(default)s)")
    add_flag(p, "validation_data", default=None,
             help="a file of entries to validate on: then all of --data trains and there is no test split "
                  "(default: --data split 85/5/10)")
    add_flag(p, "style", default="auto", choices=["auto", "alpaca", "phi3", "chat"],
             help="prompt format: auto = the model's chat template if it has one, else alpaca")
    add_flag(p, "mask_prompt", action="store_true", help="leave the instruction tokens out of the loss")
    add_flag(p, "allowed_max_length", type=int, default=None, help="truncate examples (default: the context)")
    add_flag(p, "max_new_tokens", type=int, default=InstructConfig.max_new_tokens,
             help="longest answer generated for the test set (default %(default)s)")
    add_flag(p, "skip_baseline", action="store_true", help="do not score the model before fine-tuning")
    add_training_flags(p, InstructConfig)
    p.set_defaults(handler=run_instruct)


def _add_classify(tasks) -> None:
    from llm_from_scratch.finetune.classifier import POOLING, TRAINABLE

    p = command_parser(tasks, "classify", "fine-tune a text classifier (SMS spam or your CSV)", __doc__)
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
    from llm_from_scratch.pipelines import ClassifierConfig
    add_training_flags(p, ClassifierConfig)
    add_flag(p, "lora", action="store_true", help="train LoRA adapters (the same as --trainable lora)")
    p.set_defaults(handler=run_classify)


def policy_lr_help(config_class) -> str:
    from llm_from_scratch.pipelines.policy import LORA_LR
    return f"peak learning rate (default {LORA_LR:g} with --lora, {config_class.FULL_WEIGHTS_LR:g} for all weights)"


def _add_dpo(tasks) -> None:
    from llm_from_scratch.pipelines import DPOConfig

    p = command_parser(tasks, "dpo", "preference tuning (DPO) on pairs from a file or sampled on-policy", __doc__)
    add_model_flags(p)
    add_flag(p, "data", default=None, help="a JSONL file of {prompt, chosen, rejected} (then --tasks none)")
    add_flag(p, "tasks", default=DPOConfig.tasks,
             help=f"task families whose sampled answers make the pairs (default %(default)s = {TRAINING_MIX}; "
                  "none with --data)")
    add_flag(p, "difficulty", type=int, default=None, choices=[1, 2, 3])
    add_flag(p, "num_prompts", type=int, default=DPOConfig.num_prompts,
             help="training questions per family sampled for pairs (default %(default)s)")
    add_flag(p, "samples_per_prompt", type=int, default=8, help="answers per question (default %(default)s)")
    add_flag(p, "temperature", type=float, default=DPOConfig.temperature)
    add_flag(p, "beta", type=float, default=DPOConfig.beta,
             help="DPO's beta: larger keeps the model nearer the reference (default %(default)s)")
    add_flag(p, "pairs_per_step", type=int, default=DPOConfig.pairs_per_step)
    add_training_flags(p, DPOConfig, policy_lr_help(DPOConfig))
    p.set_defaults(handler=run_dpo)


def _add_grpo(tasks) -> None:
    from llm_from_scratch.pipelines import GRPOConfig

    c = GRPOConfig
    p = command_parser(tasks, "grpo", "reinforcement learning with verifiable rewards (GRPO) on the tasks", __doc__)
    add_model_flags(p)
    add_flag(p, "tasks", default=c.tasks, help=f"training task families (default %(default)s = {TRAINING_MIX}; or all)")
    add_flag(p, "difficulty", type=int, default=None, choices=[1, 2, 3])
    add_flag(p, "prompts_per_step", type=int, default=c.prompts_per_step, help="questions per step (default %(default)s)")
    add_flag(p, "group_size", type=int, default=c.group_size,
             help="answers sampled per question, G (default %(default)s)")
    add_flag(p, "temperature", type=float, default=c.temperature, help="sampling temperature (default %(default)s)")
    add_flag(p, "top_p", type=float, default=None, help="refused: GRPO's ratios need the whole distribution")
    add_flag(p, "clip_eps", type=float, default=c.clip_eps, help="clipping of the policy ratio (default %(default)s)")
    add_flag(p, "kl_coef", type=float, default=c.kl_coef, help="KL penalty to the start model (default %(default)s: off)")
    add_flag(p, "format_reward", type=float, default=c.format_reward,
             help="reward for the asked answer format (default %(default)s)")
    add_flag(p, "grade_truncated", action="store_true",
             help="grade answers cut off at --max_new_tokens too (default: they get reward 0)")
    add_flag(p, "inner_steps", type=int, default=c.inner_steps,
             help="optimizer updates per batch of answers, PPO epochs (default %(default)s)")
    add_flag(p, "scale_rewards", action=argparse.BooleanOptionalAction, default=c.scale_rewards,
             help="divide advantages by the group's std (default on)")
    add_flag(p, "aggregation", default=c.aggregation, choices=["token", "sequence", "constant"],
             help="how token losses average: over the batch's answer tokens (token, default), per answer first "
                  "(sequence), or summed and divided by answers x --max_new_tokens (constant: Dr. GRPO)")
    add_training_flags(p, GRPOConfig, policy_lr_help(GRPOConfig))
    p.set_defaults(handler=run_grpo)


def _add_rft(tasks) -> None:
    from llm_from_scratch.pipelines import RFTConfig

    c = RFTConfig
    p = command_parser(tasks, "rft", "rejection-sampling fine-tuning: train on the model's own checked-correct answers",
                       __doc__)
    add_model_flags(p)
    add_flag(p, "tasks", default=c.tasks, help=f"training task families (default %(default)s = {TRAINING_MIX}; or all)")
    add_flag(p, "difficulty", type=int, default=None, choices=[1, 2, 3])
    add_flag(p, "questions", type=int, default=c.questions, help="training questions per family (default %(default)s)")
    add_flag(p, "samples_per_question", type=int, default=c.samples_per_question,
             help="answers sampled per question, k (default %(default)s)")
    add_flag(p, "temperature", type=float, default=c.temperature, help="sampling temperature (default %(default)s)")
    add_flag(p, "max_new_tokens", type=int, default=c.max_new_tokens, help="longest answer (default %(default)s)")
    add_flag(p, "sample_batch_size", type=int, default=c.sample_batch_size,
             help="answers decoded together (default %(default)s)")
    add_flag(p, "style", default="auto", choices=["auto", "alpaca", "phi3", "chat"])
    add_training_flags(p, RFTConfig)
    p.set_defaults(handler=run_rft)


def run_rft(args: argparse.Namespace) -> int:
    from llm_from_scratch.pipelines import RFTConfig, finetune_rft

    finetune_rft(config_from_args(RFTConfig, args))
    return 0


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
