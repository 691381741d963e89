"""Scoring generated answers against references: exact match, and "the answer is in there".

Used after instruction fine-tuning (`llmfs finetune instruct` scores the test split before and
after); tasks with exact answers (the synthetic instruction set) are scored here, open-ended
ones by a judge model (`judge.py`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def score_exact_match(results: Sequence[Mapping[str, Any]], response_key: str = "model_response") -> dict[str, Any]:
    """Overall and per-task exact-match accuracy."""
    from llm_from_scratch.data.synthetic_instructions import exact_match, normalize_answer

    per_task: dict[str, list[bool]] = {}
    hits, contains = [], []
    for entry in results:
        hit = exact_match(entry[response_key], entry["output"])
        hits.append(hit)
        # A lenient second figure: the reference appears somewhere in the answer (a verbose but
        # right answer counts here, not in exact match).
        contains.append(normalize_answer(entry["output"]) in normalize_answer(entry[response_key]))
        per_task.setdefault(entry.get("task", "all"), []).append(hit)
    n = len(hits)
    return {"exact_match": sum(hits) / n if n else float("nan"),
            "contains_answer": sum(contains) / n if n else float("nan"), "count": n,
            "per_task": {task: sum(v) / len(v) for task, v in sorted(per_task.items())}}
