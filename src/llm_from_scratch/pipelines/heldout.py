"""Held-out task scoring before and after a training run, and the paired comparison of the two.

GRPO, DPO and rejection-sampling fine-tuning are all judged the same way: greedy pass@1 on
questions of the tasks' "test" split (which training never draws from), answered by the start
model and by the tuned one, compared question by question (McNemar, `evaluation/significance.py`).

* `heldout_instances`: the questions - by default those `llmfs evaluate tasks` scores (200 per
  family, seed 0), answered with its answer budget (`heldout_budget`: 128 tokens, or what the
  context leaves), so a run's own before/after and a separate `evaluate tasks` agree;
* `HeldoutScorer`: answers them and writes every answer to `heldout-before.json` /
  `heldout-after.json` in the run's folder, in the format of `llmfs evaluate tasks --out` (so
  `llmfs evaluate compare` reads them); in between, a cheaper curve on the first
  `curve_examples` questions of each family;
* `heldout_comparison`, `comparison_scores`, `print_comparison`: the paired table a run ends with.

Why two sizes: 200 questions per family are what it takes to see a 10-point change (about 6
minutes for all nine families on 2 CPU cores); scoring that many every few steps would cost more
than the training. The curve's 50 are the first 50 of the same 200, so the curve's first and last
points come from the full scoring at no extra cost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_from_scratch.pipelines.common import PipelineError

HELDOUT_FILES = {"before": "heldout-before.json", "after": "heldout-after.json"}


def heldout_instances(tasks: str | None, examples: int, curve_examples: int, seed: int) -> list:
    """The held-out questions of `tasks` ("" or "none": no scoring): `examples` per family.
    Cheap, so the stages call it before any sampling: a bad setting fails at once."""
    from llm_from_scratch.pipelines.task_eval import gather_instances

    if not tasks or tasks == "none":
        return []
    if examples < 1:
        raise PipelineError(f"--eval_examples must be at least 1, got {examples} (no scoring: --eval_tasks none)")
    if curve_examples < 1:
        raise PipelineError(f"--eval_curve_examples must be at least 1, got {curve_examples}")
    return gather_instances(tasks, examples, split="test", seed=seed)


def heldout_budget(tokenizer, instances: list, context_length: int, style: str = "auto") -> int:
    """The held-out answers' token budget: `llmfs evaluate tasks`'s (TASK_EVAL_MAX_NEW_TOKENS), or
    what the model's context leaves after the longest question, so both score alike."""
    from llm_from_scratch.evaluation.tasks import task_prompts
    from llm_from_scratch.generation.completions import answer_length
    from llm_from_scratch.generation.defaults import TASK_EVAL_MAX_NEW_TOKENS

    try:
        return answer_length(None, task_prompts(tokenizer, instances, style), context_length,
                             TASK_EVAL_MAX_NEW_TOKENS)
    except ValueError as exc:
        raise PipelineError(f"held-out scoring: {exc} (or leave scoring out: --eval_tasks none)") from exc


