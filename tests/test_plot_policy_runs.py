"""benchmarks/plot_policy_runs.py: the ablation overlay reads runs' logs and draws them."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import plot_policy_runs as plot  # noqa: E402


def test_rolling_mean_and_thirds_by_hand():
    assert plot.rolling_mean([1.0, 3.0, 5.0, 7.0], 3) == [1.0, 2.0, 3.0, 5.0]
    assert plot.thirds([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.5, 5.5)
    assert plot.thirds([4.0]) == (4.0, 4.0)


def test_a_resumed_runs_repeated_step_counts_once_and_the_png_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": 1, "accuracy": 0.1, "entropy": 1.0}, {"step": 2, "accuracy": 0.2, "entropy": 0.9},
             {"step": 2, "accuracy": 0.3, "entropy": 0.8}, {"step": 3, "accuracy": 0.4, "entropy": 0.7}]
    (run / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert [r["accuracy"] for r in plot.read_log(run)] == [0.1, 0.3, 0.4]
    assert plot.main(["a=" + str(run), "--out", str(tmp_path / "o.png"), "--keys", "accuracy,entropy"]) == 0
    assert (tmp_path / "o.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "0.100 /    0.400" in out


def test_bad_arguments_say_what_to_give(tmp_path):
    with pytest.raises(SystemExit, match="LABEL=RUN_DIR"):
        plot.main([str(tmp_path), "--out", str(tmp_path / "o.png")])
    with pytest.raises(SystemExit, match="no .*log.jsonl"):
        plot.read_log(tmp_path)


def test_keys_no_run_logged_are_named_with_what_is_there(tmp_path):
    run = tmp_path / "dpo"
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 0.69, "reward_accuracy": 0.5}) + "\n")
    with pytest.raises(SystemExit, match="loss, reward_accuracy"):
        plot.main(["dpo=" + str(run), "--out", str(tmp_path / "o.png")])
