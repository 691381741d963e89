"""The pure parts of benchmarks/bench_vs_llamacpp.py (no llama.cpp, no network, no model).

llama-bench's JSON output is a hand-written fixture in the format of llama.cpp's
tools/llama-bench (json_printer: one object per test, its fields, then samples_ns/samples_ts).
"""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_vs_llamacpp as bench  # noqa: E402
import llamacpp  # noqa: E402


def _test(n_prompt: int, n_gen: int, ns: int) -> str:
    ts = (n_prompt + n_gen) / (ns / 1e9)  # llama-bench's t/s counts prompt + generated tokens
    return f"""  {{
    "build_commit": "unknown",
    "build_number": 0,
    "cpu_info": "AMD EPYC",
    "gpu_info": "",
    "backends": "CPU",
    "model_filename": "/cache/models/SmolLM2-135M-Instruct.Q8_0.gguf",
    "model_type": "llama 256M Q8_0",
    "model_size": 144811072,
    "model_n_params": 134515008,
    "n_batch": 2048,
    "n_ubatch": 512,
    "n_threads": 2,
    "cpu_mask": "0x0",
    "cpu_strict": false,
    "poll": 50,
    "type_k": "f16",
    "type_v": "f16",
    "n_gpu_layers": 99,
    "flash_attn": -1,
    "use_mmap": true,
    "n_prompt": {n_prompt},
    "n_gen": {n_gen},
    "n_depth": 0,
    "test_time": "2026-12-05T01:00:00Z",
    "avg_ns": {ns},
    "stddev_ns": 0,
    "avg_ts": {ts:.6f},
    "stddev_ts": 0.000000,
    "samples_ns": [ {ns} ],
    "samples_ts": [ {ts:.6f} ]
  }}"""


# pp32 in 0.032 s, pp512 in 0.4 s, tg64 in 0.32 s, pg32,64 in 0.4 s (stderr noise before the array)
BENCH_OUTPUT = ("llama-bench: benchmark 1/4: starting\n[\n"
                + ",\n".join([_test(32, 0, 32_000_000), _test(512, 0, 400_000_000), _test(0, 64, 320_000_000),
                              _test(32, 64, 400_000_000)]) + "\n]\n")


def test_parse_bench_json():
    tests = llamacpp.parse_bench_json(BENCH_OUTPUT)
    assert [t["kind"] for t in tests] == ["pp", "pp", "tg", "pg"]
    pp32, pp512, tg, pg = tests
    assert pp32["tokens_per_s"] == pytest.approx(1000.0)
    assert pp512["tokens_per_s"] == pytest.approx(1280.0)
    assert tg["tokens_per_s"] == pytest.approx(200.0)
    # prompt + generation: only the generated tokens count, the prompt's time included
    assert pg["tokens_per_s"] == pytest.approx(64 / 0.4)
    assert pg["llama_bench_avg_ts"] == pytest.approx(96 / 0.4, rel=1e-6)
    assert pg["model_type"] == "llama 256M Q8_0" and pg["n_threads"] == 2 and pg["type_k"] == "f16"


def test_parse_bench_json_without_output():
    with pytest.raises(ValueError):
        llamacpp.parse_bench_json("error: failed to load model\n")


def test_bench_command():
    tools = llamacpp.LlamaCpp(Path("/x/llama-bench"), None, Path("/x"))
    cmd = llamacpp.bench_command(tools, Path("m.gguf"), 2, [32, 512], (32, 64), tg=64)
    assert cmd == ["/x/llama-bench", "-m", "m.gguf", "-t", "2", "-p", "32,512", "-n", "64", "-pg", "32,64",
                   "-r", "1", "-o", "json"]


def test_default_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(llamacpp.DIR_ENV, str(tmp_path / "mine"))
    assert llamacpp.default_dir() == tmp_path / "mine"
    monkeypatch.delenv(llamacpp.DIR_ENV)
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path))
    assert llamacpp.default_dir() == tmp_path / "llama.cpp" / llamacpp.VERSION


def test_skip_build_without_a_build_says_how_to_fix(tmp_path):
    with pytest.raises(llamacpp.LlamaCppError) as err:
        llamacpp.ensure_llamacpp(tmp_path, skip_build=True)
    assert "--llama-bench" in str(err.value) and "Tried" in str(err.value)


def _trial(name, decode, pp32, pp512, rss, **extra):
    return {"name": name, "metrics": {"decode": decode, "pp32": pp32, "pp512": pp512}, "peak_rss_mb": rss, **extra}


TRIALS = [
    _trial("ours/smollm2/int8", 100, 900, 600, 550), _trial("llama.cpp/smollm2/int8", 200, 1000, 1200, 380,
                                                            tg_empty_context_tokens_per_s=210),
    _trial("ours/smollm2/int8", 80, 950, 500, 560), _trial("llama.cpp/smollm2/int8", 180, 800, 1000, 390,
                                                           tg_empty_context_tokens_per_s=200),
    _trial("ours/smollm2/int8", 90, 1000, 700, 540), _trial("llama.cpp/smollm2/int8", 150, 900, 1100, 385,
                                                            tg_empty_context_tokens_per_s=190),
]


def test_summarize_medians_and_spread():
    summary = bench.summarize(TRIALS)
    ours, llama = summary["ours/smollm2/int8"], summary["llama.cpp/smollm2/int8"]
    assert ours["decode"] == {"median": 90, "min": 80, "max": 100}
    assert ours["pp512"]["median"] == 600 and ours["peak_rss_mb"] == 550 and ours["trials"] == 3
    assert llama["decode"]["median"] == 180 and llama["tg_empty_context_tokens_per_s"] == 200


