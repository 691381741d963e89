"""Classifier heads, pooling, which parameters train, LoRA (exact merging), and the trainer with metrics."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from llm_from_scratch.evaluation.accuracy import calc_accuracy_loader
from llm_from_scratch.finetune.classifier import (SequenceClassifier, build_classifier, classify_review,
                                                  load_classifier, set_trainable)
from llm_from_scratch.finetune.lora import (LinearWithLoRA, apply_lora, count_parameters, load_lora, merge_lora,
                                            save_lora)
from llm_from_scratch.model import GPTConfig, GPTModel
from llm_from_scratch.model.llama import LlamaConfig, LlamaModel
from llm_from_scratch.tokenizers import get_tokenizer
from llm_from_scratch.training.trainer import GPTTrainer

PAD = 0


def gpt(vocab=50, tied=True):
    return GPTModel(GPTConfig(vocab_size=vocab, context_length=24, emb_dim=32, n_heads=4, n_layers=3,
                              drop_rate=0.0, tie_weights=tied))


def llama(vocab=50):
    return LlamaModel(LlamaConfig(vocab_size=vocab, context_length=24, emb_dim=32, n_heads=4, n_kv_heads=2,
                                  n_layers=3, hidden_dim=64))


@pytest.mark.parametrize("make", [gpt, llama])
def test_last_token_pooling_reads_what_the_text_alone_gives(make):
    torch.manual_seed(0)
    clf = SequenceClassifier(make(), num_classes=3, pad_token_id=PAD).eval()
    texts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
    padded = torch.tensor([t + [PAD] * (6 - len(t)) for t in texts])
    batch_logits = clf(padded)
    for row, text in enumerate(texts):
        torch.testing.assert_close(batch_logits[row], clf(torch.tensor([text]))[0], rtol=1e-5, atol=1e-5)
    # The material's pooling reads the padding for short texts: different logits.
    clf.pool = "last_position"
    assert not torch.allclose(clf(padded)[0], batch_logits[0], atol=1e-4)
    torch.testing.assert_close(clf(padded)[1], batch_logits[1])  # the full-length text is the same


def test_only_trailing_pads_are_skipped():
    clf = SequenceClassifier(gpt(), 2, pad_token_id=PAD)
    ids = torch.tensor([[3, PAD, 4, PAD, PAD], [PAD, PAD, PAD, PAD, PAD], [1, 2, 3, 4, 5]])
    assert clf.last_token_index(ids).tolist() == [2, 0, 4]


@pytest.mark.parametrize("mode", ["last_block", "head", "all", "lora"])
def test_trainable_modes_unfreeze_what_they_say(mode):
    clf = build_classifier(gpt(), 2, PAD, trainable=mode)
    trainable = {name for name, p in clf.named_parameters() if p.requires_grad}
    assert {"base.out_head.weight", "base.out_head.bias"} <= trainable
    if mode == "head":
        assert trainable == {"base.out_head.weight", "base.out_head.bias"}
    elif mode == "last_block":
        assert all(n.startswith(("base.trf_blocks.2.", "base.final_norm.", "base.out_head.")) for n in trainable)
        assert any(n.startswith("base.trf_blocks.2.") for n in trainable)
    elif mode == "all":
        assert trainable == {name for name, _ in clf.named_parameters()}
    else:
        assert all(".lora." in n or n.startswith("base.out_head") for n in trainable)
        assert any(".lora." in n for n in trainable)
    # The new head is untied from the token embedding.
    assert clf.base.out_head.weight.shape == (2, 32)


@pytest.mark.parametrize("make", [gpt, llama])
def test_lora_starts_as_the_base_model_and_merges_exactly(make, tmp_path):
    torch.manual_seed(1)
    model = make().eval()
    x = torch.randint(0, 50, (2, 10))
    before = model(x)
    apply_lora(model, rank=4, alpha=8)
    torch.testing.assert_close(model(x), before)  # B = 0: nothing changed yet
    trainable, total = count_parameters(model)
    assert 0 < trainable < total / 5
    assert all(".lora." in n for n, p in model.named_parameters() if p.requires_grad)
    for module in model.modules():
        if isinstance(module, LinearWithLoRA):
            torch.nn.init.normal_(module.lora.B, std=0.05)
    with_adapters = model(x)
    assert not torch.allclose(with_adapters, before, atol=1e-4)
    save_lora(model, tmp_path / "adapters.safetensors", rank=4, alpha=8)
    merged = merge_lora(model)
    assert not any(isinstance(m, LinearWithLoRA) for m in merged.modules())
    torch.testing.assert_close(merged(x), with_adapters, rtol=1e-5, atol=1e-5)
    # The saved adapters put on a fresh copy of the base give the same outputs again.
    torch.manual_seed(1)
    fresh = make().eval()
    torch.testing.assert_close(load_lora(fresh, tmp_path / "adapters.safetensors")(x), with_adapters)


def toy_task(n=64, seed=0):
    """Texts of random tokens; the class is whether the text starts with token 7: learnable by a tiny model."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 50, (n, 12), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    ids[labels == 1, 0] = 7
    lengths = torch.randint(6, 13, (n,), generator=g)
    for row, length in enumerate(lengths):
        ids[row, length:] = PAD
    return TensorDataset(ids, labels)


