"""--dtype and --quantize on every command that runs a model (generate, chat, serve, evaluate),
and load_model(dtype=, quantize=) in Python."""

from __future__ import annotations

import pytest
import torch

from cli_helpers import run_cli

from llm_from_scratch.cli.main import build_parser
from llm_from_scratch.loading import load_model
from llm_from_scratch.quantize import Int4Linear, Int8Linear, is_quantized


@pytest.mark.parametrize("command", [["generate", "--model", "gpt2"], ["chat", "--model", "gpt2"],
                                     ["serve", "--model", "gpt2"], ["evaluate", "perplexity", "--model", "gpt2"],
                                     ["evaluate", "judge", "--responses", "x.json", "--judge", "local:gpt2"]])
def test_every_inference_command_takes_the_flags(command):
    args = build_parser().parse_args([*command, "--dtype", "bf16", "--quantize", "int8"])
    assert (args.dtype, args.quantize) == ("bf16", "int8")
    defaults = build_parser().parse_args(command)
    assert (defaults.dtype, defaults.quantize) == ("fp32", "none")


@pytest.mark.parametrize("dtype,quantize", [("fp32", "int8"), ("bf16", "int8"), ("fp32", "int4"), ("bf16", "none")])
def test_load_model_dtype_and_quantize(base_checkpoint, dtype, quantize):
    loaded = load_model(checkpoint=base_checkpoint, device="cpu", dtype=dtype, quantize=quantize)
    model = loaded.model
    assert is_quantized(model) == (quantize != "none")
    assert model.new_kv_cache(1, 4).keys.dtype == (torch.bfloat16 if dtype == "bf16" else torch.float32)
    if quantize == "int8":
        assert isinstance(model.trf_blocks[0].att.qkv, Int8Linear)
    if quantize == "int4":  # 32-wide layers: qkv (96 x 32) takes int4; the head (50257 rows) stays int8
        assert isinstance(model.trf_blocks[0].att.qkv, Int4Linear)
        assert isinstance(model.out_head, Int8Linear)


def test_generate_with_int8_agrees_with_fp32_on_greedy_tokens(base_checkpoint, capsys):
    outputs = {}
    for quantize in ("none", "int8"):
        code, out, err = run_cli(capsys, "generate", "--checkpoint", str(base_checkpoint), "--prompt", "Hello",
                                 "--temperature", "0", "--max_new_tokens", "6", "--quantize", quantize)
        assert code == 0, err
        outputs[quantize] = out
    assert outputs["int8"].startswith("Hello") and len(outputs["int8"]) > len("Hello")


def test_chat_and_perplexity_run_quantized(base_checkpoint, tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(capsys, "chat", "--checkpoint", str(base_checkpoint), "--max_new_tokens", "4",
                             "--quantize", "int4", "--dtype", "bf16", stdin="Hi\n/exit\n", monkeypatch=monkeypatch)
    assert code == 0, err and out.count("assistant> ") == 1
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20, encoding="utf-8")
    values = {}
    for quantize in ("none", "int8"):
        code, out, err = run_cli(capsys, "evaluate", "perplexity", "--checkpoint", str(base_checkpoint),
                                 "--text", str(text), "--quantize", quantize)
        assert code == 0, err
        values[quantize] = float(out.split("perplexity ")[1].split()[0])
    # an untrained model's perplexity is near the vocabulary size; int8 weights move it by < 1%
    assert abs(values["int8"] / values["none"] - 1) < 0.01


def test_generate_compile_flag_reports_and_keeps_the_tokens(base_checkpoint, capsys, monkeypatch):
    import llm_from_scratch.generation.compiled as compiled

    real = compiled.compile_decoding
    monkeypatch.setattr(compiled, "compile_decoding", lambda model: real(model, backend="eager"))  # quick trace
    outputs = []
    for extra in ([], ["--compile"]):
        code, out, err = run_cli(capsys, "generate", "--checkpoint", str(base_checkpoint), "--prompt", "Hello",
                                 "--temperature", "0", "--max_new_tokens", "6", *extra)
        assert code == 0, err
        outputs.append(out)
    assert "decode step compiled" in err and outputs[0] == outputs[1]


def test_unsupported_combinations_are_clear_errors(base_checkpoint, tmp_path, capsys):
    code, out, err = run_cli(capsys, "generate", "--checkpoint", str(base_checkpoint), "--quantize", "int3")
    assert code == 2 and "invalid choice" in err
    responses = tmp_path / "responses.json"
    responses.write_text('[{"instruction": "Say hi", "output": "hi", "model_response": "hi"}]', encoding="utf-8")
    code, out, err = run_cli(capsys, "evaluate", "judge", "--responses", str(responses), "--judge", "ollama",
                             "--quantize", "int8")
    assert code == 2 and "local judge" in err
    with pytest.raises(ValueError, match="CPU only"):
        load_model(checkpoint=base_checkpoint, device="meta", quantize="int4")
    # refused before anything is loaded or any GPU is touched: what is wrong, and what to use instead
    code, out, err = run_cli(capsys, "generate", "--checkpoint", str(base_checkpoint), "--device", "cuda",
                             "--quantize", "int4")
    assert code == 2 and "int4 runs on the CPU only" in err and "use --quantize int8 or none" in err
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(checkpoint=base_checkpoint, device="cpu", dtype="fp8")
