"""What the DPO and GRPO stages share: settings, the model to tune, held-out scoring, the files they write.

Both methods start from an instruction-following model (SmolLM2-135M-Instruct, or one of our
checkpoints), train either all its weights or LoRA adapters, measure it on *held-out* task
instances (the "test" split of `llm_from_scratch.tasks`, which training never draws from)
before, during and after training (`pipelines/heldout.py`: all 200 questions per family before
and after, written to heldout-before/after.json and compared question by question; the first 50
in between, for the curve), and end with `final_model.pt` (LoRA merged in, so every command
loads it as usual), `scores.json` (before/after per family and the paired table) and
`training.png`.

Both train through the project's one training loop (`training/trainer.py`): DPO and GRPO are
*methods* of it (`PolicyMethod` here, `DPOMethod` and `GRPOMethod` in dpo.py and grpo.py) that
say how a step's gradient is made; the loop does the optimizer, precision, checkpoints, exact
resume, Ctrl-C, logs and pictures, as for pretraining.

* `PolicyConfig`: the settings both configs start from (`TrainingSettings` plus sampling sizes);
* `prepare_policy`: the start model (and LoRA), the tokenizer, the output folder;
* `PolicyMethod`: what DPO and GRPO share as methods: dropout off, held-out scoring, plots;
* `policy_trainer`: the `GPTTrainer` with the config's settings (resumed with `resume`);
* `run_policy`: held-out scoring, the trainer, the run, the files: what both stages end with;
* `answer_budget`: how many tokens an answer may have in the model's context;
* `finish_policy`: merge LoRA, write final_model.pt and scores.json, print the before/after table;
* `PolicyResult`: what a run returns.

**Dropout is off** in both methods, for the policy and the reference alike (TRL does the same):
the log-probabilities are *measurements* - GRPO's ratio pi / pi_old and DPO's implied reward
log pi - log pi_ref compare two of them, and dropout's noise would make the ratio differ from
1 and the reward from 0 where nothing changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from llm_from_scratch.pipelines.common import FinetunedRunFiles, PipelineError
from llm_from_scratch.pipelines.finetuning import TrainingSettings
from llm_from_scratch.training.method import TrainingMethod

MAX_NEW_TOKENS = 96                      # the longest answer by default, where the context has room


@dataclass
class PolicyConfig(TrainingSettings):
    """Settings every DPO/GRPO run has: `TrainingSettings` plus how answers are sampled and scored."""

    FULL_WEIGHTS_LR: ClassVar[float] = 2e-6   # the default learning rate when all weights train

    lora: bool = False                   # train LoRA adapters instead of all weights
    lr: float | None = None              # None: 2e-4 for LoRA adapters, FULL_WEIGHTS_LR for all weights
    max_steps: int = 100
    max_new_tokens: int | None = None    # longest sampled answer (None: 96, or what the context leaves)
    batch_size: int = 64                 # rows decoded together when sampling
    micro_batch: int = 16                # rows per forward/backward (gradients add up)
    eval_tasks: str = "all"              # held-out families scored before/during/after (""/none: no scoring)
    eval_examples: int = 200             # held-out questions per family scored before and after (paired test)
    eval_curve_examples: int = 50        # the first of them per family, also scored every eval_interval (the curve)
    eval_seed: int = 0                   # which held-out questions: `llmfs evaluate tasks`'s by default


@dataclass
class PolicyResult(FinetunedRunFiles):
    """What a DPO or GRPO run produced."""

    out_dir: Path
    model: Any                           # the tuned model (LoRA merged in)
    tokenizer: Any
    scores: dict[str, Any]               # held-out greedy pass@1 per family "before" and "after", ...
    history: list[dict[str, float]] = field(default_factory=list)   # one record per step

    @property
    def pairs(self) -> Path:
        """DPO's preference pairs (from the file, or sampled on-policy)."""
        return self.out_dir / "pairs.jsonl"


LORA_LR = 2e-4


def default_lr(config: "PolicyConfig") -> float:
    """LoRA adapters start at zero and need a larger step than the whole model, whose step is
    the method's own (`FULL_WEIGHTS_LR`: DPO 2e-6, GRPO 1e-5, chosen by ablation, docs 22)."""
    if config.lr is not None:
        return config.lr
    return LORA_LR if config.lora else config.FULL_WEIGHTS_LR


@dataclass
class PreparedPolicy:
    model: Any
    tokenizer: Any
    name: str                            # the start model's name (what the checkpoint records)
    out_dir: Path
    lora: dict | None                    # {"rank", "alpha"} when LoRA adapters train
    device: Any
    start_weights: str | None = None     # `weights_fingerprint` of the start model (what --resume checks)


