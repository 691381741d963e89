"""Verifiable tasks: generated answers are right, the checker accepts every fair way of stating them
and rejects wrong ones, generation is deterministic with disjoint train/test splits, and the
GSM8K / MATH-500 loaders read their formats and explain bad files."""

import ast
import json
import operator
import random
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from llm_from_scratch.tasks import (ANSWER_INSTRUCTION, FAMILIES, MATH_ANSWER_INSTRUCTION, TaskInstance,
                                    check_answer, extract_answer, has_answer_format, load_gsm8k,
                                    load_math500, make_instances, normalise_answer, parse_task_list,
                                    split_of, task_names)
from llm_from_scratch.tasks.word_problems import TEMPLATES_BY_LEVEL

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
ARITHMETIC = {"addition": operator.add, "subtraction": operator.sub, "multiplication": operator.mul}


def instances_of_every_level(family: str, per_level: int = 8) -> list[TaskInstance]:
    return [task for level in (1, 2, 3) for task in make_instances(family, per_level, difficulty=level)]


def evaluate(expression: str) -> Fraction:
    """+ - * / and parentheses over whole numbers, exactly (no eval)."""
    operators = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                 ast.Div: operator.truediv}

    def walk(node):
        if isinstance(node, ast.BinOp):
            return operators[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Constant) and isinstance(node.value, int)
        return Fraction(node.value)
    return walk(ast.parse(expression, mode="eval").body)


def recompute_answer(task: TaskInstance) -> str:
    """The answer worked out again from what the question shows, independently of the generator."""
    meta, question = task.meta, task.prompt.removesuffix(ANSWER_INSTRUCTION)
    if task.family in ARITHMETIC:
        a, b = meta["operands"]
        assert str(a) in question and str(b) in question
        return str(ARITHMETIC[task.family](a, b))
    if task.family == "word_problems":
        assert sum(meta["expression"].count(op) for op in "+-*/") == task.difficulty
        for value in meta["numbers"].values():
            assert str(value) in question
        value = evaluate(meta["expression"])
        assert value.denominator == 1 and value >= 0
        return str(value.numerator)
    if task.family == "reverse_words":
        assert " ".join(meta["words"]) in question
        return " ".join(reversed(meta["words"]))
    if task.family == "reverse_letters":
        assert f"'{meta['word']}'" in question
        return "".join(reversed(meta["word"]))
    if task.family == "count_letters":
        assert f"'{meta['word']}'" in question and meta["letter"] in question
        return str(sum(1 for letter in meta["word"] if letter == meta["letter"]))
    if task.family == "sort_numbers":
        assert ", ".join(map(str, meta["numbers"])) in question
        return ", ".join(map(str, sorted(meta["numbers"])))
    assert task.family == "compare"
    a, b = meta["numbers"]
    assert a in question and b in question
    return a if Decimal(a) > Decimal(b) else b


def wrong_answer(task: TaskInstance) -> str:
    """A plausible wrong answer: off by one, the word itself, the words or numbers not reordered."""
    if task.family == "compare":
        return min(task.meta["numbers"], key=Decimal)
    if task.family == "reverse_words":
        return " ".join(task.meta["words"])
    if task.family == "sort_numbers":
        return ", ".join(map(str, task.meta["numbers"]))
    if task.kind == "text":
        return task.answer[::-1] if task.answer[::-1] != task.answer else task.answer + "s"
    return str(int(task.answer) + 1)


def accepted_forms(answer: str) -> list[str]:
    return [f"Answer: {answer}", f"\\boxed{{{answer}}}", f"Answer: {answer}.",
            f"Let me work it out step by step.\nSo the answer is {answer}.",
            f"Some reasoning first.\n**Answer:** {answer}\nHope this helps!"]


# --------------------------------------------------------------------------------------
# Generated families: right answers, accepted forms, wrong answers
# --------------------------------------------------------------------------------------

def test_the_families_and_their_order():
    assert task_names() == ["addition", "subtraction", "multiplication", "word_problems", "reverse_words",
                            "reverse_letters", "count_letters", "sort_numbers", "compare"]
    assert list(FAMILIES) == task_names()


@pytest.mark.parametrize("family", task_names())
def test_reference_answers_are_correct(family):
    for task in instances_of_every_level(family):
        assert task.answer == recompute_answer(task), task.prompt
        assert task.prompt.endswith(ANSWER_INSTRUCTION)
        assert task.family == family and task.kind == FAMILIES[family].kind


