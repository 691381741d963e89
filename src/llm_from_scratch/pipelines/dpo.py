"""DPO in one call: learning from pairs of a better and a worse answer, what `llmfs finetune dpo` does.

    from llm_from_scratch.pipelines import DPOConfig, finetune_dpo

    result = finetune_dpo(DPOConfig(model="smollm2-135m-instruct", tasks="count_letters", lora=True))
    result.scores["before"], result.scores["after"], result.pairs

The pairs (prompt, chosen, rejected) come from a JSONL file (`data=`), or are made **on-policy**
from the verifiable tasks: the model answers each of `num_prompts` training questions
`samples_per_prompt` times, the checker sorts the answers, and every question with at least
one right and one wrong answer gives a pair (its first right answer, its first wrong one).
Questions where all answers agree give no pair. The pairs go to `<out_dir>/pairs.jsonl`.

Then (the math is in `finetune/dpo.py`) each step scores a batch of pairs under the model
being trained and under the **reference** (the model before training: with LoRA the same model
with its adapters switched off, else a frozen copy), in the same batches and precision, and
minimizes -log sigmoid(beta * (how much more the model than the reference prefers chosen over
rejected)). Dropout is off for both (pipelines/policy.py), so the first step's loss is exactly
log 2. Exact resume: a step's pairs depend only on the step number (a seeded shuffle per
epoch), and the pairs are read back from the output folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_from_scratch.generation.defaults import POLICY_SAMPLING_TEMPERATURE
from llm_from_scratch.pipelines.common import PipelineError
from llm_from_scratch.tasks import POLICY_TRAINING_TASKS
from llm_from_scratch.pipelines.policy import (PolicyConfig, PolicyMethod, PolicyResult, frozen_reference,
                                               policy_scorer, prepare_policy, run_policy)

DPOResult = PolicyResult


@dataclass
class DPOConfig(PolicyConfig):
    """The settings of `finetune_dpo`: `PolicyConfig`'s plus where the pairs come from and beta."""

    data: str | Path | None = None       # a JSONL file of {prompt, chosen, rejected} ...
    tasks: str | None = POLICY_TRAINING_TASKS  # ... or pairs sampled on-policy from these task families
    difficulty: int | None = None
    num_prompts: int = 64                # training questions per family sampled for on-policy pairs
    samples_per_prompt: int = 8          # answers per question (the checker picks a right and a wrong one)
    temperature: float = POLICY_SAMPLING_TEMPERATURE  # sampling temperature for those answers
    beta: float = 0.1                    # how far from the reference the model may move (larger: less)
    pairs_per_step: int = 8              # pairs in one optimizer step
    max_steps: int = 100


DPO_PLOT = ("loss", "reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected")


def on_policy_pairs(model, tokenizer, questions: list, config: DPOConfig) -> tuple[list, dict[str, float]]:
    """Sample answers to `questions`; a pair (right, wrong) per question that has both among its
    *whole* answers. An answer cut off at max_new_tokens is never used: each side of a pair is
    trained as a whole turn, end-of-turn token included, and a cut-off answer would teach the
    model to stop mid-sentence."""
    from llm_from_scratch.evaluation.tasks import answer_tasks, task_prompts
    from llm_from_scratch.finetune.dpo import PreferencePair
    from llm_from_scratch.generation.sampling import SamplingParams
    from llm_from_scratch.pipelines.policy import answer_budget
    from llm_from_scratch.tasks import check_answer

    c = config
    max_new_tokens = answer_budget(c, task_prompts(tokenizer, questions), model.cfg.context_length)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=c.temperature, seed=c.seed)
    groups = answer_tasks(model, tokenizer, questions, params, num_samples=c.samples_per_prompt,
                          batch_size=c.batch_size, progress=c.progress, desc="sampling answers for pairs")
    pairs, right_total, answers_total, cut_off = [], 0, 0, 0
    for question, group in zip(questions, groups):
        whole = [a for a in group if a.finish_reason == "stop"]
        cut_off += len(group) - len(whole)
        verdicts = [check_answer(question, a.text) for a in whole]
        right = [a for a, v in zip(whole, verdicts) if v]
        wrong = [a for a, v in zip(whole, verdicts) if not v]
        right_total += sum(verdicts)
        answers_total += len(group)
        if right and wrong:
            pairs.append(PreferencePair(question.prompt, right[0].text, wrong[0].text))
    stats = {"questions": len(questions), "pairs": len(pairs), "sampled_accuracy": right_total / max(1, answers_total),
             "cut_off": cut_off / max(1, answers_total)}
    return pairs, stats


