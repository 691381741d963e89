"""How fast does our GPT train on the CPU? A benchmark of one optimizer step, ours vs transformers.

What is measured
----------------
One training step = forward + loss + backward + gradient clipping (max norm 1.0) + AdamW step
(+ zero_grad), on the same batch of random token ids every step, for these variants:

    hf-fp32            transformers GPT2LMHeadModel, fp32, `labels=` loss, torch.optim.AdamW()
                       with its default settings: THE REFERENCE every ratio is computed against
    hf-bf16            the same under torch.autocast("cpu", dtype=torch.bfloat16)
    ours-fp32          GPTModel + training.optim.build_optimizer (fused AdamW, weight decay 0.1
                       on matrices) + training.losses.calc_loss_batch, fp32
    ours-bf16          the same under bf16 autocast, as GPTTrainer(precision="bf16") does it
    ours-bf16-compile  the same + torch.compile(model), as GPTTrainer(compile=True) does it
    ours-default       what `GPTTrainer` / `llmfs train` do by default: precision "auto" (fp32
                       on CPUs without AMX, bf16 with it), the fused, chunked output head +
                       cross-entropy (`model(x, targets=y)`, model/linear_cross_entropy.py), a
                       sparse gradient for the tied token embedding, and glibc malloc told to
                       keep freed memory (training/cpu_speed.py), so big tensors stop
                       page-faulting every step

More prototypes are selectable with --only (not run by default): ours-fp32-compile,
ours-fp32-fusedce, ours-fp32-fusedce-sparse, ours-fp32-malloc, ours-bf16-fast, ours-default-compile,
hf-fp32-malloc.

Two configurations (--configs): "tiny" (4 layers, 4 heads, width 128, context 64, batch 12) and
"124m" (GPT-2 small: 12 layers, 12 heads, width 768, context 256, batch 4; qkv bias and tied
embeddings, like `GPTModel.from_preset("gpt2", context_length=256, drop_rate=0.0)`), both with
the GPT-2 vocabulary (50257) and dropout 0. The transformers model gets exactly our initial
weights (`model.hf_gpt2.state_dict_to_hf`), so both start from the same point.

How it is measured (the project's rules for benchmarks)
-------------------------------------------------------
* Fresh process per trial (``--trial VARIANT --config NAME``): build, warm up (2-3 steps;
  torch.compile compiles during the first one: its time is reported as "first step"), then time
  N steps one by one (``time.perf_counter``; the CPU is synchronous) and take the median step.
  tokens/s = batch * context / median step time. Each step is also split into its phases
  (forward+loss, backward, clip, optimizer step + zero_grad): the "opt" column compares our
  fused AdamW with transformers' default (for-loop) AdamW inside the same trials.
* Interleaved rounds (all variants of a config, then again, ...; default 3 rounds), medians.
* A quiet machine: before each trial the parent waits (up to --max-wait seconds, polling) until
  the 1-minute load average is below --max-load, and records it. The child also measures how
  much CPU *other* processes used while it was timing (/proc/stat minus its own CPU time); a
  trial that shared the CPU with more than --max-foreign cores is run again (--retries).
* Correctness first: a ``--check`` child computes the loss and all gradients of one step with
  ours-fp32, transformers and every selected non-compiled variant from the same weights; fp32
  variants must agree (the script stops otherwise), bf16 differences are reported.
* A loss-curve check: from the same initial weights and the same fixed sequence of batches of
  real text (the built-in tiny stories, GPT-2 tokenizer), ours-fp32 and the selected variants of
  ours each train for --loss-steps steps at lr 6e-4; the script reports the largest |loss
  difference| to fp32 next to a noise scale (ours-fp32 from another random initialization).

Run it
------
    .venv/bin/python benchmarks/bench_training.py                       # both configs, 3 rounds (~25 min)
    .venv/bin/python benchmarks/bench_training.py --configs tiny        # quick (~8 min)
    .venv/bin/python benchmarks/bench_training.py --configs 124m --only hf-fp32,ours-fp32,ours-default

Options: --configs, --only, --rounds, --steps / --warmup (override the per-config defaults),
--max-timed-seconds, --threads, --seed, --max-load, --max-wait, --max-foreign, --retries,
--loss-steps, --loss-config, --no-loss-check, --no-check, --out (default
benchmarks/results/training.json). See benchmarks/README.md for the findings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import available_cores, cpu_model, run_child

from llm_from_scratch.model.linear_cross_entropy import DEFAULT_CHUNK
from llm_from_scratch.training.cpu_speed import keep_freed_memory
from llm_from_scratch.training.precision import choose_precision, model_step_timer

# what each variant is: impl, precision, torch.compile, and the prototype options
#   fused_ce: model(x, targets=y) (linear_cross_entropy) instead of out_head + calc_loss_batch
#   sparse_emb: the tied token embedding returns a sparse gradient (added in place to the head's)
#   malloc: training.cpu_speed.keep_freed_memory() before anything is allocated
#   precision "auto": training.precision.choose_precision on this model's step, as GPTTrainer resolves it
VARIANTS: dict[str, dict] = {
    "hf-fp32": dict(impl="hf", precision="fp32", what="transformers fp32"),
    "hf-bf16": dict(impl="hf", precision="bf16", what="transformers bf16 autocast"),
    "ours-fp32": dict(impl="ours", precision="fp32", what="ours fp32"),
    "ours-bf16": dict(impl="ours", precision="bf16", what="ours bf16 autocast"),
    "ours-bf16-compile": dict(impl="ours", precision="bf16", compile=True, what="ours bf16 + compile"),
    "ours-default": dict(impl="ours", precision="auto", fused_ce=True, sparse_emb=True, malloc=True,
                         what="ours, GPTTrainer's defaults"),
    # prototypes, not in the default run
    "ours-fp32-compile": dict(impl="ours", precision="fp32", compile=True, what="ours fp32 + compile"),
    "ours-fp32-fusedce": dict(impl="ours", precision="fp32", fused_ce=True, what="ours fp32 fusedCE"),
    "ours-fp32-fusedce-sparse": dict(impl="ours", precision="fp32", fused_ce=True, sparse_emb=True,
                                     what="ours fp32 fusedCE+sparse"),
    "ours-fp32-malloc": dict(impl="ours", precision="fp32", malloc=True, what="ours fp32 + malloc"),
    "ours-bf16-fast": dict(impl="ours", precision="bf16", fused_ce=True, sparse_emb=True, malloc=True,
                           what="ours bf16 fusedCE+sparse+malloc"),
    "ours-default-compile": dict(impl="ours", precision="auto", fused_ce=True, malloc=True, compile=True,
                                 what="ours defaults + compile"),
    "hf-fp32-malloc": dict(impl="hf", precision="fp32", malloc=True, what="transformers fp32 + malloc"),
}
DEFAULT_VARIANTS = ["hf-fp32", "hf-bf16", "ours-fp32", "ours-bf16", "ours-bf16-compile", "ours-default"]
REFERENCE = "hf-fp32"

CONFIGS: dict[str, dict] = {
    # model settings for GPTModel.from_preset("gpt2", ...), batch size, default warm-up and timed steps
    "tiny": dict(model=dict(context_length=64, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.0),
                 batch_size=12, warmup=3, steps=30, max_timed_seconds=8.0),
    "124m": dict(model=dict(context_length=256, drop_rate=0.0), batch_size=4, warmup=2, steps=5,
                 max_timed_seconds=20.0),
}
LR = 6e-4
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "training.json"


# ----------------------------------------------------------------------------------------------
# Building a variant (in the child processes)
# ----------------------------------------------------------------------------------------------

def build_ours(config: str, seed: int):
    from llm_from_scratch.model.gpt import GPTModel

    torch.manual_seed(seed)
    return GPTModel.from_preset("gpt2", **CONFIGS[config]["model"]).train()


def build_hf(ours):
    """transformers.GPT2LMHeadModel holding exactly `ours`'s weights (tied, like ours)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from llm_from_scratch.model.hf_gpt2 import state_dict_to_hf

    cfg = ours.cfg
    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                        n_layer=cfg.n_layers, n_head=cfg.n_heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with torch.device("meta"):
        hf = GPT2LMHeadModel(hf_cfg)
    hf.load_state_dict(state_dict_to_hf(ours.state_dict()), strict=False, assign=True)
    hf.tie_weights()
    still_empty = [n for n, p in hf.named_parameters() if p.is_meta]
    if still_empty:
        raise SystemExit(f"HF model is missing weights: {still_empty[:3]}")
    return hf.train()


