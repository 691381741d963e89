"""Intervals and the paired test (evaluation/significance.py) against hand computations."""

from __future__ import annotations

import math

import pytest

from llm_from_scratch.evaluation.significance import (compare_records, format_comparison, mcnemar_exact,
                                                      wilson_interval)


def test_wilson_interval_matches_the_formula_worked_by_hand():
    # 5 of 10, z = 1.96: center (0.5 + z²/20) / (1 + z²/10) = 0.5; half = z·sqrt(0.025 + z²/400) / (1 + z²/10)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.236593, abs=1e-6) and high == pytest.approx(0.763407, abs=1e-6)
    # 0 of 10: the interval starts at 0 and does not collapse: (0, 2·(z²/20)/(1 + z²/10))
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.277533, abs=1e-6)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(1 - 0.277533, abs=1e-6)
    # 60 of 60 questions: how wide a small family's score really is
    assert wilson_interval(30, 60)[1] - wilson_interval(30, 60)[0] == pytest.approx(0.2455, abs=1e-3)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_matches_binomial_tails_worked_by_hand():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)                  # 2 · P(X = 0), X ~ Bin(5, 1/2)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)     # 2 · P(X <= 1), n = 10
    assert mcnemar_exact(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert mcnemar_exact(3, 3) == 1.0                                     # 2 · P(X <= 3 | 6) > 1: capped
    assert mcnemar_exact(0, 0) == 1.0
    # 200 questions, a 10-point gain made of 10 losses and 30 wins: significant
    p = mcnemar_exact(10, 30)
    assert p == pytest.approx(2 * sum(math.comb(40, i) for i in range(11)) / 2 ** 40) and p < 0.01
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def _records(family: str, outcomes: list[bool], start: int = 0) -> list[dict]:
    return [{"family": family, "id": start + i, "prompt": f"q{start + i}", "reference": "1", "greedy_correct": ok}
            for i, ok in enumerate(outcomes)]


def test_compare_records_pairs_the_same_questions_per_family():
    before = _records("addition", [True, True, False, False, True]) + _records("count", [False] * 4, 100)
    after = _records("addition", [True, False, True, True, True]) + _records("count", [True] * 4, 100)
    table = compare_records(list(reversed(before)), after)              # the order of the records does not matter
    add = table["addition"]
    assert (add["n"], add["b"], add["c"]) == (5, 1, 2)
    assert add["before"] == pytest.approx(0.6) and add["after"] == pytest.approx(0.8)
    assert add["p"] == pytest.approx(mcnemar_exact(1, 2)) and not add["significant"]
    assert add["before_interval"] == wilson_interval(3, 5)
    assert table["count"]["c"] == 4 and table["count"]["p"] == pytest.approx(2 / 16)
    assert table["all"]["n"] == 9 and (table["all"]["b"], table["all"]["c"]) == (1, 6)
    text = format_comparison(table)
    assert "addition" in text and "McNemar" in text


def test_compare_records_refuses_runs_scored_on_different_questions():
    before = _records("addition", [True, False, True])
    with pytest.raises(ValueError, match="different questions"):
        compare_records(before, _records("addition", [True, False, True], start=1))
    changed = _records("addition", [True, False, True])
    changed[0]["reference"] = "2"                                       # same id, another question
    with pytest.raises(ValueError, match="different questions"):
        compare_records(before, changed)
    with pytest.raises(ValueError, match="twice"):
        compare_records(before + before[:1], before)
    with pytest.raises(ValueError, match="no vote scores"):
        compare_records(before, before, metric="vote")


def test_llmfs_evaluate_compare_reads_two_runs_and_refuses_different_questions(tmp_path, capsys):
    import json

    from cli_helpers import run_cli

    before = _records("addition", [False] * 12 + [True] * 8)
    after = _records("addition", [True] * 12 + [True] * 8)
    for name, records in (("before", before), ("after", after)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"summary": {}, "records": records}))
    code, out, _ = run_cli(capsys, "evaluate", "compare", tmp_path / "before.json", tmp_path / "after.json")
    assert code == 0 and "addition" in out and "0.0005 *" in out      # 12 wins, 0 losses: p = 2 / 2**12
    (tmp_path / "other.json").write_text(json.dumps({"records": _records("addition", [True] * 20, start=50)}))
    code, _, err = run_cli(capsys, "evaluate", "compare", tmp_path / "before.json", tmp_path / "other.json")
    assert code == 2 and "different questions" in err


def test_the_task_table_shows_each_familys_interval():
    from llm_from_scratch.evaluation.tasks import format_table

    table = format_table({"addition": {"count": 10, "greedy": 0.5}}, 0)
    assert "[23.7, 76.3]" in table                                     # wilson_interval(5, 10), worked above


