"""`llmfs finetune classify` (train a classifier) and `llmfs classify` (use one).

    llmfs finetune classify --model smollm2-135m-instruct --dataset sms_spam
    llmfs finetune classify --model gpt2 --dataset reviews.csv --text_column review --label_column stars
    llmfs finetune classify --model gpt2 --dataset data/ --trainable lora     # data/ holds train/validation/test.csv
    llmfs classify --checkpoint checkpoints/classify-smollm2-135m-instruct/best_model.pt \\
        "You are a winner you have been specially selected to receive $1000 cash" --probs

The SMS Spam Collection is prepared as in the material: all 5,574 messages, ham undersampled to
the 747 spam, a seeded 70/10/20 split. A single CSV of your own is split the same way; a folder
with train.csv, validation.csv and test.csv is used as it is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llm_from_scratch.cli.common import CommandError, add_flag, sigterm_as_ctrl_c
from llm_from_scratch.cli.generate import add_model_flags, load_from_args


def add_finetune_parser(tasks) -> None:
    from llm_from_scratch.cli.finetune import add_training_flags
    from llm_from_scratch.finetune.classifier import POOLING, TRAINABLE

    p = tasks.add_parser("classify", help="fine-tune a text classifier (SMS spam or your CSV)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    add_flag(p, "dataset", default="sms_spam",
             help="sms_spam (default), a CSV file (split 70/10/20), or a folder with train/validation/test.csv")
    add_flag(p, "text_column", default="text")
    add_flag(p, "label_column", default="label")
    add_flag(p, "trainable", default="last_block", choices=TRAINABLE,
             help="what trains: the last block + final norm + head (the material's default), all, head, lora")
    add_flag(p, "pool", default="last_token", choices=POOLING,
             help="read the head at the last real token (default) or at the last position (the material)")
    add_flag(p, "max_length", type=int, default=None, help="truncate texts (default: the longest, capped at the context)")
    add_training_flags(p, epochs=5, lr=5e-5, eval_interval=50, eval_batches=5)
    p.set_defaults(handler=run_finetune)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("classify", help="label texts with a fine-tuned classifier", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(p, "checkpoint", required=True, help="a checkpoint written by llmfs finetune classify")
    p.add_argument("texts", nargs="+", help="the texts to classify")
    add_flag(p, "probs", action="store_true", help="also print the probability of every class")
    add_flag(p, "device", default="auto")
    p.set_defaults(handler=run_classify)


def _dataset_csvs(args, out_dir: Path) -> dict[str, Path]:
    from llm_from_scratch.data.sms_spam import prepare_sms_spam, random_split

    if args.dataset == "sms_spam":
        return prepare_sms_spam(out_dir / "data")
    path = Path(args.dataset).expanduser()
    if path.is_dir():
        csvs = {split: path / f"{split}.csv" for split in ("train", "validation", "test")}
        missing = [str(p) for p in csvs.values() if not p.is_file()]
        if missing:
            raise CommandError(f"{path} is a folder, so it must hold train.csv, validation.csv and test.csv; "
                               f"missing: {', '.join(missing)}")
        return csvs
    if not path.is_file():
        raise CommandError(f"no dataset {args.dataset!r}: give sms_spam, a CSV file or a folder of CSV files")
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if len(rows) < 11:
        raise CommandError(f"{path} has {len(rows) - 1} rows: too few to split 70/10/20")
    header, body = rows[0], rows[1:]
    parts = random_split(body, 0.7, 0.1, seed=args.seed)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    csvs = {}
    for split, part in zip(("train", "validation", "test"), parts):
        csvs[split] = out_dir / "data" / f"{split}.csv"
        with open(csvs[split], "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *part])
    return csvs


def trim_padding(pad_token_id: int):
    """A collate function that cuts each batch after its longest real text: with last-token
    pooling the logits are exactly those of the fully padded batch, and short batches run
    several times faster than batches padded to the longest text of the whole data set."""
    import torch

    def collate(batch):
        ids = torch.stack([item[0] for item in batch])
        labels = torch.stack([torch.as_tensor(item[1]) for item in batch])
        trailing = (ids == pad_token_id).int().flip(1).cumprod(dim=1).sum(dim=1)
        longest = int((ids.shape[1] - trailing).max().clamp(min=1))
        return ids[:, :longest], labels

    return collate


def run_finetune(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from llm_from_scratch.data.classification import create_classification_loaders
    from llm_from_scratch.finetune.classifier import build_classifier, calc_accuracy_loader
    from llm_from_scratch.training.trainer import GPTTrainer, auto_device

    started = time.perf_counter()
    device = auto_device(args.device)
    loaded = load_from_args(args, device)
    tokenizer = loaded.tokenizer
    name = Path(loaded.name).stem if args.checkpoint else loaded.name
    out_dir = Path(args.out_dir or f"checkpoints/classify-{name}")
    csvs = _dataset_csvs(args, out_dir)
    pad = tokenizer.eot_id
    if pad is None:
        raise CommandError(f"the {tokenizer.name} tokenizer has no end-of-text token to pad with")
    train_loader, val_loader, test_loader = create_classification_loaders(
        csvs["train"], csvs["validation"], csvs["test"], tokenizer, args.batch_size, max_length=args.max_length,
        context_length=loaded.context_length, pad_token_id=pad, text_column=args.text_column,
        label_column=args.label_column, seed=args.seed)
    train_set = train_loader.dataset
    if args.pool == "last_token":  # exact, and much faster: see trim_padding
        collate = trim_padding(pad)
        train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                  collate_fn=collate)
        val_loader = DataLoader(val_loader.dataset, batch_size=args.batch_size, collate_fn=collate)
        test_loader = DataLoader(test_loader.dataset, batch_size=args.batch_size, collate_fn=collate)
    import torch

    torch.manual_seed(args.seed)  # the new head (and LoRA's A matrices) start the same in every run
    classifier = build_classifier(loaded.model, train_set.num_classes, pad, args.pool, args.trainable,
                                  args.lora_rank, args.lora_alpha)
    trainable = sum(p.numel() for p in classifier.parameters() if p.requires_grad)
    total = sum(p.numel() for p in {id(p): p for p in classifier.parameters()}.values())
    print(f"llmfs finetune classify: {loaded.name} -> {train_set.num_classes} classes {train_set.label_names}; "
          f"{len(train_set)} train / {len(val_loader.dataset)} validation / {len(test_loader.dataset)} test texts "
          f"(max_length {train_set.max_length}); trainable: {args.trainable} ({trainable:,} of {total:,} "
          f"parameters), pooling: {args.pool}; output in {out_dir}")

    def accuracies(trainer):
        return {"train_accuracy": calc_accuracy_loader(train_loader, trainer.model, trainer.device, args.eval_batches),
                "val_accuracy": calc_accuracy_loader(val_loader, trainer.model, trainer.device, args.eval_batches)}

    task = {"type": "classification", **classifier.classifier_config(), "label_names": train_set.label_names,
            "max_length": train_set.max_length, "trainable": args.trainable, "lora_rank": args.lora_rank,
            "lora_alpha": args.lora_alpha}
    trainer = GPTTrainer(
        classifier, train_loader, val_loader, tokenizer=tokenizer, max_steps=args.max_steps,
        epochs=None if args.max_steps else args.epochs, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, grad_accum_steps=args.grad_accum, eval_interval=args.eval_interval,
        eval_batches=args.eval_batches, out_dir=str(out_dir), seed=args.seed, device=str(device),
        resume_from=str(out_dir / "last.pt") if args.resume else None, progress=args.progress,
        metrics=accuracies, precision=args.precision, extra_checkpoint_info={"task": task, "model_type": name},
    )
    print(f"device {trainer.device}, {trainer.precision_choice.describe()}")
    with sigterm_as_ctrl_c():          # `kill` saves last.pt like Ctrl-C does
        trainer.train()
    results = {split: calc_accuracy_loader(loader, classifier, device)
               for split, loader in (("train", train_loader), ("validation", val_loader), ("test", test_loader))}
    minutes = (time.perf_counter() - started) / 60
    scores = {"accuracy": results, "minutes": minutes, "precision": trainer.precision, "settings": {k: v for k, v in vars(args).items()
                                                                    if k != "handler"}}
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=1, default=str) + "\n")
    print("accuracy: " + ", ".join(f"{split} {value:.2%}" for split, value in results.items())
          + f" ({minutes:.1f} min)\n  {out_dir / 'best_model.pt'}\n  {out_dir / 'loss.png'}, "
          f"{out_dir / 'accuracy.png'}\n  llmfs classify --checkpoint {out_dir / 'last.pt'} \"some text\"")
    return 0


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