class Runner:
    """One variant ready to train: `loss(x, y)` (under the variant's autocast), `params`, `optimizer`."""

    def __init__(self, variant: str, config: str, seed: int, with_optimizer: bool = True):
        spec = VARIANTS[variant]
        self.variant, self.spec = variant, spec
        ours = build_ours(config, seed)
        self.cfg = ours.cfg
        if spec["impl"] == "hf":
            self.model = build_hf(ours)
            del ours
            self.optimizer = torch.optim.AdamW(self.model.parameters()) if with_optimizer else None

            def loss(x, y):  # shift_labels: the same targets as ours (no internal shift)
                return self.model(x, labels=y, shift_labels=y).loss
        else:
            from llm_from_scratch.training.losses import calc_loss_batch
            from llm_from_scratch.training.optim import build_optimizer

            self.model = ours
            self.optimizer = build_optimizer(ours, LR, WEIGHT_DECAY) if with_optimizer else None
            if spec.get("sparse_emb"):
                if not ours.cfg.tie_weights:
                    raise SystemExit("sparse_emb needs tied embeddings (the head's dense gradient absorbs it)")
                ours.tok_emb.sparse = True
            if spec.get("fused_ce"):
                forward_model = torch.compile(ours) if spec.get("compile") else ours

                def loss(x, y):  # GPTTrainer's fused loss: no (b, T, vocab) logits kept
                    return forward_model(x, targets=y)
            else:
                forward_model = torch.compile(ours) if spec.get("compile") else ours

                def loss(x, y):
                    return calc_loss_batch(x, y, forward_model, "cpu")
        self._loss = loss
        self.params = list({id(p): p for p in self.model.parameters()}.values())

    def resolve_precision(self, x, y) -> str:
        """fp32 or bf16; "auto" is resolved the way GPTTrainer resolves it: by timing a step of
        this very model on this batch (precision.py), cached per CPU and shape."""
        if getattr(self, "precision", None) is None:
            if self.spec["precision"] != "auto":
                self.precision = self.spec["precision"]
            else:
                from llm_from_scratch.training.losses import calc_loss_batch

                def loss(model, x, y):
                    return model(x, targets=y) if self.spec.get("fused_ce") else calc_loss_batch(x, y, model, "cpu")
                timer, shape = model_step_timer(self.model, x, y, loss, f"bench_training {self.variant}")
                choice = choose_precision("auto", torch.device("cpu"), timer, shape)
                print(f"{self.variant}: {choice.describe()}", file=sys.stderr)
                self.precision = choice.name
        return self.precision

    def loss(self, x, y):
        precision = self.resolve_precision(x, y)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            return self._loss(x, y)

    def step(self, x, y) -> tuple[float, list[float]]:
        """One optimizer step; returns the loss and the seconds of its four phases."""
        t0 = time.perf_counter()
        loss = self.loss(x, y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP)
        t3 = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        return loss.item(), [t1 - t0, t2 - t1, t3 - t2, t4 - t3]


