"""Verifiable tasks: questions whose answers a program can check, for evaluation and for RL.

A *verifiable* task has one right answer that a few lines of Python can recognise, so a model
can be scored without a judge model (`llmfs evaluate tasks`: greedy pass@1, pass@k, majority
vote) and the checker itself can be the reward of reinforcement learning (GRPO, DPO): reward 1
when `check_answer(instance, completion)` is True.

Where things are:

* `core` - `TaskInstance`, and how a family turns a seed into instances (train/test splits that
  never share a question, determinism, the difficulty mix);
* `answers` - the answer-format instruction every prompt ends with, and the checker: reading
  the final answer out of a completion, normalising it, comparing it;
* `arithmetic`, `word_problems`, `text_tasks` - the nine generated families;
* `files` - GSM8K and MATH-500 loaded from JSONL files.

Example::

    from llm_from_scratch.tasks import make_instances, check_answer
    task = make_instances("addition", 1, seed=0)[0]
    task.prompt     # "What is 33 + 10? Give your final answer on the last line as 'Answer: <answer>'."
    task.answer     # "43"
    check_answer(task, "33 + 10 = 43.\\nAnswer: 43")      # True
    check_answer(task, "The answer is 42.")                # False
"""

from __future__ import annotations

from .answers import (ANSWER_INSTRUCTION, KINDS, MATH_ANSWER_INSTRUCTION, answers_match,
                      check_answer, extract_answer, has_answer_format, normalise_answer)
from .arithmetic import ADDITION, COMPARE, MULTIPLICATION, SUBTRACTION
from .core import SPLITS, TaskFamily, TaskInstance, split_of
from .files import load_gsm8k, load_math500
from .text_tasks import COUNT_LETTERS, REVERSE_LETTERS, REVERSE_WORDS, SORT_NUMBERS
from .word_problems import WORD_PROBLEMS

FAMILIES: dict[str, TaskFamily] = {family.name: family for family in (
    ADDITION, SUBTRACTION, MULTIPLICATION, WORD_PROBLEMS,
    REVERSE_WORDS, REVERSE_LETTERS, COUNT_LETTERS, SORT_NUMBERS, COMPARE,
)}

# Names that stand for several families in a task list ("arithmetic,reverse_words").
GROUPS: dict[str, tuple[str, ...]] = {
    "arithmetic": ("addition", "subtraction", "multiplication"),
    "text": ("reverse_words", "reverse_letters", "count_letters"),
    "numbers": ("sort_numbers", "compare"),
    # The default training mix of GRPO, DPO and RFT: the families where a small instruct model gets
    # some answers right and some wrong (SmolLM2-135M-Instruct's pass@8: 23-90%), so sampled answers
    # carry signal. Reversing and sorting (pass@8 near 0) would only cost sampling time. A mix, not
    # one family, because one family's answers can be gamed by one pattern (docs 22: the reward hack).
    "learnable": ("addition", "multiplication", "word_problems", "count_letters", "compare"),
}

#: What `llmfs finetune grpo|dpo|rft` train on unless told otherwise.
POLICY_TRAINING_TASKS = "learnable"


def task_names() -> list[str]:
    """The built-in families, in their fixed order."""
    return list(FAMILIES)


def parse_task_list(spec: str) -> list[str]:
    """Family names from a comma-separated list: "all", names, and group names ("arithmetic").

    Order is kept, repeats are dropped; an unknown name is a ValueError listing the valid ones."""
    names: list[str] = []
    for part in (spec or "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "all":
            expanded = task_names()
        elif part in GROUPS:
            expanded = list(GROUPS[part])
        elif part in FAMILIES:
            expanded = [part]
        else:
            groups = ", ".join(f"{group} ({'+'.join(members)})" for group, members in GROUPS.items())
            raise ValueError(f"unknown task {part!r}. Valid tasks: {', '.join(task_names())}; "
                             f"groups: all, {groups}")
        names.extend(name for name in expanded if name not in names)
    if not names:
        raise ValueError(f"no task given; use 'all' or some of: {', '.join(task_names())}")
    return names


def make_instances(family: str, n: int, *, split: str = "test", seed: int = 0,
                   difficulty: int | None = None) -> list[TaskInstance]:
    """`n` distinct instances of a family, from the `split` ("train" or "test") that no other split
    shares; difficulty 1-3, or None for the mix 1, 2, 3, 1, 2, 3, ... Deterministic."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; valid: {', '.join(task_names())}")
    return FAMILIES[family].instances(n, split=split, seed=seed, difficulty=difficulty)


__all__ = [
    "ANSWER_INSTRUCTION", "FAMILIES", "GROUPS", "KINDS", "MATH_ANSWER_INSTRUCTION", "POLICY_TRAINING_TASKS", "SPLITS",
    "TaskFamily", "TaskInstance", "answers_match", "check_answer", "extract_answer",
    "has_answer_format", "load_gsm8k", "load_math500", "make_instances", "normalise_answer",
    "parse_task_list", "split_of", "task_names",
]
