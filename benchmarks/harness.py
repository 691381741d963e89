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