def random_batch(config: str, vocab_size: int, seed: int):
    c = CONFIGS[config]
    shape = (c["batch_size"], c["model"]["context_length"])
    generator = torch.Generator().manual_seed(seed + 1)
    return (torch.randint(0, vocab_size, shape, generator=generator),
            torch.randint(0, vocab_size, shape, generator=generator))


# ----------------------------------------------------------------------------------------------
# Measuring (in the child processes)
# ----------------------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc/self/statm), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def cpu_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_trial(args) -> dict:
    variant, config = args.trial, args.config
    spec = VARIANTS[variant]
    malloc_ok = keep_freed_memory() if spec.get("malloc") else None
    runner = Runner(variant, config, args.seed)
    x, y = random_batch(config, runner.cfg.vocab_size, args.seed)
    build_rss = current_rss_mb()  # imports + weights (+ transformers); optimizer states come later
    c = CONFIGS[config]
    warmup = args.warmup if args.warmup is not None else c["warmup"]
    steps = args.steps if args.steps is not None else c["steps"]
    max_timed_seconds = args.max_timed_seconds if args.max_timed_seconds is not None else c["max_timed_seconds"]

    warmup_seconds = []
    for _ in range(warmup):  # first steps: allocations, kernel choices, torch.compile
        start = time.perf_counter()
        runner.step(x, y)
        warmup_seconds.append(time.perf_counter() - start)

    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    busy0, own0, wall0 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    step_seconds, phases, losses = [], [], []
    while len(step_seconds) < steps:
        start = time.perf_counter()
        loss, parts = runner.step(x, y)
        step_seconds.append(time.perf_counter() - start)
        phases.append(parts)
        losses.append(loss)
        if len(step_seconds) >= 3 and time.perf_counter() - wall0 > max_timed_seconds:
            break  # a slow variant: 3 steps are enough for a median, keep the run short
    busy1, own1, wall1 = cpu_busy_seconds(), time.process_time(), time.perf_counter()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0

    median_step = statistics.median(step_seconds)
    tokens = c["batch_size"] * c["model"]["context_length"]
    foreign = None if busy0 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)
    return {
        "variant": variant, "config": config, "tokens_per_step": tokens, "timed_steps": len(step_seconds),
        "step_seconds": step_seconds, "median_step_s": median_step, "tokens_per_s": tokens / median_step,
        "phases_median_s": dict(zip(["forward_loss", "backward", "clip", "optimizer"],
                                    [statistics.median(p[i] for p in phases) for i in range(4)])),
        "warmup_seconds": warmup_seconds, "first_step_s": warmup_seconds[0] if warmup_seconds else None,
        "loss_last": losses[-1], "minor_page_faults_per_step": faults / len(step_seconds),
        "foreign_cpu_cores": foreign, "own_cpu_cores": (own1 - own0) / (wall1 - wall0),
        "build_rss_mb": build_rss, "peak_rss_mb": peak_rss_mb(),
        "malloc_tuned": malloc_ok, "threads": torch.get_num_threads(),
    }


