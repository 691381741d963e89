"""llama.cpp for bench_vs_llamacpp.py: build `llama-bench` and `llama-quantize` once, run them.

llama.cpp is a benchmark tool here, never a dependency of the package and never committed: its
source is the tree vendored inside the PyPI source distribution of ``llama-cpp-python``
(fetched with pip, so it works wherever PyPI does), built with CMake into a cache folder:

    <dir>/sdist/llama_cpp_python-<version>.tar.gz      pip download ... --no-binary :all: --no-deps
    <dir>/src/llama_cpp_python-<version>/vendor/llama.cpp/build/bin/llama-bench, llama-quantize
    <dir>/build.log                                     the full CMake output
    <dir>/models/                                       GGUF files made by llama-quantize

``<dir>`` is ``--llamacpp-dir``, else ``$LLMFS_LLAMACPP_DIR``, else
``~/.cache/llm-from-scratch/llama.cpp/<version>`` (the cache root follows ``$LLMFS_CACHE_DIR``).
The build does not call git (``-DGIT_EXECUTABLE=/bin/false``), so llama-bench reports its
commit as "unknown"; we read the commit from the sdist's ``.git/modules/vendor/llama.cpp/HEAD``.

`run_measured` runs a program and reads its peak resident memory with GNU time (``-f %M``: the
kernel's ru_maxrss of the program, the same high-water mark as the VmHWM that our trial processes
read of themselves), or by polling its /proc/PID/status when there is no /usr/bin/time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

VERSION = "0.3.36"
PACKAGE = "llama-cpp-python"
TARGETS = ("llama-bench", "llama-quantize")
DIR_ENV = "LLMFS_LLAMACPP_DIR"


class LlamaCppError(RuntimeError):
    """Building or running llama.cpp failed; the message says what was tried and how to fix it."""


@dataclass
class LlamaCpp:
    bench: Path
    quantize: Path | None
    root: Path                      # the cache folder (quantized models go to root / "models")
    commit: str | None = None       # llama.cpp's git commit, when known
    origin: str = ""                # how we got the binaries (built here, cached, --llama-bench)


def default_dir() -> Path:
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    root = os.environ.get("LLMFS_CACHE_DIR") or "~/.cache/llm-from-scratch"
    return Path(root).expanduser() / "llama.cpp" / VERSION


def source_tree(root: Path) -> Path:
    return root / "src" / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"


def built_binary(root: Path, name: str) -> Path | None:
    path = source_tree(root) / "build" / "bin" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def vendored_commit(root: Path) -> str | None:
    """llama.cpp's commit as the sdist's git metadata records it (read as a file, git not run)."""
    head = root / "src" / f"llama_cpp_python-{VERSION}" / ".git" / "modules" / "vendor" / "llama.cpp" / "HEAD"
    try:
        text = head.read_text().strip()
    except OSError:
        return None
    return text[:12] if re.fullmatch(r"[0-9a-f]{40}", text) else None


def _fail(step: str, tried: list[str], detail: str, log: Path | None = None) -> LlamaCppError:
    lines = [f"could not {step}.", "Tried:"] + [f"  - {t}" for t in tried]
    lines.append(f"Error: {detail.strip()[-2000:]}")
    if log is not None:
        lines.append(f"Full output: {log}")
    lines += ["How to fix (any one of these):",
              "  - pass --llama-bench /path/to/llama-bench (an existing build; llama-quantize is looked for",
              "    next to it)",
              "  - make sure cmake, a C++ compiler and make are installed (apt-get install cmake g++ make),",
              f"    and that pip can reach PyPI (it fetches the {PACKAGE}=={VERSION} source distribution)",
              f"  - delete the folder and run again, or choose another one with --llamacpp-dir / ${DIR_ENV}"]
    return LlamaCppError("\n".join(lines))


def _run_logged(cmd: list[str], cwd: Path, log: Path, say) -> None:
    """Run a build command, appending its output to `log`; print CMake's progress lines sparsely."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last_pct, tail = -10, []
        for line in proc.stdout:
            out.write(line)
            tail = (tail + [line])[-40:]
            m = re.match(r"\[\s*(\d+)%\]", line)
            if m and (int(m.group(1)) >= last_pct + 10 or "Linking" in line and "llama-" in line):
                last_pct = int(m.group(1))
                say(f"    {line.rstrip()[:110]}")
        if proc.wait() != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd, output="".join(tail))


