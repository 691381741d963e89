"""The training loop: it learns, accumulates correctly, checkpoints atomically and resumes exactly."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from llm_from_scratch.data import create_dataloaders
from llm_from_scratch.model import GPTModel
from llm_from_scratch.training import GPTTrainer, build_optimizer, load_checkpoint, save_checkpoint, warmup_cosine
from llm_from_scratch.training.checkpoint import clean_state_dict
from llm_from_scratch.training.losses import calc_loss_loader


class CharIds:
    def __init__(self, text):
        self.chars = sorted(set(text))
        self.vocab_size = len(self.chars)

    def encode(self, text, allowed_special=None):
        return [self.chars.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


def _setup(sample_text, drop_rate=0.0, batch_size=4, block=16):
    tok = CharIds(sample_text)
    train, val = create_dataloaders(sample_text, tok, block_size=block, batch_size=batch_size)
    torch.manual_seed(0)
    model = GPTModel(dict(vocab_size=tok.vocab_size, context_length=block, emb_dim=32, n_heads=4,
                          n_layers=2, drop_rate=drop_rate, qkv_bias=False))
    return tok, model, train, val


def test_training_lowers_the_loss(sample_text):
    tok, model, train, val = _setup(sample_text)
    before = calc_loss_loader(val, model, "cpu", 5)
    history = GPTTrainer(model, train, val, max_steps=60, lr=3e-3, progress=False).train()
    assert history[-1]["step"] == 60
    assert history[-1]["val_loss"] < before - 0.8
    assert history[-1]["tokens"] == 60 * 4 * 16


def test_default_length_is_bounded(sample_text):
    _, model, train, val = _setup(sample_text, batch_size=1)
    trainer = GPTTrainer(model, train, val, default_max_steps=7, progress=False)
    assert len(train) > 7 and trainer.total_steps == 7


def test_gradient_accumulation_equals_a_bigger_batch():
    torch.manual_seed(0)
    x = torch.randint(0, 20, (8, 8))
    data = TensorDataset(x, torch.roll(x, -1, dims=1))
    cfg = dict(vocab_size=20, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    results = []
    for batch_size, accum in ((8, 1), (4, 2), (2, 4)):
        torch.manual_seed(1)
        model = GPTModel(cfg)
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        GPTTrainer(model, loader, None, max_steps=3, grad_accum_steps=accum, warmup_steps=0,
                   precision="fp32", progress=False).train()  # 1e-5 holds in fp32 only
        results.append(torch.nn.utils.parameters_to_vector(model.parameters()))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results[0], results[2], atol=1e-5, rtol=1e-4)


class Crash(Exception):
    pass


def test_interrupted_and_resumed_run_reaches_the_same_weights(sample_text, tmp_path):
    """With dropout (RNG) and shuffling (data order) on: resuming from last.pt must continue
    exactly, not approximately."""
    settings = dict(max_steps=12, eval_interval=4, eval_batches=2, lr=2e-3, progress=False)

    _, model, train, val = _setup(sample_text, drop_rate=0.2)
    GPTTrainer(model, train, val, out_dir=str(tmp_path / "straight"), **settings).train()
    straight = torch.nn.utils.parameters_to_vector(model.parameters())

    class CrashingTrainer(GPTTrainer):
        def _evaluate_and_save(self, *args, **kwargs):
            super()._evaluate_and_save(*args, **kwargs)
            if self.state.step == 8:
                raise Crash

    _, model, train, val = _setup(sample_text, drop_rate=0.2)
    with pytest.raises(Crash):
        CrashingTrainer(model, train, val, out_dir=str(tmp_path / "resumed"), **settings).train()
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["train_state"]["step"] == 8

    _, fresh_model, train, val = _setup(sample_text, drop_rate=0.2)
    torch.manual_seed(999)  # the checkpoint's RNG state must win over whatever the process has
    trainer = GPTTrainer(fresh_model, train, val, out_dir=str(tmp_path / "resumed"),
                         resume_from=str(tmp_path / "resumed" / "last.pt"), **settings)
    assert trainer.state.step == 8
    history = trainer.train()
    assert [h["step"] for h in history] == [4, 8, 12]
    resumed = torch.nn.utils.parameters_to_vector(fresh_model.parameters())
    assert torch.equal(resumed, straight)


def test_checkpoints_plot_and_log_are_written(sample_text, tmp_path):
    tok, model, train, val = _setup(sample_text)
    GPTTrainer(model, train, val, max_steps=6, eval_interval=3, out_dir=str(tmp_path), tokenizer=None,
               progress=False).train()
    for name in ("best_model.pt", "last.pt", "loss.png", "log.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["model_config"]["emb_dim"] == 32
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2


def test_bf16_autocast_trains_on_cpu(sample_text):
    _, model, train, val = _setup(sample_text)
    history = GPTTrainer(model, train, val, max_steps=4, precision="bf16", progress=False).train()
    assert math.isfinite(history[-1]["val_loss"])


def test_fp16_without_cuda_is_refused(sample_text):
    _, model, train, val = _setup(sample_text)
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    with pytest.raises(ValueError, match="fp16 training needs a CUDA GPU"):
        GPTTrainer(model, train, val, precision="fp16")


def test_resume_into_a_different_model_is_a_clear_error(sample_text, tmp_path):
    _, model, train, val = _setup(sample_text)
    GPTTrainer(model, train, val, max_steps=2, out_dir=str(tmp_path), progress=False).train()
    other = GPTModel(dict(vocab_size=model.cfg.vocab_size, context_length=16, emb_dim=48, n_heads=4, n_layers=2))
    with pytest.raises(ValueError, match="different model configuration"):
        GPTTrainer(other, train, val, resume_from=str(tmp_path / "last.pt"), progress=False)


def test_atomic_save_keeps_the_old_checkpoint_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp files left behind


def test_corrupt_and_missing_checkpoints_have_clear_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_compiled_and_ddp_prefixes_are_stripped():
    state = {"_orig_mod.tok_emb.weight": 1, "module.out_head.weight": 2, "final_norm.scale": 3}
    assert clean_state_dict(state) == {"tok_emb.weight": 1, "out_head.weight": 2, "final_norm.scale": 3}
    # a compiled model inside DDP (or the other way round): every layer of prefixes goes
    assert clean_state_dict({"module._orig_mod.tok_emb.weight": 1}) == {"tok_emb.weight": 1}


def test_unwrap_model_finds_the_plain_model_inside_compile_and_ddp_wrappers():
    from llm_from_scratch.io.checkpoints import unwrap_model

    plain = torch.nn.Linear(2, 2)

    class Compiled(torch.nn.Module):  # what torch.compile returns keeps the model as _orig_mod
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

    class DDP(torch.nn.Module):  # DistributedDataParallel keeps it as .module
        def __init__(self, model):
            super().__init__()
            self.module = model

    assert unwrap_model(plain) is plain
    assert unwrap_model(Compiled(DDP(plain))) is plain and unwrap_model(DDP(Compiled(plain))) is plain


def test_atomic_paths_write_all_files_or_none(tmp_path):
    from llm_from_scratch.io.atomic import atomic_paths, write_json_atomically

    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_paths(first, second) as (a, b):
            a.write_text("new")
            b.write_text("new")
            raise RuntimeError("crash before the end")
    assert first.read_text() == "old" and not second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary files left
    with atomic_paths(first, second) as (a, b):
        a.write_text("new")
        b.write_text("new")
    assert first.read_text() == second.read_text() == "new"
    write_json_atomically(tmp_path / "x.json", {"é": 1})
    assert (tmp_path / "x.json").read_text(encoding="utf-8") == '{\n  "é": 1\n}\n'


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))        # rising
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:111]))   # falling
    assert lrs[60] == pytest.approx(0.55)                            # halfway down the cosine
    assert lrs[115] == pytest.approx(0.1)


def test_weight_decay_only_on_matrices():
    model = GPTModel(dict(vocab_size=10, context_length=4, emb_dim=8, n_heads=2, n_layers=1, tie_weights=True))
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(sample_text, tmp_path, monkeypatch):
    """An interrupt in the middle of a step (after some micro-batches) saves last.pt as of the
    last finished step; resuming then reaches the same weights as a run never interrupted."""
    settings = dict(max_steps=7, eval_interval=5, eval_batches=2, lr=2e-3, grad_accum_steps=2, progress=False)
    _, model, train, val = _setup(sample_text, drop_rate=0.2)
    GPTTrainer(model, train, val, **settings).train()
    straight = torch.nn.utils.parameters_to_vector(model.parameters())

    from llm_from_scratch.training.next_token import NextTokenMethod
    real_loss = NextTokenMethod._loss
    calls = {"n": 0}

    def interrupting_loss(*args):
        calls["n"] += 1
        if calls["n"] == 2 * 3 + 2:  # the second micro-batch of step 4
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(NextTokenMethod, "_loss", interrupting_loss)
    _, model, train, val = _setup(sample_text, drop_rate=0.2)
    with pytest.raises(KeyboardInterrupt):
        GPTTrainer(model, train, val, out_dir=str(tmp_path), **settings).train()
    monkeypatch.setattr(NextTokenMethod, "_loss", real_loss)
    assert load_checkpoint(tmp_path / "last.pt")["train_state"]["step"] == 3

    _, model, train, val = _setup(sample_text, drop_rate=0.2)
    GPTTrainer(model, train, val, out_dir=str(tmp_path), resume_from=str(tmp_path / "last.pt"), **settings).train()
    assert torch.equal(torch.nn.utils.parameters_to_vector(model.parameters()), straight)
