"""How sure is a task score? 95% intervals, and a paired test for "did this change help?".

A family scored on 60 questions moves by about 10 points from one checkpoint to the next by
chance alone, so a score needs its interval and a before/after difference needs a test.

* `wilson_interval(k, n)`: the Wilson score interval of a proportion (Wilson, 1927). Unlike the
  textbook "p ± 1.96·sqrt(p(1-p)/n)" it stays inside [0, 1] and does not collapse to a point at
  0/n or n/n, which is where small task scores often are.

      center = (p + z²/2n) / (1 + z²/n)
      half   = z · sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)

* `mcnemar_exact(b, c)`: the exact McNemar test for two scorings of the *same* questions
  (McNemar, 1947). Only the questions where the two disagree carry information: b = right
  before and wrong after, c = wrong before and right after. If the change did nothing, each of
  those b + c questions is equally likely to fall either way, so b ~ Binomial(b + c, 1/2); the
  two-sided p-value is twice the smaller tail, capped at 1. Pairing is what gives it power:
  the questions both scorings get right (or wrong) cancel out instead of adding noise.

* `compare_records(before, after)`: both per family, from two runs' records (what
  `llmfs evaluate tasks --out` writes), refusing runs that were not scored on the same questions.

* `compare_methods(start, runs)`: several tuned runs against one start (RFT, DPO, GRPO), each
  with its paired test, and per family the best run tested against every other one;
  `format_methods` prints it and `plot_methods` draws it (`llmfs evaluate compare START RUN...`).

Why it is built by hand: both are a few lines of arithmetic, written out here so that they can
be read; the tests check them against hand computations.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

#: The normal quantile of a two-sided 95% interval.
Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for `successes` out of `n` (95% by default)."""
    if n <= 0:
        raise ValueError(f"an interval needs at least one trial, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..{n}, got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at 0/n the bounds are exactly 0 (and at n/n exactly 1): center = half there, up to rounding
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c (1.0 when b + c = 0)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n   # P(X <= min(b, c))
    return min(1.0, 2 * tail)


def _question_key(record: dict[str, Any]) -> tuple:
    return record["family"], record["id"], record.get("prompt"), record.get("reference")


def compare_records(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], metric: str = "greedy",
                    alpha: float = 0.05, after_metric: str | None = None) -> dict[str, dict[str, Any]]:
    """Per family (and "all"): n, both accuracies with their 95% intervals, the difference, the
    discordant counts b (right -> wrong) and c (wrong -> right), McNemar's p, and whether
    p < alpha. `metric`: "greedy" (greedy pass@1) or "vote" (majority vote of the samples);
    `after_metric` scores the second run another way (one run's greedy answers against its own
    vote: `compare_records(run, run, "greedy", after_metric="vote")`).

    Raises ValueError when the runs were not scored on the same questions (the same family, id,
    prompt and reference answer, each once): a paired test means nothing otherwise."""
    fields = {"greedy": "greedy_correct", "vote": "vote_correct"}
    for name in (metric, after_metric or metric):
        if name not in fields:
            raise ValueError(f"metric must be greedy or vote, got {name!r}")
    by_key = {}
    for name, records, scored in (("before", before, metric), ("after", after, after_metric or metric)):
        field = fields[scored]
        keys = [_question_key(r) for r in records]
        if len(set(keys)) != len(keys):
            raise ValueError(f"the {name} run holds a question twice")
        missing = [r for r in records if field not in r]
        if missing:
            raise ValueError(f"the {name} run has no {scored} scores (was it run with that metric on?)")
        by_key[name] = {k: bool(r[field]) for k, r in zip(keys, records)}
    if set(by_key["before"]) != set(by_key["after"]):
        only = len(set(by_key["before"]) ^ set(by_key["after"]))
        raise ValueError(f"the two runs were scored on different questions ({only} are in only one of them): "
                         "score both with the same --tasks, --num_examples, --difficulty and --seed")
    families: dict[str, list[tuple]] = {}
    for key in by_key["before"]:
        families.setdefault(key[0], []).append(key)
    if len(families) > 1:
        families["all"] = list(by_key["before"])
    table = {}
    for family, keys in families.items():
        pairs = [(by_key["before"][k], by_key["after"][k]) for k in keys]
        n = len(pairs)
        right_before, right_after = sum(a for a, _ in pairs), sum(b for _, b in pairs)
        b = sum(1 for x, y in pairs if x and not y)
        c = sum(1 for x, y in pairs if not x and y)
        p = mcnemar_exact(b, c)
        table[family] = {"n": n, "before": right_before / n, "after": right_after / n,
                         "before_interval": wilson_interval(right_before, n),
                         "after_interval": wilson_interval(right_after, n),
                         "difference": (right_after - right_before) / n, "b": b, "c": c, "p": p,
                         "significant": p < alpha}
    return table


def format_comparison(table: dict[str, dict[str, Any]], labels: tuple[str, str] = ("before", "after")) -> str:
    """The comparison as an aligned text table (percentages; * marks p < 0.05); `labels` name
    the two columns (and the b/c legend)."""
    first, second = labels
    lines = [f"{'family':<16}{'n':>5}{first:>22}{second:>22}{'change':>9}{'b→':>5}{'→c':>5}{'p':>9}"]
    for family, row in table.items():
        def cell(value, interval):
            return f"{100 * value:5.1f}% [{100 * interval[0]:4.1f}-{100 * interval[1]:5.1f}]"
        mark = " *" if row["significant"] else ""
        lines.append(f"{family:<16}{row['n']:>5}{cell(row['before'], row['before_interval']):>22}"
                     f"{cell(row['after'], row['after_interval']):>22}{100 * row['difference']:>+8.1f}"
                     f"{row['b']:>5}{row['c']:>5}{row['p']:>9.4f}{mark}")
    lines.append(f"b: right {first}, wrong {second}; c: wrong {first}, right {second}; p: exact McNemar; "
                 "* p < 0.05")
    return "\n".join(lines)


