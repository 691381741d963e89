"""A text classifier from a language model in one call: what `llmfs finetune classify` does.

    from llm_from_scratch.pipelines import ClassifierConfig, finetune_classifier

    result = finetune_classifier(ClassifierConfig(model="smollm2-135m-instruct", dataset="sms_spam"))
    result.accuracy["test"], result.best_checkpoint

The stage: the start model (`finetuning.load_start_model`) -> the data as train/validation/test
CSVs -> padded token batches -> a `SequenceClassifier` (finetune/classifier.py: a new head of one
output per class, read at the last real token by default, and only some weights trainable) ->
the shared trainer, which also plots accuracy -> accuracy on the three splits, printed, written
to `scores.json` and returned as a `ClassifierResult`.

The data (`dataset`): `"sms_spam"` is prepared as in the material (all 5,574 messages, ham
undersampled to the 747 spam, a seeded 70/10/20 split); a CSV file of your own is split the
same way (seeded by `seed`); a folder with train.csv, validation.csv and test.csv is used as it is.

With last-token pooling, each batch is cut after its longest real text (`trim_padding`): the
logits are exactly those of the fully padded batch, and short batches run several times faster.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_from_scratch.pipelines.common import PipelineError, RunFiles, sigterm_as_ctrl_c
from llm_from_scratch.pipelines.finetuning import (FinetuneConfig, default_out_dir, finetune_trainer,
                                                   load_start_model, run_name)


@dataclass
class ClassifierConfig(FinetuneConfig):
    """The settings of `finetune_classifier`: `FinetuneConfig`'s plus the data and the head."""

    dataset: str | Path = "sms_spam"     # sms_spam, a CSV file (split 70/10/20), or a folder of three CSVs
    text_column: str = "text"
    label_column: str = "label"
    trainable: str = "last_block"        # last_block (the material's), all, head, lora (finetune/classifier.py)
    pool: str = "last_token"             # last_token (the last real token) or last_position (the material's)
    max_length: int | None = None        # truncate texts (None: the longest, capped at the context)
    epochs: float = 5.0


@dataclass
class ClassifierResult(RunFiles):
    """What a classifier run produced."""

    out_dir: Path
    model: Any                           # the SequenceClassifier, trained
    tokenizer: Any
    label_names: list[str]
    accuracy: dict[str, float]           # "train", "validation", "test": on every text of the split
    history: list[dict[str, Any]] = field(default_factory=list)
    minutes: float = 0.0