class DPOMethod(PolicyMethod):
    """DPO as a method of the training loop: a step scores its pairs under the policy and the
    reference, in the same batches and the same precision, and takes one optimizer update.

    The reference is the start model - the LoRA model with its adapters switched off, or a frozen
    copy - and is run beside the policy at every step rather than once before training: the two
    then see identical inputs, shapes and autocast, so at step 0 (policy == reference) every
    implied reward is exactly 0 and the loss exactly log 2, in fp32 and in bf16 alike."""

    name = "DPO"
    plot_keys = DPO_PLOT
    # a resumed run trains on its saved pairs.jsonl: what made the pairs may change
    resume_may_change = ("micro_batch", "data", "tasks", "difficulty", "num_prompts", "samples_per_prompt",
                         "temperature", "max_new_tokens", "batch_size")

    def __init__(self, model, tokenizer, pairs: list, config: DPOConfig, reference=None):
        self.model, self.c, self.reference = model, config, reference
        self.chosen, self.rejected = encode_pairs(tokenizer, pairs, model.cfg.context_length)
        self.pad_id = tokenizer.eot_id if tokenizer.eot_id is not None else 0

    def pairs_of(self, step: int) -> list[int]:
        """Pairs of step `step`: a seeded shuffle per epoch, epochs one after the other."""
        import torch

        n, b = len(self.chosen[0]), self.c.pairs_per_step
        chosen = []
        for position in range(step * b, step * b + b):
            epoch, offset = divmod(position, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.c.seed + epoch)).tolist()
            chosen.append(order[offset])
        return chosen

    def reference_logps(self, part: list[int]):
        """(chosen, rejected) log-probabilities of the pairs `part` under the start model."""
        import contextlib

        from llm_from_scratch.finetune.lora import lora_disabled

        model = self.reference if self.reference is not None else self.model
        switch = contextlib.nullcontext() if self.reference is not None else lora_disabled(self.model)
        with switch:
            return (sequence_logps(model, self.chosen, part, self.pad_id),
                    sequence_logps(model, self.rejected, part, self.pad_id))

    def train_step(self, trainer, step: int) -> dict[str, float]:
        import torch

        from llm_from_scratch.finetune.dpo import dpo_loss

        indices = self.pairs_of(step)
        totals: dict[str, float] = {}
        m = max(1, self.c.micro_batch // 2)      # pairs per micro-batch (two rows each)
        for start in range(0, len(indices), m):
            part = indices[start:start + m]
            with trainer.autocast():
                with torch.no_grad():
                    ref_chosen, ref_rejected = self.reference_logps(part)
                chosen = sequence_logps(self.model, self.chosen, part, self.pad_id)
                rejected = sequence_logps(self.model, self.rejected, part, self.pad_id)
            loss, metrics = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=self.c.beta)
            weight = len(part) / len(indices)
            trainer.backward(loss * weight)
            for k, v in {"loss": loss.item(), **metrics}.items():
                totals[k] = totals.get(k, 0.0) + float(v) * weight
        trainer.update()
        return totals


def encode_pairs(tokenizer, pairs: list, context_length: int):
    """((prompt ids, chosen ids), (prompt ids, rejected ids)) per pair: the prompt in the model's
    chat template (or Alpaca), each answer followed by the end-of-turn token."""
    from llm_from_scratch.finetune.instruct import prompt_style_for, stop_ids_for

    style = prompt_style_for(tokenizer, "auto")
    allowed = getattr(style, "allowed_special", None)
    end = stop_ids_for(tokenizer)[:1]

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, allowed_special=allowed) if allowed else tokenizer.encode(text)

    prompts = [encode(style.generation_prompt({"instruction": p.prompt, "input": ""})) for p in pairs]
    chosen = [tokenizer.encode(p.chosen) + end for p in pairs]
    rejected = [tokenizer.encode(p.rejected) + end for p in pairs]
    for i, (prompt, a, b) in enumerate(zip(prompts, chosen, rejected)):
        if max(len(a), len(b)) >= context_length:
            raise PipelineError(f"pair {i + 1}: an answer is longer than the model's context "
                                f"({context_length} tokens); shorten it or leave the pair out")
    return (prompts, chosen), (prompts, rejected)


