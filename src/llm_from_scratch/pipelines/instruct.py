"""Instruction fine-tuning in one call: what `llmfs finetune instruct` does.

    from llm_from_scratch.pipelines import InstructConfig, finetune_instruct

    result = finetune_instruct(InstructConfig(model="smollm2-135m-instruct", data="synthetic"))
    result.scores["before"]["exact_match"], result.scores["after"]["exact_match"], result.final_model

The stage: the start model (`finetuning.load_start_model`) -> instruction entries (a file of
{instruction, input, output}, the material's `"book"` set, or a `"synthetic"` set made here)
split 85/5/10 -> prompts in the model's chat template or the Alpaca format -> the test split
answered **before** training (greedy, scored by exact match; `skip_baseline` skips it) -> the
shared trainer (all weights, or LoRA adapters with `lora=True`) -> the test split answered again
-> `test-responses.json`, `scores.json` and `final_model.pt` (LoRA adapters merged in, so every
command loads it like any checkpoint), returned as an `InstructResult`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_from_scratch.pipelines.common import FinetunedRunFiles, sigterm_as_ctrl_c
from llm_from_scratch.pipelines.finetuning import (FinetuneConfig, default_out_dir, finetune_trainer,
                                                   load_start_model, run_name)


@dataclass
class InstructConfig(FinetuneConfig):
    """The settings of `finetune_instruct`: `FinetuneConfig`'s plus the data, the prompt format and scoring."""

    data: str | Path = "synthetic"       # a .json/.jsonl file, "book" (downloaded) or "synthetic" (made here)
    validation_data: str | Path | None = None  # a file to validate on: then all of `data` trains, no test split
    num_examples: int = 1100             # size of the synthetic set
    style: str = "auto"                  # auto (the model's chat template if it has one, else alpaca), alpaca, phi3, chat
    mask_prompt: bool = False            # leave the instruction tokens out of the loss
    allowed_max_length: int | None = None  # truncate examples (None: the context length)
    max_new_tokens: int = 32             # longest answer generated for the test set
    skip_baseline: bool = False          # do not score the model before fine-tuning
    lora: bool = False                   # train LoRA adapters (lora_rank, lora_alpha) instead of the weights


@dataclass
class InstructResult(FinetunedRunFiles):
    """What an instruction run produced."""

    out_dir: Path
    model: Any                           # the fine-tuned model (LoRA merged in)
    tokenizer: Any
    scores: dict[str, Any]               # "before" (unless skipped) and "after": exact match, answer contained
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def responses(self) -> Path:
        return self.out_dir / "test-responses.json"


# settings of an instruction run that may change on --resume (training/run_settings.py): they only
# set how the test split is answered (every eval_* setting may change anyway)
RESUME_MAY_CHANGE = ("max_new_tokens", "skip_baseline")


