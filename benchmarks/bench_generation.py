"""How fast does our GPT generate text? A benchmark of greedy decoding at batch size 1.

What is measured
----------------
The GPT-2 124M architecture (random weights, ``GPTModel.from_preset("gpt2")``) generates N new
tokens (default 64) after a random prompt of P tokens (default 32), greedily, at batch size 1,
in fp32 (or bf16 with ``--dtype bf16``). Three implementations share the SAME weights:

    A  ours, with the KV cache      generation.generate(model, idx, N, use_cache=True)
    B  ours, without a cache        generation.generate(model, idx, N, use_cache=False)
    C  Hugging Face transformers    GPT2LMHeadModel.generate(idx, max_new_tokens=N, ...)

The time of one ``generate`` call covers everything a user waits for: the prompt pass
("prefill") and the N decoding steps. We report new tokens per second (N / seconds) and the
time per new token in milliseconds.

How it is measured (the project's rules for benchmarks)
-------------------------------------------------------
* Fresh process per trial. The script launches itself (``--trial A``); the child builds the
  model, does one short warm-up generation (first calls allocate memory and pick kernels), then
  times one real generation with ``time.perf_counter`` and prints one JSON line: tokens/s,
  seconds, and its peak resident memory (``resource.getrusage``): over the whole process
  ("peak RSS", dominated by building the model) and, on Linux, during the timed generation
  alone ("gen RSS": weights + KV cache + activations). A fresh process means no trial inherits
  a warm allocator, caches or a fragmented heap from another.
* Interleaved rounds: A B C A B C ... (default 5 rounds). On a shared machine the load drifts;
  interleaving spreads that drift over all implementations instead of penalizing one.
* Medians, not means: one trial slowed down by a neighbour does not move the median.
* Correctness first: before any timing, a ``--check`` child generates with A, B and C in fp32
  and the script stops if A's or C's tokens differ from B's (greedy decoding is deterministic,
  so the same weights must give the same tokens). With ``--dtype bf16`` it also reports where
  the bf16 tokens start to differ, without failing: see `run_check` for why they may.

Run it
------
    .venv/bin/python benchmarks/bench_generation.py                     # fp32, 5 rounds
    .venv/bin/python benchmarks/bench_generation.py --dtype bf16 --rounds 3
    .venv/bin/python benchmarks/bench_generation.py --preset gpt-micro --rounds 3   # quick

Options: --rounds, --new-tokens, --prompt-tokens, --dtype fp32|bf16, --preset, --only A,B,C,
--threads (default: the number of cores this process may use), --seed, --out (JSON results,
default benchmarks/results/generation.json). See benchmarks/README.md for reading the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from harness import available_cores, cpu_model, run_child

IMPLEMENTATIONS = {
    "A": "ours, KV cache",
    "B": "ours, no cache",
    "C": "transformers",
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
WARMUP_TOKENS = 4
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "generation.json"


# ----------------------------------------------------------------------------------------------
# Building the models (in the child processes)
# ----------------------------------------------------------------------------------------------

def build_ours(preset: str, dtype: torch.dtype, seed: int):
    """Our GPTModel with the random weights that `seed` gives; every child gets the same ones."""
    from llm_from_scratch.model.gpt import GPTModel

    torch.manual_seed(seed)
    return GPTModel.from_preset(preset).to(dtype).eval()


def build_hf(ours_state: dict[str, torch.Tensor], cfg):
    """`transformers.GPT2LMHeadModel` holding exactly our model's weights.

    The HF model is created on the "meta" device (shapes only, no memory, no random init). Our
    tensors are then handed over one at a time (`state_dict_to_hf` renames them and transposes
    the linear weights into GPT-2's Conv1D layout). `ours_state` is consumed as we go: if the
    caller holds no other reference to our model, each original is freed once converted, so
    the process never holds two copies of the model.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from llm_from_scratch.model.hf_gpt2 import state_dict_to_hf

    if not cfg.tie_weights:
        raise SystemExit("C (transformers) needs a preset with tied embeddings, as GPT-2 has")
    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length,
                        n_embd=cfg.emb_dim, n_layer=cfg.n_layers, n_head=cfg.n_heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with torch.device("meta"):
        hf = GPT2LMHeadModel(hf_cfg)

    if not cfg.qkv_bias:  # GPT-2 always has a qkv bias; a zero bias is the same as none
        dtype = ours_state["tok_emb.weight"].dtype
        for i in range(cfg.n_layers):
            ours_state[f"trf_blocks.{i}.att.qkv.bias"] = torch.zeros(3 * cfg.emb_dim, dtype=dtype)
    while ours_state:
        name, tensor = ours_state.popitem()
        hf.load_state_dict(state_dict_to_hf({name: tensor}), strict=False, assign=True)
    hf.tie_weights()  # lm_head and wte are one matrix, as in ours
    # No end-of-text token (see make_generate_fn). It must be cleared on the model itself:
    # `generate` fills any None setting of the config it is given from the model's own config,
    # so eos_token_id=None alone would silently become GPT-2's 50256.
    hf.generation_config.eos_token_id = None
    hf.generation_config.bos_token_id = None
    still_empty = [n for n, p in hf.named_parameters() if p.is_meta]
    if still_empty:
        raise SystemExit(f"HF model is missing weights: {still_empty[:3]}")
    return hf.eval()


def make_prompt(vocab_size: int, prompt_tokens: int, seed: int) -> torch.Tensor:
    """A random prompt of shape (1, prompt_tokens); the same one in every child."""
    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, vocab_size, (1, prompt_tokens), generator=generator)


