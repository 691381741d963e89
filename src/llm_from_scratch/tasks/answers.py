"""Reading a model's final answer out of its completion, and deciding whether it is right.

A verifiable task is only as good as its checker. A model that writes "The answer is 12." or
"**Answer:** 12" or "\\boxed{12}" has answered 12, and a checker that demands the bare string "12"
would punish it for style, not for being wrong. When the checker is a *reward* (GRPO, DPO), a
checker that is too strict teaches formatting instead of arithmetic, and one that is too loose
teaches the model to cheat. So the rules here are few, fixed and written down:

**Where is the answer?** In the model's *final* statement of it. A model that changes its mind
("\\boxed{7} ... wait, no. Answer: 8") or restates its answer has answered what it said last:

1. A *statement* is a ``\\boxed{...}`` (nested braces allowed: ``\\boxed{\\frac{1}{2}}``) or the
   text after an ``Answer:`` (any case, also ``Final answer:``, ``**Answer:**`` and GSM8K's
   ``#### 72``: a number alone after ``####``) up to the end of its line. The statement that
   comes last in the text wins, whichever form it takes: "\\boxed{7} ... Answer: 8" reads 8,
   "Answer: 8 ... \\boxed{7}" reads 7. Chatter on later lines ("Hope this helps!") is ignored.
   A statement that gives no answer does not count, and the one before it does: one with
   nothing in it ("Answer:", "Answer: ..."), the prompt's placeholder ("Answer: <answer>"), or
   no number where a number is asked.
2. Only when there is no statement: the last "the answer is ...". That phrase is conversation
   ("I hope the answer is correct"), so it never overrides a statement: "Answer: 7\\nThe answer
   is 8 if you count twice." reads 7.
3. Else a fallback per kind: ``number`` the last number in the text, ``text`` the last
   non-empty line, ``list`` the last line that looks like a list.

**Which number does a statement give?** The value it starts with, whatever follows as a
justification: "Answer: 7 = 10 - 3" and "Answer: 7 (since 3 + 4 = 7)" read 7. If it starts with
a calculation ("10 - 3", "7 x 2": an operator follows the first number), a term ("2x") or a name
instead, the result after its last "=": "Answer: 10 - 3 = 7" and "Answer: x = 5" read 7 and 5.
A relation states which number is larger: "Answer: 5 < 87" and "Answer: 87 > 5" read 87.
Without an "=", its first number. A minus sign may be spaced from its number ("Answer: - 7" is
-7), except after a number ("10 - 3" subtracts).

**When are two answers equal?** Both sides are *normalised* the same way, then compared:

* ``number``: by value. "12", "12.0", "12.", " 12 ", "$12", "**12**", "12 apples" are all 12;
  "1,234" is 1234; "-7" is negative; "1/2", "\\frac{1}{2}" and "0.5" are the same value.
  Counts in words are numbers too: "once", "twice", "thrice", "three times" (zero to twelve
  before "time(s)"), and an answer that is one number word alone ("Answer: four").
  (The canonical form is an integer, a finite decimal, or "p/q".)
* ``text``: case, surrounding whitespace, quotes, markdown and trailing punctuation do not count;
  inner whitespace is collapsed.
* ``list``: brackets dropped, items split at commas, semicolons or spaces (so "1,234" in a
  list is two items), then compared item by item: numbers by value, words ignoring case.
* ``math`` (MATH-500 answers such as "\\frac{14}{3}", "(3, \\frac{\\pi}{2})", "10\\%"): a *light*
  normalisation (spaces, ``\\left``/``\\right``, ``\\!``, percent signs, degree signs,
  ``\\text{...}`` wrappers, ``\\dfrac`` -> ``\\frac``), then exact string equality, or equal values
  when both sides are plain numbers or simple fractions. This is not a symbolic checker:
  "\\frac{2}{4}" equals "0.5", but "2\\sqrt{2}" does not equal "\\sqrt{8}".
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Iterator

KINDS = ("number", "text", "list", "math")
MAX_NUMBER_DIGITS = 100   # a longer run of digits is not an answer

# The one sentence every prompt ends with, so a model learns one way of stating its answer.
ANSWER_INSTRUCTION = "Give your final answer on the last line as 'Answer: <answer>'."
# MATH answers are LaTeX; \boxed{} is how every MATH solution states them.
MATH_ANSWER_INSTRUCTION = "Give your final answer on the last line as 'Answer: \\boxed{<answer>}'."


def with_answer_instruction(question: str, instruction: str = ANSWER_INSTRUCTION) -> str:
    """The prompt a user would type: the question, then how to give the answer."""
    question = question.strip()
    return f"{question}\n\n{instruction}" if "\n" in question else f"{question} {instruction}"


# --------------------------------------------------------------------------------------
# Finding the answer in a completion
# --------------------------------------------------------------------------------------

# "Answer:", "Final answer:", "**Answer**:", "answer =", and GSM8K's "#### 72" (only before a number
# alone on its line: "#### Step 2" is a markdown heading, not an answer).
_ANSWER_LINE = re.compile(r"\b(?:final\s+)?answer\b[\s*_]*[:=]|####(?=[ \t]*-?[ \t]*\$?[\d.,]+[ \t]*$)",
                          re.IGNORECASE | re.MULTILINE)
# The weaker, conversational form: "The answer is 12", "the final answer would be: 12".
_ANSWER_PHRASE = re.compile(r"\banswer\b[\s*_]*(?:is|was|would\s+be|should\s+be)\b[\s*_]*:?",
                            re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\b *")
_BARE_TOKEN = re.compile(r"[^\s$]+")
_MARKDOWN = re.compile(r"[*_`]+")
_QUOTES_AND_PUNCTUATION = " \t\r\n\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb.,!?;:"
# A template's placeholder, not an answer: "<answer>", "<your answer here>".
_PLACEHOLDER = re.compile(r"<\s*[A-Za-z][A-Za-z _-]*>")


def _closing_braces(text: str) -> dict[int, int]:
    """For every "{" in `text` that is closed, the index of its "}" (one pass, with a stack)."""
    closing: dict[int, int] = {}
    open_positions: list[int] = []
    for index, char in enumerate(text):
        if char == "{":
            open_positions.append(index)
        elif char == "}" and open_positions:
            closing[open_positions.pop()] = index
    return closing


def _has_content(text: str) -> bool:
    return bool(_MARKDOWN.sub("", text).strip())


def _segment_after(text: str, start: int, stop: int) -> str:
    """The text from a marker's end to the end of its line (or to `stop`, where the next marker
    begins); if that is empty ("Answer:\\n42"), the next non-empty line."""
    line_end = text.find("\n", start)
    line_end = len(text) if line_end == -1 else line_end
    rest = text[start:min(line_end, stop)]
    if _has_content(rest) or stop < line_end:
        return rest
    position = line_end + 1
    while position < len(text):
        next_end = text.find("\n", position)
        next_end = len(text) if next_end == -1 else next_end
        if _has_content(text[position:next_end]):
            return text[position:next_end]
        position = next_end + 1
    return ""


def _boxed_answers(text: str) -> list[tuple[int, str]]:
    """(where it starts, its content) for every ``\\boxed{...}`` in `text` (braces matched)."""
    found: list[tuple[int, str]] = []
    closing: dict[int, int] | None = None
    for match in _BOXED.finditer(text):
        position = match.end()
        if text.startswith("{", position):
            closing = _closing_braces(text) if closing is None else closing
            if position in closing:                             # never closed: no answer
                found.append((match.start(), text[position + 1:closing[position]]))
            continue
        bare = _BARE_TOKEN.match(text, position)                # "\boxed 5": up to the next space
        if bare:
            found.append((match.start(), bare.group(0)))
    return found


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in `text` (braces matched), or None."""
    boxed = _boxed_answers(text)
    return boxed[-1][1] if boxed else None


