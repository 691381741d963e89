"""What every benchmark here shares: running one trial in a fresh process, and describing the machine.

The benchmarks launch themselves once per trial (`--trial NAME`) so that no trial inherits
warm caches, allocator state or compiled code from another; the child prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run one child process; return the JSON object on the last line of its stdout."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child failed (exit code {proc.returncode}): {' '.join(cmd)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    """The CPU's model name, as the precision cache keys it."""
    from llm_from_scratch.training.precision import cpu_name

    return cpu_name()


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroups affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_description() -> str:
    """The CPU's model name with what matters for inference speed: AMX (torch's check) and the
    widest vector instructions /proc/cpuinfo lists (AVX-512, its bf16 and VNNI extensions)."""
    import torch

    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    isa = [name for name in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile")
           if name in flags]
    return f"{cpu_model()} (AMX: {amx}; {' '.join(isa) or 'ISA flags unknown'})"


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (nan where the system has none)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (float("nan"),) * 3


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB): Linux's VmHWM, which `reset_peak_rss`
    can reset, else `resource.getrusage` (which nothing resets)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def reset_peak_rss() -> bool:
    """Linux only: reset the kernel's peak-RSS mark to the current RSS, so that `peak_rss_mb`
    afterwards measures what follows (e.g. a generation alone, not the model construction)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def write_results(out: str, benchmark: str, load_start, body: dict, **environment) -> None:
    """Print the load average at the end and write one benchmark's JSON: its name, the
    environment (torch, CPU, cores, Python, platform, load averages, and `environment`'s extra
    entries) and `body` (settings, results...)."""
    import platform
    from pathlib import Path

    import torch

    end_load = load_average()
    print(f"load average at end: {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}")
    env = {"torch": torch.__version__, "cpu": cpu_description(), "cores_available": available_cores(),
           "python": platform.python_version(), "platform": platform.platform(), **environment,
           "load_average_start": load_start, "load_average_end": end_load}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": benchmark, "environment": env, **body}, indent=2) + "\n")
    print(f"\nresults written to {path}")
