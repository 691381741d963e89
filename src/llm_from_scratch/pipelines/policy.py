"""What the DPO and GRPO stages share: settings, the model to tune, held-out scoring, the files they write.

Both methods start from an instruction-following model (SmolLM2-135M-Instruct, or one of our
checkpoints), train either all its weights or LoRA adapters, measure it on *held-out* task
instances (the "test" split of `llm_from_scratch.tasks`, which training never draws from)
before, during and after training, and end with `final_model.pt` (LoRA merged in, so every
command loads it as usual), `scores.json` (before/after per family) and `training.png`.

* `PolicyConfig`: the settings both configs start from;
* `prepare_policy`: the start model (and LoRA), the tokenizer, the output folder;
* `heldout_scorer`: a function that gives greedy pass@1 per family, for the trainer;
* `policy_trainer`: the `PolicyTrainer` with the config's settings (resumed with `resume`);
* `finish_policy`: merge LoRA, write final_model.pt and scores.json, print the before/after table;
* `PolicyResult`: what a run returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_from_scratch.pipelines.common import PipelineError, RunFiles


@dataclass
class PolicyConfig:
    """Settings every DPO/GRPO run has."""

    model: str | None = None             # a pretrained model: name or path ...
    checkpoint: str | Path | None = None  # ... or a checkpoint written by llmfs (exactly one of the two)
    lora: bool = False                   # train LoRA adapters instead of all weights
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lr: float | None = None              # None: the method's default for LoRA / all weights
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    max_steps: int = 100
    max_new_tokens: int = 96             # longest sampled answer
    batch_size: int = 64                 # rows decoded together when sampling
    micro_batch: int = 16                # rows per forward/backward (gradients add up)
    eval_tasks: str = "all"              # held-out families scored before/during/after (""/none: no scoring)
    eval_examples: int = 50              # held-out questions per family
    eval_interval: int | None = None     # steps between held-out scorings (None: 5 per run)
    out_dir: str | Path | None = None    # None: checkpoints/<method>-<model name>
    resume: bool = False                 # continue <out_dir>/last.pt exactly
    seed: int = 123
    device: str = "auto"
    precision: str = "auto"              # auto, fp32, bf16
    progress: bool = True


@dataclass
class PolicyResult(RunFiles):
    """What a DPO or GRPO run produced."""

    out_dir: Path
    model: Any                           # the tuned model (LoRA merged in)
    tokenizer: Any
    scores: dict[str, Any]               # held-out greedy pass@1 per family "before" and "after", ...
    history: list[dict[str, float]] = field(default_factory=list)   # one record per step

    @property
    def final_model(self) -> Path:
        return self.out_dir / "final_model.pt"

    @property
    def pairs(self) -> Path:
        """DPO's preference pairs (from the file, or sampled on-policy)."""
        return self.out_dir / "pairs.jsonl"


def default_lr(config: "PolicyConfig") -> float:
    """LoRA adapters start at zero and need a larger step than the whole model."""
    return config.lr if config.lr is not None else (2e-4 if config.lora else 2e-6)


@dataclass
class PreparedPolicy:
    model: Any
    tokenizer: Any
    name: str                            # the start model's name (what the checkpoint records)
    out_dir: Path
    lora: dict | None                    # {"rank", "alpha"} when LoRA adapters train
    device: Any


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
    lora = None
    if c.lora:
        from llm_from_scratch.finetune.lora import apply_lora
        torch.manual_seed(c.seed)  # the adapters' A matrices start the same in every run
        apply_lora(model, c.lora_rank, c.lora_alpha)
        lora = {"rank": c.lora_rank, "alpha": c.lora_alpha}
    model.train()
    return PreparedPolicy(model, loaded.tokenizer, run_name(c, loaded), out_dir, lora, device)


def heldout_instances(config: PolicyConfig) -> list:
    """The held-out questions scored during the run (the "test" split; seed fixed by the config)."""
    from llm_from_scratch.pipelines.task_eval import gather_instances

    if not config.eval_tasks or config.eval_tasks == "none":
        return []
    return gather_instances(config.eval_tasks, config.eval_examples, split="test", seed=config.seed)


