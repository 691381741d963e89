"""Arithmetic tasks: addition, subtraction, multiplication of whole numbers, and comparing numbers.

Why these: their answers are exact and cheap to check, and their difficulty has a simple knob,
the number of digits. Small language models are famously shaky at carrying digits and at
"which is larger, 9.11 or 9.9?" (they compare the digits after the point as whole numbers), so
these are good first targets for reinforcement learning with a verifier.

Difficulty levels (digits of each operand, drawn independently):

============== ============================ ============================ =========================
family         level 1                      level 2                      level 3
============== ============================ ============================ =========================
addition       1-2 digits                   2-3 digits                   3-4 digits
subtraction    1-2 digits, result >= 0      2-3 digits, result >= 0      3-4 digits, may be < 0
multiplication 1 digit x 1-2 digits         2 digits x 2 digits          3 digits x 2 digits
compare        two whole numbers < 100      two numbers with 1 decimal   same whole part, 1 vs 2
                                                                         decimals (9.9 vs 9.11),
                                                                         sometimes negative
============== ============================ ============================ =========================

Each family asks in a few wordings, so a model learns the task, not one sentence. The split key
(see `core.py`) holds only the numbers, sorted where order does not matter (38 + 417 is 417 + 38).
"""

from __future__ import annotations

import random
from fractions import Fraction

from .core import Question, TaskFamily

ADDITION_DIGITS = {1: (1, 2), 2: (2, 3), 3: (3, 4)}
SUBTRACTION_DIGITS = ADDITION_DIGITS
MULTIPLICATION_DIGITS = {1: ((1,), (1, 2)), 2: ((2,), (2,)), 3: ((3,), (2,))}

ADDITION_WORDINGS = ("What is {a} + {b}?", "Calculate {a} + {b}.", "Add {a} and {b}.")
SUBTRACTION_WORDINGS = ("What is {a} - {b}?", "Calculate {a} - {b}.", "Subtract {b} from {a}.")
MULTIPLICATION_WORDINGS = ("What is {a} * {b}?", "What is {a} times {b}?", "Multiply {a} by {b}.")
COMPARE_WORDINGS = ("Which number is larger: {a} or {b}?", "Which is bigger, {a} or {b}?",
                    "Of the two numbers {a} and {b}, which one is greater?")


def number_with_digits(rng: random.Random, digits: int) -> int:
    """A random whole number with exactly `digits` digits (1-digit numbers are 1-9, never 0)."""
    return rng.randint(1 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def _two_operands(rng: random.Random, digit_choices_a, digit_choices_b) -> tuple[int, int]:
    return (number_with_digits(rng, rng.choice(digit_choices_a)),
            number_with_digits(rng, rng.choice(digit_choices_b)))


def _binary_question(rng, a: int, b: int, operator: str, result: int, wordings, key: str) -> Question:
    return Question(text=rng.choice(wordings).format(a=a, b=b), answer=str(result), key=key,
                    meta={"operands": [a, b], "operator": operator})


def draw_addition(rng: random.Random, level: int) -> Question:
    digits = ADDITION_DIGITS[level]
    a, b = _two_operands(rng, digits, digits)
    return _binary_question(rng, a, b, "+", a + b, ADDITION_WORDINGS, f"{min(a, b)}+{max(a, b)}")


def draw_subtraction(rng: random.Random, level: int) -> Question:
    digits = SUBTRACTION_DIGITS[level]
    a, b = _two_operands(rng, digits, digits)
    if level < 3 and a < b:          # negative results only at the hardest level
        a, b = b, a
    return _binary_question(rng, a, b, "-", a - b, SUBTRACTION_WORDINGS, f"{a}-{b}")


def draw_multiplication(rng: random.Random, level: int) -> Question:
    digits_a, digits_b = MULTIPLICATION_DIGITS[level]
    a, b = _two_operands(rng, digits_a, digits_b)
    if level == 1:
        a = max(a, 2)                # "1 x 57" teaches nothing
    if rng.random() < 0.5:           # the shorter number first or second
        a, b = b, a
    return _binary_question(rng, a, b, "*", a * b, MULTIPLICATION_WORDINGS, f"{min(a, b)}*{max(a, b)}")


def _two_different_numbers(rng: random.Random, level: int) -> tuple[str, str]:
    """Two numbers written as strings (as they appear in the prompt), never equal in value."""
    while True:
        if level == 1:
            a, b = str(rng.randint(1, 99)), str(rng.randint(1, 99))
        elif level == 2:
            a = f"{rng.randint(1, 99)}.{rng.randint(1, 9)}"
            b = f"{rng.randint(1, 99)}.{rng.randint(1, 9)}"
        else:
            # The trap: the same whole part, one decimal digit against two (9.9 vs 9.11). The
            # two-digit fraction is never a multiple of 10, so the values always differ.
            whole = rng.randint(0, 20)
            one_decimal = f"{whole}.{rng.randint(1, 9)}"
            two_decimals = f"{whole}.{rng.choice([d for d in range(1, 100) if d % 10]):02d}"
            a, b = (one_decimal, two_decimals) if rng.random() < 0.5 else (two_decimals, one_decimal)
            if rng.random() < 0.25:
                a, b = f"-{a}", f"-{b}"
        if Fraction(a) != Fraction(b):
            return a, b


def draw_compare(rng: random.Random, level: int) -> Question:
    a, b = _two_different_numbers(rng, level)
    larger = max(a, b, key=Fraction)
    return Question(text=rng.choice(COMPARE_WORDINGS).format(a=a, b=b), answer=larger,
                    key="|".join(sorted((a, b))), meta={"numbers": [a, b]})


ADDITION = TaskFamily("addition", "number", "add two whole numbers", draw_addition)
SUBTRACTION = TaskFamily("subtraction", "number", "subtract two whole numbers", draw_subtraction)
MULTIPLICATION = TaskFamily("multiplication", "number", "multiply two whole numbers",
                            draw_multiplication)
COMPARE = TaskFamily("compare", "number", "say which of two numbers is larger (9.11 or 9.9?)",
                     draw_compare)