def finetune_instruct(config: InstructConfig, run_settings=None) -> InstructResult:
    """Fine-tune on instructions as `config` says (see the module docstring); bad input raises
    PipelineError. `run_settings`: what a resumed run must keep, if a stage that trains through this
    one (RFT) records its own settings (default: `config`'s)."""
    from llm_from_scratch.data.instructions import load_instruction_data
    from llm_from_scratch.data.synthetic_instructions import make_instruction_set
    from llm_from_scratch.evaluation.scoring import score_exact_match
    from llm_from_scratch.finetune.instruct import generate_responses, instruction_loaders, prompt_style_for, save_results
    from llm_from_scratch.training.checkpoint import save_checkpoint
    from llm_from_scratch.training.run_settings import RunSettings, weights_fingerprint
    from llm_from_scratch.training.trainer import auto_device

    c = config
    started = time.perf_counter()
    device = auto_device(c.device)
    loaded = load_start_model(c, device)
    model, tokenizer = loaded.model, loaded.tokenizer
    settings = run_settings if run_settings is not None else RunSettings.of(c, may_change=RESUME_MAY_CHANGE)
    settings.values["start_weights"] = weights_fingerprint(model)
    entries = make_instruction_set(c.num_examples, seed=c.seed) if str(c.data) == "synthetic" \
        else load_instruction_data(c.data)
    style = prompt_style_for(tokenizer, c.style)
    context = model.cfg.context_length
    allowed = min(c.allowed_max_length or context, context)
    train_loader, val_loader, splits = instruction_loaders(entries, tokenizer, style, batch_size=c.batch_size,
                                                           mask_prompt=c.mask_prompt,
                                                           allowed_max_length=allowed, seed=c.seed,
                                                           validation=None if c.validation_data is None
                                                           else load_instruction_data(c.validation_data))
    out_dir = default_out_dir(c, loaded, "instruct")
    name = run_name(c, loaded)
    print(f"llmfs finetune instruct: {loaded.name} ({model.num_parameters():,} parameters), {c.data}: "
          f"{len(splits.train)} train / {len(splits.validation)} validation / {len(splits.test)} test entries, "
          f"prompt style {style.name}{', prompt masked' if c.mask_prompt else ''}; output in {out_dir}")

    def answer_test_set():
        return generate_responses(model, tokenizer, splits.test, style, max_new_tokens=c.max_new_tokens,
                                  progress=c.progress)

    scores: dict[str, Any] = {}
    if not c.skip_baseline and not c.resume and splits.test:
        before = answer_test_set()
        save_results(out_dir / "test-responses-before.json", before)
        scores["before"] = score_exact_match(before)
        print(f"before fine-tuning: exact match {scores['before']['exact_match']:.1%}, answer contained "
              f"{scores['before']['contains_answer']:.1%} on {len(before)} test entries")

    task = {"type": "instruct", "style": style.name, "mask_prompt": c.mask_prompt}
    lora_info = None
    if c.lora:
        import torch

        from llm_from_scratch.finetune.lora import apply_lora, count_parameters
        torch.manual_seed(c.seed)  # LoRA's A matrices start the same in every run
        apply_lora(model, c.lora_rank, c.lora_alpha)
        lora_info = {"rank": c.lora_rank, "alpha": c.lora_alpha}
        trainable, total = count_parameters(model)
        print(f"LoRA rank {c.lora_rank}: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})")
    model.train()
    trainer = finetune_trainer(model, train_loader, val_loader, tokenizer, c, out_dir, device, run_settings=settings,
                               extra_checkpoint_info={"task": task, "model_type": name, "lora": lora_info})
    print(f"device {trainer.device}, {trainer.precision_choice.describe()}")
    with sigterm_as_ctrl_c():          # `kill` saves last.pt like Ctrl-C does
        history = trainer.train()

    model.eval()
    if splits.test:
        after = answer_test_set()
        save_results(out_dir / "test-responses.json", after)
        scores["after"] = score_exact_match(after)
    if c.lora:  # keep the adapters alone (a few MB), then fold them in: a plain model again
        from llm_from_scratch.finetune.lora import merge_lora, save_lora
        save_lora(model, out_dir / "lora_adapters.safetensors", c.lora_rank, c.lora_alpha)
        merge_lora(model)
    save_checkpoint(out_dir / "final_model.pt", {"model": model.state_dict(), "model_config": model.cfg.to_dict(),
                                                 "tokenizer": tokenizer.to_config(), "task": task,
                                                 "model_type": name})
    scores["minutes"] = (time.perf_counter() - started) / 60
    scores["precision"] = trainer.precision
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
    line = f"trained on all {len(splits.train)} entries (no test split)"
    if "after" in scores:
        line = (f"after fine-tuning: exact match {scores['after']['exact_match']:.1%}, answer contained "
                f"{scores['after']['contains_answer']:.1%}")
        if "before" in scores:
            line += (f" (before: {scores['before']['exact_match']:.1%} and "
                     f"{scores['before']['contains_answer']:.1%})")
        line += f"\n  {out_dir / 'test-responses.json'}"
    print(f"{line}\n  {out_dir / 'final_model.pt'} "
          f"(llmfs chat --checkpoint {out_dir / 'final_model.pt'})\n  {out_dir / 'loss.png'}\n"
          f"done in {scores['minutes']:.1f} min")
    return InstructResult(out_dir, model, tokenizer, scores, list(history))