@pytest.mark.parametrize("level", [1, 2, 3])
def test_every_word_problem_template_computes_its_stated_answer(level):
    for template in TEMPLATES_BY_LEVEL[level]:
        for seed in range(25):
            question = template(random.Random(seed))
            value = evaluate(question.meta["expression"])
            assert value.denominator == 1 and value >= 0
            assert question.answer == str(value.numerator), (template.__name__, question.text)


@pytest.mark.parametrize("family", task_names())
def test_the_reference_passes_in_every_accepted_form_and_a_wrong_answer_fails(family):
    for task in instances_of_every_level(family, per_level=4):
        for completion in accepted_forms(task.answer):
            assert check_answer(task, completion), (task.prompt, completion)
        wrong = wrong_answer(task)
        assert not check_answer(task, f"Answer: {wrong}"), (task.prompt, wrong)
        assert not check_answer(task, f"\\boxed{{{wrong}}}")
        # The final answer counts, not a right answer mentioned on the way.
        assert not check_answer(task, f"Maybe {task.answer}? No.\nAnswer: {wrong}")


def test_answers_in_other_fair_spellings():
    task = make_instances("reverse_words", 1, difficulty=2)[0]
    assert check_answer(task, "Answer: " + ", ".join(task.answer.upper().split()))
    task = make_instances("sort_numbers", 1, difficulty=1)[0]
    assert check_answer(task, f"Answer: [{task.answer}]")
    assert check_answer(task, "Answer: " + task.answer.replace(",", ""))
    task = make_instances("reverse_letters", 1)[0]
    assert check_answer(task, f"Answer: \"{task.answer.upper()}\"")


# --------------------------------------------------------------------------------------
# Determinism, distinctness, splits, difficulty
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", task_names())
def test_generation_is_deterministic_distinct_and_prefix_stable(family):
    tasks = make_instances(family, 60, split="train", seed=3)
    assert tasks == make_instances(family, 60, split="train", seed=3)
    assert tasks[:20] == make_instances(family, 20, split="train", seed=3)
    assert [t.prompt for t in tasks] != [t.prompt for t in make_instances(family, 60, split="train", seed=4)]
    assert len({t.prompt for t in tasks}) == 60 and len({t.id for t in tasks}) == 60
    assert len({t.meta["key"] for t in tasks}) == 60
    assert [t.difficulty for t in tasks[:6]] == [1, 2, 3, 1, 2, 3]
    assert {t.difficulty for t in make_instances(family, 9, difficulty=2)} == {2}


@pytest.mark.parametrize("family", task_names())
def test_train_and_test_never_share_a_question(family):
    train = make_instances(family, 500, split="train", seed=0)
    test = make_instances(family, 200, split="test", seed=0)
    other_seed_train = make_instances(family, 300, split="train", seed=1)
    test_prompts = {t.prompt for t in test}
    assert not test_prompts & {t.prompt for t in train + other_seed_train}
    # Stronger: not even the same question reworded (the split key ignores the wording).
    assert not {t.meta["key"] for t in test} & {t.meta["key"] for t in train + other_seed_train}
    assert all(split_of(t.meta["key"]) == "test" and t.id.startswith(f"{family}/test/") for t in test)
    assert all(split_of(t.meta["key"]) == "train" for t in train)


def test_a_split_that_runs_out_of_questions_says_so():
    with pytest.raises(ValueError, match="ask for fewer"):
        make_instances("multiplication", 400, split="test", difficulty=1)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="addition"):
        make_instances("additon", 3)
    with pytest.raises(ValueError, match="split"):
        make_instances("addition", 3, split="validation")
    with pytest.raises(ValueError, match="difficulty"):
        make_instances("addition", 3, difficulty=4)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_harder_levels_are_bigger():
    by_level = {f: [make_instances(f, 30, split="train", difficulty=d) for d in (1, 2, 3)] for f in task_names()}
    for family in ARITHMETIC:
        easy, _, hard = by_level[family]
        assert max(max(t.meta["operands"]) for t in easy) < 100
        assert min(max(t.meta["operands"]) for t in hard) >= 100
        lengths = [mean(len(t.answer.lstrip("-")) for t in level) for level in by_level[family]]
        assert lengths[0] < lengths[1] < lengths[2]
    subtraction = by_level["subtraction"]
    assert all(int(t.answer) >= 0 for t in subtraction[0] + subtraction[1])
    assert any(int(t.answer) < 0 for t in subtraction[2])
    for level, tasks in enumerate(by_level["reverse_words"], start=1):
        assert {len(t.meta["words"]) for t in tasks} <= {1: {2}, 2: {3}, 3: {4, 5}}[level]
    for family in ("reverse_letters", "count_letters"):
        lengths = [mean(len(t.meta["word"]) for t in level) for level in by_level[family]]
        assert lengths[0] < lengths[1] < lengths[2]
    counts = [[len(t.meta["numbers"]) for t in level] for level in by_level["sort_numbers"]]
    assert max(counts[0]) <= 4 and min(counts[2]) >= 6
    assert all("." not in t.answer for t in by_level["compare"][0])
    for task in by_level["compare"][2]:    # the 9.9 vs 9.11 trap: same whole part, 1 vs 2 decimals
        a, b = task.meta["numbers"]
        assert a.split(".")[0] == b.split(".")[0]
        assert sorted([len(a.split(".")[1]), len(b.split(".")[1])]) == [1, 2]
    steps = [{t.meta["steps"] for t in level} for level in by_level["word_problems"]]
    assert steps == [{1}, {2}, {3}]


