"""Rejection-sampling fine-tuning (RFT) in one call: what `llmfs finetune rft` does.

    from llm_from_scratch.pipelines import RFTConfig, finetune_rft

    result = finetune_rft(RFTConfig(model="smollm2-135m-instruct", tasks="addition,multiplication"))
    result.data, result.counts["addition"]["kept"], result.final_model

The simplest way to learn from a checker, and the baseline GRPO and DPO are measured against:

    training questions (the tasks' "train" split: never a held-out question)
      -> k answers each, sampled from the start model (`samples_per_question`, `temperature`)
      -> keep the answers the checker accepts that ended on their own (a truncated answer would
         teach rambling), each distinct answer text once per question
      -> instruction fine-tuning on them (`finetune_instruct`: the one training loop, full weights
         or LoRA, the same flags), the prompt in the same format the tasks are asked in; every
         kept answer trains except those of one question in twenty, which validate (split by
         question, so two answers to one question never sit on both sides)
      -> held-out greedy pass@1 before and after (`pipelines/heldout.py`, as GRPO and DPO: 200
         questions per family by default), compared question by question

Where GRPO pushes probability towards a group's better answers and away from its worse ones,
RFT only imitates the model's own correct answers (Yuan et al., 2023, "Scaling relationship on
learning mathematical reasoning with large language models"). Its data is written to
`<out_dir>/rft-data.json` (the kept answers that train, with their family and question id),
`rft-validation.json` (those that validate) and the counts per family (questions, samples,
correct, kept) to `<out_dir>/rft-counts.json`; the held-out answers to `heldout-before.json` and
`heldout-after.json`, and their paired comparison into `scores.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llm_from_scratch.generation.defaults import POLICY_SAMPLING_TEMPERATURE
from llm_from_scratch.pipelines.common import PipelineError
from llm_from_scratch.tasks import POLICY_TRAINING_TASKS
from llm_from_scratch.pipelines.heldout import (HELDOUT_FILES, HeldoutScorer, comparison_scores, heldout_budget,
                                                heldout_comparison, heldout_instances, print_comparison)
from llm_from_scratch.pipelines.instruct import InstructConfig, InstructResult


@dataclass
class RFTConfig(InstructConfig):
    """`InstructConfig`'s settings (the fine-tuning) plus where the data comes from."""

    tasks: str = POLICY_TRAINING_TASKS   # training families (comma-separated), a group, or "all"
    difficulty: int | None = None        # only this level (None: a mix)
    questions: int = 64                  # training questions per family
    samples_per_question: int = 8        # answers sampled per question, k
    temperature: float = POLICY_SAMPLING_TEMPERATURE
    max_new_tokens: int = 96             # longest sampled answer
    sample_batch_size: int = 64          # answers decoded together (sampling and held-out scoring), as GRPO/DPO
    skip_baseline: bool = True           # (the instruct stage has no test split here: held-out tasks instead)
    eval_tasks: str = "all"              # held-out families scored before and after (""/none: no scoring)
    eval_examples: int = 200             # held-out questions per family
    eval_seed: int = 0                   # which held-out questions: `llmfs evaluate tasks`'s by default

VALIDATION_EVERY = 20                    # one question in this many validates instead of training


@dataclass
class RFTResult:
    data: Path                           # rft-data.json: the kept answers that train
    counts: dict[str, dict[str, int]]    # per family: questions, samples, correct, kept
    instruct: InstructResult             # the fine-tuning run (final_model, scores, history)
    scores: dict[str, Any] | None = None  # held-out before/after per family and the paired table

    @property
    def final_model(self) -> Path:
        return self.instruct.final_model