def _stated_answers(text: str) -> Iterator[str]:
    """Candidate answer segments, best first: every statement (a \\boxed{} or the text after an
    "Answer:") from the last to the first, then every "the answer is" from the last to the first."""
    statements = _boxed_answers(text)
    markers = list(_ANSWER_LINE.finditer(text))
    stops = [match.start() for match in markers[1:]] + [len(text)]
    statements += [(match.start(), _segment_after(text, match.end(), stop)) for match, stop in zip(markers, stops)]
    for _, segment in sorted(statements, key=lambda statement: statement[0], reverse=True):
        yield segment
    phrases = list(_ANSWER_PHRASE.finditer(text))
    stops = [match.start() for match in phrases[1:]] + [len(text)]
    for match, stop in zip(reversed(phrases), reversed(stops)):
        yield _segment_after(text, match.end(), stop)


def _is_unfilled(answer: str) -> bool:
    """True for an answer slot left empty: nothing but markdown, quotes or punctuation ("Answer:",
    "Answer: ..."), or the prompt's own placeholder ("<answer>", "\\boxed{<answer>}")."""
    text = _MARKDOWN.sub("", answer).strip(_QUOTES_AND_PUNCTUATION + "$")
    boxed = last_boxed(text)
    if boxed is not None and text.startswith(("\\boxed", "\\fbox")):
        text = _MARKDOWN.sub("", boxed).strip(_QUOTES_AND_PUNCTUATION + "$")
    return not text or _PLACEHOLDER.fullmatch(text) is not None


