"""What the two fine-tuning stages share: their training settings, the model they start from, the trainer.

`finetune_classifier` (classifier.py) and `finetune_instruct` (instruct.py)
differ in their data and in what they measure, not in how they train: both take a pretrained
model or one of our checkpoints, run the shared `GPTTrainer` with the material's settings
(AdamW, lr 5e-5, weight decay 0.1, batch 8), write checkpoints to `out_dir` and can `resume`
exactly. Those common parts live here once:

* `TrainingSettings`: what every stage after pretraining shares (DPO and GRPO too, pipelines/policy.py);
* `FinetuneConfig`: the settings both configs start from (each adds its own fields and defaults);
* `load_start_model`: the model to fine-tune, by name (`model="smollm2-135m-instruct"`, `"gpt2"`,
  a Hugging Face folder, a .gguf file) or from a checkpoint of ours (`checkpoint=...`), exactly one;
* `default_out_dir`: `checkpoints/<task>-<model name or checkpoint file name>`;
* `finetune_trainer`: the `GPTTrainer` with those settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_from_scratch.pipelines.common import PipelineError


@dataclass
class TrainingSettings:
    """Settings every training stage after pretraining has (instruction tuning, classification,
    DPO, GRPO), each with one default. A stage's config adds its own fields and may give a field
    another default (DPO/GRPO pick the learning rate by whether LoRA trains); the CLI reads the
    defaults from these classes (cli/finetune.py), so each is written once."""

    model: str | None = None             # a pretrained model: name or path ...
    checkpoint: str | Path | None = None  # ... or a checkpoint written by llmfs (exactly one of the two)
    max_steps: int | None = None         # optimizer steps
    lr: float | None = 5e-5              # peak learning rate
    weight_decay: float = 0.1            # AdamW's, on weight matrices only
    warmup_steps: int = 0
    grad_clip: float = 1.0               # the gradient norm is clipped to this
    lora_rank: int = 16                  # used when LoRA adapters train
    lora_alpha: float = 16.0             # the adapters' output is scaled by alpha / rank (the book's 16 / 16)
    eval_interval: int | None = None     # steps between evaluations (None: sized to the run)
    out_dir: str | Path | None = None    # None: checkpoints/<task>-<name>
    resume: bool = False                 # continue <out_dir>/last.pt exactly
    seed: int = 123                      # also fixes a new head's and LoRA's initial weights
    device: str = "auto"
    precision: str = "auto"              # auto, fp32, bf16, fp16 (training/precision.py)
    progress: bool = True


@dataclass
class FinetuneConfig(TrainingSettings):
    """Settings of the stages that learn from a data set (instruction tuning, classification);
    the defaults are `llmfs finetune`'s."""

    epochs: float = 2.0                  # passes over the training data (max_steps wins when given)
    batch_size: int = 8
    grad_accum: int = 1
    eval_batches: int | None = None      # batches per evaluation (None: sized to the run)


def load_start_model(config: FinetuneConfig, device):
    """The `LoadedModel` (loading.py) to fine-tune; a bad name or checkpoint is a PipelineError."""
    from llm_from_scratch.loading import load_model

    try:
        return load_model(model=config.model, checkpoint=config.checkpoint, device=device)
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc


def default_out_dir(config: FinetuneConfig, loaded, task: str) -> Path:
    """`config.out_dir`, else checkpoints/<task>-<name>, the name being the pretrained model's or
    the checkpoint file's (`checkpoints/classify-smollm2-135m-instruct`)."""
    return Path(config.out_dir or f"checkpoints/{task}-{run_name(config, loaded)}")


def run_name(config: FinetuneConfig, loaded) -> str:
    """What the fine-tuned checkpoint records as its `model_type`: the start model's name."""
    return Path(loaded.name).stem if config.checkpoint else loaded.name


def finetune_trainer(model, train_loader, val_loader, tokenizer, config: FinetuneConfig, out_dir: Path, device,
                     run_settings=None, **extra: Any):
    """A `GPTTrainer` with the settings of `config`; `run_settings` (training/run_settings.py):
    what a resumed run must keep; `extra` are the trainer's other keywords (`metrics`,
    `extra_checkpoint_info`). A bad setting or a resume that does not fit is a PipelineError."""
    from llm_from_scratch.training.trainer import GPTTrainer

    try:
        return GPTTrainer(
            model, train_loader, val_loader, tokenizer=tokenizer, max_steps=config.max_steps,
            epochs=None if config.max_steps else config.epochs, lr=config.lr, weight_decay=config.weight_decay,
            warmup_steps=config.warmup_steps, grad_clip=config.grad_clip, grad_accum_steps=config.grad_accum,
            eval_interval=config.eval_interval,
            eval_batches=config.eval_batches, out_dir=str(out_dir), seed=config.seed, device=str(device),
            resume_from=str(out_dir / "last.pt") if config.resume else None, progress=config.progress,
            precision=config.precision, run_settings=run_settings, **extra,
        )
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