class HeldoutScorer:
    """Greedy pass@1 on held-out questions: all of them (`full`) or the curve's (`partial`)."""

    def __init__(self, instances: list, tokenizer, *, max_new_tokens: int, batch_size: int, curve_examples: int,
                 model_name: str, out_dir: str | Path, seed: int = 0, style: str = "auto"):
        self.instances, self.tokenizer = instances, tokenizer
        self.max_new_tokens, self.batch_size, self.model_name = max_new_tokens, batch_size, model_name
        self.out_dir, self.seed, self.style = Path(out_dir), seed, style
        seen: dict[str, int] = {}
        self.on_curve = []               # is question i one of its family's first `curve_examples`?
        for instance in instances:
            seen[instance.family] = seen.get(instance.family, 0) + 1
            self.on_curve.append(seen[instance.family] <= curve_examples)

    def records(self, model, instances: list) -> list[dict[str, Any]]:
        from llm_from_scratch.evaluation.tasks import evaluate_on_tasks

        _, records = evaluate_on_tasks(model, self.tokenizer, instances, num_samples=0, greedy=True,
                                       max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                       style=self.style)
        return records

    def settings(self) -> dict[str, Any]:
        """What makes two scorings comparable: the questions and how they were answered."""
        families = list(dict.fromkeys(q.family for q in self.instances))
        return {"tasks": ",".join(families),
                "num_examples": max(sum(1 for q in self.instances if q.family == f) for f in families),
                "seed": self.seed, "greedy": True, "max_new_tokens": self.max_new_tokens, "style": self.style}

    def full(self, model, when: str, step: int = 0, write: bool = True) -> tuple[dict[str, float], list]:
        """Every question, `when` = "before" or "after" (at training step `step`): (the curve's
        values, all records); the records go to the run's heldout-<when>.json (if `write`: under
        DDP only the main process writes)."""
        from llm_from_scratch.evaluation.tasks import summarize
        from llm_from_scratch.io.atomic import write_atomically

        records = self.records(model, self.instances)
        if write:
            report = {"model": self.model_name, "when": when, "step": step, "config": self.settings(),
                      "summary": summarize(records, 0), "records": records}
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self.out_dir / HELDOUT_FILES[when],
                             (json.dumps(report, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
        return curve_values([r for r, keep in zip(records, self.on_curve) if keep]), records

    def written(self, when: str) -> dict[str, Any] | None:
        """The run's heldout-<when>.json as written (None if there is none)."""
        path = self.out_dir / HELDOUT_FILES[when]
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def check_resumable(self) -> None:
        """On --resume: the "before" answers already written must be of these very settings, or
        the comparison at the end would pair different questions (or different budgets)."""
        before = self.written("before")
        if before is not None and before.get("config") != self.settings():
            raise PipelineError(f"{self.out_dir / HELDOUT_FILES['before']} was scored with {before.get('config')}, "
                                f"this run would score {self.settings()}: resume with the run's own --eval_tasks, "
                                "--eval_examples, --eval_seed and --max_new_tokens")

    def partial(self, model) -> dict[str, float]:
        """The curve's questions only: {family: greedy pass@1, ..., "all"}."""
        return curve_values(self.records(model, [q for q, keep in zip(self.instances, self.on_curve) if keep]))


def curve_values(records: list[dict[str, Any]]) -> dict[str, float]:
    from llm_from_scratch.evaluation.tasks import summarize

    return {family: row["greedy"] for family, row in summarize(records, 0).items()}


def heldout_comparison(scorer: HeldoutScorer | None, step: int) -> dict[str, dict[str, Any]] | None:
    """The paired comparison of the run's heldout-before.json and its heldout-after.json of step
    `step` (None without a scorer, or when the start model's answers are missing: a run resumed
    from one that did not score)."""
    from llm_from_scratch.evaluation.significance import compare_records

    if scorer is None:
        return None
    before, after = scorer.written("before"), scorer.written("after")
    if before is None or after is None or after.get("step") != step:
        return None
    try:
        return compare_records(before["records"], after["records"])
    except ValueError as exc:
        raise PipelineError(f"{scorer.out_dir}: {exc}") from exc


def comparison_scores(comparison: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What scores.json keeps of it: greedy pass@1 per family before and after, and the table."""
    return {"before": {family: row["before"] for family, row in comparison.items()},
            "after": {family: row["after"] for family, row in comparison.items()},
            "paired": comparison}


def print_comparison(comparison: dict[str, dict[str, Any]], out_dir: str | Path) -> None:
    from llm_from_scratch.evaluation.significance import format_comparison

    n = min(row["n"] for row in comparison.values())
    files = " ".join(str(Path(out_dir) / HELDOUT_FILES[w]) for w in ("before", "after"))
    print(f"held-out greedy pass@1 before and after, on the same questions ({n} per family; * = "
          f"significant, paired McNemar p < 0.05):\n{format_comparison(comparison)}\n"
          f"  (the same table: llmfs evaluate compare {files})")
