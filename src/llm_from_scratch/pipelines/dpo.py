"""DPO in one call: learning from pairs of a better and a worse answer, what `llmfs finetune dpo` does.

    from llm_from_scratch.pipelines import DPOConfig, finetune_dpo

    result = finetune_dpo(DPOConfig(model="smollm2-135m-instruct", tasks="count_letters", lora=True))
    result.scores["before"], result.scores["after"], result.pairs

The pairs (prompt, chosen, rejected) come from a JSONL file (`data=`), or are made **on-policy**
from the verifiable tasks: the model answers each of `num_prompts` training questions
`samples_per_prompt` times, the checker sorts the answers, and every question with at least
one right and one wrong answer gives a pair (its first right answer, its first wrong one).
Questions where all answers agree give no pair. The pairs go to `<out_dir>/pairs.jsonl`.

Then (the math is in `finetune/dpo.py`): the log-probabilities of every chosen and rejected
answer under the **reference** (the model before training) are computed once and kept in
`<out_dir>/reference_logps.pt`; each step scores a batch of pairs under the model being trained
and minimizes -log sigmoid(beta * (how much more the model than the reference prefers chosen
over rejected)). Exact resume: a step's pairs depend only on the step number (a seeded shuffle
per epoch), and the pairs and reference figures are read back from the output folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_from_scratch.pipelines.common import PipelineError, sigterm_as_ctrl_c
from llm_from_scratch.pipelines.policy import (PolicyConfig, PolicyResult, describe_training, finish_policy,
                                               policy_trainer, prepare_policy)

DPOResult = PolicyResult


@dataclass
class DPOConfig(PolicyConfig):
    """The settings of `finetune_dpo`: `PolicyConfig`'s plus where the pairs come from and beta."""

    data: str | Path | None = None       # a JSONL file of {prompt, chosen, rejected} ...
    tasks: str | None = "count_letters"  # ... or pairs sampled on-policy from these task families
    difficulty: int | None = None
    num_prompts: int = 256               # training questions sampled for on-policy pairs
    samples_per_prompt: int = 8          # answers per question (the checker picks a right and a wrong one)
    temperature: float = 1.0             # sampling temperature for those answers
    beta: float = 0.1                    # how far from the reference the model may move (larger: less)
    pairs_per_step: int = 8              # pairs in one optimizer step
    max_steps: int = 100


DPO_PLOT = ("loss", "reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected")


def on_policy_pairs(model, tokenizer, questions: list, config: DPOConfig) -> tuple[list, dict[str, float]]:
    """Sample answers to `questions`; a pair (right, wrong) per question that has both. Whole
    answers (ended by the model, not cut off by max_new_tokens) are preferred on both sides:
    each side of a pair is trained as a whole turn, end-of-turn token included."""
    from llm_from_scratch.evaluation.tasks import answer_tasks
    from llm_from_scratch.finetune.dpo import PreferencePair
    from llm_from_scratch.generation.sampling import SamplingParams
    from llm_from_scratch.tasks import check_answer

    c = config
    params = SamplingParams(max_tokens=c.max_new_tokens, temperature=c.temperature, seed=c.seed)
    groups = answer_tasks(model, tokenizer, questions, params, num_samples=c.samples_per_prompt,
                          batch_size=c.batch_size, progress=c.progress, desc="sampling answers for pairs")
    pairs, right_total, answers_total, mixed = [], 0, 0, 0
    for question, group in zip(questions, groups):
        verdicts = [check_answer(question, a.text) for a in group]
        by_whole_first = sorted(range(len(group)), key=lambda i: group[i].finish_reason != "stop")  # stable
        right = [group[i] for i in by_whole_first if verdicts[i]]
        wrong = [group[i] for i in by_whole_first if not verdicts[i]]
        right_total += sum(verdicts)
        answers_total += len(group)
        if right and wrong:
            mixed += 1
            pairs.append(PreferencePair(question.prompt, right[0].text, wrong[0].text))
    stats = {"questions": len(questions), "pairs": len(pairs), "sampled_accuracy": right_total / max(1, answers_total)}
    return pairs, stats


