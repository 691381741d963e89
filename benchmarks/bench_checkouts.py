"""Did a change make training or generation slower? Two source trees of this project, side by side.

What is measured
----------------
For each source tree given with ``--tree NAME=PATH`` (PATH is a checkout's ``src`` folder, e.g.
one made with ``git worktree add /tmp/before <commit>``), in a fresh process with that tree
first on PYTHONPATH:

* ``train``: ``llmfs train`` of gpt-micro on the offline Shakespeare corpus with the character
  tokenizer, ``--max_steps`` steps in fp32 with one evaluation of one batch at the end, so the
  figure is the loop itself. Reported: training tokens per second of training time
  (``tokens / train_seconds`` of the last ``log.jsonl`` line: evaluations, loading and
  tokenizing are not in it).
* ``generate``: ``generation.generate`` of 64 new tokens after a 32-token prompt with a seeded
  GPT-2-architecture model (``--preset``, random weights), greedy, batch 1. Reported: new tokens
  per second of one timed call after a warm-up call.

Both trees use the same machine, threads and data; trials of the trees alternate within each of
``--rounds`` rounds (interleaved, >= 3), and the report gives the median and the spread per tree
and the ratio of each tree's median to the first tree's. Differences under ~15% are noise on a
shared 2-core machine.

Run it
------
    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/bench_checkouts.py --tree before=/tmp/before/src --tree after=src --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_description, run_child  # noqa: E402


def train_trial(steps: int) -> dict:
    from llm_from_scratch.cli.main import main

    with tempfile.TemporaryDirectory() as out:
        code = main(["train", "--model_type", "gpt-micro", "--dataset", "shakespeare", "--tokenizer", "char",
                     "--max_steps", str(steps), "--eval_interval", str(steps), "--eval_batches", "1",
                     "--precision", "fp32", "--no-progress", "--out_dir", out])
        if code not in (0, None):
            raise SystemExit(f"llmfs train failed with {code}")
        last = json.loads((Path(out) / "log.jsonl").read_text().splitlines()[-1])
    return {"value": last["tokens"] / last["train_seconds"], "unit": "train tokens/s"}


def generate_trial(preset: str) -> dict:
    import torch

    from llm_from_scratch.generation import generate
    from llm_from_scratch.model import GPTModel

    torch.manual_seed(0)
    model = GPTModel.from_preset(preset, drop_rate=0.0).eval()
    prompt = torch.randint(0, model.cfg.vocab_size, (1, 32))
    generate(model, prompt, 8, temperature=0.0)                     # warm-up
    start = time.perf_counter()
    generate(model, prompt, 64, temperature=0.0)
    return {"value": 64 / (time.perf_counter() - start), "unit": "new tokens/s"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", default=[], help="NAME=PATH of a src folder (two or more)")
    p.add_argument("--tasks", default="train,generate", help="train, generate or both (default both)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3; default 3)")
    p.add_argument("--steps", type=int, default=60, help="training steps per train trial (default 60)")
    p.add_argument("--preset", default="gpt2", help="model preset of the generate trials (default gpt2)")
    p.add_argument("--out", default=None, help="JSON results file")
    p.add_argument("--trial", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.trial:
        result = train_trial(args.steps) if args.trial == "train" else generate_trial(args.preset)
        print(json.dumps(result))
        return
    trees = dict(item.split("=", 1) for item in args.tree)
    if len(trees) < 2:
        p.error("give two or more --tree NAME=PATH")
    results: dict[str, dict[str, list[float]]] = {}
    for round_index in range(args.rounds):
        for task in args.tasks.split(","):
            for name, path in trees.items():
                env = {"PYTHONPATH": str(Path(path).resolve()), "LLMFS_OFFLINE": os.environ.get("LLMFS_OFFLINE", "1")}
                value = run_child([sys.executable, __file__, "--trial", task, "--steps", str(args.steps),
                                   "--preset", args.preset], env=env)["value"]
                results.setdefault(task, {}).setdefault(name, []).append(value)
                print(f"round {round_index + 1} {task:<8} {name:<10} {value:,.1f}", flush=True)
    print(f"\nCPU: {cpu_description()}; {args.rounds} interleaved rounds, fresh process per trial")
    first = next(iter(trees))
    for task, by_tree in results.items():
        base = statistics.median(by_tree[first])
        for name, values in by_tree.items():
            median = statistics.median(values)
            print(f"{task:<8} {name:<10} median {median:,.1f} (min {min(values):,.1f}, max {max(values):,.1f}); "
                  f"{median / base:.2f}x {first}")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu_description(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