def test_task_lists():
    assert parse_task_list("all") == task_names()
    assert parse_task_list("addition, reverse_words") == ["addition", "reverse_words"]
    assert parse_task_list("arithmetic,addition,compare") == ["addition", "subtraction", "multiplication",
                                                               "compare"]
    with pytest.raises(ValueError) as error:
        parse_task_list("addition,riddles")
    assert "riddles" in str(error.value) and "reverse_letters" in str(error.value)
    with pytest.raises(ValueError):
        parse_task_list(" , ")


# --------------------------------------------------------------------------------------
# Extraction and normalisation
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("completion, kind, expected", [
    ("The answer is 12.", "number", "12"),
    ("**Answer:** 12", "number", "12"),
    ("12.0", "number", "12"),
    ("Answer: $1,234", "number", "1234"),
    ("First 3 apples, then 5 more, so 8 in all", "number", "8"),
    ("\\boxed{\\frac{1}{2}}", "number", "0.5"),
    ("Answer: 1/2", "number", "0.5"),
    ("I don't know.", "number", None),
    ("", "number", None),
    ("Answer: -7", "number", "-7"),
    ("It drops 11 degrees: 4-11 is -7", "number", "-7"),
    ("I think 3 + 4 = 7. Answer: 7", "number", "7"),
    ("Answer: 42\nHope this helps!", "number", "42"),
    ("Answer: 3 + 4 = 7", "number", "7"),
    ("Answer:\n42", "number", "42"),
    ("#### 1,250", "number", "1250"),
    ("\\boxed{5} is what I first thought, but \\boxed{6}", "number", "6"),
    ("Answer: 7\nThe answer is 8 if you count twice.", "number", "7"),
    # counts in words: what count_letters answers look like
    ("The letter 'o' appears twice in the word 'snomo'.", "number", "2"),
    ("It occurs three times.", "number", "3"),
    ("The letter 'l' appears only once in 'arrtulu'.", "number", "1"),
    ("Answer: four", "number", "4"),
    ("The answer is Zero.", "number", "0"),
    ("Someone has one idea, not a number.", "number", None),
    ("Three-nines and ten-oh-oh-seven.", "number", None),
    ("Answer: 'TAC'", "text", "tac"),
    ("The answer is \"Tac\".", "text", "tac"),
    ("Answer:   Sun   Dog ", "text", "sun dog"),
    ("Answer: tac\nI hope the answer is correct.", "text", "tac"),
    ("[1, 4, 9]", "list", "1, 4, 9"),
    ("Sorted:\n1 4 9", "list", "1, 4, 9"),
    ("Answer: 1; 4; 9.", "list", "1, 4, 9"),
    ("Answer: Sun, DOG, cat", "list", "sun, dog, cat"),
])
def test_extract_answer(completion, kind, expected):
    assert extract_answer(completion, kind) == expected


@pytest.mark.parametrize("text", ["12", "12.0", " 12 ", "12.", "$12", "12 apples", "**12**", "12.00"])
def test_number_spellings_normalise_to_one_value(text):
    assert normalise_answer(text, "number") == "12"


def test_other_normalisations():
    assert normalise_answer("1,234", "number") == normalise_answer("1234", "number") == "1234"
    assert normalise_answer("-3", "number") == "-3"
    assert normalise_answer("9.90", "number") == "9.9" != normalise_answer("9.11", "number")
    assert normalise_answer(" 'Hello   World!' ", "text") == "hello world"
    assert normalise_answer("[3, 7, 9]", "list") == normalise_answer("3 7 9", "list") == "3, 7, 9"
    assert normalise_answer("no digits", "number") is None
    with pytest.raises(ValueError, match="kind"):
        normalise_answer("12", "colour")