def make_generate_fn(name: str, ours, hf=None):
    """A function idx, n -> idx with n greedy tokens appended, for implementation `name`."""
    from llm_from_scratch.generation import generate

    if name in ("A", "B"):
        def run(idx, n):
            return generate(ours, idx, max_new_tokens=n, use_cache=(name == "A"))
        return run

    from transformers import GenerationConfig

    def run(idx, n):
        # No end-of-text token at all (also cleared on the model, see build_hf): HF must produce
        # exactly n tokens and must not alter any logits (with an eos token, `min_new_tokens`
        # would mask the eos logit and greedy decoding could then differ from ours).
        gen_cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                   use_cache=True, pad_token_id=0, eos_token_id=None, bos_token_id=None)
        with torch.inference_mode():
            return hf.generate(idx, attention_mask=torch.ones_like(idx), generation_config=gen_cfg)
    return run


def build_for(names, args, dtype: torch.dtype | None = None):
    """Build the models the implementations in `names` need; return their generate functions
    and the vocabulary size."""
    ours = build_ours(args.preset, dtype or DTYPES[args.dtype], args.seed)
    cfg, hf = ours.cfg, None
    if "C" in names:
        state = dict(ours.state_dict())
        if not {"A", "B"} & set(names):
            del ours  # C alone: let build_hf free each of our tensors once it is converted
            ours = None
        hf = build_hf(state, cfg)
    return {name: make_generate_fn(name, ours, hf) for name in names}, cfg.vocab_size


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def reset_peak_rss() -> bool:
    """Linux only: reset the kernel's peak-RSS mark to the current RSS, so that `peak_rss_mb`
    afterwards measures the generation alone, not the model construction before it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# The child processes
# ----------------------------------------------------------------------------------------------

def run_trial(args) -> dict:
    """One timed generation in this (fresh) process."""
    name = args.trial
    fns, vocab_size = build_for([name], args)
    run = fns[name]
    idx = make_prompt(vocab_size, args.prompt_tokens, args.seed)

    run(idx, WARMUP_TOKENS)  # warm-up: first-call allocations, kernel selection, lazy imports
    process_peak = peak_rss_mb()  # model construction included
    can_reset = reset_peak_rss()

    start = time.perf_counter()
    out = run(idx, args.new_tokens)
    seconds = time.perf_counter() - start

    generation_peak = peak_rss_mb()

    new_tokens = out.shape[1] - idx.shape[1]
    if new_tokens != args.new_tokens:
        raise SystemExit(f"{name} generated {new_tokens} tokens, expected {args.new_tokens}")
    return {"impl": name, "new_tokens": new_tokens, "seconds": seconds,
            "tokens_per_s": new_tokens / seconds, "ms_per_token": 1000 * seconds / new_tokens,
            "peak_rss_mb": max(process_peak, generation_peak),
            "generation_peak_rss_mb": generation_peak if can_reset else None}


def generated_tokens(names, args, dtype: torch.dtype) -> dict[str, list[int]]:
    fns, vocab_size = build_for(names, args, dtype)
    idx = make_prompt(vocab_size, args.prompt_tokens, args.seed)
    return {name: fns[name](idx, args.new_tokens)[0, idx.shape[1]:].tolist() for name in names}


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first new token where a and b differ (None if they are identical)."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def run_check(args) -> dict:
    """Generate with every implementation (and always B, the reference); compare the token ids.

    The strict check runs in fp32. In bf16 the same code may legitimately pick different tokens:
    B recomputes the whole sequence each step while A and C process one new token against a
    cache, so their matrix products round differently, and with random weights the two best
    logits are often closer than bf16's ~3 significant digits. bf16 agreement is therefore
    reported (first differing token), not enforced.
    """
    names = sorted(set(args.only) | {"B"})
    tokens = generated_tokens(names, args, torch.float32)
    result = {"reference": "B", "dtype": "fp32", "tokens": tokens,
              "mismatches": {name: first_difference(tokens[name], tokens["B"])
                             for name in names if tokens[name] != tokens["B"]}}
    if args.dtype != "fp32":
        low = generated_tokens(names, args, DTYPES[args.dtype])
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        result["low_precision"] = {
            "dtype": args.dtype, "tokens": low,
            "first_difference": {f"{a} vs {b}": first_difference(low[a], low[b]) for a, b in pairs},
        }
    return result


# ----------------------------------------------------------------------------------------------
# The parent: launch children, interleave, summarize
# ----------------------------------------------------------------------------------------------

def child_command(args, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *extra,
            "--new-tokens", str(args.new_tokens), "--prompt-tokens", str(args.prompt_tokens),
            "--dtype", args.dtype, "--preset", args.preset, "--threads", str(args.threads),
            "--seed", str(args.seed), "--only", ",".join(args.only)]


def print_table(summary: dict, names: list[str]) -> None:
    header = (f"{'impl':<4} {'what':<16} {'new tok/s':>10} {'ms/token':>9} {'min..max tok/s':>15} "
              f"{'peak RSS MB':>12} {'gen RSS MB':>11}")
    print(header)
    print("-" * len(header))
    for name in names:
        s = summary[name]
        spread = f"{s['min_tokens_per_s']:.1f}..{s['max_tokens_per_s']:.1f}"
        gen = s["median_generation_peak_rss_mb"]
        gen = "n/a" if gen is None else f"{gen:.0f}"
        print(f"{name:<4} {IMPLEMENTATIONS[name]:<16} {s['median_tokens_per_s']:>10.1f} "
              f"{s['median_ms_per_token']:>9.2f} {spread:>15} {s['median_peak_rss_mb']:>12.0f} {gen:>11}")


def main_parent(args) -> None:
    print(f"torch {torch.__version__}, threads {args.threads}, CPU: {cpu_model()} "
          f"({available_cores()} cores available), Python {platform.python_version()}")
    if "C" in args.only:
        import transformers
        print(f"transformers {transformers.__version__}")
    print(f"settings: preset={args.preset} dtype={args.dtype} batch=1 greedy "
          f"prompt_tokens={args.prompt_tokens} new_tokens={args.new_tokens} rounds={args.rounds} "
          f"implementations={','.join(args.only)} seed={args.seed}")
    print()

    # 1. Correctness: same weights + greedy decoding -> the same tokens.
    check = run_child(child_command(args, "--check"))
    if check["mismatches"]:
        for name, first in check["mismatches"].items():
            print(f"MISMATCH: {name} ({IMPLEMENTATIONS[name]}) differs from B from new token {first} on:\n"
                  f"  {name}: {check['tokens'][name]}\n  B: {check['tokens']['B']}", file=sys.stderr)
        raise SystemExit("correctness check FAILED: refusing to time implementations that disagree")
    print(f"check (fp32, greedy): {', '.join(n for n in check['tokens'] if n != 'B') or '-'} generate "
          f"the same {args.new_tokens} token ids as B")
    if "low_precision" in check:
        low = check["low_precision"]
        agreement = ", ".join(f"{pair}: " + ("identical" if first is None else f"differ from new token {first}")
                              for pair, first in low["first_difference"].items())
        print(f"{low['dtype']} agreement (informational; rounding differs between a full pass and a "
              f"cached step): {agreement}")

    # 2. Timing: rounds of A B C, each trial in a fresh process.
    trials: list[dict] = []
    for round_idx in range(1, args.rounds + 1):
        for name in args.only:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            result = run_child(child_command(args, "--trial", name))
            result["round"] = round_idx
            result["load_avg_1min_before"] = load
            trials.append(result)
            print(f"  round {round_idx}/{args.rounds}  {name}  {result['tokens_per_s']:7.1f} tok/s  "
                  f"{result['seconds']:6.2f} s  (load avg before: {load:.1f})",
                  flush=True)
    print()

    # 3. Medians and ratios.
    summary = {}
    for name in args.only:
        mine = [t for t in trials if t["impl"] == name]
        tps = [t["tokens_per_s"] for t in mine]
        summary[name] = {
            "what": IMPLEMENTATIONS[name],
            "median_tokens_per_s": statistics.median(tps),
            "median_ms_per_token": statistics.median(t["ms_per_token"] for t in mine),
            "median_seconds": statistics.median(t["seconds"] for t in mine),
            "min_tokens_per_s": min(tps), "max_tokens_per_s": max(tps),
            "median_peak_rss_mb": statistics.median(t["peak_rss_mb"] for t in mine),
            "median_generation_peak_rss_mb": (
                None if any(t["generation_peak_rss_mb"] is None for t in mine)
                else statistics.median(t["generation_peak_rss_mb"] for t in mine)),
        }
    ratios = {}
    for other in ("B", "C"):
        if "A" in summary and other in summary:
            ratios[f"A/{other}"] = summary["A"]["median_tokens_per_s"] / summary[other]["median_tokens_per_s"]

    print(f"Generation speed, {args.preset} {args.dtype}, batch 1, {args.prompt_tokens} prompt + "
          f"{args.new_tokens} new tokens, median of {args.rounds} rounds:")
    print_table(summary, args.only)
    for key, value in ratios.items():
        print(f"{key} (new tokens/s): {value:.2f}x")

    # 4. The JSON results file.
    results = {
        "benchmark": "generation",
        "environment": {"torch": torch.__version__, "threads": args.threads, "cpu": cpu_model(),
                        "cores_available": available_cores(), "python": platform.python_version(),
                        "platform": platform.platform()},
        "settings": {"preset": args.preset, "dtype": args.dtype, "batch_size": 1, "decoding": "greedy",
                     "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                     "rounds": args.rounds, "implementations": args.only, "seed": args.seed,
                     "warmup_tokens": WARMUP_TOKENS},
        "check": {"passed": True, **{k: v for k, v in check.items() if k != "mismatches"}},
        "summary": summary,
        "ratios": ratios,
        "trials": trials,
    }
    if "C" in args.only:
        import transformers
        results["environment"]["transformers"] = transformers.__version__
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 3; default 5)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length (default 32)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--preset", default="gpt2", help="model preset (default gpt2; gpt-micro for a quick run)")
    p.add_argument("--only", default="A,B,C", help="comma-separated subset of A,B,C (default all)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: available cores)")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights and the prompt")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    # Internal: what the child processes are started with.
    p.add_argument("--trial", choices=sorted(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    args.only = [n.strip().upper() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in IMPLEMENTATIONS]
    if unknown or not args.only:
        p.error(f"--only takes a comma-separated subset of {','.join(IMPLEMENTATIONS)}, got {unknown or 'nothing'}")
    args.only = [n for n in IMPLEMENTATIONS if n in args.only]  # keep the A B C order
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (a median of fewer trials says little)")
    if args.new_tokens < 1 or args.prompt_tokens < 1:
        p.error("--new-tokens and --prompt-tokens must be positive")
    from llm_from_scratch.model.config import preset_config

    try:
        context_length = preset_config(args.preset).context_length
    except ValueError as err:
        p.error(str(err))
    if args.prompt_tokens + args.new_tokens > context_length:
        # Past the context window our generate slides it (recomputing from scratch) while HF
        # would fail: keep to the regime where all three do the same work.
        p.error(f"--prompt-tokens + --new-tokens must fit in the {args.preset} context of "
                f"{context_length} tokens")
    if args.threads is None:
        args.threads = available_cores()
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.trial or args.check:
        if args.check or args.trial == "C":  # A and B never import transformers (nor pay its memory)
            import transformers
            transformers.logging.set_verbosity_error()  # keep the child's stdout to its JSON line
        result = run_check(args) if args.check else run_trial(args)
        print(json.dumps(result))
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
