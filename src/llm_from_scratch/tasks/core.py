"""What a task instance is, and how a family of generated tasks turns a seed into instances.

Every family (addition, reverse_words, ...) is one function ``draw(rng, level) -> Question``
that invents a random question of a difficulty level, with its answer. Everything else is
shared and lives here:

* **Splits that never overlap.** Reinforcement learning on a task and then measuring on the same
  task is only honest if the measured questions were never trained on. Each question carries a
  *key*: its content without the wording (e.g. ``"add|38|417"``; the two numbers of a commutative
  sum are sorted, a word problem's key is its template and numbers but not the names in it).
  A question belongs to the "test" split when sha256(family + key) falls in the lowest 20%,
  otherwise to "train". The seed plays no part in that, so for *every* seed, no train prompt is a
  test prompt, not even reworded ("What is 417 + 38?" cannot be in train if "Add 38 and 417."
  is in test).
* **Draw until there are enough.** The generator keeps drawing and drops candidates of the other
  split and repeats, until it has `n` distinct instances. Same arguments, same list; a bigger
  `n` only appends (the first `n` instances never change).
* **A fixed difficulty mix.** With ``difficulty=None`` instance i has level 1, 2, 3, 1, 2, 3, ...
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

from .answers import ANSWER_INSTRUCTION, KINDS, with_answer_instruction

SPLITS = ("train", "test")
LEVELS = (1, 2, 3)
TEST_SHARE_PERCENT = 20
# A family whose questions of a split and level run out raises instead of looping for ever.
MAX_DRAWS_PER_INSTANCE = 5000


@dataclass(frozen=True)
class TaskInstance:
    """One question with its reference answer, ready to be asked and checked."""
    family: str        # e.g. "addition"
    prompt: str        # the question as a user would type it, ending with the answer instruction
    answer: str        # the canonical reference answer, e.g. "1023", "cat dog", "3, 7, 9"
    kind: str          # how answers are compared: "number" | "text" | "list" | "math"
    difficulty: int    # 1, 2, 3
    id: str            # unique and stable, e.g. "addition/test/2/5f0c1e9a2b"
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)   # e.g. the operands


class Question(NamedTuple):
    """What a family's `draw` returns: a question without the answer instruction."""
    text: str
    answer: str
    key: str                   # the content of the question, wording aside (decides the split)
    meta: dict[str, Any]       # what the answer was computed from, so tests can recompute it


def split_of(key: str) -> str:
    """"test" for about TEST_SHARE_PERCENT% of keys, "train" for the rest; fixed for ever."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < TEST_SHARE_PERCENT else "train"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


@dataclass(frozen=True)
class TaskFamily:
    """A generated task: its name, how its answers compare, and its question generator."""
    name: str
    kind: str
    description: str
    draw: Callable[[random.Random, int], Question]

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task family {self.name!r}: unknown kind {self.kind!r}")

    def instances(self, n: int, *, split: str = "test", seed: int = 0,
                  difficulty: int | None = None) -> list[TaskInstance]:
        """`n` distinct instances of `split` (see the module docstring)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        if difficulty is not None and difficulty not in LEVELS:
            raise ValueError(f"difficulty must be 1, 2, 3 or None (a mix), not {difficulty!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        # A string seed is hashed with sha512 by `random`: the same stream on every machine.
        rng = random.Random(f"{self.name}/{seed}/{difficulty}")
        instances: list[TaskInstance] = []
        used_keys: set[str] = set()
        for index in range(n):
            level = difficulty if difficulty is not None else LEVELS[index % len(LEVELS)]
            for _ in range(MAX_DRAWS_PER_INSTANCE):
                question = self.draw(rng, level)
                key = f"{self.name}|{question.key}"
                if key not in used_keys and split_of(key) == split:
                    break
            else:
                raise ValueError(
                    f"{self.name}: found only {len(instances)} distinct {split!r} questions at "
                    f"difficulty {level}; ask for fewer than {n}, or another difficulty")
            used_keys.add(key)
            prompt = with_answer_instruction(question.text, ANSWER_INSTRUCTION)
            instances.append(TaskInstance(
                family=self.name, prompt=prompt, answer=question.answer, kind=self.kind,
                difficulty=level, id=f"{self.name}/{split}/{level}/{_short_hash(prompt)}",
                meta={**question.meta, "key": key}))
        return instances