def run_check(args) -> dict:
    """Loss and gradients of one step (before any update) for every selected non-compiled
    variant and ours-fp32, from the same weights; everything compared with ours-fp32."""
    from llm_from_scratch.model.hf_gpt2 import state_dict_to_hf

    names = ["ours-fp32"] + [v for v in args.only if v != "ours-fp32" and not VARIANTS[v].get("compile")]
    results, ref_loss, ref_grads = {}, None, None
    for name in names:
        runner = Runner(name, args.config, args.seed, with_optimizer=False)
        x, y = random_batch(args.config, runner.cfg.vocab_size, args.seed)
        loss = runner.loss(x, y)
        loss.backward()
        if VARIANTS[name]["impl"] == "hf":
            grads = {n: p.grad for n, p in runner.model.named_parameters()}
        else:
            ours_grads = {n: p.grad.to_dense() for n, p in runner.model.named_parameters() if p.grad is not None}
            layouts = {str(p.grad.layout) for p in runner.params}
            if layouts != {"torch.strided"}:
                raise SystemExit(f"{name}: a parameter gradient is not dense ({layouts}): fused AdamW needs dense")
            grads = {n: g for n, g in state_dict_to_hf(ours_grads).items()}
        grads = {n.removeprefix("transformer."): g.float() for n, g in grads.items() if "lm_head" not in n}
        if ref_grads is None:
            ref_loss, ref_grads = loss.item(), grads
        missing = set(ref_grads) ^ set(grads)
        if missing:
            raise SystemExit(f"check: {name} has different parameters than ours-fp32: {sorted(missing)[:4]}")
        # worst gradient difference, relative to the size of that gradient
        worst = max((grads[n] - ref_grads[n]).abs().max().item() / max(ref_grads[n].abs().max().item(), 1e-12)
                    for n in ref_grads)
        results[name] = {"loss": loss.item(), "loss_diff": abs(loss.item() - ref_loss), "max_rel_grad_diff": worst,
                         "precision": runner.precision}
        del runner
    return results