def _looks_like_list(line: str) -> bool:
    items = (normalise_answer(line, "list") or "").split(", ")
    if len(items) < 2:
        return False
    return bool(re.search(r"[,;\[]", line)) or all(_plain_number(item) is not None for item in items)


def extract_answer(completion: str, kind: str) -> str | None:
    """The model's final answer, normalised for `kind`, or None when it gave none."""
    _check_kind(kind)
    if not completion:
        return None
    for segment in _stated_answers(completion):
        if not _is_unfilled(segment):
            answer = normalise_answer(segment, kind)
            if answer is not None:
                return answer
    # Fallbacks: the model did not say which part is its answer.
    if kind in ("number", "math"):
        numbers = _numbers_in(completion)
        return _format_number(numbers[-1]) if numbers else None
    # (a line with an "Answer:" was read above: if it gave nothing, it is no answer now either)
    lines = [line for line in completion.splitlines() if _has_content(line) and not _ANSWER_LINE.search(line)]
    if kind == "list":
        list_lines = [line for line in lines if _looks_like_list(line)]
        lines = list_lines or lines
    return normalise_answer(lines[-1], kind) if lines else None


def has_answer_format(completion: str) -> bool:
    """True if the last non-empty line states an answer as the prompt asked: "Answer: <something>"
    (or "#### <number>"), or a \\boxed{<something>}, where <something> is not empty and not
    the prompt's placeholder (echoing "Answer: <answer>" is not an answer). For a small "format
    reward"; it says nothing about whether the answer is right."""
    lines = [line for line in (completion or "").splitlines() if line.strip()]
    if not lines:
        return False
    last_line = lines[-1]
    boxed = last_boxed(last_line)
    if boxed is not None and not _is_unfilled(boxed):
        return True
    markers = list(_ANSWER_LINE.finditer(last_line))
    return bool(markers) and not _is_unfilled(last_line[markers[-1].end():])


# --------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------

_NUMBER_TOKEN = re.compile(
    # \frac{1}{2}, -\frac{3}{4}
    r"(?P<latex_sign>-\s*)?\\frac\{\s*(?P<latex_num>-?\d+)\s*\}\{\s*(?P<latex_den>-?\d+)\s*\}"
    # 1/2, -3/4 (not part of a date or a path)
    r"|(?<![\w.,/])(?P<slash_num>-?\d+)/(?P<slash_den>\d+)(?![\d./])"
    # 1234, -7, 3.5, 1,234,567.25; a minus right after a letter or digit is a dash ("3-4")
    r"|(?<![\w.])(?P<plain>-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
)


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve")
_COUNT_WORDS = re.compile(r"\b(?:(?P<adverb>once|twice|thrice)|(?P<word>" + "|".join(_NUMBER_WORDS)
                          + r")(?=\s+times?\b))\b", re.IGNORECASE)
_LONE_NUMBER_WORD = re.compile(r"[\s*_`'\"]*(?P<word>" + "|".join(_NUMBER_WORDS) + r")[\s*_`'\".!]*",
                               re.IGNORECASE)


def _count_word_as_digits(match: re.Match) -> str:
    """ "twice" -> "2", "three" (of "three times") -> "3"."""
    if match.group("adverb"):
        return str(("once", "twice", "thrice").index(match.group("adverb").lower()) + 1)
    return str(_NUMBER_WORDS.index(match.group("word").lower()))


# A minus, spaces, then a number: a sign, unless a number (or a bracket it closes) comes before it.
_SPACED_SIGN = re.compile(r"(^|[^\w\s.)\]}])([ \t]*)-[ \t]+(?=\d|\\frac)")
_TIMES = re.compile(r"(?<=[\d)])\s*\*\s*(?=[\d(])")   # a "*" between numbers, not markdown
# What makes a leading number the start of a calculation or a term rather than a value:
# a glued letter or bracket ("2x", "2\\sqrt{2}", "2(3)"), or an operator ("3 + 4", "7 x 2").
_CONTINUES = re.compile(r"[\w\\(^]|\s*(?:[-+*/^\u00d7\u00f7\u22c5]|\\(?:times|cdot|div)\b|x\s*\d)")