def test_the_task_table_shows_the_vote_interval_too():
    from llm_from_scratch.evaluation.tasks import format_table

    table = format_table({"compare": {"count": 10, "greedy": 0.5, "vote@8": 1.0, "pass@8": 1.0, "sampled": 0.9}}, 8)
    header, row = table.splitlines()
    assert "greedy 95%" in header and "vote 95%" in header
    assert row.index("[23.7, 76.3]") < row.index("[72.2, 100.0]")      # wilson_interval(10, 10) = [0.7225, 1]


def test_compare_methods_names_the_best_run_per_family_and_tests_it_against_every_other_run():
    from llm_from_scratch.evaluation.significance import compare_methods, format_methods

    start = _records("addition", [False] * 20) + _records("count", [False] * 10, 100)
    # addition: "a" right on 12 of 20, "b" on 2 (both also right where the other is): a beats b, 10 to 0
    a = _records("addition", [True] * 12 + [False] * 8) + _records("count", [True] * 3 + [False] * 7, 100)
    b = _records("addition", [True] * 2 + [False] * 18) + _records("count", [True] * 4 + [False] * 6, 100)
    table = compare_methods(start, {"a": a, "b": b})
    add = table["addition"]
    assert (add["best"], add["closest"], add["tied"]) == ("a", "b", ["a"]) and add["base"] == 0.0
    assert add["best_p"] == pytest.approx(mcnemar_exact(0, 10)) and add["best_significant"]
    assert add["runs"]["a"]["c"] == 12 and add["runs"]["a"]["significant"]       # against the start: 12 to 0
    count = table["count"]                                                     # 4 against 3 of 10: no winner
    assert count["best"] == "b" and count["best_p"] == pytest.approx(mcnemar_exact(0, 1)) and not count["best_significant"]
    everything = table["all"]                                                  # 15 of 30 against 6 of 30
    assert everything["n"] == 30 and everything["best"] == "a"
    assert everything["best_p"] == pytest.approx(mcnemar_exact(1, 10))
    text = format_methods(table)
    assert "60.0 (+60.0)*" in text and "no clear winner" in text and "a (p 0.002 vs b *)" in text
    with pytest.raises(ValueError, match="at least two runs"):
        compare_methods(start, {"a": a})
    with pytest.raises(ValueError, match="run 'b' against the start: .*different questions"):
        compare_methods(start, {"a": a, "b": _records("addition", [True] * 20, start=50)})


def test_the_best_run_must_beat_every_other_run_not_only_the_runner_up():
    from llm_from_scratch.evaluation.significance import compare_methods, format_methods

    start = _records("x", [False] * 40)
    a = _records("x", [i < 20 for i in range(40)])             # right on 0-19
    r = _records("x", [i < 14 for i in range(40)])             # right on 0-13: a beats it 6 to 0 (p 0.031)
    t = _records("x", [20 <= i < 33 for i in range(40)])       # right on 20-32: a against it 20 to 13 (p 0.30)
    row = compare_methods(start, {"a": a, "r": r, "t": t})["x"]
    assert row["best"] == "a" and row["closest"] == "t"
    assert row["best_p"] == pytest.approx(mcnemar_exact(13, 20)) and not row["best_significant"]
    tie = compare_methods(start, {"a": a, "same": list(a), "r": r})["x"]        # equal scores: a tie, no winner
    assert tie["tied"] == ["a", "same"] and not tie["best_significant"]
    assert "tie: a, same" in format_methods({"x": tie})
    votes = [dict(rec, vote_correct=rec["greedy_correct"]) for rec in start]
    one_family = compare_methods(votes, {"a": [dict(x, vote_correct=x["greedy_correct"]) for x in a],
                                         "r": [dict(x, vote_correct=x["greedy_correct"]) for x in r]}, metric="vote")
    assert list(one_family) == ["x"] and one_family["x"]["best"] == "a"     # one family: no "all" row


