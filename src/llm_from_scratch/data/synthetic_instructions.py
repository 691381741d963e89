"""The project's own instruction set: short questions with one exact, short answer.

The book fine-tunes on 1,100 hand-written instructions whose answers are free text, and judges
the answers with another LLM. That data cannot be had offline, and free-text answers cannot be
checked by a program. So this module writes an Alpaca-format set of its own, from templates,
where every answer is one to three words and *the* right answer:

    {"instruction": "What is 7 plus 5?", "input": "", "output": "12", "task": "add"}
    {"instruction": "Convert the following word to uppercase.", "input": "apple", "output": "APPLE", ...}

Then "accuracy" simply means: how often does the fine-tuned model's response equal the
reference (:func:`exact_match`)? That makes progress measurable in seconds, with no judge model.

Twenty task families (arithmetic, unit conversion, word transformations, small fact tables we
wrote ourselves, counting and comparing), each with several phrasings, some of them using the
``input`` field. The generator is deterministic for a seed, never repeats an (instruction,
input) pair, and shuffles the result, so the book's unshuffled 85/5/10 split still gets every
family in every part. The extra ``task`` key (the family's name) allows per-task accuracy;
loaders keep it, prompt formats ignore it.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------
# Small tables, written for this project
# --------------------------------------------------------------------------------------

# Nouns whose plural follows the regular rules in `regular_plural` (no -o, -f/-fe, no irregulars).
NOUNS = [
    "apple", "table", "chair", "house", "car", "book", "dog", "cat", "tree", "river", "window", "garden",
    "lamp", "pencil", "bird", "flower", "cup", "bottle", "door", "ship", "train", "plane", "road", "hill",
    "lake", "star", "cloud", "shirt", "shoe", "hat", "bag", "boat", "desk", "clock", "horse", "duck",
    "frog", "egg", "cake", "bell", "coin", "ring", "box", "fox", "bus", "church", "brush", "dish", "city",
    "baby", "party", "story", "toy", "key", "day", "glass", "class", "watch", "bench", "beach", "lunch",
    "candle", "bridge", "forest", "island", "planet", "rabbit", "tiger", "lemon", "orange", "banana",
]

# Extra words (not all nouns) for spelling tasks: reverse, uppercase, letters.
WORDS = NOUNS + [
    "happy", "green", "quick", "music", "paper", "water", "light", "smile", "winter", "summer", "purple",
    "yellow", "silver", "garden", "dream", "ocean", "pizza", "robot", "castle", "jungle",
]
WORDS = list(dict.fromkeys(WORDS))  # drop duplicates, keep order

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Russia": "Moscow", "Egypt": "Cairo",
    "Kenya": "Nairobi", "Canada": "Ottawa", "Australia": "Canberra", "Mexico": "Mexico City",
    "Argentina": "Buenos Aires", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana", "Ireland": "Dublin",
    "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Poland": "Warsaw", "Austria": "Vienna", "Hungary": "Budapest", "Turkey": "Ankara", "Thailand": "Bangkok",
    "Belgium": "Brussels", "South Korea": "Seoul", "Vietnam": "Hanoi", "Iran": "Tehran", "Nigeria": "Abuja",
    "Ghana": "Accra", "Morocco": "Rabat", "New Zealand": "Wellington",
}

# One-way table: each word has one unambiguous opposite.
OPPOSITES = {
    "hot": "cold", "cold": "hot", "fast": "slow", "slow": "fast", "happy": "sad", "sad": "happy",
    "early": "late", "late": "early", "empty": "full", "full": "empty", "wet": "dry", "dry": "wet",
    "open": "closed", "closed": "open", "heavy": "light", "thick": "thin", "rich": "poor", "poor": "rich",
    "clean": "dirty", "dirty": "clean", "strong": "weak", "weak": "strong", "loud": "quiet", "quiet": "loud",
    "true": "false", "false": "true", "first": "last", "last": "first", "young": "old", "new": "old",
    "long": "short", "tall": "short", "big": "small", "large": "small", "asleep": "awake", "awake": "asleep",
    "cheap": "expensive", "expensive": "cheap", "safe": "dangerous", "dangerous": "safe", "alive": "dead",
    "dead": "alive", "inside": "outside", "outside": "inside", "visible": "invisible", "possible": "impossible",
}

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]

# (singular, plural) of the unit converted from, plural of the unit converted to, factor, largest amount
UNITS = [
    (("kilometer", "kilometers"), "meters", 1000, 20),
    (("meter", "meters"), "centimeters", 100, 30),
    (("hour", "hours"), "minutes", 60, 24),
    (("minute", "minutes"), "seconds", 60, 30),
    (("day", "days"), "hours", 24, 14),
    (("kilogram", "kilograms"), "grams", 1000, 20),
    (("week", "weeks"), "days", 7, 20),
]


def regular_plural(noun: str) -> str:
    """English plural by the regular rules: -s, -es after s/x/z/ch/sh, consonant + y -> -ies."""
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and len(noun) > 1 and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


# --------------------------------------------------------------------------------------
# Task families: each lists every (instruction, input, output) it can make
# --------------------------------------------------------------------------------------

Example = tuple[str, str, str]
Phrasings = Sequence[tuple[str, str]]  # (instruction template, input template)


def _phrase(phrasings: Phrasings, output: str, **values: Any) -> Iterator[Example]:
    """Every phrasing of one question, filled in with ``values``."""
    for instruction, input_text in phrasings:
        yield instruction.format(**values), input_text.format(**values), output


def _add() -> Iterator[Example]:
    phrasings = [("What is {a} plus {b}?", ""), ("Add {a} and {b}.", ""), ("Calculate {a} + {b}.", ""),
                 ("What is the sum of {a} and {b}?", ""), ("Add the two numbers.", "{a} and {b}"),
                 ("Compute the sum of the following numbers.", "{a}, {b}")]
    for a in range(21):
        for b in range(21):
            yield from _phrase(phrasings, str(a + b), a=a, b=b)


def _subtract() -> Iterator[Example]:
    phrasings = [("What is {a} minus {b}?", ""), ("Subtract {b} from {a}.", ""), ("Calculate {a} - {b}.", ""),
                 ("Subtract the second number from the first.", "{a}, {b}")]
    for a in range(31):
        for b in range(a + 1):  # answers are never negative
            yield from _phrase(phrasings, str(a - b), a=a, b=b)


def _multiply() -> Iterator[Example]:
    phrasings = [("What is {a} times {b}?", ""), ("Multiply {a} by {b}.", ""), ("Calculate {a} * {b}.", ""),
                 ("What is the product of {a} and {b}?", ""), ("Multiply the two numbers.", "{a} and {b}")]
    for a in range(1, 13):
        for b in range(1, 13):
            yield from _phrase(phrasings, str(a * b), a=a, b=b)


def _convert() -> Iterator[Example]:
    phrasings = [("How many {to} are in {q}?", ""), ("Convert {q} to {to}.", ""),
                 ("How many {to} are there in {q}?", ""), ("Convert the following to {to}.", "{q}")]
    for (singular, plural), to_unit, factor, largest in UNITS:
        for amount in range(1, largest + 1):
            quantity = f"{amount} {singular if amount == 1 else plural}"
            yield from _phrase(phrasings, str(amount * factor), q=quantity, to=to_unit)


def _reverse() -> Iterator[Example]:
    phrasings = [("Reverse the word '{w}'.", ""), ("Spell '{w}' backwards.", ""),
                 ("Reverse the following word.", "{w}"), ("Write the following word backwards.", "{w}")]
    for word in WORDS:
        yield from _phrase(phrasings, word[::-1], w=word)


def _uppercase() -> Iterator[Example]:
    phrasings = [("Write '{w}' in uppercase.", ""), ("Convert '{w}' to capital letters.", ""),
                 ("Convert the following word to uppercase.", "{w}"),
                 ("Rewrite the following word in capital letters.", "{w}")]
    for word in WORDS:
        yield from _phrase(phrasings, word.upper(), w=word)


def _plural() -> Iterator[Example]:
    phrasings = [("What is the plural of '{w}'?", ""), ("Give the plural of '{w}'.", ""),
                 ("Write the plural form of the following noun.", "{w}")]
    for noun in NOUNS:
        yield from _phrase(phrasings, regular_plural(noun), w=noun)


def _first_letter() -> Iterator[Example]:
    phrasings = [("What is the first letter of '{w}'?", ""), ("What is the first letter of the following word?", "{w}")]
    for word in WORDS:
        yield from _phrase(phrasings, word[0], w=word)


def _last_letter() -> Iterator[Example]:
    phrasings = [("What is the last letter of '{w}'?", ""), ("What is the last letter of the following word?", "{w}")]
    for word in WORDS:
        yield from _phrase(phrasings, word[-1], w=word)


def _count_letters() -> Iterator[Example]:
    phrasings = [("How many letters are in the word '{w}'?", ""), ("Count the letters in the following word.", "{w}")]
    for word in WORDS:
        yield from _phrase(phrasings, str(len(word)), w=word)


def _capital() -> Iterator[Example]:
    phrasings = [("What is the capital of {c}?", ""), ("Name the capital city of {c}.", ""),
                 ("Which city is the capital of {c}?", ""), ("Name the capital of the following country.", "{c}")]
    for country, capital in CAPITALS.items():
        yield from _phrase(phrasings, capital, c=country)


def _country_of_capital() -> Iterator[Example]:
    phrasings = [("{city} is the capital of which country?", ""),
                 ("Name the country whose capital is the following city.", "{city}")]
    for country, capital in CAPITALS.items():
        yield from _phrase(phrasings, country, city=capital)


def _opposite() -> Iterator[Example]:
    phrasings = [("What is the opposite of '{w}'?", ""), ("Give the antonym of '{w}'.", ""),
                 ("Write the opposite of the following word.", "{w}")]
    for word, opposite in OPPOSITES.items():
        yield from _phrase(phrasings, opposite, w=word)


def _weekday() -> Iterator[Example]:
    for index, day in enumerate(WEEKDAYS):
        for kind in ("after", "before"):
            answer = WEEKDAYS[(index + (1 if kind == "after" else -1)) % 7]
            phrasings = [(f"What day comes {kind} {{d}}?", ""), (f"Which day of the week comes {kind} {{d}}?", ""),
                         (f"Name the day that comes {kind} the following day.", "{d}")]
            yield from _phrase(phrasings, answer, d=day)
        yield from _phrase([("What day is two days after {d}?", ""), ("Which day comes two days after {d}?", "")],
                           WEEKDAYS[(index + 2) % 7], d=day)


def _month() -> Iterator[Example]:
    for index, month in enumerate(MONTHS):
        for kind in ("after", "before"):
            answer = MONTHS[(index + (1 if kind == "after" else -1)) % 12]
            yield from _phrase([(f"What month comes {kind} {{m}}?", ""), (f"Which month comes {kind} {{m}}?", ""),
                                (f"Name the month that comes {kind} the following month.", "{m}")], answer, m=month)


def _next_number() -> Iterator[Example]:
    phrasings = [("What number comes after {n}?", ""), ("What is the next number after {n}?", ""),
                 ("Give the number that follows the given number.", "{n}")]
    for n in range(100):
        yield from _phrase(phrasings, str(n + 1), n=n)


def _previous_number() -> Iterator[Example]:
    phrasings = [("What number comes before {n}?", ""), ("What is the number just before {n}?", ""),
                 ("Give the number that comes right before the given number.", "{n}")]
    for n in range(1, 101):
        yield from _phrase(phrasings, str(n - 1), n=n)


def _letter() -> Iterator[Example]:
    letters = string.ascii_lowercase
    for kind, step in (("after", 1), ("before", -1)):
        phrasings = [(f"What letter comes {kind} '{{l}}' in the alphabet?", ""),
                     (f"Which letter comes {kind} the following letter in the alphabet?", "{l}")]
        for index in range(26):
            if 0 <= index + step < 26:
                yield from _phrase(phrasings, letters[index + step], l=letters[index])


def _compare() -> Iterator[Example]:
    numbers = range(0, 21)  # small numbers keep this family from dwarfing the others in capacity
    for kind, pick in (("larger", max), ("smaller", min)):
        phrasings = [(f"Which is {kind}, {{a}} or {{b}}?", ""), (f"Which number is {kind}: {{a}} or {{b}}?", ""),
                     (f"Give the {kind} of the two numbers.", "{a}, {b}")]
        for a in numbers:
            for b in numbers:
                if a != b:
                    yield from _phrase(phrasings, str(pick(a, b)), a=a, b=b)


def _parity() -> Iterator[Example]:
    phrasings = [("Is {n} even or odd?", ""), ("Say whether the following number is even or odd.", "{n}")]
    for n in range(101):
        yield from _phrase(phrasings, "even" if n % 2 == 0 else "odd", n=n)


#: The task families, in the order the generator takes turns between them.
TASKS: dict[str, Callable[[], Iterator[Example]]] = {
    "add": _add, "subtract": _subtract, "multiply": _multiply, "convert_units": _convert,
    "reverse_word": _reverse, "uppercase": _uppercase, "plural": _plural, "first_letter": _first_letter,
    "last_letter": _last_letter, "count_letters": _count_letters, "capital": _capital,
    "country_of_capital": _country_of_capital, "opposite": _opposite, "weekday": _weekday, "month": _month,
    "next_number": _next_number, "previous_number": _previous_number, "next_letter": _letter,
    "compare": _compare, "even_odd": _parity,
}


def task_capacity(tasks: Iterable[str] | None = None) -> dict[str, int]:
    """How many distinct entries each family can make (the most ``make_instruction_set`` can draw)."""
    return {name: len(_pool(name)) for name in (TASKS if tasks is None else tasks)}


def _pool(name: str) -> list[Example]:
    return list(dict.fromkeys(TASKS[name]()))  # every question of the family once, in a fixed order


def make_instruction_set(n: int = 1100, seed: int = 123, tasks: Iterable[str] | None = None) -> list[dict[str, str]]:
    """``n`` distinct instruction entries with exact short answers, the same for the same seed.

    Each family lists all the questions it can ask; each list is shuffled, and the families take
    turns handing out their next question, so each gets about ``n / len(tasks)`` entries (a family
    that runs out drops out and the others fill in). The result is shuffled once more. ``tasks``
    restricts the families (names in :data:`TASKS`). Raises ValueError when ``n`` exceeds what the
    families can make without repeating an (instruction, input) pair (:func:`task_capacity`;
    11,365 for all twenty families).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    names = list(TASKS) if tasks is None else list(dict.fromkeys(tasks))
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or names}; known tasks: {', '.join(TASKS)}")
    rng = random.Random(seed)
    pools = {}
    for name in names:
        pool = _pool(name)
        rng.shuffle(pool)
        pools[name] = pool
    seen: set[tuple[str, str]] = set()
    entries: list[dict[str, str]] = []
    next_index = dict.fromkeys(names, 0)
    while len(entries) < n:
        progressed = False
        for name in names:
            pool, index = pools[name], next_index[name]
            while index < len(pool) and pool[index][:2] in seen:  # asked already by another family
                index += 1
            if index == len(pool):
                next_index[name] = index
                continue
            instruction, input_text, output = pool[index]
            seen.add((instruction, input_text))
            entries.append({"instruction": instruction, "input": input_text, "output": output, "task": name})
            next_index[name] = index + 1
            progressed = True
            if len(entries) == n:
                break
        if not progressed:
            raise ValueError(f"the task families {names} can make only {len(entries)} distinct entries; "
                             f"ask for at most that many (n={n})")
    rng.shuffle(entries)
    return entries


