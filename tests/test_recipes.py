"""Training recipes (`--recipe book|modern`), the modern switches of the decoder core, and Muon.

The modern recipe must keep everything working that the book's does: checkpoints, exact resume,
generation, and a clear refusal where an export format has no equivalent architecture."""

import math

import pytest
import torch
import torch.nn.functional as F

from llm_from_scratch.cli.main import main
from llm_from_scratch.model import GPTModel
from llm_from_scratch.model.config import GPTConfig
from llm_from_scratch.model.layers import ReLUSquared, RMSNorm
from llm_from_scratch.pipelines import PipelineError, PretrainConfig, pretrain
from llm_from_scratch.training import GPTTrainer, load_checkpoint
from llm_from_scratch.training.optim import (MuonWithAdamW, build_optimizer, build_scheduler, hidden_matrices,
                                             warmup_cosine)
from llm_from_scratch.training.recipes import RECIPES

SMALL = dict(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def tiny_run(corpus_dir, out_dir, **changes) -> PretrainConfig:
    settings = dict(dataset=str(corpus_dir), tokenizer="char", model_type="gpt-micro", context_length=32,
                    batch_size=4, eval_batches=2, max_steps=6, eval_interval=3, out_dir=out_dir,
                    precision="fp32", progress=False)
    return PretrainConfig(**{**settings, **changes})


# ----------------------------------------------------------------------------- the model's switches

def test_default_gpt_config_is_gpt2_and_old_checkpoint_configs_still_are():
    old = {"vocab_size": 50, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": True, "tie_weights": True}  # saved before the switches existed
    assert GPTConfig.from_dict(old).is_gpt2()
    assert not GPTConfig(**SMALL, mlp="relu2").is_gpt2()
    model = GPTModel(GPTConfig(**SMALL))
    assert hasattr(model, "pos_emb") and not hasattr(model, "rope")


def test_modern_switches_build_the_parts_they_name():
    cfg = GPTConfig(**SMALL, norm="rmsnorm", positions="rope", mlp="relu2", bias=False, qk_norm=True)
    model = GPTModel(cfg)
    block = model.trf_blocks[0]
    assert isinstance(block.norm1, RMSNorm) and isinstance(model.final_norm, RMSNorm)
    assert hasattr(model, "rope") and not hasattr(model, "pos_emb")
    assert isinstance(block.ff.layers[1], ReLUSquared) and block.ff.layers[0].bias is None
    assert block.att.out_proj.bias is None and block.att.q_norm is not None
    swiglu = GPTModel(GPTConfig(**SMALL, mlp="swiglu")).trf_blocks[0].ff
    assert swiglu.fc1.out_features == 96  # 8/3 * 32 rounded up to a multiple of 32
    with pytest.raises(ValueError, match="mlp must be one of gelu, relu2, swiglu"):
        GPTConfig(**SMALL, mlp="relu3")
    with pytest.raises(ValueError, match="logit_softcap must be a positive"):
        GPTConfig(**SMALL, logit_softcap=0.0)


def test_relu_squared_is_relu_times_itself():
    x = torch.linspace(-3, 3, 61)
    expected = torch.where(x > 0, x * x, torch.zeros_like(x))  # by hand
    torch.testing.assert_close(ReLUSquared()(x), expected, rtol=0, atol=0)


def test_zero_init_starts_every_block_as_the_identity_and_the_loss_at_log_vocab():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**SMALL, zero_init=True, tie_weights=False))
    for block in model.trf_blocks:
        assert block.att.out_proj.weight.abs().sum() == 0 and block.ff.output_layer.weight.abs().sum() == 0
    x = torch.randint(0, 50, (3, 16))
    assert model(x, targets=x).item() == pytest.approx(math.log(50), abs=1e-6)  # uniform logits
    model(x, targets=x).backward()  # and still trainable: the head gets a gradient
    assert model.out_head.weight.grad.abs().sum() > 0


def test_logit_softcap_bounds_the_logits_and_the_training_loss_uses_them():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**SMALL, logit_softcap=2.0))
    with torch.no_grad():
        model.out_head.weight.mul_(500.0)  # raw logits far beyond the cap
    x = torch.randint(0, 50, (2, 16))
    logits = model(x)
    raw = model.out_head(model.hidden_states(x))
    assert raw.abs().max() > 10.0 and logits.abs().max() <= 2.0  # (tanh saturates to exactly 1 in fp32)
    torch.testing.assert_close(logits, 2.0 * torch.tanh(raw / 2.0))  # float32 default tolerance
    expected = F.cross_entropy(logits.flatten(0, 1), x.flatten())
    torch.testing.assert_close(model(x, targets=x), expected)


