"""Loading two public math benchmarks from JSONL files: GSM8K and MATH-500.

Generated tasks (the rest of this package) are endless and controlled; public benchmarks are
what other people report, so a model's number can be compared with theirs. Both are read from a
local file (nothing is downloaded here) and become the same `TaskInstance`s as generated tasks,
so `check_answer` and the evaluation code treat them alike.

**GSM8K** (grade-school word problems; the test split has 1,319): one JSON object per line,

    {"question": "...", "answer": "step 1 ...\\nstep 2 ...\\n#### 72"}

The reference is the number after ``####`` (thousands commas removed). Family "gsm8k", kind
"number". Difficulty: the number of reasoning lines before ``####`` (1-2 -> 1, 3-4 -> 2, more -> 3).

**MATH-500** (500 competition problems chosen from MATH): one JSON object per line,

    {"problem": "...", "answer": "\\\\frac{14}{3}", "solution": "... \\\\boxed{\\\\frac{14}{3}}",
     "subject": "Algebra", "level": 3, "unique_id": "test/algebra/1234.json"}

The reference is ``answer``, or the last ``\\boxed{}`` of ``solution`` when there is no answer.
Family "math500", kind "math": the light LaTeX checker of `answers.py`, not a symbolic one.
The prompt asks for ``Answer: \\boxed{...}``, the form MATH solutions use; difficulty is MATH's
level 1-5 folded into 1-3 (1-2 -> 1, 3 -> 2, 4-5 -> 3), and ``meta`` keeps the original level.

A broken line is a `ValueError` naming the file, the line and what is wrong, and a missing file
a `FileNotFoundError`, so a wrong download is found at once, not after an hour of evaluation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from .answers import ANSWER_INSTRUCTION, MATH_ANSWER_INSTRUCTION, last_boxed, with_answer_instruction
from .core import TaskInstance

GSM8K_EXAMPLE = '{"question": "...", "answer": "...\\n#### 72"}'
MATH500_EXAMPLE = '{"problem": "...", "answer": "\\\\frac{1}{2}", "level": 3, ...}'


def _records(path, dataset: str, example: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{dataset} file not found: {path}. Pass the path of a JSONL file "
                                f"with one problem per line, like {example}")
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg}). "
                                 f"Each line must be one JSON object, like {example}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {line_number}: expected a JSON object, got "
                                 f"{type(record).__name__}. Each line must look like {example}")
            yield line_number, record


def _text_field(record: dict, name: str, path, line_number: int, example: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        problem = "missing" if value is None else "not a non-empty string"
        raise ValueError(f"{path}, line {line_number}: field {name!r} is {problem}. "
                         f"Each line must look like {example}")
    return value


def _first_records(path, dataset: str, example: str, limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """`_records`, at most `limit` of them (None: all)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, not {limit}")
    for count, item in enumerate(_records(path, dataset, example)):
        if limit is not None and count >= limit:
            return
        yield item


def load_gsm8k(path, limit: int | None = None) -> list[TaskInstance]:
    """GSM8K problems from a JSONL file (at most `limit` of them), as "gsm8k" task instances."""
    instances: list[TaskInstance] = []
    for line_number, record in _first_records(path, "GSM8K", GSM8K_EXAMPLE, limit):
        question = _text_field(record, "question", path, line_number, GSM8K_EXAMPLE)
        solution = _text_field(record, "answer", path, line_number, GSM8K_EXAMPLE)
        reasoning, marker, final = solution.rpartition("####")
        reference = final.strip().replace(",", "").replace("$", "")
        if not marker or not re.fullmatch(r"-?\d+(?:\.\d+)?", reference):
            raise ValueError(f"{path}, line {line_number}: the 'answer' field must end with "
                             f"'#### <number>' (GSM8K's format), got ...{solution[-40:]!r}")
        steps = len([line for line in reasoning.splitlines() if line.strip()])
        instances.append(TaskInstance(
            family="gsm8k", prompt=with_answer_instruction(question, ANSWER_INSTRUCTION),
            answer=reference, kind="number", difficulty=1 if steps <= 2 else 2 if steps <= 4 else 3,
            id=f"gsm8k/{Path(path).stem}/{line_number}",
            meta={"source": str(path), "line": line_number, "solution": reasoning.strip()}))
    return instances


def _math_level(value: Any) -> int | None:
    """MATH's level, written 3 or "Level 3" depending on the copy of the data; None if absent."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(?:Level\s*)?(\d)\s*", str(value)) if value is not None else None
    return int(match.group(1)) if match else None


def load_math500(path, limit: int | None = None) -> list[TaskInstance]:
    """MATH-500 problems from a JSONL file (at most `limit` of them), as "math500" task instances."""
    instances: list[TaskInstance] = []
    for line_number, record in _first_records(path, "MATH-500", MATH500_EXAMPLE, limit):
        problem = _text_field(record, "problem", path, line_number, MATH500_EXAMPLE)
        answer = record.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            answer = last_boxed(record.get("solution") or "")
            if not answer or not answer.strip():
                raise ValueError(f"{path}, line {line_number}: no reference answer: the 'answer' "
                                 f"field is missing and 'solution' has no \\boxed{{...}}. Each line "
                                 f"must look like {MATH500_EXAMPLE}")
        level = _math_level(record.get("level"))
        difficulty = 2 if level is None else 1 if level <= 2 else 2 if level == 3 else 3
        unique_id = record.get("unique_id") or f"{Path(path).stem}/{line_number}"
        instances.append(TaskInstance(
            family="math500", prompt=with_answer_instruction(problem, MATH_ANSWER_INSTRUCTION),
            answer=answer.strip(), kind="math", difficulty=difficulty, id=f"math500/{unique_id}",
            meta={"source": str(path), "line": line_number, "level": level,
                  "subject": record.get("subject"), "solution": record.get("solution")}))
    return instances