def text_batches(config: str, steps: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` fixed batches of real text: non-overlapping windows of the tiny stories."""
    from llm_from_scratch.data.tiny_stories import tiny_stories
    from llm_from_scratch.tokenizers import get_tokenizer

    c = CONFIGS[config]
    ctx, bs = c["model"]["context_length"], c["batch_size"]
    ids = torch.tensor(get_tokenizer("gpt2").encode(tiny_stories(num_stories=2000)))
    n_windows = (len(ids) - 1) // ctx
    inputs = ids[:n_windows * ctx].view(n_windows, ctx)
    targets = ids[1:n_windows * ctx + 1].view(n_windows, ctx)
    order = torch.randperm(n_windows, generator=torch.Generator().manual_seed(seed + 2))
    if steps * bs > n_windows:
        order = order.repeat(steps * bs // n_windows + 1)
    return [(inputs[order[i * bs:(i + 1) * bs]], targets[order[i * bs:(i + 1) * bs]]) for i in range(steps)]


def run_loss_check(args) -> dict:
    variant = args.loss_check_child
    if VARIANTS[variant].get("malloc"):
        keep_freed_memory()
    runner = Runner(variant, args.config, args.seed)
    batches = text_batches(args.config, args.loss_steps, args.seed)
    losses = [runner.step(x, y)[0] for x, y in batches]
    return {"variant": variant, "config": args.config, "init_seed": args.seed, "losses": losses}


# ----------------------------------------------------------------------------------------------
# The parent: launch children, interleave, summarize
# ----------------------------------------------------------------------------------------------

def child_command(args, *extra: str) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *extra, "--threads", str(args.threads),
           "--seed", str(args.seed), "--only", ",".join(args.only),
           "--loss-steps", str(args.loss_steps)]
    if args.max_timed_seconds is not None:
        cmd += ["--max-timed-seconds", str(args.max_timed_seconds)]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    if args.warmup is not None:
        cmd += ["--warmup", str(args.warmup)]
    return cmd


def own_load_share(history: list[dict]) -> float:
    """What our own earlier children still add to the 1-minute load average.

    Linux's load average is an exponential moving average of the number of running threads
    with a 60 s time constant: a child that kept c cores busy from time s to time e still adds
    c * (exp(-(now - e)/60) - exp(-(now - s)/60)). Without this correction every 124m trial
    would wait ~30 s for the load its own predecessors left behind.
    """
    now = time.perf_counter()
    return sum(h["cores"] * (math.exp(-(now - h["ended"]) / 60) - math.exp(-(now - h["started"]) / 60))
               for h in history)


def wait_for_quiet(max_load: float, max_foreign: float, max_wait: float, history: list[dict]) -> dict:
    """Poll until the machine is quiet (or max_wait seconds passed): the 1-minute load average,
    less our own earlier children's share, is below max_load, AND other processes used less than
    max_foreign cores over the last second (no child of ours runs now, so all that is theirs)."""
    start = time.perf_counter()
    while True:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        own = own_load_share(history)
        busy0 = cpu_busy_seconds()
        time.sleep(1.0)
        busy1 = cpu_busy_seconds()
        others = None if busy0 is None else (busy1 - busy0) / 1.0
        quiet = not (load - own >= max_load) and (others is None or others < max_foreign)
        waited = time.perf_counter() - start
        if quiet or waited >= max_wait:
            return {"load_avg_1min_before": load, "own_load_share": own, "cpu_busy_before": others,
                    "waited_s": waited, "quiet": quiet}
        time.sleep(1.0)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_features() -> dict:
    caps = {}
    with contextlib.suppress(Exception):
        caps["amx_tile"] = bool(torch.cpu._is_amx_tile_supported())
    with contextlib.suppress(Exception):
        caps["avx512_bf16"] = bool(torch.cpu._is_avx512_bf16_supported())
    with contextlib.suppress(Exception):
        caps["capability"] = torch.backends.cpu.get_cpu_capability()
    return caps


def summarize(trials: list[dict], config: str, variants: list[str]) -> dict:
    summary = {}
    for name in variants:
        mine = [t for t in trials if t["variant"] == name and t["config"] == config]
        if not mine:
            continue
        tps = [t["tokens_per_s"] for t in mine]
        build = [t["build_rss_mb"] for t in mine]
        foreign = [t["foreign_cpu_cores"] for t in mine if t["foreign_cpu_cores"] is not None]
        summary[name] = {
            "what": VARIANTS[name]["what"],
            "median_tokens_per_s": statistics.median(tps), "min_tokens_per_s": min(tps), "max_tokens_per_s": max(tps),
            "median_step_s": statistics.median(t["median_step_s"] for t in mine),
            "median_phases_s": {k: statistics.median(t["phases_median_s"][k] for t in mine)
                                for k in mine[0]["phases_median_s"]},
            "median_first_step_s": statistics.median(t["first_step_s"] for t in mine),
            "max_first_step_s": max(t["first_step_s"] for t in mine),
            "median_peak_rss_mb": statistics.median(t["peak_rss_mb"] for t in mine),
            "median_build_rss_mb": None if None in build else statistics.median(build),
            "median_page_faults_per_step": statistics.median(t["minor_page_faults_per_step"] for t in mine),
            "max_foreign_cpu_cores": max(foreign) if foreign else None,
        }
    ref = summary.get(REFERENCE)
    for name, s in summary.items():
        s["vs_hf_fp32"] = s["median_tokens_per_s"] / ref["median_tokens_per_s"] if ref else None
    return summary


def print_table(summary: dict, config: str) -> None:
    header = (f"{'variant':<24} {'tok/s':>7} {'vs hf-fp32':>10} {'s/step':>7} {'min..max tok/s':>15} "
              f"{'fwd+loss':>8} {'bwd':>6} {'clip':>5} {'opt':>5} {'1st step':>8} {'build RSS':>9} {'peak RSS':>8}")
    print(header)
    print("-" * len(header))
    for name, s in summary.items():
        p = s["median_phases_s"]
        ratio = "n/a" if s["vs_hf_fp32"] is None else f"{s['vs_hf_fp32']:.2f}x"
        spread = f"{s['min_tokens_per_s']:.0f}..{s['max_tokens_per_s']:.0f}"
        build = "n/a" if s["median_build_rss_mb"] is None else f"{s['median_build_rss_mb']:.0f}"
        print(f"{name:<24} {s['median_tokens_per_s']:>7.0f} {ratio:>10} {s['median_step_s']:>7.3f} {spread:>15} "
              f"{p['forward_loss']:>8.3f} {p['backward']:>6.3f} {p['clip']:>5.3f} {p['optimizer']:>5.3f} "
              f"{s['median_first_step_s']:>8.1f} {build:>9} {s['median_peak_rss_mb']:>8.0f}")


def main_parent(args) -> None:
    import transformers

    env_info = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": args.threads,
                "cpu": cpu_model(), "cores_available": available_cores(), "cpu_features": cpu_features(),
                "python": platform.python_version(), "platform": platform.platform()}
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}, "
          f"CPU: {cpu_model()} ({available_cores()} cores available; {env_info['cpu_features']}), "
          f"Python {platform.python_version()}")
    print(f"settings: configs={','.join(args.configs)} variants={','.join(args.only)} rounds={args.rounds} "
          f"lr={LR} weight_decay={WEIGHT_DECAY} (ours; transformers: AdamW defaults) grad_clip={GRAD_CLIP} "
          f"seed={args.seed} max_load={args.max_load} max_wait={args.max_wait}s max_foreign={args.max_foreign}")
    for name in args.configs:
        c = CONFIGS[name]
        print(f"  {name}: {c['model']}, batch {c['batch_size']}, warm-up "
              f"{args.warmup if args.warmup is not None else c['warmup']}, timed steps "
              f"{args.steps if args.steps is not None else c['steps']} (at least 3, stopping after "
              f"{args.max_timed_seconds or c['max_timed_seconds']:g} s)")
    print()

    # torch.compile's caches in a directory of this run: round 1 compiles from scratch ("1st step"
    # is then the cold compile time), later rounds hit the cache as a user's second run would.
    cache_dir = tempfile.mkdtemp(prefix="bench_training_inductor_")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    results = {"benchmark": "training", "environment": env_info,
               "settings": {"configs": {n: CONFIGS[n] for n in args.configs}, "variants": args.only,
                            "rounds": args.rounds, "lr": LR, "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP,
                            "steps_override": args.steps, "warmup_override": args.warmup,
                            "max_timed_seconds": args.max_timed_seconds, "seed": args.seed,
                            "max_load": args.max_load, "max_wait": args.max_wait, "max_foreign": args.max_foreign,
                            "fused_ce_chunk": DEFAULT_CHUNK}}
    try:
        # 1. Correctness: the same loss and gradients from the same weights.
        if args.check:
            check = run_child(child_command(args, "--check-child", "--config", "tiny"), env)
            results["check"] = check
            bad = [n for n, r in check.items() if r["precision"] == "fp32"
                   and (r["loss_diff"] > 1e-4 or r["max_rel_grad_diff"] > 1e-3)]
            print("check (tiny config, one step's loss and gradients vs ours-fp32, same weights):")
            for n, r in check.items():
                print(f"  {n:<26} loss {r['loss']:.6f}  |diff| {r['loss_diff']:.1e}  "
                      f"max relative gradient diff {r['max_rel_grad_diff']:.1e}"
                      + ("" if r["precision"] == "fp32" else "  (bf16: informational)"))
            if bad:
                raise SystemExit(f"correctness check FAILED for {bad}: refusing to time variants that disagree")
            print()

        # 2. Timing: interleaved rounds, fresh process per trial, on a quiet machine.
        trials, discarded, history = [], [], []
        for config in args.configs:
            for round_idx in range(1, args.rounds + 1):
                for name in args.only:
                    for attempt in range(args.retries + 1):
                        quiet = wait_for_quiet(args.max_load, args.max_foreign, args.max_wait, history)
                        started, cpu0 = time.perf_counter(), children_cpu_seconds()
                        result = run_child(child_command(args, "--trial", name, "--config", config), env)
                        ended = time.perf_counter()
                        history.append({"started": started, "ended": ended,
                                        "cores": (children_cpu_seconds() - cpu0) / (ended - started)})
                        result.update(round=round_idx, attempt=attempt, **quiet)
                        load, waited = quiet["load_avg_1min_before"], quiet["waited_s"]
                        foreign = result["foreign_cpu_cores"]
                        busy = foreign is not None and foreign > args.max_foreign
                        print(f"  {config:<4} round {round_idx}/{args.rounds}  {name:<24} "
                              f"{result['tokens_per_s']:7.0f} tok/s  {result['median_step_s']:6.3f} s/step  "
                              f"(load before {load:.2f}, ours {quiet['own_load_share']:.2f}; "
                              f"waited {waited:.0f} s; others "
                              f"{'n/a' if foreign is None else f'{foreign:.2f}'} cores while timed"
                              f"{', DISCARDED: busy machine' if busy and attempt < args.retries else ''})",
                              flush=True)
                        if busy and attempt < args.retries:
                            discarded.append(result)
                            continue
                        trials.append(result)
                        break
            print()
        results["trials"], results["discarded_trials"] = trials, discarded

        # 3. Medians and ratios.
        results["summary"] = {}
        for config in args.configs:
            summary = summarize(trials, config, args.only)
            results["summary"][config] = summary
            c = CONFIGS[config]
            print(f"Training step, {config} ({c['model']['n_layers'] if 'n_layers' in c['model'] else 12} layers, "
                  f"batch {c['batch_size']} x context {c['model']['context_length']}), median of {args.rounds} rounds "
                  f"(phases in s; '1st step' includes torch.compile; RSS in MB):")
            print_table(summary, config)
            print()

        # 4. Loss curves on real text: ours-fp32 vs the other variants of ours.
        if args.loss_check:
            curves = run_loss_curves(args, env, history)
            results["loss_check"] = curves
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out}")


def run_loss_curves(args, env, history: list[dict]) -> dict:
    config = args.loss_config
    ours = [v for v in args.only if VARIANTS[v]["impl"] == "ours" and v != "ours-fp32"]
    runs = {}
    for name in ["ours-fp32"] + ours:
        wait_for_quiet(args.max_load, args.max_foreign, args.max_wait, history)  # not timed; just polite
        started, cpu0 = time.perf_counter(), children_cpu_seconds()
        runs[name] = run_child(child_command(args, "--loss-check-child", name, "--config", config), env)["losses"]
        ended = time.perf_counter()
        history.append({"started": started, "ended": ended,
                        "cores": (children_cpu_seconds() - cpu0) / (ended - started)})
    # the noise scale: the same fp32 training from another random initialization
    noise_args = argparse.Namespace(**{**vars(args), "seed": args.seed + 1})
    noise = run_child(child_command(noise_args, "--loss-check-child", "ours-fp32", "--config", config), env)["losses"]

    ref = runs["ours-fp32"]
    noise_diff = max(abs(a - b) for a, b in zip(ref, noise))
    print(f"Loss-curve check ({config} config, {args.loss_steps} steps of real text at lr {LR}, same initial "
          f"weights and batches; noise scale = ours-fp32 from another initialization):")
    print(f"  {'variant':<26} {'first loss':>10} {'final loss':>10} {'max |diff| to fp32':>19} {'mean |diff|':>11}")
    report = {"config": config, "steps": args.loss_steps, "lr": LR, "losses": runs, "noise_losses": noise,
              "noise_max_abs_diff": noise_diff, "variants": {}}
    for name, losses in list(runs.items()) + [("ours-fp32 (other init)", noise)]:
        diffs = [abs(a - b) for a, b in zip(ref, losses)]
        report["variants"][name] = {"first": losses[0], "final": losses[-1], "max_abs_diff": max(diffs),
                                    "mean_abs_diff": sum(diffs) / len(diffs)}
        print(f"  {name:<26} {losses[0]:>10.4f} {losses[-1]:>10.4f} {max(diffs):>19.4f} "
              f"{sum(diffs) / len(diffs):>11.4f}")
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny,124m", help="comma-separated subset of tiny,124m (default both)")
    p.add_argument("--only", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated variants (default {','.join(DEFAULT_VARIANTS)}; all: {','.join(VARIANTS)})")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3; default 3)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per trial (default: tiny 30, 124m 5)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per trial (default: tiny 3, 124m 2)")
    p.add_argument("--max-timed-seconds", type=float, default=None,
                   help="stop timing a trial after this many seconds once it has 3 steps (default: tiny 8, 124m 20)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: available cores)")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights and the batches")
    p.add_argument("--max-load", type=float, default=1.0,
                   help="wait until the 1-min load average (less our own last trial's share) is below this")
    p.add_argument("--max-wait", type=float, default=180.0, help="...but at most this many seconds per trial")
    p.add_argument("--max-foreign", type=float, default=0.3,
                   help="rerun a trial if other processes used more than this many cores during it")
    p.add_argument("--retries", type=int, default=1, help="reruns of a trial on a busy machine (default 1)")
    p.add_argument("--loss-steps", type=int, default=40, help="steps of the loss-curve check (default 40)")
    p.add_argument("--loss-config", default="tiny", choices=sorted(CONFIGS), help="config of the loss-curve check")
    p.add_argument("--no-loss-check", dest="loss_check", action="store_false", help="skip the loss-curve check")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the correctness check")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    # Internal: what the child processes are started with.
    p.add_argument("--trial", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--config", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    p.add_argument("--check-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--loss-check-child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    args.configs = [c.strip().lower() for c in args.configs.split(",") if c.strip()]
    if not args.configs or any(c not in CONFIGS for c in args.configs):
        p.error(f"--configs takes a comma-separated subset of {','.join(CONFIGS)}")
    args.only = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown_variants = [v for v in args.only if v not in VARIANTS]
    if unknown_variants or not args.only:
        p.error(f"unknown variants {unknown_variants}; choose from {','.join(VARIANTS)}")
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (a median of fewer trials says little)")
    if args.steps is not None and args.steps < 3:
        p.error("--steps must be at least 3")
    if args.threads is None:
        args.threads = available_cores()
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.trial or args.check_child or args.loss_check_child:
        import transformers
        transformers.logging.set_verbosity_error()  # keep the child's stdout to its JSON line
        if args.check_child:
            result = run_check(args)
        elif args.trial:
            result = run_trial(args)
        else:
            result = run_loss_check(args)
        print(json.dumps(result))
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
