"""Build and load the native CPU decode kernels (`decode_cpu.c`), or say why they are not there.

Why C at all: a batch-1 decoding step is a chain of matrix-vector products, bounded by how fast
the weights come out of memory. Written with PyTorch operations, a 30-layer model spends more
time dispatching its ~1,000 small operations per token than reading its weights, and PyTorch's
int8/int4 CPU kernels are tuned for matrices, not for one row (docs/20-quantization.md has the
profile). The C file does one token through all layers in one call, with matrix-vector loops
that stream int8, int4 (Q4_1 blocks) or fp32 rows at memory speed.

How it is built: on first use, with the machine's own C compiler (``cc``, or ``$CC``), for the
machine's own instruction set (``-march=native``: AVX2 + FMA where the CPU has them; a portable
loop otherwise), with OpenMP. The library lands in the cache
(``~/.cache/llm-from-scratch/kernels/<hash>/``), keyed by the source, the flags and the CPU,
written atomically, so a second process just loads it. It is loaded with `ctypes`: no PyTorch
headers, no ninja, a build of about a second.

When it cannot be built or loaded (no compiler; Windows or macOS; ``LLMFS_NATIVE=0``), `library()`
returns None and `status()` says why: the model then runs its PyTorch path, which computes the
same thing (the tests hold the two to each other).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch  # loaded first: the kernels then share PyTorch's OpenMP runtime
import torch.nn.functional as F

from llm_from_scratch.assets import cache_dir

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode_cpu.c")
ABI_VERSION = 5
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c11"]
DISABLE_ENV = "LLMFS_NATIVE"

_library: ctypes.CDLL | None = None
_status: str | None = None


def _cpu_key() -> str:
    """What the compiled code depends on besides the source: the CPU's model and flags."""
    keys = ("model name", "flags", "Features", "CPU implementer", "CPU architecture", "CPU variant", "CPU part")
    try:
        info = Path("/proc/cpuinfo").read_text()
        first = info.split("\n\n")[0]  # the first processor's block (x86: model name, flags; ARM: Features, part)
        return platform.machine() + "\n" + "\n".join(line for line in first.splitlines() if line.startswith(keys))
    except OSError:
        return platform.machine() + (platform.processor() or "")


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build(compiler: str, flags: list[str]) -> Path:
    """Compile decode_cpu.c into the cache (once per source, flags and CPU); the library's path."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *flags]).encode() + _cpu_key().encode()).hexdigest()[:16]
    target = cache_dir("kernels", key) / "decode_cpu.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / "decode_cpu.so"
        result = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(partial), "-lm"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-500:]}")
        os.replace(partial, target)  # atomic: another process sees no half-written file
    log.info("built the native CPU decode kernels: %s", target)
    return target


def _declare(lib: ctypes.CDLL) -> None:
    p, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.llmfs_abi_version.restype = i32
    lib.llmfs_instruction_set.restype = ctypes.c_char_p
    lib.llmfs_set_threads.argtypes = [i32]
    lib.llmfs_set_threads.restype = None
    lib.llmfs_linear.argtypes = [p, p, i32, p, p]
    lib.llmfs_linear.restype = None
    lib.llmfs_linear_work_floats.argtypes = [i32, i32]
    lib.llmfs_linear_work_floats.restype = i64
    lib.llmfs_dequantize_rows.argtypes = [p, i32, i32, p, i32]
    lib.llmfs_dequantize_rows.restype = None
    lib.llmfs_decode_work_floats.argtypes = [p, i32, i32]
    lib.llmfs_decode_work_floats.restype = i64
    lib.llmfs_decode_step.argtypes = [p, p, i32, p, p, p, i32, i32, p, p, i64]
    lib.llmfs_decode_step.restype = i32
    lib.llmfs_add_norm_rows.argtypes = [p, p, p, p, p, i32]
    lib.llmfs_add_norm_rows.restype = None
    lib.llmfs_rope_and_store.argtypes = [p, i32, p, i32, i32, p, p, p, i32, i32]
    lib.llmfs_rope_and_store.restype = None
    lib.llmfs_activation.argtypes = [p, p, p, i64]
    lib.llmfs_activation.restype = None


def load(compiler: str, march: str = "native") -> ctypes.CDLL:
    """Build (or find in the cache) and load the kernels for `-march=<march>`: "native" is what
    `library()` uses; "x86-64" (no AVX2) gives the portable loops, which tests compare."""
    flags = [flag if not flag.startswith("-march=") else f"-march={march}" for flag in FLAGS]
    lib = ctypes.CDLL(str(_build(compiler, flags)))
    _declare(lib)
    if lib.llmfs_abi_version() != ABI_VERSION:
        raise RuntimeError(f"ABI version {lib.llmfs_abi_version()} != {ABI_VERSION}")
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on first call; None when they are not available (see `status`)."""
    global _library, _status
    if _status is not None:
        return _library
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        _status = f"native kernels off ({DISABLE_ENV}=0): PyTorch operations"
        return None
    if sys.platform != "linux":
        _status = f"native kernels are built for Linux only (this is {sys.platform}): PyTorch operations"
        return None
    cc = compiler()
    if cc is None:
        _status = "no C compiler found (install gcc, or set CC): PyTorch operations"
        return None
    try:
        lib = load(cc)
    except (OSError, RuntimeError, AttributeError) as exc:
        _status = f"native kernels unavailable ({exc}): PyTorch operations"
        log.warning("%s", _status)
        return None
    _library = lib
    _warn_about_a_second_openmp()
    _status = f"native C kernels ({lib.llmfs_instruction_set().decode()}"
    return lib