def rejection_sample(model, tokenizer, instances, *, samples_per_question: int, temperature: float,
                     max_new_tokens: int, batch_size: int = 64, seed: int = 0, style: str = "auto",
                     progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """(entries, counts): instruction entries {instruction, input, output, family, id} made of the
    checked-correct answers that ended on their own, each distinct text once per question, and the
    counts per family (and "all")."""
    from llm_from_scratch.evaluation.tasks import answer_tasks
    from llm_from_scratch.generation.sampling import SamplingParams
    from llm_from_scratch.tasks import check_answer

    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed)
    answers = answer_tasks(model, tokenizer, instances, params, num_samples=samples_per_question,
                           batch_size=batch_size, style=style, progress=progress, desc="sampling answers")
    entries, counts = [], {}
    for instance, completions in zip(instances, answers):
        row = counts.setdefault(instance.family, {"questions": 0, "samples": 0, "correct": 0, "kept": 0})
        row["questions"] += 1
        row["samples"] += len(completions)
        kept: set[str] = set()
        for completion in completions:
            if not check_answer(instance, completion.text):
                continue
            row["correct"] += 1
            text = completion.text.strip()
            if completion.finish_reason != "stop" or text in kept:
                continue
            kept.add(text)
            entries.append({"instruction": instance.prompt, "input": "", "output": text,
                            "family": instance.family, "id": instance.id})
        row["kept"] += len(kept)
    counts["all"] = {key: sum(row[key] for row in counts.values()) for key in ("questions", "samples", "correct", "kept")}
    return entries, counts


def split_by_question(entries: list[dict[str, Any]], every: int = VALIDATION_EVERY) -> tuple[list, list]:
    """(train, validation): the answers of every `every`-th question that has any validate (at
    least one question's: the last one's when there are fewer than `every`), the rest train; a
    question's answers all go to one side. A single question cannot be split: all of it trains."""
    questions = list(dict.fromkeys((e["family"], e["id"]) for e in entries))
    held = set(questions[every - 1::every] or questions[-1:]) if len(questions) > 1 else set()
    return ([e for e in entries if (e["family"], e["id"]) not in held],
            [e for e in entries if (e["family"], e["id"]) in held])


# settings that may change on --resume (training/run_settings.py): a resumed run trains on its
# saved answers, so what sampled them may change; so may the instruction stage's settings RFT has no
# flag for (its data is RFT's own, it has no test split)
RESUME_MAY_CHANGE = ("tasks", "difficulty", "questions", "samples_per_question", "temperature", "max_new_tokens",
                     "sample_batch_size", "data", "validation_data", "num_examples", "skip_baseline")


