"""How much does batching buy a server? `llmfs serve` batched vs one request at a time, under load.

What is measured
----------------
The same model (default SmolLM2-135M-Instruct) served by `llmfs serve` in two configurations:

    A  batched          --max_batch_size 16  (concurrent requests decode together, new ones join)
    B  one at a time    --max_batch_size 1   (requests wait in the queue and run one after the other)

K streaming clients (default 1, 4 and 16) each send their share of R requests (default 16 per
trial) to ``POST /v1/chat/completions`` with ``"stream": true``, greedy, ``max_tokens`` N
(default 48), one after the other. We report:

* aggregate tokens/s: all generated tokens (the servers' usage counts) / wall time of the trial;
* time to first token (TTFT): from sending a request to receiving its first text, p50 and p95;
* latency: from sending a request to the end of its stream, p50 and p95;
* the server's peak resident memory (Linux VmHWM of the server process, read just before it is
  stopped: model loading, the warm-up and the whole load included).

The served model is loaded as ``load_model(..., dtype=--dtype, quantize=--quantize)``: fp32 or
bf16 weights and activations, and optionally int8/int4 weight-only quantization (for SmolLM2 the
GGUF's 4-bit blocks go straight into the quantized layers). Compare configurations by running
the script once per setting (e.g. ``--quantize none`` then ``--quantize int8``).

How it is measured (the project's rules for benchmarks, see README.md)
----------------------------------------------------------------------
* Fresh server process per trial: this script starts ``llmfs serve`` (through
  ``llm_from_scratch.cli.serve``, exactly the command's code) on a free loopback port, waits for
  /health, sends one warm-up request, runs the load, reads the server's peak memory and stops it.
  The clients run in this (parent) process with asyncio + httpx: they are light, but on a
  2-core machine they do take some CPU from the server.
* Interleaved rounds: for each round, for each client count, A then B (default 3 rounds).
* Medians over the rounds of every number, and the ratios A/B.
* Correctness first: before timing, the same 4 prompts go to an A server all at once and to a B
  server one by one; greedy answers must be identical, else the script stops (with --quantize or
  bf16 they must agree at first: bf16 rounding may turn a text later; see `run_check`).

Run it
------
    .venv/bin/python benchmarks/bench_serving.py                                 # SmolLM2, 3 rounds
    .venv/bin/python benchmarks/bench_serving.py --clients 1,4 --requests 8 --new-tokens 32
    .venv/bin/python benchmarks/bench_serving.py --quantize int8 --clients 1,16      # int8 weights
    .venv/bin/python benchmarks/bench_serving.py --checkpoint checkpoints/gpt-micro/best_model.pt

Options: --model / --checkpoint (what to serve), --rounds, --clients, --requests (per trial),
--new-tokens, --batch-size (A's max_batch_size, default 16), --dtype fp32|bf16, --quantize
none|int8|int4 (how the server loads the model), --threads (the server's torch threads; default:
torch's choice), --out (JSON; default benchmarks/results/serving.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import available_cores, cpu_description, load_average, write_results

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serving.json"
PROMPTS = [
    "Explain how a bicycle works.", "Write a short story about a lighthouse keeper.",
    "Why is the sky blue?", "Describe the water cycle.", "Give some tips for learning to cook.",
    "What are the planets of the solar system?", "Explain what a neural network is.",
    "Write a poem about autumn.", "How do vaccines work?", "Describe a typical day of a farmer.",
    "What is photosynthesis?", "Give advice for a job interview.", "Explain how a computer stores numbers.",
    "Write a letter to a friend about a trip to the sea.", "How does a refrigerator keep food cold?",
    "What makes a good book?",
]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ----------------------------------------------------------------------------------------------
# The server (a child process)
# ----------------------------------------------------------------------------------------------

def serve_main(args) -> None:
    """Run `llmfs serve` with this trial's settings (the command's own code)."""
    from llm_from_scratch.cli import serve

    parser = argparse.ArgumentParser(prog="llmfs")
    subparsers = parser.add_subparsers()
    serve.add_parser(subparsers)
    argv = ["serve", "--port", str(args.port), "--max_batch_size", str(args.serve_batch_size),
            "--max_tokens", str(args.new_tokens), "--max_requests", "256", "--log_level", "warning",
            "--served_model_name", "bench"]
    argv += ["--checkpoint", args.checkpoint] if args.checkpoint else ["--model", args.model]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    serve_flags = {flag for action in subparsers.choices["serve"]._actions for flag in action.option_strings}
    if {"--dtype", "--quantize"} <= serve_flags:
        argv += ["--dtype", args.dtype, "--quantize", args.quantize]
    elif (args.dtype, args.quantize) != ("fp32", "none"):
        # An `llmfs serve` without these flags: load the model ourselves, the same way they would.
        from llm_from_scratch.loading import load_model

        def load_from_args(parsed, device):
            return load_model(model=parsed.model, checkpoint=parsed.checkpoint, device=device,
                              dtype=args.dtype, quantize=args.quantize)
        serve.load_from_args = load_from_args
        print("note: `llmfs serve` has no --dtype/--quantize; the benchmark passes them to load_model itself",
              file=sys.stderr)
    sys.exit(serve.run(parser.parse_args(argv)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A fresh `llmfs serve` process for one trial."""

    def __init__(self, args, batch_size: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(self.port),
               "--serve-batch-size", str(batch_size), "--new-tokens", str(args.new_tokens)]
        cmd += ["--checkpoint", args.checkpoint] if args.checkpoint else ["--model", args.model]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cmd += ["--dtype", args.dtype, "--quantize", args.quantize]
        self.log = open(os.devnull, "w") if not args.verbose else None
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT if self.log else None)

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with code {self.process.returncode} (run with --verbose)")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not start in time")

    def peak_rss_mb(self) -> float | None:
        try:
            with open(f"/proc/{self.process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.log:
            self.log.close()


# ----------------------------------------------------------------------------------------------
# The clients (in this process)
# ----------------------------------------------------------------------------------------------

async def one_request(client, prompt: str, new_tokens: int) -> dict:
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": new_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft, text, tokens = None, [], None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise SystemExit(f"HTTP {response.status_code}: {await response.aread()}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    text.append(piece)
    return {"ttft_s": ttft, "latency_s": time.perf_counter() - start, "tokens": tokens, "text": "".join(text),
            "prompt": prompt}


async def run_load(url: str, clients: int, per_client: int, new_tokens: int, offset: int = 0) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def session(c: int) -> list[dict]:
            return [await one_request(client, PROMPTS[(offset + c * per_client + j) % len(PROMPTS)], new_tokens)
                    for j in range(per_client)]
        start = time.perf_counter()
        results = await asyncio.gather(*(session(c) for c in range(clients)))
        wall = time.perf_counter() - start
    requests = [r for rs in results for r in rs]
    tokens = sum(r["tokens"] for r in requests)
    ttfts = [r["ttft_s"] for r in requests if r["ttft_s"] is not None]
    latencies = [r["latency_s"] for r in requests]
    return {"wall_s": wall, "requests": len(requests), "tokens": tokens, "tokens_per_s": tokens / wall,
            "ttft_p50_s": percentile(ttfts, 50), "ttft_p95_s": percentile(ttfts, 95),
            "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
            "texts": {r["prompt"]: r["text"] for r in requests}}


# ----------------------------------------------------------------------------------------------
# The parent
# ----------------------------------------------------------------------------------------------

def run_check(args) -> None:
    """Greedy answers of A (4 requests at once) and B (one by one) must be the same: exactly for
    fp32 weights. A quantized or bf16 model computes in bf16 somewhere (the int8/int4 kernels take
    bf16 inputs), so a batched row rounds differently from the same row alone and a greedy text
    may take another turn after a while: there the check reports how long the answers agree and
    stops only if one differs from its very first word."""
    answers = {}
    for name, batch, clients in (("A", args.batch_size, 4), ("B", 1, 1)):
        server = Server(args, batch)
        try:
            server.wait_ready()
            per_client = 4 // clients
            answers[name] = asyncio.run(run_load(server.url, clients, per_client, args.new_tokens))["texts"]
        finally:
            server.stop()
    exact = args.quantize == "none" and args.dtype == "fp32"
    if answers["A"] != answers["B"]:
        for prompt in answers["B"]:
            a, b = answers["A"].get(prompt) or "", answers["B"][prompt]
            if a != b:
                same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                print(f"{'MISMATCH' if exact else 'differs'} on {prompt!r} after {same} equal characters:\n"
                      f"  A: {a!r}\n  B: {b!r}", file=sys.stderr)
                if not exact and a.split()[:1] != b.split()[:1]:
                    raise SystemExit("correctness check FAILED: batched and one-at-a-time answers differ at once")
        if exact:
            raise SystemExit("correctness check FAILED: batched and one-at-a-time answers differ")
        print("check: batched and one-at-a-time greedy answers agree at first, then part (bf16 rounding)")
        return
    print(f"check: 4 greedy answers identical with A (batched, 4 at once) and B (one at a time)")


def main_parent(args) -> None:
    import torch

    what = args.checkpoint or args.model
    load = load_average()
    print(f"torch {torch.__version__}, CPU: {cpu_description()} ({available_cores()} cores available), "
          f"Python {platform.python_version()}, server threads: {args.threads or 'torch default'}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"settings: model={what} dtype={args.dtype} quantize={args.quantize} new_tokens={args.new_tokens} requests/trial={args.requests} "
          f"clients={args.clients} rounds={args.rounds} A=max_batch_size {args.batch_size}, B=max_batch_size 1")
    run_check(args)
    impls = {"A": f"batched (max_batch_size {args.batch_size})", "B": "one at a time (max_batch_size 1)"}
    trials = []
    for round_idx in range(1, args.rounds + 1):
        for clients in args.clients:
            for name, batch in (("A", args.batch_size), ("B", 1)):
                load = os.getloadavg()[0]
                server = Server(args, batch)
                try:
                    server.wait_ready()
                    asyncio.run(run_load(server.url, 1, 1, 4))  # warm-up
                    per_client = max(1, args.requests // clients)
                    result = asyncio.run(run_load(server.url, clients, per_client, args.new_tokens,
                                                  offset=round_idx))
                    result["server_peak_rss_mb"] = server.peak_rss_mb()
                finally:
                    server.stop()
                result.pop("texts")
                result.update(impl=name, clients=clients, round=round_idx, load_avg_1min_before=load)
                trials.append(result)
                print(f"  round {round_idx}/{args.rounds}  clients {clients:>2}  {name}  "
                      f"{result['tokens_per_s']:7.1f} tok/s  TTFT p50 {result['ttft_p50_s']:6.2f} s  "
                      f"latency p95 {result['latency_p95_s']:6.2f} s  (load avg before: {load:.1f})", flush=True)
    print()

    keys = ["tokens_per_s", "ttft_p50_s", "ttft_p95_s", "latency_p50_s", "latency_p95_s", "server_peak_rss_mb"]
    summary = {}
    for clients in args.clients:
        for name in impls:
            mine = [t for t in trials if t["impl"] == name and t["clients"] == clients]
            summary[f"{clients}/{name}"] = {
                "impl": name, "clients": clients, "what": impls[name],
                **{f"median_{k}": statistics.median(t[k] for t in mine if t[k] is not None) for k in keys},
                "min_tokens_per_s": min(t["tokens_per_s"] for t in mine),
                "max_tokens_per_s": max(t["tokens_per_s"] for t in mine),
                "requests": mine[0]["requests"], "tokens": statistics.median(t["tokens"] for t in mine)}
    ratios = {f"{c} clients A/B tokens/s": summary[f"{c}/A"]["median_tokens_per_s"] /
              summary[f"{c}/B"]["median_tokens_per_s"] for c in args.clients}

    print(f"Serving {what} ({args.dtype}, quantize {args.quantize}), {args.new_tokens} new tokens per request (greedy, streaming), "
          f"{args.requests} requests per trial, median of {args.rounds} rounds:")
    header = (f"{'clients':>7} {'impl':<4} {'what':<34} {'tok/s':>7} {'min..max':>13} {'TTFT p50':>9} "
              f"{'TTFT p95':>9} {'lat p50':>8} {'lat p95':>8} {'peak RSS MB':>11}")
    print(header)
    print("-" * len(header))
    for key, s in summary.items():
        spread = f"{s['min_tokens_per_s']:.1f}..{s['max_tokens_per_s']:.1f}"
        print(f"{s['clients']:>7} {s['impl']:<4} {s['what']:<34} {s['median_tokens_per_s']:>7.1f} {spread:>13} "
              f"{s['median_ttft_p50_s']:>8.2f}s {s['median_ttft_p95_s']:>8.2f}s {s['median_latency_p50_s']:>7.2f}s "
              f"{s['median_latency_p95_s']:>7.2f}s {s['median_server_peak_rss_mb']:>11.0f}")
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}x")
    peaks = [t["server_peak_rss_mb"] for t in trials if t["server_peak_rss_mb"] is not None]
    if peaks:
        print(f"server peak RSS (VmHWM) over all trials: median {statistics.median(peaks):.0f} MB, "
              f"max {max(peaks):.0f} MB")
    write_results(args.out, "serving", load, {
        "settings": {"model": what, "dtype": args.dtype, "quantize": args.quantize, "new_tokens": args.new_tokens,
                     "requests_per_trial": args.requests, "clients": args.clients, "rounds": args.rounds,
                     "batch_size_A": args.batch_size, "endpoint": "/v1/chat/completions stream, greedy"},
        "check": {"passed": True}, "summary": summary, "ratios": ratios, "trials": trials},
        server_threads=args.threads)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="what `llmfs serve --model` gets")
    p.add_argument("--checkpoint", default=None, help="serve a checkpoint of ours instead")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3; default 3)")
    p.add_argument("--clients", default="1,4,16", help="concurrent streaming clients, comma-separated")
    p.add_argument("--requests", type=int, default=16, help="requests per trial, shared by the clients")
    p.add_argument("--new-tokens", type=int, default=48, help="max_tokens of every request (default 48)")
    p.add_argument("--batch-size", type=int, default=16, help="A's max_batch_size (default 16)")
    p.add_argument("--threads", type=int, default=None, help="the server's torch threads (default: torch's)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the served weights' float dtype")
    from llm_from_scratch.quantize import QUANTIZE_MODES
    p.add_argument("--quantize", choices=list(QUANTIZE_MODES), default="none",
                   help="weight-only quantization of the served model (default none)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--verbose", action="store_true", help="show the servers' output")
    # internal: the server child
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--serve-batch-size", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.serve:
        if args.rounds < 3:
            p.error("--rounds must be at least 3 (a median of fewer trials says little)")
        args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
        if not args.clients or min(args.clients) < 1 or args.requests < 1 or args.new_tokens < 1:
            p.error("--clients, --requests and --new-tokens must be positive")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        serve_main(arguments)
    else:
        main_parent(arguments)