def prepare_policy(config: PolicyConfig, method: str) -> PreparedPolicy:
    """Load the start model, add LoRA adapters (seeded) if asked, and pick the output folder."""
    import torch

    from llm_from_scratch.pipelines.finetuning import default_out_dir, load_start_model, run_name
    from llm_from_scratch.training.trainer import auto_device

    c = config
    if (c.model is None) == (c.checkpoint is None):
        raise PipelineError("give a pretrained model (--model NAME) or one of our checkpoints (--checkpoint PATH)")
    device = auto_device(c.device)
    loaded = load_start_model(c, device)
    model = loaded.model
    out_dir = default_out_dir(c, loaded, method)
    if c.resume and not (out_dir / "last.pt").is_file():
        raise PipelineError(f"nothing to resume: no {out_dir / 'last.pt'} (start without --resume)")
    if not c.resume and (out_dir / "last.pt").is_file():
        raise PipelineError(f"{out_dir} already holds a run (last.pt): continue it with --resume, or choose "
                            "another --out_dir")
    from llm_from_scratch.training.run_settings import weights_fingerprint
    start_weights = weights_fingerprint(model)
    lora = None
    if c.lora:
        from llm_from_scratch.finetune.lora import apply_lora
        torch.manual_seed(c.seed)  # the adapters' A matrices start the same in every run
        apply_lora(model, c.lora_rank, c.lora_alpha)
        lora = {"rank": c.lora_rank, "alpha": c.lora_alpha}
    model.eval()  # dropout off, for the policy and the reference (see the module docstring)
    return PreparedPolicy(model, loaded.tokenizer, run_name(c, loaded), out_dir, lora, device, start_weights)


def answer_budget(config: PolicyConfig, prompts: list, context_length: int) -> int:
    """The longest answer to sample: `config.max_new_tokens`, or by default 96 tokens or what the
    model's context leaves after the longest prompt (`generation.completions.answer_length`)."""
    from llm_from_scratch.generation.completions import answer_length

    try:
        return answer_length(config.max_new_tokens, prompts, context_length, MAX_NEW_TOKENS)
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc


class PolicyMethod(TrainingMethod):
    """What DPO and GRPO share as methods of the training loop: dropout off (see the module
    docstring), a line of log.jsonl per step, held-out accuracy before, during and after."""

    evaluate_at_start = True
    train_mode = False                   # the model stays in eval mode: dropout off, gradients on

    scorer = None                        # a pipelines.heldout.HeldoutScorer, set by run_policy (None: no scoring)
    # settings that may change on --resume (training/run_settings.py): rows per forward/backward
    # (the same gradient); a method adds what it no longer uses once its data is saved
    resume_may_change: ClassVar[tuple[str, ...]] = ("micro_batch",)

    def evaluate(self, trainer, final: bool) -> dict:
        """Held-out greedy pass@1 per family: all questions at the start and the end (written to
        heldout-before/after.json for the paired test), the curve's questions in between."""
        if self.scorer is None:
            return {}
        write = trainer.dist.is_main     # under DDP every rank scores, the main one writes
        if trainer.state.step == 0:
            return self.scorer.full(trainer.model, "before", 0, write=write)[0]
        if final:
            return self.scorer.full(trainer.model, "after", trainer.state.step, write=write)[0]
        return self.scorer.partial(trainer.model)


def policy_trainer(config: PolicyConfig, prepared: PreparedPolicy, method: PolicyMethod):
    """The `GPTTrainer` of a run: the config's settings, `method`'s steps, what the checkpoints
    record (method, LoRA, settings); continued from last.pt when `config.resume`, with the
    settings it started with (training/run_settings.py)."""
    from llm_from_scratch.training.run_settings import RunSettings
    from llm_from_scratch.training.trainer import GPTTrainer

    c = config
    settings = RunSettings.of(c, may_change=method.resume_may_change)
    settings.values["lr"] = default_lr(c)  # the learning rate used, not None: defaults change between versions
    settings.values["start_weights"] = prepared.start_weights
    info = {"method": method.name.lower(), "lora": prepared.lora, "model_type": prepared.name}
    try:
        trainer = GPTTrainer(prepared.model, method=method, tokenizer=prepared.tokenizer, max_steps=c.max_steps,
                             lr=default_lr(c), weight_decay=c.weight_decay, warmup_steps=c.warmup_steps,
                             grad_clip=c.grad_clip, eval_interval=c.eval_interval, out_dir=str(prepared.out_dir),
                             seed=c.seed, device=str(prepared.device), precision=c.precision, progress=c.progress,
                             checkpoint_trainable_only=prepared.lora is not None, extra_checkpoint_info=info,
                             run_settings=settings,
                             resume_from=str(prepared.out_dir / "last.pt") if c.resume else None)
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
    return trainer


def frozen_reference(prepared: PreparedPolicy):
    """The start model as a reference: None with LoRA (the model with its adapters switched off
    is the start model, `finetune.lora.lora_disabled`), else a frozen copy of it."""
    import copy

    return None if prepared.lora is not None else copy.deepcopy(prepared.model).eval().requires_grad_(False)