def heldout_scorer(instances: list, tokenizer, config: PolicyConfig):
    """A function model -> {family: greedy pass@1, ...} on `instances` (None when there are none)."""
    if not instances:
        return None
    from llm_from_scratch.evaluation.tasks import evaluate_on_tasks

    def score(model) -> dict[str, float]:
        summary, _ = evaluate_on_tasks(model, tokenizer, instances, num_samples=0, greedy=True,
                                       max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
        return {family: row["greedy"] for family, row in summary.items()}
    return score


def policy_trainer(config: PolicyConfig, prepared: PreparedPolicy, method: str, plot_keys: tuple[str, ...]):
    """The `PolicyTrainer` of a run: the config's settings, held-out scoring, what the checkpoints
    record (method, LoRA, settings); continued from last.pt when `config.resume`."""
    from llm_from_scratch.finetune.policy_trainer import PolicyTrainer

    c = config
    heldout = heldout_instances(c)
    info = {"method": method, "lora": prepared.lora, "model_type": prepared.name,
            f"{method}_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(c).items()}}
    trainer = PolicyTrainer(prepared.model, max_steps=c.max_steps, lr=default_lr(c), out_dir=prepared.out_dir,
                            weight_decay=c.weight_decay, warmup_steps=c.warmup_steps, grad_clip=c.grad_clip,
                            seed=c.seed, precision=c.precision, eval_interval=c.eval_interval,
                            evaluate=heldout_scorer(heldout, prepared.tokenizer, c), info=info,
                            progress=c.progress, desc=method.upper(), plot_keys=plot_keys)
    trainer.heldout_count = len(heldout)
    if c.resume:
        try:
            trainer.resume(prepared.out_dir / "last.pt")
        except ValueError as exc:
            raise PipelineError(str(exc)) from exc
    return trainer


def describe_training(config: PolicyConfig, trainer) -> str:
    """The settings line a run prints: steps, learning rate, what trains, held-out size, precision."""
    c = config
    trainable = sum(p.numel() for p in trainer.trainable)
    what = f"LoRA rank {c.lora_rank}" if c.lora else "all weights"
    return (f"{c.max_steps} steps, lr {default_lr(c):g}, {what} ({trainable:,} trainable); held-out: "
            f"{trainer.heldout_count} questions; {trainer.precision_choice.describe()}")


def finish_policy(prepared: PreparedPolicy, trainer, method: str, extra_scores: dict | None = None) -> dict[str, Any]:
    """Merge LoRA, write final_model.pt and scores.json; return the scores (before/after per family)."""
    from llm_from_scratch.io.atomic import write_atomically
    from llm_from_scratch.training.checkpoint import save_checkpoint

    model, out_dir = prepared.model, prepared.out_dir
    evaluations = trainer.state.evaluations
    scores: dict[str, Any] = {"method": method, "steps": trainer.state.step,
                              "train_minutes": trainer.state.seconds / 60, "precision": trainer.precision}
    if evaluations:
        scores["before"] = {k: v for k, v in evaluations[0].items() if k != "step"}
        scores["after"] = {k: v for k, v in evaluations[-1].items() if k != "step"}
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
    if "before" in scores:
        print(f"{'held-out greedy pass@1':<24}{'before':>8}{'after':>8}")
        for family, before in scores["before"].items():
            after = scores["after"].get(family, float("nan"))
            print(f"{family:<24}{100 * before:>7.1f}%{100 * after:>7.1f}%")
    print(f"  {out_dir / 'final_model.pt'} (llmfs evaluate tasks --checkpoint {out_dir / 'final_model.pt'})\n"
          f"  {out_dir / 'training.png'}\n  {out_dir / 'scores.json'}\n"
          f"trained {trainer.state.step} steps in {trainer.state.seconds / 60:.1f} min")
    return scores