def train_classifier(tmp_path, steps, resume=None, out="run"):
    torch.manual_seed(0)
    clf = build_classifier(gpt(), 2, PAD, trainable="all")
    train = DataLoader(toy_task(128), batch_size=8, shuffle=True, drop_last=True)
    val = DataLoader(toy_task(32, seed=1), batch_size=8)
    metrics = lambda t: {"train_accuracy": calc_accuracy_loader(train, t.model, t.device, 4),  # noqa: E731
                         "val_accuracy": calc_accuracy_loader(val, t.model, t.device, 4)}
    trainer = GPTTrainer(clf, train, val, max_steps=steps, eval_interval=4, lr=3e-3, warmup_steps=0,
                         progress=False, device="cpu", out_dir=str(tmp_path / out), metrics=metrics,
                         resume_from=resume, extra_checkpoint_info={"task": {"type": "classification",
                                                                             **clf.classifier_config()}})
    history = trainer.train()
    return clf, history


def test_the_shared_trainer_trains_a_classifier_with_accuracy_plots_and_checkpoints(tmp_path):
    clf, history = train_classifier(tmp_path, steps=40)
    assert history[-1]["val_accuracy"] > 0.8 and history[-1]["train_accuracy"] > 0.8
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert (tmp_path / "run" / "accuracy.png").is_file() and (tmp_path / "run" / "loss.png").is_file()
    loaded, _, ckpt = load_classifier(tmp_path / "run" / "last.pt")
    x = toy_task(4, seed=5).tensors[0]
    torch.testing.assert_close(loaded(x), clf.eval()(x))


def test_classifier_training_resumes_exactly(tmp_path, monkeypatch):
    straight, _ = train_classifier(tmp_path, steps=8, out="straight")
    from llm_from_scratch.training.next_token import NextTokenMethod
    real_loss, calls = NextTokenMethod._loss, {"n": 0}

    def interrupt_at_step_6(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(NextTokenMethod, "_loss", interrupt_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(tmp_path, steps=8, out="part")
    monkeypatch.setattr(NextTokenMethod, "_loss", real_loss)
    resumed, _ = train_classifier(tmp_path, steps=8, resume=str(tmp_path / "part" / "last.pt"), out="part")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_classify_review_has_the_materials_signature():
    tokenizer = get_tokenizer("gpt2")
    torch.manual_seed(0)
    clf = SequenceClassifier(gpt(vocab=50257), 2, pad_token_id=50256).eval()
    label = classify_review("You are a winner you have been specially selected", clf, tokenizer, "cpu",
                            max_length=20)
    assert label in ("spam", "not spam")
    ids = tokenizer.encode("You are a winner you have been specially selected")
    expected = "spam" if int(clf(torch.tensor([ids])).argmax()) == 1 else "not spam"
    assert label == expected  # padding to max_length changes nothing with last-token pooling