# ----------------------------------------------------------------------------- Muon

def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = GPTModel(GPTConfig(**SMALL, tie_weights=True))
    optimizer = build_optimizer(model, 1e-3, optimizer="muon", muon_lr=0.02)
    assert isinstance(optimizer, MuonWithAdamW)
    muon, adamw = optimizer.optimizers
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    adamw_ids = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert muon_ids == {id(p) for p in hidden_matrices(model)} and not muon_ids & adamw_ids
    assert id(model.tok_emb.weight) in adamw_ids and id(model.final_norm.scale) in adamw_ids
    assert muon_ids | adamw_ids == {id(p) for p in model.parameters()}
    with pytest.raises(ValueError, match="optimizer must be one of adamw, muon"):
        build_optimizer(model, 1e-3, optimizer="sgd")


def test_muon_with_adamw_steps_exactly_like_the_two_optimizers_on_their_own():
    """The combined optimizer (with a scheduler on it) against torch.optim.Muon and AdamW stepped
    side by side on a copy of the model: bit-identical weights (same ops, same order)."""
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**SMALL))
    twin = GPTModel(GPTConfig(**SMALL))
    twin.load_state_dict(model.state_dict())
    combined = build_optimizer(model, 3e-3, weight_decay=0.1, optimizer="muon", muon_lr=0.05)
    scheduler = build_scheduler(combined, warmup_steps=2, total_steps=5)
    hidden = hidden_matrices(twin)
    rest = [p for p in twin.parameters() if all(p is not h for h in hidden)]
    muon = torch.optim.Muon(hidden, lr=0.05, weight_decay=0.1, momentum=0.95, nesterov=True)
    adamw = torch.optim.AdamW([{"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1},
                               {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}],
                              lr=3e-3, betas=(0.9, 0.95), fused=True)
    x = torch.randint(0, 50, (4, 16))
    for step in range(4):
        factor = warmup_cosine(step, 2, 5)  # the schedule, by its formula
        assert [g["lr"] for g in combined.param_groups] == pytest.approx([0.05 * factor] + [3e-3 * factor] * 2)
        for group in muon.param_groups:
            group["lr"] = 0.05 * factor
        for group in adamw.param_groups:
            group["lr"] = 3e-3 * factor
        for m, optimizers in ((model, (combined,)), (twin, (muon, adamw))):
            m(x, targets=x).backward()
            for opt in optimizers:
                opt.step()
                opt.zero_grad()
        scheduler.step()
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    restored = build_optimizer(model, 3e-3, optimizer="muon", muon_lr=0.05)
    restored.load_state_dict(combined.state_dict())
    assert restored.state_dict()["muon"]["state"].keys() == combined.state_dict()["muon"]["state"].keys()
    for group in restored.param_groups:  # what a scheduler does after a resume reaches both optimizers
        group["lr"] = 0.125
    assert {g["lr"] for opt in restored.optimizers for g in opt.param_groups} == {0.125}
    with pytest.raises(ValueError, match="not Muon \\+ AdamW's"):
        restored.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


# ----------------------------------------------------------------------------- the recipes in the pipeline

def test_modern_recipe_trains_resumes_exactly_generates_and_refuses_gpt2_exports(corpus_dir, tmp_path, capsys,
                                                                                  monkeypatch):
    whole = pretrain(tiny_run(corpus_dir, tmp_path / "whole", recipe="modern"))
    ckpt = load_checkpoint(whole.last_checkpoint)
    assert ckpt["recipe"] == "modern" and set(ckpt["optimizer"]) == {"muon", "adamw"}
    for name, value in RECIPES["modern"].model.items():
        assert ckpt["model_config"][name] == value, name
    assert ckpt["trainer_config"]["optimizer"] == "muon"
    assert whole.history[-1]["train_seconds"] > 0
    assert "recipe modern" in capsys.readouterr().out

    from llm_from_scratch.training.next_token import NextTokenMethod
    real_step = NextTokenMethod.train_step

    def interrupted_during_step_4(self, trainer, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_step(self, trainer, step)

    monkeypatch.setattr(NextTokenMethod, "train_step", interrupted_during_step_4)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_run(corpus_dir, tmp_path / "cut", recipe="modern"))
    monkeypatch.setattr(NextTokenMethod, "train_step", real_step)
    with pytest.raises(PipelineError, match="trained with --recipe modern, not book"):
        pretrain(tiny_run(corpus_dir, tmp_path / "cut", recipe="book", resume=True))
    resumed = pretrain(tiny_run(corpus_dir, tmp_path / "cut", resume=True))  # the checkpoint's recipe
    got = load_checkpoint(resumed.last_checkpoint)["model"]
    for name, value in ckpt["model"].items():
        assert torch.equal(value, got[name]), name
    capsys.readouterr()

    assert main(["generate", "--checkpoint", str(whole.best_checkpoint), "--prompt", "Mia",
                 "--max_new_tokens", "10", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("Mia")
    for fmt in ("hf", "gguf"):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", "--checkpoint", str(whole.best_checkpoint), "--format", fmt,
                  "--out", str(tmp_path / f"out-{fmt}")])
        assert exit_info.value.code == 2
        assert "not GPT-2's architecture" in capsys.readouterr().err


def test_explicit_settings_win_over_the_recipe_and_bad_ones_are_clear(corpus_dir, tmp_path):
    result = pretrain(tiny_run(corpus_dir, tmp_path / "mix", recipe="modern", mlp="gelu", optimizer="adamw",
                               windows="grid", logit_softcap=0, max_steps=2, eval_interval=2))
    ckpt = load_checkpoint(result.last_checkpoint)
    assert ckpt["model_config"]["mlp"] == "gelu" and ckpt["model_config"]["positions"] == "rope"
    assert ckpt["model_config"]["logit_softcap"] is None  # 0 turns the recipe's cap off
    assert ckpt["trainer_config"]["optimizer"] == "adamw" and "muon" not in ckpt["optimizer"]
    with pytest.raises(PipelineError, match="unknown recipe 'fast'"):
        pretrain(tiny_run(corpus_dir, tmp_path / "x", recipe="fast"))
    with pytest.raises(PipelineError, match="llama-micro has no mlp, positions switch"):
        pretrain(tiny_run(corpus_dir, tmp_path / "x", model_type="llama-micro", mlp="relu2", positions="rope"))
    with pytest.raises(PipelineError, match="--windows must be one of grid, random"):
        pretrain(tiny_run(corpus_dir, tmp_path / "x", windows="everywhere"))


def test_random_windows_start_at_every_offset(corpus_dir, tmp_path, monkeypatch):
    seen = {}
    real_init = GPTTrainer.__init__

    def spy(self, model, train_loader, *args, **kwargs):
        seen["stride"] = train_loader.dataset.stride
        seen["val_stride"] = args[0].dataset.stride
        real_init(self, model, train_loader, *args, **kwargs)

    monkeypatch.setattr(GPTTrainer, "__init__", spy)
    pretrain(tiny_run(corpus_dir, tmp_path / "r", windows="random", max_steps=1, eval_interval=1))
    assert seen == {"stride": 1, "val_stride": 32}  # validation stays on disjoint windows


def test_train_command_takes_the_recipe_and_switch_flags(corpus_dir, tmp_path, capsys):
    argv = ["train", "--dataset", str(corpus_dir), "--tokenizer", "char", "--model_type", "gpt-micro",
            "--context_length", "32", "--batch_size", "4", "--eval_batches", "2", "--max_steps", "2",
            "--out_dir", str(tmp_path / "cli"), "--no-progress", "--precision", "fp32",
            "--recipe", "modern", "--qk-norm", "no", "--logit-softcap", "30", "--muon-lr", "0.01"]
    assert main(argv) == 0
    ckpt = load_checkpoint(tmp_path / "cli" / "last.pt")
    assert ckpt["model_config"]["qk_norm"] is False and ckpt["model_config"]["logit_softcap"] == 30.0
    assert ckpt["trainer_config"]["muon_lr"] == 0.01
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*argv[:-6], "--qk-norm", "maybe"])
    assert "expected yes or no" in capsys.readouterr().err