def checked(answer: str, kind: str, completion: str) -> bool:
    return check_answer(TaskInstance("demo", "?", answer, kind, 1, "demo/1"), completion)


def test_check_answer_compares_by_value_and_rejects_no_answer():
    assert checked("0.5", "number", "So \\boxed{\\frac{1}{2}}")
    assert checked("1234", "number", "Answer: $1,234")
    assert checked("-7", "number", "Answer: -7") and not checked("-7", "number", "Answer: 7")
    assert not checked("12", "number", "I cannot solve this.")
    assert checked("tac", "text", "Answer: **TAC**") and not checked("tac", "text", "Answer: cat")
    assert checked("1, 4, 9", "list", "[1, 4, 9]") and checked("1, 4, 9", "list", "1 4 9")
    assert not checked("1, 4, 9", "list", "Answer: 1, 9, 4")


@pytest.mark.parametrize("reference, completion, expected", [
    ("\\frac{14}{3}", "Answer: \\boxed{\\dfrac{14}{3}}", True),
    ("\\frac{14}{3}", "Answer: $\\frac{14}{3}$", True),
    ("\\frac{14}{3}", "Answer: \\boxed{\\frac{13}{3}}", False),
    ("\\frac{1}{2}", "\\boxed{0.5}", True),
    ("0.5", "\\boxed{\\frac{2}{4}}", True),
    ("(3, \\frac{\\pi}{2})", "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", True),
    ("(3, \\frac{\\pi}{2})", "\\boxed{(3, \\pi)}", False),
    ("10\\%", "Answer: \\boxed{10}", True),
    ("70^\\circ", "\\boxed{70^{\\circ}}", True),
    ("5", "\\boxed{\\text{5}}", True),
    ("4", "So \\boxed{x = 4}.", True),
])
def test_math_answers_are_compared_lightly(reference, completion, expected):
    assert checked(reference, "math", completion) is expected


@pytest.mark.parametrize("completion, expected", [
    ("Answer: 4", True), ("4 + 4 = 8\n**Answer:** 8\n", True), ("so \\boxed{8}", True), ("#### 8", True),
    ("Answer: 8\nHope this helps!", False), ("The answer is 8.", False), ("Answer:", False), ("", False),
])
def test_has_answer_format(completion, expected):
    assert has_answer_format(completion) is expected


# --------------------------------------------------------------------------------------
# Edge cases: which answer is the final one, signs, equations, unfilled templates
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("completion, kind, expected", [
    # A later "Answer:" overrides an earlier \boxed{} (the model changed its mind) ...
    ("\\boxed{7}\nWait, that is wrong.\nAnswer: 8", "number", "8"),
    ("\\boxed{7} ... Answer: 8", "number", "8"),
    ("So \\boxed{3}.\n#### 4", "number", "4"),
    ("\\boxed{7}\n#### Step 2: check it\n3 + 4 = 7", "number", "7"),     # a heading, not GSM8K's ####
    # ... and a later \boxed{} overrides an earlier "Answer:".
    ("Answer: 8 ... \\boxed{7}", "number", "7"),
    ("Answer: 8\nHmm, let me check again: \\boxed{7}", "number", "7"),
    ("Answer: \\boxed{7}", "number", "7"),
    ("Final Answer: The final answer is $\\boxed{\\frac{1}{2}}$. I hope it is correct.", "math", "\\frac{1}{2}"),
    # Several answer lines: the last one.
    ("Answer: 5\nWait, let me recheck.\nAnswer: 6", "number", "6"),
    ("\\boxed{5}\n\\boxed{6}\nAnswer: 7\n\\boxed{8}", "number", "8"),
    # "the answer is" is conversation, not a statement of the answer: it never overrides one.
    ("Answer: 7\nThe answer is 8 if you count twice.", "number", "7"),
    ("\\boxed{7}\nI think the answer is 8.", "number", "7"),
])
def test_the_last_stated_answer_wins_whatever_its_form(completion, kind, expected):
    assert extract_answer(completion, kind) == expected