def _clean_for_numbers(text: str) -> str:
    lone = _LONE_NUMBER_WORD.fullmatch(text)
    if lone:                        # the whole answer is "four"
        return str(_NUMBER_WORDS.index(lone.group("word").lower()))
    text = _COUNT_WORDS.sub(_count_word_as_digits, text)   # "appears twice", "three times"
    text = text.replace("\u2212", "-").replace("\\$", "").replace("$", "").replace("{,}", ",")
    text = _SPACED_SIGN.sub(r"\1\2-", text)                  # "- 7" -> "-7", but "10 - 3" stays
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    return re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)   # \frac12 -> \frac{1}{2}


def _fraction(numerator: str, denominator: str = "1") -> Fraction | None:
    """numerator / denominator as an exact fraction; None for a zero denominator or a digit string
    too long to be an answer (Python refuses to parse integers of thousands of digits)."""
    numerator = numerator.replace(",", "")
    if len(numerator) + len(denominator) > MAX_NUMBER_DIGITS or int(denominator) == 0:
        return None
    return Fraction(numerator) / int(denominator)


def _token_value(match: re.Match) -> Fraction | None:
    """The value of one match of `_NUMBER_TOKEN`, exactly."""
    if match.group("plain") is not None:
        return _fraction(match.group("plain"))
    if match.group("latex_num") is not None:
        value = _fraction(match.group("latex_num"), match.group("latex_den"))
        return -value if value is not None and match.group("latex_sign") else value
    return _fraction(match.group("slash_num"), match.group("slash_den"))


def _values(cleaned: str) -> Iterator[Fraction]:
    """The numbers of a text already through `_clean_for_numbers`, in order."""
    for match in _NUMBER_TOKEN.finditer(cleaned):
        value = _token_value(match)
        if value is not None:
            yield value


def _numbers_in(text: str) -> list[Fraction]:
    """Every number in `text`, in order, as exact fractions (so 0.1 + 0.2 == 0.3 holds)."""
    return list(_values(_clean_for_numbers(text)))


def _leading_value(text: str) -> Fraction | None:
    """The number a cleaned `text` starts with, if it stands on its own ("7", "7 apples",
    "7 = 10 - 3"); None if `text` starts otherwise, or with a calculation or term ("3 + 4", "2x")."""
    text = text.lstrip()
    match = _NUMBER_TOKEN.match(text)
    if match is None or _CONTINUES.match(text, match.end()):
        return None
    return _token_value(match)


def _format_number(value: Fraction) -> str:
    """The canonical spelling of a value: "12", "-0.5", "9.11", or "1/3" when no decimal is exact."""
    if value.denominator == 1:
        return str(value.numerator)
    rest = value.denominator
    for factor in (2, 5):
        while rest % factor == 0:
            rest //= factor
    if rest == 1:   # a finite decimal: scale by 10 until whole, then put the point back
        places, scaled = 0, abs(value)
        while scaled.denominator != 1:
            scaled, places = scaled * 10, places + 1
        digits = str(scaled.numerator).rjust(places + 1, "0")
        return f"{'-' if value < 0 else ''}{digits[:-places]}.{digits[-places:]}"
    return f"{value.numerator}/{value.denominator}"