def policy_scorer(config: PolicyConfig, prepared: PreparedPolicy):
    """The run's held-out scorer (`pipelines/heldout.py`; None with --eval_tasks none). Made
    before any sampling, so that a bad setting fails at once; on --resume it checks that the
    start model's answers already written were scored the same way."""
    from llm_from_scratch.pipelines.heldout import HeldoutScorer, heldout_budget, heldout_instances

    c = config
    heldout = heldout_instances(c.eval_tasks, c.eval_examples, c.eval_curve_examples, c.eval_seed)
    if not heldout:
        return None
    scorer = HeldoutScorer(heldout, prepared.tokenizer, batch_size=c.batch_size, curve_examples=c.eval_curve_examples,
                           max_new_tokens=heldout_budget(prepared.tokenizer, heldout,
                                                         prepared.model.cfg.context_length),
                           model_name=prepared.name, out_dir=prepared.out_dir, seed=c.eval_seed)
    if c.resume:
        scorer.check_resumable()
    return scorer


def run_policy(config: PolicyConfig, prepared: PreparedPolicy, method: PolicyMethod, what: str,
               extra_scores: dict | None = None, scorer=None) -> "PolicyResult":
    """Train with `method` on the one training loop, scoring held-out questions before, during and
    after, then merge LoRA and write the files (`finish_policy`). `what` describes the data;
    `scorer`: the run's `policy_scorer` if the stage made it already."""
    from llm_from_scratch.pipelines.common import sigterm_as_ctrl_c

    c, name = config, method.name.lower()
    method.scorer = scorer if scorer is not None else policy_scorer(c, prepared)
    trainer = policy_trainer(c, prepared, method)
    count = len(method.scorer.instances) if method.scorer is not None else 0
    print(f"llmfs finetune {name}: {prepared.name}, {what}, {describe_training(c, trainer, count)}; "
          f"output in {prepared.out_dir}")
    with sigterm_as_ctrl_c():
        history = trainer.train()
        after = method.scorer.written("after") if method.scorer is not None else None
        if method.scorer is not None and trainer.dist.is_main and (after is None or
                                                                    after.get("step") != trainer.state.step):
            # a run resumed after its last step, whose final scoring was interrupted (or never ran)
            print("held-out questions, after: scoring the final model")
            method.scorer.full(prepared.model, "after", trainer.state.step)
    scores = finish_policy(prepared, trainer, name, extra_scores, method.scorer)
    return PolicyResult(prepared.out_dir, prepared.model, prepared.tokenizer, scores, list(history))


def describe_training(config: PolicyConfig, trainer, heldout_count: int) -> str:
    """The settings line a run prints: steps, learning rate, what trains, held-out size, precision."""
    c = config
    trainable = sum(p.numel() for p in trainer.trainable)
    what = f"LoRA rank {c.lora_rank}" if c.lora else "all weights"
    lr = trainer.scheduler.base_lrs[0]   # a resumed run's own (its optimizer and schedule are restored)
    return (f"{c.max_steps} steps, lr {lr:g}, {what} ({trainable:,} trainable); held-out: "
            f"{heldout_count} questions; {trainer.precision_choice.describe()}")


def finish_policy(prepared: PreparedPolicy, trainer, method: str, extra_scores: dict | None = None,
                  scorer=None) -> dict[str, Any]:
    """Merge LoRA, write final_model.pt and scores.json; return the scores (before/after per family)."""
    from llm_from_scratch.io.atomic import write_atomically
    from llm_from_scratch.pipelines.heldout import comparison_scores, heldout_comparison, print_comparison
    from llm_from_scratch.training.checkpoint import save_checkpoint

    model, out_dir = prepared.model, prepared.out_dir
    evaluations = trainer.state.evaluations
    scores: dict[str, Any] = {"method": method, "steps": trainer.state.step,
                              "train_minutes": trainer.state.train_seconds / 60, "precision": trainer.precision}
    if evaluations:                      # the curve's questions (the first eval_curve_examples per family)
        scores["curve_before"] = {k: v for k, v in evaluations[0].items() if k != "step"}
        scores["curve_after"] = {k: v for k, v in evaluations[-1].items() if k != "step"}
    comparison = heldout_comparison(scorer, trainer.state.step)
    if comparison is not None:           # every held-out question, before and after, paired
        scores.update(comparison_scores(comparison))
    scores.update(extra_scores or {})
    if prepared.lora is not None:
        from llm_from_scratch.finetune.lora import merge_lora, save_lora
        save_lora(model, out_dir / "lora_adapters.safetensors", prepared.lora["rank"], prepared.lora["alpha"])
        merge_lora(model)
    model.eval()
    save_checkpoint(out_dir / "final_model.pt", {"model": model.state_dict(), "model_config": model.cfg.to_dict(),
                                                 "tokenizer": prepared.tokenizer.to_config(),
                                                 "task": {"type": method}, "model_type": prepared.name})
    write_atomically(out_dir / "scores.json", (json.dumps(scores, indent=1) + "\n").encode("utf-8"))
    if comparison is not None:
        print_comparison(comparison, out_dir)
    print(f"  {out_dir / 'final_model.pt'} (llmfs evaluate tasks --checkpoint {out_dir / 'final_model.pt'})\n"
          f"  {out_dir / 'training.png'}\n  {out_dir / 'scores.json'}\n"
          f"trained {trainer.state.step} steps in {trainer.state.train_seconds / 60:.1f} min")
    return scores