@pytest.mark.parametrize("completion, expected", [
    ("Answer: - 7", "-7"),
    ("Answer: \u2212 7", "-7"),
    ("Answer:  -  12.5", "-12.5"),
    ("\\boxed{- 7}", "-7"),
    ("\\boxed{-7}", "-7"),
    ("Answer: x = - 4", "-4"),
    ("Answer: - \\frac{1}{2}", "-0.5"),
    # a minus between two numbers is still a subtraction, not a sign
    ("Answer: 10 - 3 = 7", "7"),
    ("It fell from 4 - 11 degrees.", "11"),
])
def test_a_sign_separated_by_spaces_is_still_a_sign(completion, expected):
    assert extract_answer(completion, "number") == expected


def test_a_spaced_sign_decides_right_and_wrong():
    assert checked("-7", "number", "Answer: - 7")
    assert not checked("7", "number", "Answer: - 7")


@pytest.mark.parametrize("completion, expected", [
    # The line starts with a value: that value, whatever justification follows.
    ("Answer: 7 = 10 - 3", "7"),
    ("Answer: 7 (because 10 - 3 = 7)", "7"),
    ("Answer: 7, since 3 + 4 = 7", "7"),
    ("Answer: 12 apples = 3 * 4", "12"),
    ("Answer: $7 = 10 - 3$", "7"),
    ("Answer: 14/2 = 7", "7"),
    # The line starts with a calculation or a name: the result after its last "=".
    ("Answer: 10 - 3 = 7", "7"),
    ("Answer: 3 + 4 = 7", "7"),
    ("Answer: 2 * 3 + 1 = 7", "7"),
    ("Answer: 3.5 + 3.5 = 7", "7"),
    ("Answer: 7 x 2 = 14", "14"),
    ("Answer: 7 \u00d7 2 = 14", "14"),
    ("Answer: x = 5", "5"),
    ("Answer: 2x = 10, so x = 5", "5"),
    ("Answer: 1/2 + 1/2 = 1", "1"),
])
def test_an_answer_line_reads_the_value_it_states(completion, expected):
    assert extract_answer(completion, "number") == expected


@pytest.mark.parametrize("completion", [
    "Answer: <answer>",
    ANSWER_INSTRUCTION,
    MATH_ANSWER_INSTRUCTION,
    "Answer: \\boxed{<answer>}",
    "Answer: **<answer>**",
    "Answer: <your answer here>",
    "Answer: ?",
    "Answer: ...",
    "Answer: $$",
    "\\boxed{}",
    "\\boxed{<answer>}",
])
def test_an_unfilled_answer_template_is_not_a_well_formed_answer(completion):
    assert not has_answer_format(completion)


@pytest.mark.parametrize("completion", ["Answer: 7", "Answer: - 7", "Answer: tac", "Answer: x < 7",
                                        "Answer: \\boxed{7}", "Answer: [1, 4, 9]"])
def test_a_filled_answer_is_well_formed(completion):
    assert has_answer_format(completion)


def test_an_echoed_template_is_not_read_as_the_answer():
    assert extract_answer("Answer: <answer>", "text") is None
    assert extract_answer("Answer: tac\nAnswer: <answer>", "text") == "tac"
    assert extract_answer("Answer: \\boxed{7}\nAnswer: \\boxed{<answer>}", "math") == "7"


@pytest.mark.parametrize("completion", ["Answer: 7.", "Answer: **7**", "Answer: $7$", "**Answer: 7**",
                                        "Answer: 7 apples", "Answer:\n\n7", "\\boxed{7}.", "\\boxed{ 7 }",
                                        "Answer: 7\n\nCheck: 3 + 4 = 7, and 8 would be too many."])
def test_other_spellings_of_a_final_seven(completion):
    assert extract_answer(completion, "number") == "7"


def test_thousands_separators_and_negative_boxes():
    assert extract_answer("Answer: 1,234", "number") == "1234"
    assert extract_answer("Answer: -1,234.5", "number") == "-1234.5"
    assert extract_answer("\\boxed{-7}", "number") == "-7"
    assert checked("-7", "number", "The result is \\boxed{-7}.")


# --------------------------------------------------------------------------------------
# GSM8K and MATH-500 files
# --------------------------------------------------------------------------------------