def write_instruction_set(path: str | Path, n: int = 1100, seed: int = 123) -> Path:
    """Write :func:`make_instruction_set` to ``path``: a JSON list, or JSON Lines if it ends in ``.jsonl``."""
    from llm_from_scratch.io.atomic import write_atomically

    path = Path(path).expanduser()
    entries = make_instruction_set(n=n, seed=seed)
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        text = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
    else:
        text = json.dumps(entries, ensure_ascii=False, indent=1) + "\n"
    write_atomically(path, text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------

_TRAILING_PUNCTUATION = ".!?,;:"
_QUOTES = "\"'`“”‘’"


def normalize_answer(text: str, ignore_case: bool = True) -> str:
    """The form answers are compared in.

    Unicode NFKC; whitespace runs collapsed to one space and trimmed; surrounding quotes and
    trailing ``. ! ? , ; :`` removed (repeatedly, so ``"'Paris'."`` -> ``paris``); lower case
    (``casefold``) unless ``ignore_case=False``. Nothing else: "The answer is 12" stays
    different from "12", on purpose.
    """
    text = " ".join(unicodedata.normalize("NFKC", str(text)).split())
    previous = None
    while text != previous:
        previous = text
        text = text.strip().strip(_QUOTES).rstrip(_TRAILING_PUNCTUATION)
    return text.casefold() if ignore_case else text


def exact_match(response: str, reference: str, ignore_case: bool | None = None) -> bool:
    """True when ``response`` equals ``reference`` after :func:`normalize_answer`.

    Case is ignored by default, with one exception when ``ignore_case`` is None: a reference
    written entirely in capitals (``"APPLE"``, more than one letter) is compared case-sensitively,
    because writing it in capitals *is* the answer (the uppercase task). Cut a generated response
    at its end-of-text token before scoring; text after the answer makes it a miss.
    """
    if ignore_case is None:
        letters = [c for c in str(reference) if c.isalpha()]
        ignore_case = not (len(letters) > 1 and all(c.isupper() for c in letters))
    return normalize_answer(response, ignore_case) == normalize_answer(reference, ignore_case)


def exact_match_accuracy(responses: Sequence[str], references: Sequence[str | Mapping[str, Any]]) -> float:
    """Fraction of ``responses`` that exactly match their reference (a string or an entry's ``output``)."""
    if len(responses) != len(references):
        raise ValueError(f"{len(responses)} responses but {len(references)} references")
    if not responses:
        raise ValueError("no responses to score")
    hits = sum(exact_match(response, ref["output"] if isinstance(ref, Mapping) else ref)
               for response, ref in zip(responses, references))
    return hits / len(responses)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m llm_from_scratch.data.synthetic_instructions out.json --n 1100 --seed 123``"""
    parser = argparse.ArgumentParser(description="Write the project's synthetic instruction set (Alpaca JSON).")
    parser.add_argument("path", help="output file: .json (a list) or .jsonl (one entry per line)")
    parser.add_argument("--n", type=int, default=1100, help="number of entries (default 1100, like the book)")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args(argv)
    path = write_instruction_set(args.path, n=args.n, seed=args.seed)
    print(f"wrote {args.n} entries to {path}")


if __name__ == "__main__":
    main()


__all__ = ["TASKS", "task_capacity", "make_instruction_set", "write_instruction_set", "normalize_answer", "exact_match",
           "exact_match_accuracy", "regular_plural"]