def test_llmfs_evaluate_compare_with_several_runs_prints_the_methods_table(tmp_path, capsys):
    import json

    from cli_helpers import run_cli

    start = _records("addition", [False] * 20)
    for folder, outcomes in (("grpo-run", [True] * 12 + [False] * 8), ("dpo-run", [True] * 2 + [False] * 18)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "heldout-after.json").write_text(json.dumps({"records": _records("addition", outcomes)}))
    (tmp_path / "start.json").write_text(json.dumps({"records": start}))
    code, out, _ = run_cli(capsys, "evaluate", "compare", tmp_path / "start.json",
                           tmp_path / "grpo-run" / "heldout-after.json", f"rft={tmp_path / 'dpo-run' / 'heldout-after.json'}")
    assert code == 0
    header = out.splitlines()[1]
    assert "grpo-run" in header and "rft" in header                     # named by folder, and by NAME=
    assert "grpo-run (p 0.002 vs rft *)" in out                         # 10 to 0 against the other run
    code, out, _ = run_cli(capsys, "evaluate", "compare", tmp_path / "start.json", tmp_path / "grpo-run" / "heldout-after.json",
                           "--plot", tmp_path / "pair.png")                # two runs: the paired table, and the picture
    assert code == 0 and "McNemar" in out and (tmp_path / "pair.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli(capsys, "evaluate", "compare", tmp_path / "start.json",
                           tmp_path / "grpo-run" / "heldout-after.json", tmp_path / "grpo-run" / "heldout-after.json")
    assert code == 2 and "same name" in err
    code, out, _ = run_cli(capsys, "evaluate", "compare", tmp_path / "start.json", f"start={tmp_path / 'start.json'}",
                           tmp_path / "grpo-run" / "heldout-after.json", "--plot", tmp_path / "new" / "runs.png")
    assert code == 0 and (tmp_path / "new" / "runs.png").is_file()      # a run may be called "start"; folder made
    code, _, _ = run_cli(capsys, "evaluate", "compare", tmp_path / "start.json")
    assert code == 2


def test_the_picture_draws_families_nobody_answers_and_families_everybody_answers(tmp_path):
    """0 of 200 and 200 of 200: Wilson's bounds there sit a rounding error off the point."""
    from llm_from_scratch.evaluation.significance import plot_methods, wilson_interval

    assert wilson_interval(0, 200)[0] == 0.0 and wilson_interval(200, 200)[1] == 1.0   # exactly, not 1.7e-18 off
    start = _records("sort", [False] * 200) + _records("easy", [True] * 200, 1000)
    runs = {"a": start, "b": _records("sort", [True] + [False] * 199) + _records("easy", [True] * 200, 1000)}
    plot_methods(start, runs, tmp_path / "edges.png")
    assert (tmp_path / "edges.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_names_a_run_by_name_equals_path_or_by_its_file_or_folder(tmp_path):
    from llm_from_scratch.cli.evaluate import run_label

    assert run_label("rft=runs/a/heldout-after.json") == ("rft", "runs/a/heldout-after.json")
    assert run_label("runs/grpo-7/heldout-after.json") == ("grpo-7", "runs/grpo-7/heldout-after.json")
    assert run_label("eval/base.json") == ("base", "eval/base.json")
    assert run_label("runs/lr=1e-5/heldout-after.json") == ("lr=1e-5", "runs/lr=1e-5/heldout-after.json")
    odd = tmp_path / "x=y.json"
    odd.write_text("{}")
    assert run_label(str(odd)) == ("x=y", str(odd))                     # an existing file is a path, "=" or not


def test_one_runs_vote_against_its_greedy_answers_is_a_paired_test_counted_by_hand(tmp_path, capsys):
    """`llmfs evaluate compare RUN.json`: greedy (before) against vote@k (after) on the same questions."""
    import json

    from cli_helpers import run_cli

    greedy = [True, True, False, False, False, False, False, False, True, False]
    vote = [True, False, True, True, True, True, True, False, True, False]     # b = 1 (q1), c = 5 (q2..q6)
    records = [{**r, "vote_correct": v, "samples": ["a"] * 8} for r, v in zip(_records("count", greedy), vote)]
    table = compare_records(records, records, metric="greedy", after_metric="vote")
    row = table["count"]
    assert (row["b"], row["c"]) == (1, 5) and row["before"] == pytest.approx(0.3) and row["after"] == pytest.approx(0.7)
    assert row["p"] == pytest.approx(2 * (1 + 6) / 64)                  # 2 · P(X <= 1), X ~ Bin(6, 1/2)
    (tmp_path / "run.json").write_text(json.dumps({"records": records}))
    code, out, _ = run_cli(capsys, "evaluate", "compare", tmp_path / "run.json")
    assert code == 0 and "greedy -> vote@8" in out and "right greedy, wrong vote@8" in out
    assert "+40.0" in out and "0.2188" in out
    (tmp_path / "greedy.json").write_text(json.dumps({"records": _records("count", greedy)}))
    code, _, err = run_cli(capsys, "evaluate", "compare", tmp_path / "greedy.json")
    assert code == 2 and "--num_samples" in err
    with pytest.raises(ValueError, match="metric must be"):
        compare_records(records, records, after_metric="pass@8")