def test_load_gsm8k():
    tasks = load_gsm8k(FIXTURES / "gsm8k_sample.jsonl")
    assert [t.answer for t in tasks] == ["18", "1250", "270", "38", "-7"]
    assert [t.difficulty for t in tasks] == [1, 1, 2, 3, 1]
    assert all(t.family == "gsm8k" and t.kind == "number" for t in tasks)
    assert tasks[0].prompt.startswith("A baker makes 4 trays") and tasks[0].prompt.endswith(ANSWER_INSTRUCTION)
    assert len({t.id for t in tasks}) == 5 and tasks[2].meta["line"] == 3
    assert check_answer(tasks[1], "He saves 125 * 10 = 1,250 dollars.\nAnswer: $1,250")
    assert not check_answer(tasks[1], "Answer: 125")
    assert check_answer(tasks[4], "#### -7")
    assert load_gsm8k(FIXTURES / "gsm8k_sample.jsonl", limit=2) == tasks[:2]


def test_load_math500():
    tasks = load_math500(str(FIXTURES / "math500_sample.jsonl"))
    assert [t.answer for t in tasks] == ["\\frac{14}{3}", "(2, \\pi)", "15\\%", "70^\\circ", "4"]
    assert [t.difficulty for t in tasks] == [1, 2, 1, 3, 3]
    assert tasks[4].meta["level"] == 4 and tasks[0].id == "math500/test/prealgebra/9001.json"
    assert all(t.family == "math500" and t.kind == "math" for t in tasks)
    assert tasks[0].prompt.endswith(MATH_ANSWER_INSTRUCTION)
    completions = ["Answer: \\boxed{\\dfrac{14}{3}}", "Answer: $\\left(2, \\pi\\right)$", "\\boxed{15\\%}",
                   "The third angle is \\boxed{70}.", "Answer: \\boxed{4}"]
    assert all(check_answer(t, c) for t, c in zip(tasks, completions))
    assert not check_answer(tasks[0], "Answer: \\boxed{4.67}")
    assert len(load_math500(FIXTURES / "math500_sample.jsonl", limit=3)) == 3


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_bad_files_name_the_file_the_line_and_the_problem(tmp_path):
    good = json.dumps({"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"})
    cases = [
        (load_gsm8k, [good, "{not json"], "line 2: not valid JSON"),
        (load_gsm8k, [json.dumps({"answer": "#### 4"})], "line 1: field 'question' is missing"),
        (load_gsm8k, [good, "", json.dumps({"question": "Why?", "answer": "because"})], "line 3:.*'#### <number>'"),
        (load_gsm8k, ["[1, 2]"], "line 1: expected a JSON object"),
        (load_math500, [json.dumps({"problem": "Hi?", "solution": "no box here"})], "line 1: no reference answer"),
        (load_math500, [json.dumps({"answer": "3"})], "line 1: field 'problem' is missing"),
    ]
    for number, (loader, lines, message) in enumerate(cases):
        path = write_lines(tmp_path / f"bad{number}.jsonl", *lines)
        with pytest.raises(ValueError, match=message) as error:
            loader(path)
        assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_gsm8k(tmp_path / "nowhere.jsonl")
    with pytest.raises(FileNotFoundError, match="MATH-500"):
        load_math500(tmp_path / "nowhere.jsonl")


def test_no_constant_answer_scores_well():
    """A model that always gives the same answer (or always the first number) must not score well:
    reinforcement learning finds such shortcuts before anything else (a first version of
    count_letters had "1" as the answer of 55% of its questions, and GRPO learned to say "1")."""
    import re
    from collections import Counter

    for family in ("count_letters", "compare", "addition", "word_problems"):
        answers = Counter(i.answer for i in make_instances(family, 300, split="train", seed=0))
        assert answers.most_common(1)[0][1] / 300 <= 0.4, (family, answers.most_common(3))
    compare = make_instances("compare", 300, split="train", seed=0)
    first = sum(re.findall(r"-?\d+(?:\.\d+)?", i.prompt)[0] == i.answer for i in compare) / len(compare)
    assert 0.35 <= first <= 0.65


@pytest.mark.parametrize("statement, right", [
    ("Answer: 5 < 87", True),     # a true relation: 87 is the larger
    ("Answer: 87 > 5", True),
    ("Answer: 87 \\geq 5", True),
    ("Answer: 87 < 5", False),    # a false claim is not rewarded (it read 87 before)
    ("Answer: 5 > 87", False),
    ("Answer: 5 ≥ 87", False),
])
def test_a_relation_reads_as_the_number_it_says_is_larger(statement, right):
    from llm_from_scratch.tasks.core import TaskInstance

    question = TaskInstance(family="compare", prompt="Of the two numbers 87 and 5, which one is greater?",
                            answer="87", kind="number", difficulty=1, id="compare/test/1/x", meta={})
    assert check_answer(question, statement) is right
