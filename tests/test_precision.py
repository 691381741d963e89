"""precision "auto": fp32 unless bf16 is measured faster for this model on this CPU; LLMFS_CPU_BF16
forces the CPU path; the choice is cached, logged, recorded in checkpoints and kept on resume.

The step timers here are fakes with chosen durations, so the decision logic is tested exactly on
any CPU; one test measures a real (tiny) model step."""

import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from llm_from_scratch.model import GPTModel
from llm_from_scratch.training import GPTTrainer, load_checkpoint
from llm_from_scratch.training import precision as precision_module
from llm_from_scratch.training.precision import CPU_BF16_ENV, choose_precision, measure_step_seconds

CPU = torch.device("cpu")


@pytest.fixture
def amx(monkeypatch, tmp_path):
    """A CPU that has AMX, no LLMFS_CPU_BF16, and a private cache; returns a setter for AMX."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "cache"))

    def set_amx(value: bool):
        monkeypatch.setattr(precision_module, "cpu_has_amx", lambda: value)
    set_amx(True)
    return set_amx


class FakeTimer:
    """Step times chosen by the test; records which precisions were timed, in order."""

    def __init__(self, fp32: float, bf16: float):
        self.seconds = {"fp32": fp32, "bf16": bf16}
        self.calls: list[str] = []

    def __call__(self, name: str) -> float:
        self.calls.append(name)
        return self.seconds[name]


def never_called(name):
    raise AssertionError("this choice must not measure anything")


def test_explicit_precisions_pass_through_and_bad_ones_are_refused(amx):
    for name in ("fp32", "bf16"):
        choice = choose_precision(name, CPU, never_called)
        assert (choice.name, choice.reason) == (name, "as requested")
    with pytest.raises(ValueError, match="precision must be auto or one of"):
        choose_precision("fp8", CPU)


@pytest.mark.parametrize("value, expected", [("1", "bf16"), ("yes", "bf16"), ("0", "fp32"), ("off", "fp32")])
def test_the_environment_variable_forces_the_cpu_path(amx, monkeypatch, value, expected):
    monkeypatch.setenv(CPU_BF16_ENV, value)
    for has_amx in (True, False):
        amx(has_amx)
        choice = choose_precision("auto", CPU, never_called, "some model")
        assert choice.name == expected and CPU_BF16_ENV in choice.reason
    assert precision_module.cpu_has_fast_bf16() is (expected == "bf16")


def test_a_misspelt_environment_variable_is_a_clear_error(amx, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "maybe")
    with pytest.raises(ValueError, match=r"LLMFS_CPU_BF16='maybe' is not understood: set it to 1"):
        choose_precision("auto", CPU, never_called)


def test_without_amx_auto_is_fp32_without_measuring(amx):
    amx(False)
    choice = choose_precision("auto", CPU, never_called, "some model")
    assert choice.name == "fp32" and "no AMX" in choice.reason


@pytest.mark.parametrize("fp32, bf16, expected", [
    (0.100, 0.050, "bf16"),    # 2x faster: worth it
    (0.100, 0.095, "fp32"),    # 5% faster: a tie, and a tie stays exact
    (0.100, 0.130, "fp32"),    # slower (small models on AMX)
])
def test_on_amx_auto_measures_the_model_step(amx, fp32, bf16, expected):
    timer = FakeTimer(fp32, bf16)
    choice = choose_precision("auto", CPU, timer, "model A")
    assert choice.name == expected
    assert choice.seconds == {"fp32": fp32, "bf16": bf16}
    assert "measured now" in choice.reason and f"{bf16 * 1e3:.0f} ms in bf16" in choice.reason
    # two warm-ups each, then interleaved rounds whose order flips; fast (here: instant) steps
    # get rounds until the time budget or the round limit (20)
    assert timer.calls[:4] == ["fp32", "bf16"] * 2
    rounds = [timer.calls[i:i + 2] for i in range(4, len(timer.calls), 2)]
    assert len(rounds) == 20
    assert rounds == [["fp32", "bf16"] if r % 2 == 0 else ["bf16", "fp32"] for r in range(20)]


def test_slow_steps_are_timed_once(amx):
    timer = FakeTimer(5.0, 2.0)
    assert measure_step_seconds(timer) == {"fp32": 5.0, "bf16": 2.0}
    assert timer.calls == ["fp32", "bf16"] * 2   # one warm-up each, one timed round


def test_the_measurement_is_cached_per_model_shape(amx, tmp_path):
    first = choose_precision("auto", CPU, FakeTimer(0.1, 0.05), "model A")
    again = choose_precision("auto", CPU, never_called, "model A")
    assert (again.name, again.seconds) == (first.name, first.seconds) and "cached" in again.reason
    other = FakeTimer(0.05, 0.1)
    assert choose_precision("auto", CPU, other, "model B").name == "fp32" and other.calls
    cache = json.loads((tmp_path / "cache" / "precision-auto.json").read_text())
    assert len(cache) == 2 and all(torch.__version__ in key for key in cache)


def _trainer_parts():
    torch.manual_seed(0)
    x = torch.randint(0, 30, (16, 8))
    data = TensorDataset(x, torch.roll(x, -1, dims=1))
    model = GPTModel(dict(vocab_size=30, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.1))
    return model, DataLoader(data, batch_size=4, shuffle=True), DataLoader(data, batch_size=4)


def test_the_trainer_measures_on_a_copy_and_records_the_choice(amx, tmp_path):
    model, train, val = _trainer_parts()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    GPTTrainer(model, train, val, max_steps=2, progress=False, precision="fp32")  # measures nothing
    rng = torch.get_rng_state()
    trainer = GPTTrainer(model, train, val, max_steps=2, out_dir=str(tmp_path / "run"), progress=False)
    choice = trainer.precision_choice
    assert choice.name in ("fp32", "bf16") and "measured now" in choice.reason
    assert set(choice.seconds) == {"fp32", "bf16"} and all(s > 0 for s in choice.seconds.values())
    # measuring changed neither the weights, nor their gradients, nor the random stream (the
    # trainer seeds it: it must be where a trainer that measured nothing leaves it)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    trainer.train()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["precision"] == choice.name and ckpt["precision_reason"] == choice.reason
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {record["precision"] for record in log} == {choice.name}


def test_a_resumed_run_keeps_its_precision(amx, monkeypatch, tmp_path):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    model, train, val = _trainer_parts()
    GPTTrainer(model, train, val, max_steps=2, out_dir=str(tmp_path), progress=False).train()
    assert load_checkpoint(tmp_path / "last.pt")["precision"] == "bf16"
    monkeypatch.delenv(CPU_BF16_ENV)
    amx(False)  # this machine alone would pick fp32
    model, train, val = _trainer_parts()
    resumed = GPTTrainer(model, train, val, max_steps=4, out_dir=str(tmp_path), progress=False,
                         resume_from=str(tmp_path / "last.pt"))
    assert resumed.precision == "bf16" and "kept from the run being resumed" in resumed.precision_choice.reason
    # an explicit precision still wins
    model, train, val = _trainer_parts()
    explicit = GPTTrainer(model, train, val, max_steps=4, progress=False, precision="fp32",
                          resume_from=str(tmp_path / "last.pt"))
    assert explicit.precision == "fp32"


def test_forced_bf16_really_autocasts(amx, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    model, train, val = _trainer_parts()
    seen = []
    linear = next(m for m in model.trf_blocks.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    trainer = GPTTrainer(model, train, val, max_steps=1, progress=False)
    trainer.train()
    assert trainer.precision == "bf16" and torch.bfloat16 in seen
