"""The CPU speedrun: how fast does each training recipe reach the book recipe's validation loss?

The problem (``--size micro``, the default): the Shakespeare works of the offline corpus with the
character tokenizer (`llmfs train`'s default data: 42 texts in file order, the first 90% for
training, the last 10% for validation), the 4-layer, 4-head, 128-wide model (`gpt-micro`) with
a context of 64 tokens, 12 windows per batch, fp32.

    book     the book's recipe: AdamW lr 1e-3, warmup 100, cosine to 1e-4, weight decay 0.1,
             clipping 1.0, learned positions, LayerNorm, GELU, tied head, 2000 steps
    modern   `--recipe modern` (training/recipes.py), --modern-steps steps (default 350)

The target is the book's final loss on the whole validation split (disjoint windows, fp32;
the median over rounds). A recipe's time is the time spent in training steps
(`history[-1]["train_seconds"]`: evaluations, checkpoints and start-up excluded, the same for
every recipe), and a recipe reaches the target if its own final whole-split loss is at most
the target. The speedup is book time / modern time. Differences under ~15% are noise here.

``--size mini``: a second problem, gpt-mini (6 layers, 256 wide; context 128, 4 windows per
batch) with the GPT-2 tokenizer on WikiText-2 (its 50,257-way head makes a step ~30x dearer than
the micro problem's), for a fixed time budget (--budget seconds of training): each recipe
first measures its seconds per step in a short calibration run, gets the step count that fills
the budget, and we compare the final whole-split losses after that budget.

How it is measured: every trial is a fresh process running `pipelines.pretrain` (the library
call `llmfs train` makes) and printing one JSON line; rounds interleave the recipes
(book, modern, book, modern, ... >= 3 rounds); we report medians and min..max. Ablations:
``--variant "NAME=key=value,key=value"`` adds a recipe with any `PretrainConfig` settings, e.g.
``--variant "modern-adamw=recipe=modern,optimizer=adamw"``.

    .venv/bin/python benchmarks/speedrun.py                  # book vs modern, 3 rounds (~8 min)
    .venv/bin/python benchmarks/speedrun.py --only modern --rounds 1 --variant "m500=recipe=modern,max_steps=500"
    .venv/bin/python benchmarks/speedrun.py --size mini --budget 120

Writes benchmarks/results/speedrun[-mini].json and a PNG: validation loss against training time,
all recipes on one plot (the sampled evaluations along the way, and the final whole-split loss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import available_cores, cpu_description, load_average, run_child  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

PROBLEMS = {
    "micro": dict(dataset="shakespeare", tokenizer="char", model_type="gpt-micro", context_length=64,
                  batch_size=12, precision="fp32", eval_batches=20, dropout=0.0),
    "mini": dict(dataset="wikitext2", tokenizer="gpt2", model_type="gpt-mini", context_length=128,
                 batch_size=4, precision="fp32", eval_batches=10, dropout=0.0),
}
BOOK = dict(recipe="book", lr=1e-3, warmup_steps=100, min_lr_ratio=0.1, weight_decay=0.1, grad_clip=1.0)


def recipes(args) -> dict[str, dict]:
    found = {"book": {**BOOK, "max_steps": args.book_steps},
             "modern": {"recipe": "modern", "max_steps": args.modern_steps}}
    for spec in args.variant:
        name, _, settings = spec.partition("=")
        values = {}
        for item in filter(None, settings.split(",")):
            key, _, raw = item.partition("=")
            values[key.strip()] = _parse(raw.strip())
        found[name.strip()] = values
    return found


def _parse(raw: str):
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(raw.lower(), raw)


# ----------------------------------------------------------------------------- one trial (child)

def run_trial(settings: dict) -> dict:
    import torch

    torch.set_num_threads(settings.pop("threads"))
    from llm_from_scratch.pipelines import PretrainConfig, pretrain

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        result = pretrain(PretrainConfig(**settings, out_dir=out_dir, progress=False))
    last = result.history[-1]
    return {"train_seconds": last["train_seconds"], "wall_seconds": time.perf_counter() - start,
            "final_val_loss": last.get("final_val_loss"), "whole_split": last.get("final_val_whole_split"),
            "steps": last["step"], "tokens": last["tokens"], "precision": last["precision"],
            "curve": [(h["train_seconds"], h["val_loss"]) for h in result.history],
            "parameters": result.model.num_parameters()}


def child(args, name: str, settings: dict) -> dict:
    payload = json.dumps({**settings, "threads": args.threads})
    out = run_child([sys.executable, __file__, "--trial", payload])
    out["recipe"] = name
    return out


# ----------------------------------------------------------------------------- the run (parent)

def calibrate(args, problem: dict, variants: dict[str, dict]) -> None:
    """--size mini: each recipe's step count for the time budget, from a short run's speed."""
    for name, settings in variants.items():
        short = child(args, name, {**problem, **settings, "max_steps": args.calibration_steps,
                                   "eval_interval": args.calibration_steps})
        per_step = short["train_seconds"] / short["steps"]
        settings["max_steps"] = max(10, int(args.budget / per_step))
        print(f"  calibration {name:<14} {per_step * 1000:7.1f} ms/step -> {settings['max_steps']} steps "
              f"for {args.budget:.0f} s", flush=True)


def summarize(trials: list[dict], names: list[str]) -> dict:
    summary = {}
    for name in names:
        mine = [t for t in trials if t["recipe"] == name]
        times = [t["train_seconds"] for t in mine]
        losses = [t["final_val_loss"] for t in mine]
        summary[name] = {"train_seconds": statistics.median(times), "time_range": (min(times), max(times)),
                         "final_val_loss": statistics.median(losses), "loss_range": (min(losses), max(losses)),
                         "wall_seconds": statistics.median(t["wall_seconds"] for t in mine),
                         "tokens_per_s": statistics.median(t["tokens"] / t["train_seconds"] for t in mine),
                         "steps": mine[0]["steps"], "parameters": mine[0]["parameters"]}
    return summary


def plot(trials: list[dict], names: list[str], target: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, name in enumerate(names):
        color = f"C{i}"
        for j, trial in enumerate(t for t in trials if t["recipe"] == name):
            xs, ys = zip(*[(s, v) for s, v in trial["curve"] if v is not None])
            ax.plot(xs, ys, color=color, alpha=0.6, label=f"{name} (sampled validation)" if j == 0 else None)
            ax.scatter([trial["train_seconds"]], [trial["final_val_loss"]], color=color, marker="o", zorder=3,
                       label=f"{name} final, whole split" if j == 0 else None)
    if target is not None:
        ax.axhline(target, color="gray", linestyle="--", label=f"target {target:.4f} (book's final)")
    ax.set_xlabel("training time (s; evaluations excluded)")
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.set_ylim(top=min(4.0, ax.get_ylim()[1]))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(PROBLEMS), default="micro")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3 for reported figures)")
    p.add_argument("--only", default=None, help="comma-separated recipes to run (default: all)")
    p.add_argument("--variant", action="append", default=[], help='"NAME=key=value,..." another recipe')
    p.add_argument("--book-steps", type=int, default=2000)
    p.add_argument("--modern-steps", type=int, default=350)
    p.add_argument("--eval-interval", type=int, default=100, help="steps between sampled evaluations")
    p.add_argument("--budget", type=float, default=120.0, help="--size mini: seconds of training per recipe")
    p.add_argument("--calibration-steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=available_cores())
    p.add_argument("--out", default=None, help="JSON results file")
    p.add_argument("--trial", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.trial:
        print(json.dumps(run_trial(json.loads(args.trial))))
        return

    problem = dict(PROBLEMS[args.size], eval_interval=args.eval_interval)
    variants = recipes(args)
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    names = list(variants)
    print(f"CPU: {cpu_description()}, {args.threads} threads; load average {load_average()}")
    print(f"problem {args.size}: {problem}\nrecipes: {variants}", flush=True)
    if args.size == "mini":
        calibrate(args, problem, variants)
    trials = []
    for r in range(args.rounds):
        for name in names:
            trial = child(args, name, {**problem, **variants[name]})
            trials.append(trial)
            print(f"  round {r + 1}/{args.rounds}  {name:<14} {trial['train_seconds']:7.1f} s training "
                  f"({trial['wall_seconds']:5.1f} s wall), {trial['steps']} steps, final validation loss "
                  f"{trial['final_val_loss']:.4f}", flush=True)
    summary = summarize(trials, names)
    target = summary["book"]["final_val_loss"] if "book" in summary else None
    print(f"\n{'recipe':<14} {'train s':>8} {'min..max':>13} {'final loss':>10} {'min..max':>15} {'tok/s':>8} "
          f"{'steps':>6}  vs book")
    for name in names:
        s = summary[name]
        reached = target is None or s["final_val_loss"] <= target
        ratio = (summary["book"]["train_seconds"] / s["train_seconds"]) if target is not None else float("nan")
        s.update(reached_target=reached, speedup_vs_book=ratio)
        print(f"{name:<14} {s['train_seconds']:8.1f} {s['time_range'][0]:6.1f}..{s['time_range'][1]:<6.1f} "
              f"{s['final_val_loss']:10.4f} {s['loss_range'][0]:7.4f}..{s['loss_range'][1]:<7.4f} "
              f"{s['tokens_per_s']:8,.0f} {s['steps']:6d}  {ratio:5.2f}x faster"
              f"{'' if reached else ' (target NOT reached)'}")
    RESULTS.mkdir(exist_ok=True)
    stem = "speedrun" if args.size == "micro" else f"speedrun-{args.size}"
    out = Path(args.out) if args.out else RESULTS / f"{stem}.json"
    out.write_text(json.dumps({"cpu": cpu_description(), "threads": args.threads, "problem": problem,
                               "recipes": variants, "target": target, "summary": summary, "trials": trials,
                               "date": time.strftime("%Y-%m-%d")}, indent=1))
    png = out.with_suffix(".png")
    plot(trials, names, target, png, f"speedrun ({args.size}): validation loss against training time")
    print(f"\nresults: {out}\nplot: {png}")


if __name__ == "__main__":
    main()