def test_ratio_rows():
    summary = bench.summarize(TRIALS)
    metrics = bench.metric_names([32, 512])
    rows = bench.ratio_rows(summary, ["smollm2", "gpt2"], ["int8", "int4"], metrics)
    assert len(rows) == 1  # only the trials that ran
    row = rows[0]
    assert row["impl"] == "ours" and row["ggml_type"] == "Q8_0"
    assert row["decode"] == {"ours": 90, "llama": 180, "ratio": 0.5}
    assert row["pp32"]["ratio"] == pytest.approx(950 / 900)
    assert row["llama_peak_rss_mb"] == 385


def test_ratio_rows_when_llamacpp_refused():
    summary = bench.summarize([_trial("ours/gpt2/int4", 100, 900, 600, 900)] * 3)
    errors = {"gpt2": {"int4": "llama-bench exit code 1: unknown model architecture"}}
    rows = bench.ratio_rows(summary, ["gpt2"], ["int4"], bench.metric_names([32, 512]), errors)
    assert rows[0]["decode"] == {"ours": 100, "llama": None, "ratio": None}
    table = bench.markdown_table(rows, bench.metric_names([32, 512]))
    assert "refused" in table and "n/a" in table


def test_markdown_tables():
    summary = bench.summarize(TRIALS)
    metrics = bench.metric_names([32, 512])
    table = bench.markdown_table(bench.ratio_rows(summary, ["smollm2"], ["int8"], metrics), metrics)
    lines = table.splitlines()
    assert lines[0].startswith("| model | format | ours | decode ours tok/s | decode llama.cpp | decode ratio |")
    assert lines[1] == "|" + "---|" * 14
    assert lines[2] == ("| smollm2 | int8 / Q8_0 | ours | 90.0 | 180.0 | 0.50x | 950.0 | 900.0 | 1.06x "
                        "| 600.0 | 1100.0 | 0.55x | 550 | 385 |")
    spread = bench.spread_table(summary, metrics)
    assert "| ours/smollm2/int8 | 90.0 (80.0..100.0) | 950.0 (900.0..1000.0) | 600.0 (500.0..700.0) |  | 550 | 3 |" \
        in spread
    assert "| 200.0 | 385 | 3 |" in spread  # llama.cpp's tg from an empty context


def test_report_markdown_and_json_roundtrip():
    summary = bench.summarize(TRIALS)
    metrics = bench.metric_names([32, 512])
    results = {
        "time": 0, "summary": summary, "ratios": bench.ratio_rows(summary, ["smollm2"], ["int8"], metrics),
        "environment": {"cpu": "AMD EPYC (AMX: False; avx2)", "cores_available": 2, "torch": "2.x",
                        "load_average_start": [1, 1, 1], "load_average_end": [2, 2, 2],
                        "llamacpp": {"commit": "0c1e57098bba", "origin": "cached build",
                                     "bench_settings": {"flash_attn": -1, "type_k": "f16", "n_batch": 2048,
                                                        "n_ubatch": 512, "build_commit": "unknown", "build_number": 0}}},
        "settings": {"threads": 2, "rounds": 3, "prompt_tokens": 32, "new_tokens": 64, "pp_sizes": [32, 512],
                     "formats": ["int8"]},
        "files": {"smollm2": {"errors": {}, "int8_tensor_types": {"Q8_0": 211}}},
    }
    text = bench.report_markdown(json.loads(json.dumps(results)))
    assert "AMD EPYC" in text and "0c1e57098bba" in text and "threads 2" in text and "rounds 3" in text
    assert "flash attention auto, KV cache f16" in text and "0.50x" in text


def test_parse_args():
    args = bench.parse_args(["--quick", "--threads", "2"])
    assert args.rounds == 1 and args.family == ["smollm2"] and args.formats == ["int8", "int4"]
    args = bench.parse_args(["--family", "gpt2", "--formats", "int4", "--pp-sizes", "16,128"])
    assert args.family == ["gpt2"] and args.formats == ["int4"] and args.pp_sizes == [16, 128] and args.rounds == 3
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "2"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--family", "llama"])


def test_plan_interleaves_and_skips_refused_files():
    args = bench.parse_args(["--threads", "2"])
    files = {"smollm2": {"int8": "a.gguf", "int4": "b.gguf", "errors": {}},
             "gpt2": {"int8": "c.gguf", "int4": "d.gguf", "errors": {"int4": "refused"}}}
    assert bench.plan(args, files) == [
        "ours/smollm2/int8", "ours-gguf/smollm2/int8", "llama.cpp/smollm2/int8",
        "ours/smollm2/int4", "ours-gguf/smollm2/int4", "llama.cpp/smollm2/int4",
        "ours/gpt2/int8", "llama.cpp/gpt2/int8", "ours/gpt2/int4", "ours-cli/smollm2/int8"]


def test_build_without_cmake_says_what_was_tried(tmp_path, monkeypatch):
    (tmp_path / "sdist").mkdir()
    (tmp_path / "sdist" / f"llama_cpp_python-{llamacpp.VERSION}.tar.gz").write_bytes(b"")  # "downloaded"
    tree = llamacpp.source_tree(tmp_path)
    tree.mkdir(parents=True)
    (tree / "CMakeLists.txt").write_text("")  # "unpacked"
    monkeypatch.setattr(llamacpp.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(llamacpp.LlamaCppError) as err:
        llamacpp.ensure_llamacpp(tmp_path, say=lambda *a: None)
    message = str(err.value)
    assert "`cmake` is not on the PATH" in message and "pip download llama-cpp-python==" in message
    assert "--llama-bench" in message