def finetune_rft(config: RFTConfig) -> RFTResult:
    """Sample, keep the checked-correct answers, fine-tune on them (see the module docstring)."""
    from llm_from_scratch.assets import write_atomically
    from llm_from_scratch.pipelines.finetuning import default_out_dir, load_start_model
    from llm_from_scratch.pipelines.instruct import finetune_instruct
    from llm_from_scratch.training.run_settings import RunSettings
    from llm_from_scratch.pipelines.task_eval import gather_instances
    from llm_from_scratch.training.trainer import auto_device

    c = config
    if c.samples_per_question < 1:
        raise PipelineError(f"samples_per_question must be at least 1, got {c.samples_per_question}")
    if c.temperature <= 0:
        raise PipelineError("rejection sampling needs several different answers: --temperature > 0")
    instances = gather_instances(c.tasks, c.questions, split="train", seed=c.seed, difficulty=c.difficulty,
                                 interleave=True)
    heldout = heldout_instances(c.eval_tasks, c.eval_examples, c.eval_examples, c.eval_seed)   # fails early
    loaded = load_start_model(c, auto_device(c.device))
    out_dir = Path(c.out_dir) if c.out_dir else default_out_dir(c, loaded, "rft")
    data_path, counts_path = out_dir / "rft-data.json", out_dir / "rft-counts.json"
    validation_path = out_dir / "rft-validation.json"
    scorer = heldout_scorer(c, heldout, loaded, out_dir)
    if c.resume and data_path.exists():     # the data of the run being resumed, not a new sample
        train = json.loads(data_path.read_text(encoding="utf-8"))
        counts = json.loads(counts_path.read_text(encoding="utf-8"))
        if validation_path.exists():
            validation = json.loads(validation_path.read_text(encoding="utf-8"))
        else:                                # a run from before the validation file: split its data now
            train, validation = split_by_question(train)
            write_atomically(data_path, (json.dumps(train, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
            write_atomically(validation_path, (json.dumps(validation, indent=1, ensure_ascii=False) + "\n").encode())
        entries = train + validation
    else:
        print(f"llmfs finetune rft: {loaded.name}, {len(instances)} training questions ({c.tasks}), "
              f"{c.samples_per_question} answers each at temperature {c.temperature}")
        loaded.model.eval()
        entries, counts = rejection_sample(
            loaded.model, loaded.tokenizer, instances, samples_per_question=c.samples_per_question,
            temperature=c.temperature, max_new_tokens=c.max_new_tokens, batch_size=c.sample_batch_size,
            seed=c.seed, style=c.style, progress=c.progress)
        train, validation = split_by_question(entries)
        out_dir.mkdir(parents=True, exist_ok=True)
        # the data last: a run resumes from its data only when the other two are there as well
        for path, value in ((validation_path, validation), (counts_path, counts), (data_path, train)):
            write_atomically(path, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    for family, row in counts.items():
        print(f"  {family:<16} {row['questions']:>5} questions  {row['correct']:>6} of {row['samples']} answers "
              f"correct  {row['kept']:>5} kept")
    if len(entries) < 10 or not validation:
        questions = len({(e["family"], e["id"]) for e in entries})
        raise PipelineError(f"only {len(entries)} correct answers to {questions} questions to learn from (of "
                            f"{counts['all']['samples']} sampled; at least 10 answers to 2 questions are needed, one "
                            "question's to validate): use easier tasks (--difficulty 1), more --questions or "
                            "--samples_per_question, or a stronger start model")
    if scorer is not None and not (c.resume and (out_dir / HELDOUT_FILES["before"]).is_file()):
        print(f"held-out questions, before: {len(scorer.instances)}")
        scorer.full(loaded.model, "before")
    del loaded
    instruct_fields = {f.name for f in fields(InstructConfig)}
    settings = {k: v for k, v in asdict(c).items() if k in instruct_fields}
    settings.update(data=data_path, validation_data=validation_path, out_dir=out_dir)
    run_settings = RunSettings.of(c, may_change=RESUME_MAY_CHANGE)
    result = finetune_instruct(InstructConfig(**settings), run_settings=run_settings)
    scores = None
    if scorer is not None:
        result.model.eval()
        print(f"held-out questions, after: {len(scorer.instances)}")
        scorer.full(result.model, "after")
        comparison = heldout_comparison(scorer, 0)
        scores = {**result.scores, **comparison_scores(comparison)}
        write_atomically(out_dir / "scores.json", (json.dumps(scores, indent=1) + "\n").encode("utf-8"))
        print_comparison(comparison, out_dir)
    return RFTResult(data_path, counts, result, scores)


def heldout_scorer(config: RFTConfig, instances: list, loaded, out_dir: Path):
    """The held-out scorer of the run (None with eval_tasks none): `evaluate tasks`'s budget, the
    run's prompt style; on --resume, the start model's answers must be of the same settings."""
    c = config
    if not instances:
        return None
    scorer = HeldoutScorer(instances, loaded.tokenizer, batch_size=c.sample_batch_size, curve_examples=c.eval_examples,
                           max_new_tokens=heldout_budget(loaded.tokenizer, instances, loaded.model.cfg.context_length,
                                                         c.style),
                           model_name=loaded.name, out_dir=out_dir, seed=c.eval_seed, style=c.style)
    if c.resume:
        scorer.check_resumable()
    return scorer