def finetune_classifier(config: ClassifierConfig) -> ClassifierResult:
    """Fine-tune a classifier as `config` says (see the module docstring); bad input raises PipelineError."""
    import torch
    from torch.utils.data import DataLoader

    from llm_from_scratch.data.classification import create_classification_loaders
    from llm_from_scratch.evaluation.accuracy import calc_accuracy_loader
    from llm_from_scratch.finetune.classifier import build_classifier
    from llm_from_scratch.training.trainer import auto_device

    c = config
    started = time.perf_counter()
    device = auto_device(c.device)
    loaded = load_start_model(c, device)
    tokenizer = loaded.tokenizer
    out_dir = default_out_dir(c, loaded, "classify")
    csvs = dataset_csvs(c.dataset, out_dir, c.seed)
    pad = tokenizer.eot_id
    if pad is None:
        raise PipelineError(f"the {tokenizer.name} tokenizer has no end-of-text token to pad with")
    train_loader, val_loader, test_loader = create_classification_loaders(
        csvs["train"], csvs["validation"], csvs["test"], tokenizer, c.batch_size, max_length=c.max_length,
        context_length=loaded.context_length, pad_token_id=pad, text_column=c.text_column,
        label_column=c.label_column, seed=c.seed)
    train_set = train_loader.dataset
    if c.pool == "last_token":  # exact, and much faster: see trim_padding
        collate = trim_padding(pad)
        train_loader = DataLoader(train_set, batch_size=c.batch_size, shuffle=True, drop_last=True,
                                  collate_fn=collate)
        val_loader = DataLoader(val_loader.dataset, batch_size=c.batch_size, collate_fn=collate)
        test_loader = DataLoader(test_loader.dataset, batch_size=c.batch_size, collate_fn=collate)

    from llm_from_scratch.training.run_settings import RunSettings
    settings = RunSettings.of(c, start_model=loaded.model)   # what --resume keeps
    torch.manual_seed(c.seed)  # the new head (and LoRA's A matrices) start the same in every run
    classifier = build_classifier(loaded.model, train_set.num_classes, pad, c.pool, c.trainable,
                                  c.lora_rank, c.lora_alpha)
    trainable = sum(p.numel() for p in classifier.parameters() if p.requires_grad)
    total = sum(p.numel() for p in {id(p): p for p in classifier.parameters()}.values())
    print(f"llmfs finetune classify: {loaded.name} -> {train_set.num_classes} classes {train_set.label_names}; "
          f"{len(train_set)} train / {len(val_loader.dataset)} validation / {len(test_loader.dataset)} test texts "
          f"(max_length {train_set.max_length}); trainable: {c.trainable} ({trainable:,} of {total:,} "
          f"parameters), pooling: {c.pool}; output in {out_dir}")

    def accuracies(trainer):  # logged and plotted (accuracy.png) at every evaluation
        batches = trainer.method.eval_batches   # as many batches as the losses (sized to the run)
        return {"train_accuracy": calc_accuracy_loader(train_loader, trainer.model, trainer.device, batches),
                "val_accuracy": calc_accuracy_loader(val_loader, trainer.model, trainer.device, batches)}

    task = {"type": "classification", **classifier.classifier_config(), "label_names": train_set.label_names,
            "max_length": train_set.max_length, "trainable": c.trainable, "lora_rank": c.lora_rank,
            "lora_alpha": c.lora_alpha}
    trainer = finetune_trainer(classifier, train_loader, val_loader, tokenizer, c, out_dir, device,
                               metrics=accuracies, run_settings=settings,
                               extra_checkpoint_info={"task": task, "model_type": run_name(c, loaded)})
    print(f"device {trainer.device}, {trainer.precision_choice.describe()}")
    with sigterm_as_ctrl_c():          # `kill` saves last.pt like Ctrl-C does
        history = trainer.train()

    accuracy = {split: calc_accuracy_loader(loader, classifier, device)
                for split, loader in (("train", train_loader), ("validation", val_loader), ("test", test_loader))}
    minutes = (time.perf_counter() - started) / 60
    scores = {"accuracy": accuracy, "minutes": minutes, "precision": trainer.precision, "settings": asdict(c)}
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=1, default=str) + "\n")
    print("accuracy: " + ", ".join(f"{split} {value:.2%}" for split, value in accuracy.items())
          + f" ({minutes:.1f} min)\n  {out_dir / 'best_model.pt'}\n  {out_dir / 'loss.png'}, "
          f"{out_dir / 'accuracy.png'}\n  llmfs classify --checkpoint {out_dir / 'last.pt'} \"some text\"")
    return ClassifierResult(out_dir, classifier, tokenizer, list(train_set.label_names), accuracy,
                            list(history), minutes)


def dataset_csvs(dataset: str | Path, out_dir: Path, seed: int) -> dict[str, Path]:
    """The train/validation/test CSV files of `dataset` (see the module docstring); a CSV of
    your own is split into `out_dir/data/`."""
    from llm_from_scratch.data.sms_spam import prepare_sms_spam, random_split

    if str(dataset) == "sms_spam":
        return prepare_sms_spam(out_dir / "data")
    path = Path(dataset).expanduser()
    if path.is_dir():
        csvs = {split: path / f"{split}.csv" for split in ("train", "validation", "test")}
        missing = [str(p) for p in csvs.values() if not p.is_file()]
        if missing:
            raise PipelineError(f"{path} is a folder, so it must hold train.csv, validation.csv and test.csv; "
                                f"missing: {', '.join(missing)}")
        return csvs
    if not path.is_file():
        raise PipelineError(f"no dataset {str(dataset)!r}: give sms_spam, a CSV file or a folder of CSV files")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if len(rows) < 11:
        raise PipelineError(f"{path} has {len(rows) - 1} rows: too few to split 70/10/20")
    header, body = rows[0], rows[1:]
    parts = random_split(body, 0.7, 0.1, seed=seed)
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
