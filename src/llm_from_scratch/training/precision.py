"""Which precision a training run uses: fp32, or bf16 autocast where bf16 is really faster.

bf16 autocast runs the matrix multiplies in bfloat16 while the weights, the optimizer state and
the reductions stay in fp32. It only pays where the hardware multiplies bf16 faster than fp32,
and then only if the model is big enough for the multiplies to outweigh autocast's own costs
(it casts every weight to bf16 on every forward pass, and converts activations back and forth):

| device | what "auto" picks | why |
|---|---|---|
| CUDA GPU with bf16 | bf16 | tensor cores |
| CPU with AMX tiles (Intel Sapphire Rapids and newer) | **measured** for this model | AMX multiplies bf16 several times faster, but a small model (gpt-micro: 0.8M parameters) is slower in bf16 |
| CPU without AMX (AVX-512 or AVX2 only) | fp32 | bf16 multiplies run at about half the fp32 speed |
| anything else (MPS) | fp32 | |

On an AMX CPU "auto" times one training step of the model itself (forward and backward on a
real batch, on a copy of the model) in fp32 and in bf16, interleaved, and takes bf16 only if it
is at least 10% faster. A tie goes to fp32: it is exact, and equal on every CPU. The result is
cached per CPU model, torch version, thread count and model/batch shape in
``<cache>/precision-auto.json``, so the next run of the same job picks the same precision
without measuring, and `--resume` keeps the precision the run started with.

The environment variable ``LLMFS_CPU_BF16`` forces the CPU path: ``1`` makes "auto" pick bf16
on any CPU (the test suite runs its training tests a second time like that, so the AMX path is
exercised on every machine), ``0`` makes it pick fp32. An explicit precision always wins.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

CPU_BF16_ENV = "LLMFS_CPU_BF16"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BF16_MIN_SPEEDUP = 1.10   # bf16 must be at least this much faster to be chosen
CACHE_FILE = "precision-auto.json"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses, and a one-line reason for the log."""
    name: str                     # fp32 | bf16 | fp16
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # measured step times, if any

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.name]

    def describe(self) -> str:
        return f"precision {self.name} ({self.reason})"


def cpu_bf16_override() -> bool | None:
    """The value of LLMFS_CPU_BF16: True (force bf16), False (force fp32) or None (not set)."""
    raw = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if raw == "":
        return None
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{CPU_BF16_ENV}={os.environ[CPU_BF16_ENV]!r} is not understood: set it to 1 (\"auto\" "
                     "picks bf16 on this CPU), 0 (\"auto\" picks fp32) or leave it unset (measure).")


def cpu_has_amx() -> bool:
    """True when this CPU has AMX tiles, the units that multiply bf16 matrices faster than fp32."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def cpu_has_fast_bf16() -> bool:
    """AMX, unless LLMFS_CPU_BF16 says otherwise."""
    forced = cpu_bf16_override()
    return cpu_has_amx() if forced is None else forced


def cpu_name() -> str:
    """The CPU's model name (e.g. "Intel(R) Xeon(R) Platinum 8481C"), for cache keys and reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


StepTimer = Callable[[str], float]  # precision name -> seconds for one training step


def choose_precision(requested: str, device: torch.device, step_timer: StepTimer | None = None,
                     shape_key: str | None = None, use_cache: bool = True) -> PrecisionChoice:
    """Resolve a requested precision ("auto", "fp32", "bf16", "fp16") for `device`.

    `step_timer(name)` runs one training step in that precision and returns its seconds; without
    it, an AMX CPU falls back to fp32 (nothing to measure). `shape_key` names the model and batch
    shape for the cache (see the module doc).
    """
    if requested not in PRECISIONS and requested != "auto":
        raise ValueError(f"precision must be auto or one of {list(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return PrecisionChoice(requested, "as requested")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", "auto: this GPU computes in bf16")
        return PrecisionChoice("fp32", "auto: this GPU has no bf16")
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"auto: fp32 on {device.type}")
    forced = cpu_bf16_override()
    if forced is not None:
        name = "bf16" if forced else "fp32"
        return PrecisionChoice(name, f"auto: {CPU_BF16_ENV}={os.environ[CPU_BF16_ENV].strip()} forces {name}")
    if not cpu_has_amx():
        return PrecisionChoice("fp32", "auto: this CPU has no AMX, so bf16 would be slower")
    if step_timer is None:
        return PrecisionChoice("fp32", "auto: AMX CPU, but no model step to measure")
    return _measured_choice(step_timer, shape_key, use_cache)