class DPOStep:
    """One DPO step on the pairs of step `step` (callable by `PolicyTrainer`)."""

    def __init__(self, model, tokenizer, pairs: list, reference: dict, config: DPOConfig, autocast):
        self.model, self.c, self.autocast = model, config, autocast
        self.chosen, self.rejected = encode_pairs(tokenizer, pairs, model.cfg.context_length)
        self.reference = reference
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

    def __call__(self, step: int) -> dict[str, float]:
        from llm_from_scratch.finetune.dpo import dpo_loss

        indices = self.pairs_of(step)
        totals: dict[str, float] = {}
        m = max(1, self.c.micro_batch // 2)      # pairs per micro-batch (two rows each)
        for start in range(0, len(indices), m):
            part = indices[start:start + m]
            with self.autocast():
                chosen = sequence_logps(self.model, self.chosen, part, self.pad_id)
                rejected = sequence_logps(self.model, self.rejected, part, self.pad_id)
            loss, metrics = dpo_loss(chosen, rejected, self.reference["chosen"][part],
                                     self.reference["rejected"][part], beta=self.c.beta)
            weight = len(part) / len(indices)
            (loss * weight).backward()
            for k, v in {"loss": loss.item(), **metrics}.items():
                totals[k] = totals.get(k, 0.0) + float(v) * weight
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


def reference_logps(model, tokenizer, pairs: list, config: DPOConfig, path: Path) -> dict:
    """The reference model's log-probabilities of every chosen and rejected answer, computed once
    (the model before training: with LoRA, the adapters are still zero) and saved to `path`."""
    import torch

    from llm_from_scratch.training.checkpoint import load_checkpoint, save_checkpoint

    if path.is_file():
        saved = load_checkpoint(path)
        if len(saved["chosen"]) == len(pairs):
            return saved
    chosen_side, rejected_side = encode_pairs(tokenizer, pairs, model.cfg.context_length)
    pad = tokenizer.eot_id if tokenizer.eot_id is not None else 0
    m = max(1, config.micro_batch)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        result = {side: torch.cat([sequence_logps(model, data, list(range(s, min(s + m, len(pairs)))), pad)
                                   for s in range(0, len(pairs), m)])
                  for side, data in (("chosen", chosen_side), ("rejected", rejected_side))}
    model.train(was_training)
    save_checkpoint(path, result)
    return result


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
    model, tokenizer, out_dir = prepared.model, prepared.tokenizer, prepared.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    pairs_file = out_dir / "pairs.jsonl"
    try:
        if c.resume and pairs_file.is_file():
            pairs = load_preference_pairs(pairs_file)
        elif c.data is not None:
            pairs = load_preference_pairs(c.data)
            save_preference_pairs(pairs_file, pairs)
        else:
            questions = gather_instances(c.tasks, c.num_prompts, split="train", seed=c.seed, difficulty=c.difficulty)
            pairs, stats = on_policy_pairs(model, tokenizer, questions, c)
            extra["pairs"] = stats
            print(f"on-policy pairs: {stats['pairs']} of {stats['questions']} questions had a right and a wrong "
                  f"answer (sampled accuracy {stats['sampled_accuracy']:.1%})")
            if not pairs:
                raise PipelineError("no pairs: every question's answers were all right or all wrong; use more "
                                    "--num_prompts, a higher --temperature or another task family")
            save_preference_pairs(pairs_file, pairs)
    except (ValueError, FileNotFoundError) as exc:
        raise PipelineError(str(exc)) from exc
    if not c.resume:  # figures left by an earlier, unfinished run belong to its pairs
        (out_dir / "reference_logps.pt").unlink(missing_ok=True)
    reference = reference_logps(model, tokenizer, pairs, c, out_dir / "reference_logps.pt")
    trainer = policy_trainer(c, prepared, "dpo", DPO_PLOT)
    print(f"llmfs finetune dpo: {prepared.name}, {len(pairs)} pairs, {c.pairs_per_step} per step, beta {c.beta}, "
          f"{describe_training(c, trainer)}; output in {out_dir}")
    step = DPOStep(model, tokenizer, pairs, reference, c, trainer.autocast)
    with sigterm_as_ctrl_c():
        history = trainer.train(step)
    scores = finish_policy(prepared, trainer, "dpo", extra)
    return PolicyResult(out_dir, model, tokenizer, scores, list(history))
