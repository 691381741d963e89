"""Reading a model's final answer out of its completion, and deciding whether it is right.

A verifiable task is only as good as its checker. A model that writes "The answer is 12." or
"**Answer:** 12" or "\\boxed{12}" has answered 12, and a checker that demands the bare string "12"
would punish it for style, not for being wrong. When the checker is a *reward* (GRPO, DPO), a
checker that is too strict teaches formatting instead of arithmetic, and one that is too loose
teaches the model to cheat. So the rules here are few, fixed and written down:

**Where is the answer?** (first rule that finds one wins)

1. the content of the last ``\\boxed{...}`` (nested braces allowed: ``\\boxed{\\frac{1}{2}}``);
2. else the text after the last ``Answer:`` (any case, also ``Final answer:``, ``**Answer:**``
   and GSM8K's ``#### 72``), up to the end of that line; only if there is none, the last
   "the answer is ...". Chatter on later lines ("Hope this helps!") is ignored. For numbers, the
   first number of that segment counts, or the first one after its last "=" ("Answer: 3 + 4 = 7");
3. else a fallback per kind: ``number`` the last number in the text, ``text`` the last
   non-empty line, ``list`` the last line that looks like a list.

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

# "Answer:", "Final answer:", "**Answer**:", "answer =", and GSM8K's "####".
_ANSWER_LINE = re.compile(r"\b(?:final\s+)?answer\b[\s*_]*[:=]|####", re.IGNORECASE)
# The weaker, conversational form: "The answer is 12", "the final answer would be: 12".
_ANSWER_PHRASE = re.compile(r"\banswer\b[\s*_]*(?:is|was|would\s+be|should\s+be)\b[\s*_]*:?",
                            re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\b *")
_BARE_TOKEN = re.compile(r"[^\s$]+")
_MARKDOWN = re.compile(r"[*_`]+")


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


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in `text` (braces matched), or None."""
    matches = list(_BOXED.finditer(text))
    closing = _closing_braces(text) if matches else {}
    for match in reversed(matches):
        position = match.end()
        if text.startswith("{", position):
            if position in closing:
                return text[position + 1:closing[position]]
            continue                                        # never closed: try the one before
        bare = _BARE_TOKEN.match(text, position)            # "\boxed 5": up to the next space
        if bare:
            return bare.group(0)
    return None


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


def _marked_segments(text: str) -> Iterator[str]:
    """Candidate answer segments, best first: after each "Answer:" from the last to the first,
    then after each "the answer is" from the last to the first."""
    for pattern in (_ANSWER_LINE, _ANSWER_PHRASE):
        matches = list(pattern.finditer(text))
        stops = [match.start() for match in matches[1:]] + [len(text)]
        for match, stop in zip(reversed(matches), reversed(stops)):
            yield _segment_after(text, match.end(), stop)


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
    boxed = last_boxed(completion)
    if boxed is not None:
        answer = normalise_answer(boxed, kind)
        if answer is not None:
            return answer
    for segment in _marked_segments(completion):
        answer = normalise_answer(segment, kind)
        if answer is not None:
            return answer
    # Fallbacks: the model did not say which part is its answer.
    if kind in ("number", "math"):
        numbers = _numbers_in(completion)
        return _format_number(numbers[-1]) if numbers else None
    lines = [line for line in completion.splitlines() if _has_content(line)]
    if kind == "list":
        list_lines = [line for line in lines if _looks_like_list(line)]
        lines = list_lines or lines
    return normalise_answer(lines[-1], kind) if lines else None


def has_answer_format(completion: str) -> bool:
    """True if the last non-empty line states the answer as the prompt asked: "Answer: <something>"
    (or "#### <something>"), or a non-empty \\boxed{...}. For a small "format reward"; it says
    nothing about whether the answer is right."""
    lines = [line for line in (completion or "").splitlines() if line.strip()]
    if not lines:
        return False
    last_line = lines[-1]
    boxed = last_boxed(last_line)
    if boxed is not None and boxed.strip():
        return True
    markers = list(_ANSWER_LINE.finditer(last_line))
    return bool(markers) and bool(_MARKDOWN.sub("", last_line[markers[-1].end():]).strip(" .\t"))


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


def _clean_for_numbers(text: str) -> str:
    lone = _LONE_NUMBER_WORD.fullmatch(text)
    if lone:                        # the whole answer is "four"
        return str(_NUMBER_WORDS.index(lone.group("word").lower()))
    text = _COUNT_WORDS.sub(_count_word_as_digits, text)   # "appears twice", "three times"
    text = text.replace("\u2212", "-").replace("\\$", "").replace("$", "").replace("{,}", ",")
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    return re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)   # \frac12 -> \frac{1}{2}


def _fraction(numerator: str, denominator: str = "1") -> Fraction | None:
    """numerator / denominator as an exact fraction; None for a zero denominator or a digit string
    too long to be an answer (Python refuses to parse integers of thousands of digits)."""
    numerator = numerator.replace(",", "")
    if len(numerator) + len(denominator) > MAX_NUMBER_DIGITS or int(denominator) == 0:
        return None
    return Fraction(numerator) / int(denominator)


def _numbers_in(text: str) -> list[Fraction]:
    """Every number in `text`, in order, as exact fractions (so 0.1 + 0.2 == 0.3 holds)."""
    numbers = []
    for match in _NUMBER_TOKEN.finditer(_clean_for_numbers(text)):
        if match.group("plain") is not None:
            value = _fraction(match.group("plain"))
        elif match.group("latex_num") is not None:
            value = _fraction(match.group("latex_num"), match.group("latex_den"))
            if value is not None and match.group("latex_sign"):
                value = -value
        else:
            value = _fraction(match.group("slash_num"), match.group("slash_den"))
        if value is not None:
            numbers.append(value)
    return numbers


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


def _normalise_number(text: str) -> str | None:
    text = _MARKDOWN.sub("", text)
    if "=" in text:                 # "x = 5", "3 + 4 = 7": what comes after the last "="
        text = text.rsplit("=", 1)[1]
    numbers = _numbers_in(text)
    return _format_number(numbers[0]) if numbers else None


# --------------------------------------------------------------------------------------
# Text and lists
# --------------------------------------------------------------------------------------

_QUOTES_AND_PUNCTUATION = " \t\r\n\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb.,!?;:"


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