def model_step_timer(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                     loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
                     detail: str = "") -> tuple[StepTimer, str]:
    """(timer, shape key) for `choose_precision`: the timer runs `loss_fn(model, inputs, targets)`
    and its backward pass on a copy of `model` (made on first use: a cached choice copies
    nothing) under the precision's autocast, and returns the seconds. The real weights,
    gradients and random state are untouched. The key names the model's parameter shapes and
    which are trainable, the batch shape and `detail`."""
    copies: list[torch.nn.Module] = []

    def timer(name: str) -> float:
        if not copies:
            copies.append(copy.deepcopy(model).train())
        with torch.random.fork_rng(devices=[]), torch.autocast("cpu", dtype=PRECISIONS[name],
                                                               enabled=name != "fp32"):
            start = time.perf_counter()
            loss_fn(copies[0], inputs, targets).backward()
            seconds = time.perf_counter() - start
        copies[0].zero_grad(set_to_none=True)
        return seconds

    parameters = list(model.parameters())
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    shapes = ",".join("x".join(map(str, p.shape)) + ("" if p.requires_grad else "f") for p in parameters)
    digest = hashlib.sha1(shapes.encode()).hexdigest()[:12]
    shape_key = (f"{type(model).__name__} {trainable:,} trainable params [{digest}], batch "
                 f"{tuple(inputs.shape)}, {detail}")
    return timer, shape_key


def _cache_key(shape_key: str | None) -> str:
    return f"{cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {shape_key or '-'}"


def _read_cache() -> dict:
    from llm_from_scratch.assets import cache_dir
    try:
        return json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, entry: dict) -> None:
    from llm_from_scratch.assets import cache_dir, write_atomically
    try:
        cache = _read_cache()
        cache[key] = entry
        write_atomically(cache_dir() / CACHE_FILE, (json.dumps(cache, indent=1) + "\n").encode("utf-8"))
    except OSError:  # a read-only cache only costs a measurement next time
        pass


def measure_step_seconds(step_timer: StepTimer, min_rounds: int = 3, max_rounds: int = 20,
                         budget_s: float = 2.0, slow_step_s: float = 2.0) -> dict[str, float]:
    """Median seconds of one step in fp32 and in bf16, measured interleaved.

    Two warm-up steps each (one for slow steps: first-use allocations, autocast's weight
    cache), then alternating
    pairs (the order flips every round, so a machine that speeds up or slows down during the
    measurement favours neither): at least `min_rounds`, more while the rounds so far took less
    than `budget_s`, so that millisecond steps of small models get enough samples for a stable
    median. Steps slower than `slow_step_s` get one round: a model that big is far from the
    crossover point, and each step costs seconds.
    """
    warm = {name: step_timer(name) for name in ("fp32", "bf16")}
    if max(warm.values()) <= slow_step_s:  # a second warm-up is cheap for fast steps
        warm = {name: step_timer(name) for name in ("fp32", "bf16")}
    rounds = 1 if max(warm.values()) > slow_step_s else min_rounds
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    started = time.perf_counter()
    r = 0
    while r < rounds or (r < max_rounds and time.perf_counter() - started < budget_s and rounds > 1):
        for name in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            times[name].append(step_timer(name))
        r += 1
    return {name: statistics.median(values) for name, values in times.items()}


def _measured_choice(step_timer: StepTimer, shape_key: str | None, use_cache: bool) -> PrecisionChoice:
    key = _cache_key(shape_key)
    entry = _read_cache().get(key) if use_cache else None
    if not (isinstance(entry, dict) and entry.get("fp32_s", 0) > 0 and entry.get("bf16_s", 0) > 0):
        seconds = measure_step_seconds(step_timer)
        entry = {"fp32_s": seconds["fp32"], "bf16_s": seconds["bf16"],
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        if use_cache:
            _write_cache(key, entry)
        how = "measured now"
    else:
        how = f"measured {entry.get('measured', 'earlier')}, cached"
    fp32_s, bf16_s = entry["fp32_s"], entry["bf16_s"]
    name = "bf16" if fp32_s >= BF16_MIN_SPEEDUP * bf16_s else "fp32"
    if name == "bf16":
        verdict = "faster"
    elif bf16_s < fp32_s:
        verdict = f"only {fp32_s / bf16_s - 1:.0%} faster (a tie goes to fp32)"
    else:
        verdict = "slower"
    reason = (f"auto: AMX CPU, bf16 is {verdict} for this model: one step {bf16_s * 1e3:.0f} ms in bf16 vs "
              f"{fp32_s * 1e3:.0f} ms in fp32 ({how})")
    return PrecisionChoice(name, reason, {"fp32": fp32_s, "bf16": bf16_s})