def _plain_number(text: str) -> Fraction | None:
    """`text` as a number if it is nothing but one ("12", "-3.5", "1,234"), else None."""
    if re.fullmatch(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+", text):
        return _fraction(text)
    return None


# "a < b", "a > b" (and <=, >=, their symbols and LaTeX): a relation between two numbers.
_RELATION = re.compile(r"(<=?|>=?|\u2264|\u2265|\\(?:lt|gt|le|ge|leq|geq)\b)")


def _larger_of_relation(text: str) -> Fraction | None:
    """The number a relation statement puts on top: "5 < 87" and "87 > 5" both say 87 is the
    larger, so both read 87 ("87 < 5" reads 5, a wrong claim stays wrong). None if `text` does
    not start with number, relation, number."""
    match = _NUMBER_TOKEN.match(text.lstrip())
    if match is None:
        return None
    rest = text.lstrip()[match.end():]
    relation = _RELATION.match(rest.lstrip())
    if relation is None:
        return None
    right = _NUMBER_TOKEN.match(rest.lstrip()[relation.end():].lstrip())
    if right is None:
        return None
    left_value, right_value = _token_value(match), _token_value(right)
    less = relation.group(1) in ("<", "<=", "\u2264") or relation.group(1)[1:3] in ("lt", "le")
    return right_value if less else left_value


def _normalise_number(text: str) -> str | None:
    """The number an answer states: the value it starts with ("7 = 10 - 3" -> 7); for a relation,
    the number it says is larger ("5 < 87" -> 87); else the result after its last "=" ("3 + 4 =
    7", "x = 5"); else its first number."""
    text = _TIMES.sub(" \u00d7 ", text)        # "2 * 3" multiplies: keep it from the markdown sweep
    text = _clean_for_numbers(_MARKDOWN.sub("", text))
    relation = _larger_of_relation(text)
    if relation is not None:
        return _format_number(relation)
    value = _leading_value(text)
    if value is None:
        value = next(_values(text.rsplit("=", 1)[-1]), None)
    return _format_number(value) if value is not None else None


# --------------------------------------------------------------------------------------
# Text and lists
# --------------------------------------------------------------------------------------

def _unwrap_latex_text(text: str) -> str:
    return re.sub(r"\\(?:text|textbf|textit|mathrm|mbox)\{([^{}]*)\}", r"\1", text)


def _normalise_text(text: str) -> str | None:
    text = _MARKDOWN.sub("", _unwrap_latex_text(text)).strip(_QUOTES_AND_PUNCTUATION)
    text = " ".join(text.split()).lower()
    return text or None


def _normalise_list(text: str) -> str | None:
    text = _MARKDOWN.sub("", _unwrap_latex_text(text))
    text = re.sub(r"[\[\](){}]", " ", text)
    items = []
    for raw_item in re.split(r"[,;\s]+", text):
        item = raw_item.strip(_QUOTES_AND_PUNCTUATION)
        if not item:
            continue
        value = _plain_number(item.replace("\u2212", "-"))
        items.append(_format_number(value) if value is not None else item.lower())
    return ", ".join(items) or None


# --------------------------------------------------------------------------------------
# MATH-style LaTeX answers (light, not symbolic)
# --------------------------------------------------------------------------------------

def _normalise_math(text: str) -> str | None:
    text = text.strip().strip("*").strip()                       # markdown bold around it
    boxed = last_boxed(text)
    if boxed is not None and text.startswith(("\\boxed", "\\fbox")):
        text = boxed
    text = text.replace("\u2212", "-").replace("\\$", "").replace("$", "")
    text = re.sub(r"\\[()\[\]]", "", text)                       # \( \) \[ \] math delimiters
    text = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", text)     # not \rightarrow
    text = re.sub(r"\\[!,;: ]", "", text)                        # thin spaces
    text = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\u00b0", "", text)   # degrees
    text = text.replace("\\%", "").replace("%", "")
    text = _unwrap_latex_text(text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\sqrt(\d)", r"\\sqrt{\1}", text)
    text = text.replace("{,}", ",")
    text = re.sub(r"\s+", "", text).rstrip(".")
    text = re.sub(r"^[a-zA-Z]=", "", text)                       # "x=5" -> "5"
    value = _plain_number(text)
    if value is not None:                                        # "1,234" and "12.0" -> one spelling
        text = _format_number(value)
    return text or None


def _math_value(text: str) -> Fraction | None:
    """The value of a normalised MATH answer that is a number or a simple fraction, else None."""
    value = _plain_number(text)
    if value is not None:
        return value
    match = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}|(-?\d+)/(\d+)", text)
    if not match:
        return None
    if match.group(4) is not None:
        return _fraction(match.group(4), match.group(5))
    value = _fraction(match.group(2), match.group(3))
    return -value if value is not None and match.group(1) else value


# --------------------------------------------------------------------------------------
# The public checker
# --------------------------------------------------------------------------------------

def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {', '.join(KINDS)}")


def normalise_answer(text: str | None, kind: str) -> str | None:
    """`text` in the canonical form for `kind` (see the module docstring), or None if it holds no
    answer of that kind (e.g. no number at all)."""
    _check_kind(kind)
    if text is None:
        return None
    if kind == "number":
        return _normalise_number(text)
    if kind == "text":
        return _normalise_text(text)
    if kind == "list":
        return _normalise_list(text)
    return _normalise_math(text)


def answers_match(predicted: str | None, reference: str | None, kind: str) -> bool:
    """Whether two *normalised* answers are the same; None (no answer) never matches."""
    if predicted is None or reference is None:
        return False
    if predicted == reference:
        return True
    if kind == "math":
        predicted_value, reference_value = _math_value(predicted), _math_value(reference)
        return predicted_value is not None and predicted_value == reference_value
    return False


def check_answer(instance: Any, completion: str) -> bool:  # instance: a core.TaskInstance
    """The verifier (reward 1 if True): does `completion` give `instance`'s reference answer?"""
    predicted = extract_answer(completion, instance.kind)
    return answers_match(predicted, normalise_answer(instance.answer, instance.kind), instance.kind)