def sequence_logps(model, side, indices: list[int], pad_id: int):
    """Summed log-probabilities of the answers `indices` of one side (chosen or rejected): (len,)"""
    from llm_from_scratch.finetune.sequences import pack_completions, sequence_logprob, token_logprobs

    prompts, answers = side
    packed = pack_completions([prompts[i] for i in indices], [answers[i] for i in indices], pad_id,
                              max_length=model.cfg.context_length)
    device = next(model.parameters()).device
    mask = packed.completion_mask.float().to(device)
    logps = token_logprobs(model, packed.input_ids.to(device), only=mask).float()   # the head at answer tokens only
    return sequence_logprob(logps, mask)


def finetune_dpo(config: DPOConfig) -> DPOResult:
    """Train with DPO as `config` says (see the module docstring); bad input raises PipelineError."""
    from llm_from_scratch.finetune.dpo import load_preference_pairs, save_preference_pairs
    from llm_from_scratch.pipelines.task_eval import gather_instances

    c = config
    if c.beta <= 0:
        raise PipelineError(f"beta must be > 0, got {c.beta}")
    if (c.data is None) == (not c.tasks):
        raise PipelineError("give the pairs as --data FILE.jsonl, or --tasks FAMILIES to sample them on-policy "
                            "(one of the two)")
    for name in ("pairs_per_step", "max_steps", "micro_batch", "num_prompts", "samples_per_prompt"):
        if getattr(c, name) < 1:
            raise PipelineError(f"{name} must be at least 1, got {getattr(c, name)}")
    prepared = prepare_policy(c, "dpo")
    scorer = policy_scorer(c, prepared)           # before the sampling: a bad setting fails at once
    model, tokenizer, out_dir = prepared.model, prepared.tokenizer, prepared.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    pairs_file = out_dir / "pairs.jsonl"
    try:
        reused = c.resume and pairs_file.is_file()
        if reused:
            pairs = load_preference_pairs(pairs_file)
            print(f"resuming on the run's own {len(pairs)} pairs ({pairs_file}); --data and the sampling settings "
                  "are not used again")
        elif c.data is not None:
            pairs = load_preference_pairs(c.data)
            save_preference_pairs(pairs_file, pairs)
        else:
            questions = gather_instances(c.tasks, c.num_prompts, split="train", seed=c.seed, difficulty=c.difficulty)
            pairs, stats = on_policy_pairs(model, tokenizer, questions, c)
            extra["pairs"] = stats
            print(f"on-policy pairs: {stats['pairs']} of {stats['questions']} questions had a right and a wrong "
                  f"whole answer (sampled accuracy {stats['sampled_accuracy']:.1%}; {stats['cut_off']:.0%} of the "
                  "answers were cut off at max_new_tokens and not used)")
            if not pairs:
                raise PipelineError("no pairs: no question had both a right and a wrong whole answer; use more "
                                    "--num_prompts, a higher --temperature, a larger --max_new_tokens (if answers "
                                    "were cut off) or another task family")
            save_preference_pairs(pairs_file, pairs)
    except (ValueError, FileNotFoundError) as exc:
        raise PipelineError(str(exc)) from exc
    method = DPOMethod(model, tokenizer, pairs, c, frozen_reference(prepared))
    if not reused:                                # pairs made anew: what made them must be what the run had
        method.resume_may_change = PolicyMethod.resume_may_change
    return run_policy(c, prepared, method, f"{len(pairs)} pairs, {c.pairs_per_step} per step, beta {c.beta}", extra,
                      scorer)
