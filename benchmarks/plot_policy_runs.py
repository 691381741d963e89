"""Overlay the curves of several GRPO or DPO runs: what an ablation is read from.

    .venv/bin/python benchmarks/plot_policy_runs.py --out docs/images/22-grpo-ablations.png \\
        "lr 1e-5, T 0.8=checkpoints/abl-c0" "lr 3e-6=checkpoints/abl-lr3e-6" ...

Each argument is LABEL=RUN_DIR (a run's output folder, holding its log.jsonl). One panel per
logged figure (`--keys`; GRPO's by default, for DPO e.g. `--keys loss,reward_accuracy,reward_margin`), a line per run: the per-step values faint, their rolling mean over
`--window` steps solid (a step's accuracy rests on 64 answers, so one step moves by about 6
points by chance). A table of each figure's mean over the first and the last third of the steps
is printed, in the order the runs were given.

Training accuracy here is measured on each step's *new* training questions (a step never reuses
a question in a run this short), sampled at the run's temperature: an on-policy accuracy on
unseen questions, not the held-out greedy score (that is heldout-before/after.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_KEYS = ("accuracy", "entropy", "no_signal", "completion_tokens", "truncated", "kl")


def read_log(run_dir: str | Path) -> list[dict]:
    """The per-step records of a run's log.jsonl (a resumed run's repeated steps: the last one wins)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise SystemExit(f"no {path}: give LABEL=RUN_DIR with a run's output folder")
    by_step = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if "step" in record:
                by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def rolling_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and the (window - 1) before it (fewer at the start)."""
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1):i + 1]
        out.append(sum(part) / len(part))
    return out


def thirds(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last third of the values (at least one value each)."""
    n = max(1, len(values) // 3)
    return sum(values[:n]) / n, sum(values[-n:]) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--keys", default=",".join(DEFAULT_KEYS))
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="only the first N steps of each run")
    args = parser.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r}: give LABEL=RUN_DIR")
        runs.append((label, read_log(folder)[:args.steps]))
    keys = [k for k in args.keys.split(",") if any(k in r for _, log in runs for r in log)]
    if not keys:
        logged = sorted({k for _, log in runs for r in log for k in r if k != "step"})
        raise SystemExit(f"none of --keys {args.keys} is in the logs; they hold: {', '.join(logged)}")
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    print(f"{'run':<28}" + "".join(f"{k[:16]:>20}" for k in keys) + "\n" + " " * 28 +
          "".join(f"{'first / last third':>20}" for _ in keys))
    for index, (label, log) in enumerate(runs):
        color = f"C{index}"
        cells = []
        for ax, key in zip(axes.flat, keys):
            points = [(r["step"], float(r[key])) for r in log if key in r]
            if not points:
                cells.append(f"{'-':>20}")
                continue
            steps, values = zip(*points)
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=1)
            ax.plot(steps, rolling_mean(list(values), args.window), color=color, linewidth=2, label=label)
            ax.set_title(key)
            ax.set_xlabel("step")
            first, last = thirds(list(values))
            cells.append(f"{first:>9.3f} /{last:>9.3f}")
        print(f"{label:<28}" + "".join(cells))
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"per step (faint) and {args.window}-step rolling mean")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