def _warn_about_a_second_openmp() -> None:
    """The kernels share PyTorch's OpenMP runtime when PyTorch's is the one called libgomp.so.1
    (the wheels on PyPI); a build that brings another (a renamed libgomp, Intel's libiomp) gives two
    pools of threads spinning against each other: correct results, much slower. Say so."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    runtimes = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line or "libiomp" in line}
    if len(runtimes) > 1:
        log.warning("two OpenMP runtimes are loaded (%s): the native kernels and PyTorch will not share threads, "
                    "which is slow; LLMFS_NATIVE=0 turns the kernels off", ", ".join(sorted(runtimes)))


def status() -> str:
    """One line for the log: which path decodes, and why."""
    if library() is None:
        return _status or ""
    return f"{_status}, {torch.get_num_threads()} threads)"


def reset_for_tests() -> None:
    """Forget the loaded state (tests switch LLMFS_NATIVE on and off)."""
    global _library, _status
    _library, _status = None, None


# ---- the C structures (decode_cpu.c), field for field ---------------------------------------

FORMAT_F32, FORMAT_INT8, FORMAT_Q4_1 = 0, 1, 2
NORM_LAYER, NORM_RMS = 0, 1
MLP_CODES = {"gelu": 0, "relu2": 1, "swiglu": 2}


class Linear(ctypes.Structure):
    """One weight matrix for the kernels: its format, shape, row stride and data pointers."""
    _fields_ = [("format", ctypes.c_int32), ("rows", ctypes.c_int32), ("cols", ctypes.c_int32),
                ("stride", ctypes.c_int32), ("weight", ctypes.c_void_p), ("scale", ctypes.c_void_p),
                ("bias", ctypes.c_void_p)]


class Norm(ctypes.Structure):
    _fields_ = [("weight", ctypes.c_void_p), ("bias", ctypes.c_void_p)]


class Layer(ctypes.Structure):
    _fields_ = [("norm1", Norm), ("norm2", Norm), ("q_norm", Norm), ("k_norm", Norm),
                ("qkv", Linear), ("out", Linear), ("up", Linear), ("gate", Linear), ("down", Linear)]


class Model(ctypes.Structure):
    _fields_ = [("n_layers", ctypes.c_int32), ("emb_dim", ctypes.c_int32), ("n_heads", ctypes.c_int32),
                ("n_kv_heads", ctypes.c_int32), ("head_dim", ctypes.c_int32), ("hidden_dim", ctypes.c_int32),
                ("norm_kind", ctypes.c_int32), ("mlp_kind", ctypes.c_int32), ("rope", ctypes.c_int32),
                ("sliding_window", ctypes.c_int32), ("norm_eps", ctypes.c_float), ("layers", ctypes.POINTER(Layer)),
                ("final_norm", Norm), ("rope_cos", ctypes.c_void_p), ("rope_sin", ctypes.c_void_p)]


def pointer(tensor: torch.Tensor | None) -> int | None:
    """The address of a tensor's first element (None for None)."""
    return None if tensor is None else tensor.data_ptr()


def linear(format: int, weight: torch.Tensor, stride: int, cols: int, scale: torch.Tensor | None = None,
           bias: torch.Tensor | None = None) -> Linear:
    """The C description of a weight matrix (the tensors must stay alive while it is used)."""
    return Linear(format, weight.shape[0], cols, stride, pointer(weight), pointer(scale), pointer(bias))


