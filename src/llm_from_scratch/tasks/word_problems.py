"""Word problems in the style of GSM8K, made from templates, with whole-number answers.

GSM8K ("Grade School Math") is the usual benchmark for multi-step reasoning: short stories about
people buying, sharing and selling things, whose answer is one number. Real GSM8K files can be
loaded with `files.load_gsm8k`; this module makes an endless supply of similar, simpler problems
for training and for measuring progress, with a known number of steps:

    level 1 (one operation):    "Each box holds 8 shells. How many shells are in 5 boxes?"
    level 2 (two operations):   "Mia buys 3 packs of 12 pencils and gives 7 pencils to Leo. ..."
    level 3 (three operations): "... then puts the rest into 4 bags with the same number in each."

Every template chooses its numbers so that the answer is a whole number that is never negative:
divisions are built backwards (pick the quotient and the divisor, multiply to get the total),
and what is given away is never more than what there is.

Each template records in ``meta`` the numbers it used and the arithmetic it did
(``"expression": "3 * 12 - 7"``), so a test can recompute every answer. The split key is the
template and its numbers; the names and objects are decoration and do not make a new question.
"""

from __future__ import annotations

import random
from typing import Callable

from .core import Question, TaskFamily

NAMES = ("Mia", "Leo", "Ava", "Omar", "Sara", "Ben", "Lina", "Raj", "Zoe", "Tom", "Emma", "Noah",
         "Yuki", "Ana", "Kofi", "Nina", "Sam", "Ines", "Max", "Priya")
ITEMS = ("pencils", "apples", "stickers", "marbles", "cookies", "stamps", "shells", "balloons",
         "cards", "crayons", "beads", "oranges", "buttons", "candies")
THINGS_TO_BUY = ("bike", "jacket", "board game", "lamp", "backpack", "pair of shoes")
BILLS = (10, 20, 50, 100)


