"""allocator.py: with the inference policy, memory freed after loading goes back to the system.

Each check runs in a fresh Python process: the allocator's settings are process-wide and the
resident size (VmRSS) must not include what earlier tests allocated."""

import subprocess
import sys
import textwrap

import pytest

from llm_from_scratch import allocator

pytestmark = pytest.mark.skipif(allocator.glibc() is None, reason="needs Linux with glibc (mallopt)")

# Raise glibc's dynamic threshold with one 16 MiB buffer, then allocate 2 MiB buffers with small
# "keepers" between them (so the heap cannot simply shrink from its top) and free the big ones.
# Resident memory after the frees, above the start, in MiB, is printed.
SCRIPT = textwrap.dedent("""
    import sys, torch
    from llm_from_scratch import allocator
    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    if sys.argv[1] == "give-back":
        assert allocator.give_back_freed_memory()
    start = rss_mib()
    big = torch.ones(4 * 2**20); del big
    buffers, keepers = [], []
    for _ in range(100):
        buffers.append(torch.ones(2**19))   # 2 MiB, pages touched
        keepers.append(torch.ones(64))
    held = rss_mib() - start
    del buffers
    print(held, rss_mib() - start)
""")


def run(policy: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, policy], capture_output=True, text=True, check=True)
    held, after = map(float, out.stdout.split())
    return held, after


def test_freed_buffers_go_back_to_the_system_after_give_back():
    held, after = run("give-back")
    assert held > 150, f"the test's 200 MiB of buffers should be resident ({held:.0f} MiB)"
    assert after < 40, f"{after:.0f} MiB still resident after freeing 200 MiB of 2 MiB buffers"


def test_trim_and_give_back_are_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(allocator.NO_MALLOC_TUNING_ENV, "1")
    assert allocator.glibc() is None
    assert allocator.give_back_freed_memory() is False
    assert allocator.trim_freed_memory() is False