def cached_linear(owner, format: int, weight: torch.Tensor, stride: int, cols: int,
                  scale: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> Linear:
    """`linear(...)`, kept on `owner` (a quantized layer) until one of its tensors is replaced."""
    key = (pointer(weight), pointer(scale), pointer(bias))
    cached = owner.__dict__.get("_kernel_matrices", {})
    if key not in cached:
        cached = {key: linear(format, weight, stride, cols, scale, bias)}  # old pointers: dropped
        owner.__dict__["_kernel_matrices"] = cached
    return cached[key]


def use_torch_threads(lib: ctypes.CDLL) -> None:
    """Run the kernels' parallel loops on as many threads as PyTorch uses (before each call)."""
    lib.llmfs_set_threads(torch.get_num_threads())


def run_linear(lib: ctypes.CDLL, layer: Linear, x: torch.Tensor) -> torch.Tensor:
    """y (N, rows) = x (N, cols) W^T + bias with the kernels (x: contiguous fp32 on the CPU)."""
    use_torch_threads(lib)
    y = torch.empty(x.shape[0], layer.rows, dtype=torch.float32)
    scratch = torch.empty(lib.llmfs_linear_work_floats(x.shape[0], layer.cols), dtype=torch.float32)
    lib.llmfs_linear(ctypes.byref(layer), x.data_ptr(), x.shape[0], y.data_ptr(), scratch.data_ptr())
    return y


#: Up to this many activation rows the kernels' matrix-vector loop runs (decoding); with more (a
#: prompt), the matrix is converted to float once and multiplied by BLAS, which is compute-bound.
MATVEC_MAX_ROWS = 16


def cpu_multiplies_bf16_natively() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AMX, or AVX-512 BF16): there a bf16
    matrix product runs ~3x faster than an fp32 one (measured on a 2-core AMD EPYC with AVX-512
    BF16: 113 vs 38 GFLOPS for 512 x 576 x 1536); elsewhere it is slower than fp32."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check is not None and check() for check in checks)


#: A many-row product converts at most this many weights to float at a time (8 MB in fp32), into
#: one buffer reused from call to call: a large matrix (a 49,152-token head) never exists in float,
#: and no call pays for fresh memory.
SLICE_ELEMENTS = 1 << 21

_per_thread = threading.local()  # scratch memory: each thread its own (a server may decode in several)


def scratch(name: str, dtype: torch.dtype, elements: int) -> torch.Tensor:
    """A reused 1-D buffer of at least `elements` for this thread (an ordinary tensor, usable in
    and out of inference mode); its first `elements` are returned, their contents undefined."""
    buffers = _per_thread.__dict__.setdefault("buffers", {})
    buffer = buffers.get((name, dtype))
    if buffer is None or buffer.numel() < elements:
        with torch.inference_mode(False):
            buffer = buffers[(name, dtype)] = torch.empty(elements, dtype=dtype)
    return buffer[:elements]


def _slice_buffer(dtype: torch.dtype, elements: int) -> torch.Tensor:
    return scratch("weight slice", dtype, max(elements, SLICE_ELEMENTS))[:elements]


def matmul(lib: ctypes.CDLL, layer: Linear, x: torch.Tensor) -> torch.Tensor:
    """x (N, cols) @ W^T (+ the Linear's bias, if it has one): (N, rows) in x's dtype.

    Few rows (decoding): the kernels' matrix-vector loop, in fp32. Many rows (a prompt, a
    perplexity batch): slices of the matrix converted to float, each multiplied by BLAS
    (compute-bound): in bf16 where the CPU multiplies bf16 natively or x is bf16 (x and the
    weights rounded to bf16, as PyTorch's int8/int4 kernels round them, and the product), else
    in fp32."""
    if x.shape[0] <= MATVEC_MAX_ROWS:
        return run_linear(lib, layer, x.float().contiguous()).to(x.dtype)
    dtype = torch.bfloat16 if x.dtype == torch.bfloat16 or cpu_multiplies_bf16_natively() else torch.float32
    bias = torch.from_numpy(np.ctypeslib.as_array(ctypes.cast(layer.bias, ctypes.POINTER(ctypes.c_float)),
                                                  (layer.rows,))) if layer.bias else None
    inputs = x.to(dtype)
    step = max(1, SLICE_ELEMENTS // layer.cols)                     # weight rows per slice
    outputs = []
    for first in range(0, layer.rows, step):
        count = min(step, layer.rows - first)
        weights = _slice_buffer(dtype, count * layer.cols).view(count, layer.cols)
        use_torch_threads(lib)
        lib.llmfs_dequantize_rows(ctypes.byref(layer), first, count, weights.data_ptr(), int(dtype == torch.bfloat16))
        part_bias = None if bias is None else bias[first:first + count].to(dtype)
        outputs.append(F.linear(inputs, weights, part_bias))        # (N, count)
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    return out.to(x.dtype)


def dequantize(lib: ctypes.CDLL, layer: Linear) -> torch.Tensor:
    """The (rows, cols) fp32 matrix a kernel Linear stands for."""
    out = torch.empty(layer.rows, layer.cols, dtype=torch.float32)
    use_torch_threads(lib)
    lib.llmfs_dequantize_rows(ctypes.byref(layer), 0, layer.rows, out.data_ptr(), 0)
    return out
