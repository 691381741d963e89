"""The fused head + cross-entropy and the other training speed-ups change nothing in the math."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from llm_from_scratch.model import GPTConfig, GPTModel
from llm_from_scratch.model.linear_cross_entropy import linear_cross_entropy
from llm_from_scratch.training import cpu_speed
from llm_from_scratch.training.trainer import GPTTrainer


def reference(hidden, weight, targets):
    return F.cross_entropy((hidden @ weight.t()).flatten(0, -2), targets.flatten())


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("with_ignored", [False, True])
def test_loss_and_gradients_equal_cross_entropy_on_full_logits(chunk, with_ignored):
    torch.manual_seed(0)
    hidden = torch.randn(3, 21, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (3, 21))
    if with_ignored:
        targets[0, :5] = -100
        targets[2, -3:] = -100
    ours = linear_cross_entropy(hidden, weight, targets, chunk=chunk)
    g_hidden, g_weight = torch.autograd.grad(ours * 0.37, (hidden, weight))  # a scaled loss, as in accumulation
    ref = reference(hidden, weight, targets)
    r_hidden, r_weight = torch.autograd.grad(ref * 0.37, (hidden, weight))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_hidden, r_hidden, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_weight, r_weight, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [5, 1000])
def test_soft_capped_loss_and_gradients_equal_autograd_through_the_tanh(chunk):
    """softcap=c: the loss of c * tanh(logits / c), gradients against autograd (float64, 1e-12)."""
    torch.manual_seed(1)
    hidden = torch.randn(2, 13, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(40, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 40, (2, 13))
    targets[1, :2] = -100
    ours = linear_cross_entropy(hidden, weight, targets, chunk=chunk, softcap=3.0)
    g_hidden, g_weight = torch.autograd.grad(ours * 0.5, (hidden, weight))
    capped = 3.0 * torch.tanh((hidden @ weight.t()) / 3.0)
    ref = F.cross_entropy(capped.flatten(0, 1), targets.flatten())
    r_hidden, r_weight = torch.autograd.grad(ref * 0.5, (hidden, weight))
    for a, b in ((ours, ref), (g_hidden, r_hidden), (g_weight, r_weight)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets, chunk=chunk, softcap=3.0), ref,
                                   rtol=0, atol=1e-12)


def test_without_gradients_gives_the_same_loss():
    hidden, weight = torch.randn(40, 8), torch.randn(30, 8)
    targets = torch.randint(0, 30, (40,))
    targets[3] = -100
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets, chunk=9),
                                   reference(hidden, weight, targets))


def test_only_the_weight_needs_a_gradient():
    hidden = torch.randn(12, 8)
    weight = torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(0, 30, (12,))
    (g_ours,) = torch.autograd.grad(linear_cross_entropy(hidden, weight, targets, chunk=5), weight)
    (g_ref,) = torch.autograd.grad(reference(hidden, weight, targets), weight)
    torch.testing.assert_close(g_ours, g_ref)


def test_bf16_autocast_stays_close_to_fp32():
    hidden = torch.randn(64, 32, requires_grad=True)
    weight = torch.randn(100, 32, requires_grad=True)
    targets = torch.randint(0, 100, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, weight, targets, chunk=16)
    ours.backward()
    assert weight.grad.dtype == torch.float32 and hidden.grad.dtype == torch.float32
    ref = reference(hidden.detach(), weight.detach(), targets)
    assert abs(ours.item() - ref.item()) / ref.item() < 2e-2


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="disagree"):
        linear_cross_entropy(torch.randn(4, 5, 8), torch.randn(10, 8), torch.zeros(4, 6, dtype=torch.long))


@pytest.mark.parametrize("tied", [True, False])
def test_gpt_model_with_targets_returns_the_books_loss_and_gradients(tied):
    cfg = GPTConfig(vocab_size=61, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0,
                    tie_weights=tied)
    model = GPTModel(cfg).double()
    x, y = torch.randint(0, 61, (3, 16)), torch.randint(0, 61, (3, 16))
    fused = model(x, targets=y)
    fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    book = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    book_grads = torch.autograd.grad(book, list(model.parameters()))
    torch.testing.assert_close(fused, book, rtol=0, atol=1e-12)
    for a, b in zip(fused_grads, book_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def _train(fast: bool, tied: bool, accum: int):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=53, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0,
                    tie_weights=tied)
    # float64: Adam divides by sqrt(v), so a gradient near zero turns fp32 rounding differences
    # (the fused loss sums in another order) into visible weight differences; in float64 the two
    # paths must agree to many digits, so a real difference (a wrong gradient) cannot hide.
    model = GPTModel(cfg).double()
    data = torch.randint(0, 53, (48, 9))
    loader = DataLoader(TensorDataset(data[:, :-1], data[:, 1:]), batch_size=4, shuffle=True)
    trainer = GPTTrainer(model, loader, None, max_steps=6, eval_interval=100, progress=False, device="cpu",
                         precision="fp32", grad_accum_steps=accum, fused_loss=fast,
                         sparse_embedding_grad=fast, tune_malloc=False)
    assert trainer.method.fused_loss is fast
    assert model.tok_emb.sparse is (fast and tied)
    trainer.train()
    return model


@pytest.mark.parametrize("tied,accum", [(True, 1), (True, 2), (False, 1)])
def test_training_with_the_speedups_reaches_the_same_weights(tied, accum):
    fast, plain = _train(True, tied, accum), _train(False, tied, accum)
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)
