"""The llmfs command line."""

import subprocess
import sys

import pytest
import torch

from llm_from_scratch import __version__
from llm_from_scratch.cli.main import main
from llm_from_scratch.training import load_checkpoint


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_python_dash_m_is_the_same_program():
    out = subprocess.run([sys.executable, "-m", "llm_from_scratch", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "usage: llmfs" in out and "demo" in out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fly"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_demo_trains_and_writes_its_outputs(tmp_path, capsys):
    assert main(["demo", "--max-steps", "4", "--batch-size", "2", "--out-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Samples" in out and out.count("Mia went to") >= 3
    for name in ("best_model.pt", "last.pt", "loss.png", "log.jsonl"):
        assert (tmp_path / name).exists(), name
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["tokenizer"]["type"] == "char" and ckpt["model_type"] == "gpt-micro"
    assert ckpt["train_state"]["step"] == 4
    assert torch.is_tensor(ckpt["model"]["tok_emb.weight"])