def _two_names(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(NAMES, 2)
    return first, second


def _question(template: str, text: str, numbers: dict[str, int], expression: str,
              answer: int) -> Question:
    key = template + "|" + ",".join(f"{name}={value}" for name, value in numbers.items())
    return Question(text=text, answer=str(answer), key=key,
                    meta={"template": template, "numbers": numbers, "expression": expression})


# --------------------------------------------------------------------------------------
# Level 1: one operation
# --------------------------------------------------------------------------------------

def buys_more(rng: random.Random) -> Question:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(3, 60), rng.randint(2, 40)
    text = (f"{name} has {a} {items}. {name} buys {b} more {items}. "
            f"How many {items} does {name} have now?")
    return _question("buys_more", text, {"a": a, "b": b}, f"{a} + {b}", a + b)


def gives_away(rng: random.Random) -> Question:
    (name, friend), items = _two_names(rng), rng.choice(ITEMS)
    a = rng.randint(10, 90)
    b = rng.randint(1, a - 1)
    text = (f"{name} has {a} {items} and gives {b} of them to {friend}. "
            f"How many {items} does {name} have left?")
    return _question("gives_away", text, {"a": a, "b": b}, f"{a} - {b}", a - b)


def boxes(rng: random.Random) -> Question:
    items = rng.choice(ITEMS)
    per_box, box_count = rng.randint(2, 25), rng.randint(2, 12)
    text = f"Each box holds {per_box} {items}. How many {items} are in {box_count} boxes?"
    return _question("boxes", text, {"per_box": per_box, "boxes": box_count},
                     f"{per_box} * {box_count}", per_box * box_count)


def shares_equally(rng: random.Random) -> Question:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    friends, each = rng.randint(2, 9), rng.randint(2, 15)
    total = friends * each                      # built backwards: always divides evenly
    text = (f"{name} shares {total} {items} equally among {friends} friends. "
            f"How many {items} does each friend get?")
    return _question("shares_equally", text, {"total": total, "friends": friends},
                     f"{total} / {friends}", each)


# --------------------------------------------------------------------------------------
# Level 2: two operations
# --------------------------------------------------------------------------------------

def packs_minus_gift(rng: random.Random) -> Question:
    (name, friend), items = _two_names(rng), rng.choice(ITEMS)
    packs, per_pack = rng.randint(2, 9), rng.randint(3, 15)
    gift = rng.randint(1, packs * per_pack - 1)
    text = (f"{name} buys {packs} packs of {per_pack} {items} and gives {gift} {items} to {friend}. "
            f"How many {items} does {name} have now?")
    return _question("packs_minus_gift", text, {"packs": packs, "per_pack": per_pack, "gift": gift},
                     f"{packs} * {per_pack} - {gift}", packs * per_pack - gift)


def more_than_friend(rng: random.Random) -> Question:
    (name, friend), items = _two_names(rng), rng.choice(ITEMS)
    a, more = rng.randint(3, 50), rng.randint(2, 30)
    text = (f"{name} has {a} {items}. {friend} has {more} more {items} than {name}. "
            f"How many {items} do they have together?")
    return _question("more_than_friend", text, {"a": a, "more": more},
                     f"{a} + ({a} + {more})", a + (a + more))


def change_from_bill(rng: random.Random) -> Question:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    price, count = rng.randint(1, 9), rng.randint(2, 9)
    bill = rng.choice([b for b in BILLS if b > price * count])
    text = (f"A shop sells {items} for ${price} each. {name} buys {count} {items} and pays with "
            f"a ${bill} bill. How many dollars of change does {name} get?")
    return _question("change_from_bill", text, {"price": price, "count": count, "bill": bill},
                     f"{bill} - {price} * {count}", bill - price * count)


def reading_pages(rng: random.Random) -> Question:
    name = rng.choice(NAMES)
    per_day, days, extra = rng.randint(5, 40), rng.randint(2, 7), rng.randint(5, 50)
    text = (f"{name} reads {per_day} pages every day for {days} days, and then {extra} more "
            f"pages on the weekend. How many pages does {name} read in total?")
    return _question("reading_pages", text, {"per_day": per_day, "days": days, "extra": extra},
                     f"{per_day} * {days} + {extra}", per_day * days + extra)


# --------------------------------------------------------------------------------------
# Level 3: three operations
# --------------------------------------------------------------------------------------

def packs_gift_bags(rng: random.Random) -> Question:
    (name, friend), items = _two_names(rng), rng.choice(ITEMS)
    while True:
        bags, per_bag = rng.randint(2, 6), rng.randint(2, 12)
        packs, per_pack = rng.randint(2, 9), rng.randint(3, 15)
        rest = bags * per_bag                   # built backwards: the rest divides evenly
        if packs * per_pack > rest:
            break
    gift = packs * per_pack - rest
    text = (f"{name} buys {packs} packs of {per_pack} {items} and gives {gift} {items} to {friend}. "
            f"{name} then puts the rest into {bags} bags, with the same number of {items} in "
            f"each bag. How many {items} are in each bag?")
    numbers = {"packs": packs, "per_pack": per_pack, "gift": gift, "bags": bags}
    return _question("packs_gift_bags", text, numbers,
                     f"({packs} * {per_pack} - {gift}) / {bags}", per_bag)


def orchard(rng: random.Random) -> Question:
    rows, per_row, apples_per_tree = rng.randint(2, 9), rng.randint(2, 12), rng.randint(5, 30)
    total = rows * per_row * apples_per_tree
    sold = rng.randint(1, total - 1)
    text = (f"A farmer has {rows} rows of {per_row} apple trees. Each tree gives "
            f"{apples_per_tree} apples, and the farmer sells {sold} apples at the market. "
            f"How many apples does the farmer have left?")
    numbers = {"rows": rows, "per_row": per_row, "apples_per_tree": apples_per_tree, "sold": sold}
    return _question("orchard", text, numbers,
                     f"{rows} * {per_row} * {apples_per_tree} - {sold}", total - sold)


def wages(rng: random.Random) -> Question:
    name, thing = rng.choice(NAMES), rng.choice(THINGS_TO_BUY)
    per_hour, hours, days = rng.randint(8, 25), rng.randint(2, 8), rng.randint(2, 6)
    earned = per_hour * hours * days
    spent = rng.randint(1, earned - 1)
    text = (f"{name} earns ${per_hour} per hour and works {hours} hours a day for {days} days. "
            f"Then {name} spends ${spent} on a {thing}. "
            f"How many dollars of that pay does {name} have left?")
    numbers = {"per_hour": per_hour, "hours": hours, "days": days, "spent": spent}
    return _question("wages", text, numbers, f"{per_hour} * {hours} * {days} - {spent}",
                     earned - spent)


def class_supplies(rng: random.Random) -> Question:
    items = rng.choice(ITEMS)
    groups, group_size, each = rng.randint(3, 8), rng.randint(3, 6), rng.randint(2, 5)
    absent = rng.randint(1, groups * group_size - 1)
    text = (f"A class has {groups} groups of {group_size} students. {absent} students are absent "
            f"today, and every student who is there gets {each} {items}. "
            f"How many {items} does the teacher hand out?")
    numbers = {"groups": groups, "group_size": group_size, "absent": absent, "each": each}
    return _question("class_supplies", text, numbers,
                     f"({groups} * {group_size} - {absent}) * {each}",
                     (groups * group_size - absent) * each)


TEMPLATES_BY_LEVEL: dict[int, tuple[Callable[[random.Random], Question], ...]] = {
    1: (buys_more, gives_away, boxes, shares_equally),
    2: (packs_minus_gift, more_than_friend, change_from_bill, reading_pages),
    3: (packs_gift_bags, orchard, wages, class_supplies),
}


def draw_word_problem(rng: random.Random, level: int) -> Question:
    template = rng.choice(TEMPLATES_BY_LEVEL[level])
    question = template(rng)
    return question._replace(meta={**question.meta, "steps": level})


WORD_PROBLEMS = TaskFamily("word_problems", "number",
                           "GSM8K-like stories with 1-3 arithmetic steps", draw_word_problem)
