"""How fast can this machine read memory? The bound on batch-1 decoding speed.

What is measured
----------------
At batch size 1 a decoding step multiplies one token's vector by every weight matrix, so it
must read every weight from memory once per token, and does little arithmetic per byte. Its
speed is therefore bounded by the memory bandwidth:

    ms/token >= model bytes / (bytes read per second)

Two plain PyTorch operations on a buffer of --size-mib (default 1024 MiB, far larger than any
CPU cache), with 2 threads (or --threads) and with 1 thread:

* ``copy``: ``dst.copy_(src)`` on fp32 tensors: reads the buffer once and writes it once. We
  report the bytes READ per second (the buffer's size / time); the bytes moved are twice that.
* ``sum``: ``src.sum()``: reads the buffer once and writes nothing, the access pattern of a
  decode step (weights read, tiny outputs). Usually the higher of the two.

Each is timed --repeats times (default 7) after one untimed warm-up (which also faults the
pages in); we keep the BEST time, the bandwidth the hardware can give when nothing interferes
(a median would mostly measure the other processes on a shared machine; both are printed).

Then, for each model size given (--model-bytes, and the weights' bytes of every variant in the
JSON files of bench_generation.py given with --from-generation), the lower bound on ms per
token of a batch-1 decode step that reads every weight once at the best read bandwidth, and
the tokens/s it allows. A real step also reads the KV cache and writes activations, so
reaching 70-80% of this bound is about as good as it gets.

Run it
------
    .venv/bin/python benchmarks/bench_memory_bandwidth.py
    .venv/bin/python benchmarks/bench_memory_bandwidth.py --model-bytes 497759232,269e6 \\
        --from-generation benchmarks/results/generation.json benchmarks/results/generation-llama.json

Options: --size-mib, --repeats, --threads (the multi-thread count; default: available cores),
--model-bytes (comma-separated), --from-generation (JSON files), --out (JSON; default
benchmarks/results/memory_bandwidth.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from harness import available_cores, cpu_description, load_average, write_results

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "memory_bandwidth.json"
#: The parameters of GPT-2 124M (tied head) and SmolLM2-135M in fp32, for when no size is given.
DEFAULT_MODELS = {"gpt2-124M fp32": 124_439_808 * 4, "smollm2-135M fp32": 134_515_008 * 4}


def time_op(op, repeats: int) -> list[float]:
    op()  # warm-up: faults the pages in, wakes the threads
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        op()
        times.append(time.perf_counter() - start)
    return times


def measure(size_bytes: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    n = size_bytes // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    results = {}
    for name, op in (("copy", lambda: dst.copy_(src)), ("sum", lambda: src.sum())):
        times = time_op(op, repeats)
        results[name] = {"best_s": min(times), "median_s": statistics.median(times),
                         "read_gb_per_s": size_bytes / min(times) / 1e9,
                         "median_read_gb_per_s": size_bytes / statistics.median(times) / 1e9}
    del src, dst
    return results


def model_sizes(args) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for i, value in enumerate(v for v in args.model_bytes.split(",") if v.strip()):
        sizes[f"--model-bytes #{i + 1}"] = int(float(value))
    for path in args.from_generation:
        data = json.loads(Path(path).read_text())
        settings = data.get("settings", {})
        model = settings.get("preset", "gpt2") if settings.get("family", "gpt2") == "gpt2" else "smollm2"
        for variant, s in data.get("summary", {}).items():
            if s.get("weights_bytes"):
                sizes[f"{model} {variant}"] = s["weights_bytes"]
    return sizes or dict(DEFAULT_MODELS)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=1024, help="buffer size in MiB (default 1024)")
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions, the best is kept (default 7)")
    p.add_argument("--threads", type=int, default=None, help="the multi-thread count (default: available cores)")
    p.add_argument("--model-bytes", default="", help="comma-separated model sizes in bytes (e.g. 497759232,269e6)")
    p.add_argument("--from-generation", nargs="*", default=[],
                   help="bench_generation.py JSON files: their variants' weights bytes")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    threads = args.threads or available_cores()
    size = args.size_mib * 1024 * 1024

    load = load_average()
    print(f"torch {torch.__version__}, CPU: {cpu_description()} ({available_cores()} cores available), "
          f"Python {platform.python_version()}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"buffer {args.size_mib} MiB fp32, best of {args.repeats} after a warm-up\n")

    counts = sorted({threads, 1}, reverse=True)
    runs = {t: measure(size, args.repeats, t) for t in counts}
    header = f"{'threads':>7} {'operation':<28} {'best GB/s read':>14} {'median GB/s':>11} {'best ms':>8}"
    print(header)
    print("-" * len(header))
    for t in counts:
        for name, what in (("copy", "copy (read + write)"), ("sum", "sum (read only)")):
            r = runs[t][name]
            print(f"{t:>7} {what:<28} {r['read_gb_per_s']:>14.2f} {r['median_read_gb_per_s']:>11.2f} "
                  f"{1000 * r['best_s']:>8.1f}")
    best_read = max(r["read_gb_per_s"] for run in runs.values() for r in run.values())
    single = max(r["read_gb_per_s"] for r in runs[1].values())
    print(f"\nbest read bandwidth: {best_read:.2f} GB/s ({counts[0]} threads: "
          f"{max(r['read_gb_per_s'] for r in runs[counts[0]].values()):.2f}; 1 thread: {single:.2f})")

    sizes = model_sizes(args)
    bounds = {}
    print(f"\nLower bound of a batch-1 decode step that reads every weight once at {best_read:.2f} GB/s:")
    header = f"{'model':<34} {'weights MB':>10} {'>= ms/token':>11} {'<= tok/s':>9}"
    print(header)
    print("-" * len(header))
    for name, nbytes in sizes.items():
        ms = nbytes / (best_read * 1e9) * 1000
        bounds[name] = {"bytes": nbytes, "min_ms_per_token": ms, "max_tokens_per_s": 1000 / ms}
        print(f"{name:<34} {nbytes / 1e6:>10.0f} {ms:>11.2f} {1000 / ms:>9.1f}")
    write_results(args.out, "memory_bandwidth", load, {
        "settings": {"size_bytes": size, "repeats": args.repeats, "threads": counts},
        "results": {str(t): r for t, r in runs.items()},
        "best_read_gb_per_s": best_read, "decode_bounds": bounds})


if __name__ == "__main__":
    main()