def compare_methods(base: Sequence[dict[str, Any]], runs: dict[str, Sequence[dict[str, Any]]],
                    metric: str = "greedy", alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Several runs (say RFT, DPO and GRPO from one start model) against the start model's run,
    all on the same questions. Per family (and "all"):

    * `base`: the start's accuracy; `runs`: each run's row of `compare_records(base, run)`
      (accuracy, change, b, c and McNemar's p against the start);
    * `best`: the run with the highest accuracy (`tied`: every run sharing that accuracy), and
      `best_p`: the largest of McNemar's p-values of the best against each other run, on the
      same questions, with `closest` the run it belongs to. `best_significant` (best_p < alpha)
      means the best beat *every* other run; requiring each test to pass is an
      intersection-union test, which keeps the error rate at alpha without a correction.
      Otherwise the family has no clear winner.

    Families and runs multiply the tests: across a whole table a few stars are expected by
    chance, so read it as a map of where to look, and the per-family p-values as they are.

    Raises ValueError if fewer than two runs are given or any run was scored on other questions
    (the message names the run)."""
    if len(runs) < 2:
        raise ValueError(f"compare_methods needs at least two runs besides the start, got {len(runs)}")
    against_base = {}
    for name, records in runs.items():
        try:
            against_base[name] = compare_records(base, records, metric, alpha)
        except ValueError as exc:
            raise ValueError(f"run {name!r} against the start: {exc}") from exc
    table: dict[str, dict[str, Any]] = {}
    for family, start in next(iter(against_base.values())).items():
        rows = {name: rows_of_run[family] for name, rows_of_run in against_base.items()}
        top = max(row["after"] for row in rows.values())
        tied = [name for name, row in rows.items() if row["after"] == top]
        best = tied[0]
        duels = {other: compare_records(_of_family(runs[other], family), _of_family(runs[best], family),
                                        metric, alpha)[family]["p"]
                 for other in runs if other != best}
        closest = max(duels, key=duels.get)
        table[family] = {"n": start["n"], "base": start["before"], "runs": rows, "best": best, "tied": tied,
                         "closest": closest, "best_p": duels[closest],
                         "best_significant": len(tied) == 1 and duels[closest] < alpha}
    return table


def _of_family(records: Sequence[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    return [r for r in records if family == "all" or r["family"] == family]


def format_methods(table: dict[str, dict[str, Any]]) -> str:
    """`compare_methods`' table as aligned text: each run's accuracy and change (* p < 0.05 against
    the start), then the best run and the largest p of its tests against the others."""
    names = list(next(iter(table.values()))["runs"])
    width = max(17, *(len(name) + 2 for name in names))
    lines = [f"{'family':<16}{'n':>5}{'start':>8}" + "".join(f"{name:>{width}}" for name in names)
             + "  best (largest p against another run)"]
    for family, row in table.items():
        cells = "".join(f"{_method_cell(r):>{width}}" for r in row["runs"].values())
        if len(row["tied"]) > 1:
            verdict = f"tie: {', '.join(row['tied'])}"
        else:
            verdict = f"{row['best']} (p {_p_text(row['best_p'])} vs {row['closest']}"
            verdict += " *)" if row["best_significant"] else ", no clear winner)"
        lines.append(f"{family:<16}{row['n']:>5}{100 * row['base']:>7.1f}%{cells}  {verdict}")
    lines.append("accuracy in % (change from the start; * p < 0.05, exact McNemar on the same questions); "
                 "best: the highest, tested against every other run")
    return "\n".join(lines)


def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _method_cell(row: dict[str, Any]) -> str:
    mark = "*" if row["significant"] else " "
    return f"{100 * row['after']:.1f} ({100 * row['difference']:+.1f}){mark}"


def plot_methods(base: Sequence[dict[str, Any]], runs: dict[str, Sequence[dict[str, Any]]], path,
                 metric: str = "greedy", title: str = "") -> None:
    """Bars per family for the start and each run, with 95% intervals, as a PNG at `path`; a run
    significantly better (worse) than the start, paired on the same questions, is marked + (-)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    against_base = {name: compare_records(base, records, metric) for name, records in runs.items()}
    first = next(iter(against_base.values()))
    families = list(first)
    bars = [("start model", [(first[f]["before"], first[f]["before_interval"], "") for f in families])]
    for name, table in against_base.items():
        bars.append((name, [(table[f]["after"], table[f]["after_interval"],
                             ("+" if table[f]["difference"] > 0 else "-") if table[f]["significant"] else "")
                            for f in families]))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(families)), 4.4))
    for i, (name, values) in enumerate(bars):
        xs = [x + i * width for x in range(len(families))]
        heights = [100 * v for v, _, _ in values]
        # (Wilson's bounds at 0/n or n/n can sit a rounding error inside the point: never below 0)
        errors = [[100 * max(0.0, v - lo) for v, (lo, _), _ in values], [100 * max(0.0, hi - v) for v, (_, hi), _ in values]]
        ax.bar(xs, heights, width, yerr=errors, capsize=2, label=name)
        for x, (v, (_, hi), mark) in zip(xs, values):
            if mark:
                ax.text(x, 100 * hi + 1, mark, ha="center", va="bottom", fontsize=9)
    ax.set_xticks([x + width * (len(bars) - 1) / 2 for x in range(len(families))], families, rotation=30, ha="right")
    ax.set_ylabel(f"{metric} accuracy (%), 95% interval")
    ax.set_ylim(0, 110)
    ax.set_title(title or "each run against the start, on the same questions (+/-: paired p < 0.05)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
