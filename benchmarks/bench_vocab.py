"""How much faster does a compact vocabulary train? `llmfs train --vocab full` against `--vocab compact`.

What is measured
----------------
``llmfs train`` of a preset on a corpus with a big pretrained tokenizer, ``--steps`` steps in fp32,
once with every id of the tokenizer in the model (``--vocab full``) and once with only the ids the
corpus uses plus one reserved id (``--vocab compact``, tokenizers/compact.py). One evaluation of
one batch at the end and a final score of one batch, so the figure is training itself: tokens per
second of training time (``tokens / train_seconds`` of the last ``log.jsonl`` line).

Fresh process per trial; the two vocabularies alternate within each of ``--rounds`` rounds
(interleaved, >= 3); medians, the spread and the ratio compact / full are reported, with the CPU.
Differences under ~15% are noise on a shared 2-core machine.

Run it
------
    .venv/bin/python benchmarks/bench_vocab.py                     # gpt-micro, Chinese, cl100k_base
    .venv/bin/python benchmarks/bench_vocab.py --model_type gpt-mini --dataset shakespeare --tokenizer gpt2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_description, run_child  # noqa: E402


def trial(args) -> dict:
    from llm_from_scratch.cli.main import main

    with tempfile.TemporaryDirectory() as out:
        code = main(["train", "--model_type", args.model_type, "--dataset", args.dataset, "--tokenizer", args.tokenizer,
                     "--vocab", args.trial, "--max_steps", str(args.steps), "--eval_interval", str(args.steps),
                     "--eval_batches", "1", "--final_eval_tokens", "1", "--precision", "fp32", "--no-progress",
                     "--out_dir", out])
        if code not in (0, None):
            raise SystemExit(f"llmfs train failed with {code}")
        last = json.loads((Path(out) / "log.jsonl").read_text().splitlines()[-1])
    return {"tokens_per_s": last["tokens"] / last["train_seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_type", default="gpt-micro")
    p.add_argument("--dataset", default="chinese")
    p.add_argument("--tokenizer", default="cl100k_base")
    p.add_argument("--steps", type=int, default=30, help="training steps per trial (default 30)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3; default 3)")
    p.add_argument("--out", default=None, help="JSON results file")
    p.add_argument("--trial", choices=["full", "compact"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.trial:
        print(json.dumps(trial(args)))
        return
    results: dict[str, list[float]] = {"full": [], "compact": []}
    for round_index in range(args.rounds):
        for vocab in results:
            value = run_child([sys.executable, __file__, "--trial", vocab, "--model_type", args.model_type,
                               "--dataset", args.dataset, "--tokenizer", args.tokenizer, "--steps", str(args.steps)],
                              env={"LLMFS_OFFLINE": "1"})["tokens_per_s"]
            results[vocab].append(value)
            print(f"round {round_index + 1} {vocab:<8} {value:,.0f} tokens/s", flush=True)
    medians = {vocab: statistics.median(values) for vocab, values in results.items()}
    print(f"\nCPU: {cpu_description()}; {args.model_type} on {args.dataset} with {args.tokenizer}, {args.steps} steps, "
          f"{args.rounds} interleaved rounds")
    for vocab, values in results.items():
        print(f"{vocab:<8} median {medians[vocab]:,.0f} tokens/s (min {min(values):,.0f}, max {max(values):,.0f})")
    print(f"compact / full: {medians['compact'] / medians['full']:.1f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu_description(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