def build(root: Path, jobs: int = 2, say=print) -> None:
    """Fetch the sdist with pip, unpack it, configure and build llama-bench + llama-quantize."""
    root.mkdir(parents=True, exist_ok=True)
    log = root / "build.log"
    sdist_dir = root / "sdist"
    tried = [f"pip download {PACKAGE}=={VERSION} --no-binary :all: --no-deps -d {sdist_dir}"]
    archive = next(iter(sorted(sdist_dir.glob(f"llama_cpp_python-{VERSION}.tar.gz"))), None)
    if archive is None:
        say(f"  fetching the {PACKAGE}=={VERSION} source distribution with pip ...")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-binary",
                               ":all:", "--no-deps", "-d", str(sdist_dir)], capture_output=True, text=True)
        archive = next(iter(sorted(sdist_dir.glob(f"llama_cpp_python-{VERSION}.tar.gz"))), None)
        if proc.returncode != 0 or archive is None:
            raise _fail("download llama.cpp's source", tried, proc.stdout + proc.stderr)
    tree = source_tree(root)
    tried.append(f"unpack {archive} into {root / 'src'}")
    if not (tree / "CMakeLists.txt").is_file():
        say(f"  unpacking {archive.name} ...")
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(root / "src", filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise _fail("unpack llama.cpp's source", tried, repr(exc)) from exc
        if not (tree / "CMakeLists.txt").is_file():
            raise _fail("find llama.cpp in the source distribution", tried, f"no {tree}/CMakeLists.txt")
    for tool in ("cmake", "make", "c++"):
        if shutil.which(tool) is None:
            raise _fail("build llama.cpp", tried, f"`{tool}` is not on the PATH")
    configure = ["cmake", "-B", "build", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DCMAKE_BUILD_TYPE=Release",
                 "-DGIT_EXECUTABLE=/bin/false"]
    compile_ = ["cmake", "--build", "build", "-j", str(jobs), "--target", *TARGETS]
    for step, cmd in (("configure", configure), ("compile", compile_)):
        tried.append(f"(in {tree}) {' '.join(cmd)}")
        say(f"  {step}: {' '.join(cmd)}" + ("   (~6 minutes on 2 cores)" if step == "compile" else ""))
        start = time.perf_counter()
        try:
            _run_logged(cmd, tree, log, say)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise _fail(f"{step} llama.cpp", tried, getattr(exc, "output", None) or repr(exc), log) from exc
        say(f"  {step} done in {time.perf_counter() - start:.0f} s")


def ensure_llamacpp(root: Path | None = None, *, llama_bench: str | None = None, skip_build: bool = False,
                    jobs: int = 2, say=print) -> LlamaCpp:
    """The binaries: `llama_bench` if given, else the cached build, else build them (unless
    `skip_build`). Raises `LlamaCppError` with what was tried and how to fix it."""
    root = Path(root).expanduser() if root else default_dir()
    if llama_bench:
        bench = Path(llama_bench).expanduser().resolve()
        if not (bench.is_file() and os.access(bench, os.X_OK)):
            raise LlamaCppError(f"--llama-bench {llama_bench}: not an executable file")
        quantize = bench.with_name("llama-quantize")
        if not quantize.is_file():
            quantize = shutil.which("llama-quantize") or built_binary(root, "llama-quantize")
        return LlamaCpp(bench, Path(quantize) if quantize else None, root, vendored_commit(root),
                        f"--llama-bench {bench}")
    if all(built_binary(root, t) for t in TARGETS):
        return LlamaCpp(built_binary(root, "llama-bench"), built_binary(root, "llama-quantize"), root,
                        vendored_commit(root), f"cached build in {source_tree(root) / 'build'}")
    if skip_build:
        raise _fail("find a llama.cpp build (--skip-build was given)",
                    [f"{source_tree(root)}/build/bin/{t}" for t in TARGETS],
                    "no built binaries there (run without --skip-build to build them)")
    say(f"building llama.cpp (from {PACKAGE}=={VERSION}) into {root}:")
    build(root, jobs, say)
    missing = [t for t in TARGETS if built_binary(root, t) is None]
    if missing:
        raise _fail("build llama.cpp", [f"cmake --build ... --target {' '.join(TARGETS)}"],
                    f"the build finished but {', '.join(missing)} is missing", root / "build.log")
    return LlamaCpp(built_binary(root, "llama-bench"), built_binary(root, "llama-quantize"), root,
                    vendored_commit(root), f"built now in {source_tree(root) / 'build'}")


# ----------------------------------------------------------------------------------------------
# Running programs, measured alike
# ----------------------------------------------------------------------------------------------

@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float | None  # the child's peak resident memory
    rss_source: str            # how it was read


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
    except (OSError, ValueError):
        return None


def run_measured(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> Measured:
    """Run `cmd`; its output, wall time and peak resident memory.

    The peak comes from GNU time (``/usr/bin/time -f %M``: the kernel's ru_maxrss of the program,
    which time forks from its own small process). Not from our own ``wait4``: a child started
    from this (large) Python process inherits its parent's peak into ru_maxrss at exec on Linux,
    so a small program would look as big as the benchmark. Without /usr/bin/time, the child's
    /proc/PID/status VmHWM is polled every 20 ms (the last value read before it exits)."""
    time_bin = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "out", "w+") as out, \
            open(Path(tmp) / "err", "w+") as err:
        rss_file = Path(tmp) / "rss"
        full = [time_bin, "-f", "%M", "-o", str(rss_file), *cmd] if time_bin else list(cmd)
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        polled = None
        while proc.poll() is None:
            if time.perf_counter() - start > timeout:
                proc.kill()
                proc.wait()
                break
            if time_bin is None:
                polled = _vm_hwm_kb(proc.pid) or polled
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        out.seek(0), err.seek(0)
        if time_bin:
            lines = rss_file.read_text().split() if rss_file.is_file() else []
            peak = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None
            source = "/usr/bin/time -f %M (ru_maxrss of the program)"
        else:
            peak, source = (polled / 1024 if polled else None), "VmHWM of /proc/PID/status, polled every 20 ms"
        return Measured(proc.returncode, out.read(), err.read(), seconds, peak, source)


def quantize(tools: LlamaCpp, source: Path, kind: str, dest: Path, say=print) -> Path:
    """`llama-quantize --allow-requantize source dest KIND` once (cached at `dest`)."""
    if dest.is_file():
        return dest
    if tools.quantize is None:
        raise LlamaCppError(f"llama-quantize not found (next to {tools.bench}); needed to make {dest.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    cmd = [str(tools.quantize), "--allow-requantize", str(source), str(tmp), kind.upper()]
    say(f"  {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise LlamaCppError(f"llama-quantize failed (exit {proc.returncode}) on {source}:\n"
                            + (proc.stdout + proc.stderr).strip()[-3000:])
    tmp.rename(dest)
    return dest


def bench_command(tools: LlamaCpp, model: Path, threads: int, prompt_sizes: list[int], pg: tuple[int, int],
                  tg: int | None = None) -> list[str]:
    """One llama-bench run, one repetition of each test (we interleave and repeat ourselves):
    prompt processing of each size in `prompt_sizes`, optionally text generation from an empty
    context (`tg`), and prompt + generation (`pg`: the time of both together)."""
    return [str(tools.bench), "-m", str(model), "-t", str(threads), "-p", ",".join(map(str, prompt_sizes)),
            "-n", str(tg or 0), "-pg", f"{pg[0]},{pg[1]}", "-r", "1", "-o", "json"]


def parse_bench_json(text: str) -> list[dict]:
    """llama-bench's `-o json` output -> one dict per test: its kind ("pp", "tg" or "pg"), sizes,
    seconds of the (first) repetition, and the tokens/s that matter: for "pp" the prompt tokens/s,
    for "tg" and "pg" the generated tokens/s (`new_tokens_per_s`; for "pg" the prompt's time is
    included, as in our timing of `generate`)."""
    start = text.find("[")
    if start < 0:
        raise ValueError("no JSON array in llama-bench's output")
    tests = []
    for t in json.loads(text[start:]):
        n_prompt, n_gen = int(t["n_prompt"]), int(t["n_gen"])
        kind = "pg" if n_prompt and n_gen else ("pp" if n_prompt else "tg")
        seconds = [ns / 1e9 for ns in t["samples_ns"]]
        row = {"kind": kind, "n_prompt": n_prompt, "n_gen": n_gen, "seconds": seconds[0],
               "samples_s": seconds, "llama_bench_avg_ts": t.get("avg_ts"),
               "build_commit": t.get("build_commit"), "build_number": t.get("build_number"),
               "model_type": t.get("model_type"), "model_size": t.get("model_size"),
               "n_threads": t.get("n_threads"), "flash_attn": t.get("flash_attn"),
               "type_k": t.get("type_k"), "n_batch": t.get("n_batch"), "n_ubatch": t.get("n_ubatch")}
        row["tokens_per_s"] = (n_prompt if kind == "pp" else n_gen) / seconds[0]
        tests.append(row)
    return tests


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each GGML type a GGUF file holds, plus the embedding's type (informative)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        if t.name in ("token_embd.weight", "output.weight"):
            counts[f"{t.name.split('.')[0]}={t.tensor_type.name}"] = 1
    return counts
