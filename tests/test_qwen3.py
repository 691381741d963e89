"""Qwen3, the third model family: only a configuration and a weight map over the decoder core.

Checked against transformers' Qwen3ForCausalLM on random small configurations (fp32, logits
within 1e-4), KV-cache greedy generation against transformers' own generate (identical
tokens), loading a Hugging Face folder with its tokenizer and chat template (ids identical to
Hugging Face `tokenizers`, text identical to transformers' apply_chat_template), and the clear
error for the named models offline. Everything is tiny and made here.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from llm_from_scratch.generation import generate  # noqa: E402
from llm_from_scratch.model import Qwen3Config, Qwen3Model, create_model, model_from_config  # noqa: E402
from llm_from_scratch.weights.qwen3 import (  # noqa: E402
    load_pretrained_qwen3,
    load_qwen3_hf,
    qwen3_config_from_hf,
    qwen3_from_hf_model,
)

CONFIGS = {
    # GQA, tied head, Qwen3's own head size (wider than hidden_size / heads)
    "gqa-tied-wide-heads": dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                tie_word_embeddings=True, rope_theta=1_000_000.0),
    # plain multi-head attention, untied head, another RoPE base
    "mha-untied": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=4, head_dim=8,
                       tie_word_embeddings=False, rope_theta=10_000.0),
    # one key/value head, a sliding window shorter than the inputs
    "mqa-sliding": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                        tie_word_embeddings=True, use_sliding_window=True, sliding_window=6,
                        max_window_layers=0),  # layers from 0 on use the window
}


def make_hf_qwen3(name: str, vocab_size: int = 97, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.Qwen3Config(vocab_size=vocab_size, intermediate_size=64, num_hidden_layers=2,
                                      max_position_embeddings=64, rms_norm_eps=1e-6, **CONFIGS[name])
    config._attn_implementation = "eager"
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():  # random norm scales: a QK-norm or RMSNorm left at 1 would hide a mix-up
        for hf_name, param in model.named_parameters():
            if hf_name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    return model


def hf_logits(hf, ids):
    with torch.no_grad():
        return hf(ids).logits


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_equal_transformers(name):
    hf = make_hf_qwen3(name)
    ours = qwen3_from_hf_model(hf)
    assert isinstance(ours, Qwen3Model) and ours.cfg.qk_norm and ours.cfg.head_dim == CONFIGS[name]["head_dim"]
    ids = torch.randint(0, 97, (2, 20))
    torch.testing.assert_close(ours(ids), hf_logits(hf, ids), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["gqa-tied-wide-heads", "mqa-sliding"])
def test_kv_cache_greedy_generation_equals_transformers(name):
    hf = make_hf_qwen3(name)
    ours = qwen3_from_hf_model(hf)
    prompt = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(ours, prompt, max_new_tokens=12, temperature=0.0), expected)


def test_qk_norm_is_used_and_its_weights_load():
    hf = make_hf_qwen3("gqa-tied-wide-heads")
    ours = qwen3_from_hf_model(hf)
    torch.testing.assert_close(ours.trf_blocks[1].att.k_norm.weight, hf.model.layers[1].self_attn.k_norm.weight)
    ids = torch.randint(0, 97, (1, 10))
    before = ours(ids)
    with torch.no_grad():
        ours.trf_blocks[0].att.q_norm.weight.mul_(2.0)
    assert not torch.allclose(before, ours(ids))


def _qwen_like_tokenizer(vocab_size: int = 300):
    """A small byte-level BPE with Qwen's pre-tokenizer (split by its regex, then bytes), trained
    by Hugging Face `tokenizers`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = ("Qwen3 reads text in 119 languages. The quick brown fox jumps over the lazy dog 42 times; "
            "人工智能 and 機械学習! Don't stop: it'll be fine.\n\n") * 20
    tok.train_from_iterator([text], trainer=trainer)
    return tok


QWEN_LIKE_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_a_hugging_face_folder_loads_with_its_tokenizer_and_chat_template(tmp_path):
    from llm_from_scratch.tokenizers.chat_template import apply_chat_template

    reference = _qwen_like_tokenizer()
    hf = make_hf_qwen3("gqa-tied-wide-heads", vocab_size=reference.get_vocab_size())
    hf.save_pretrained(tmp_path)
    reference.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": QWEN_LIKE_TEMPLATE}))
    model, tokenizer = load_qwen3_hf(tmp_path)
    ids = torch.randint(0, reference.get_vocab_size(), (1, 16))
    torch.testing.assert_close(model(ids), hf_logits(hf, ids), atol=1e-4, rtol=0)
    for text in ("It'll cost 1234 yuan: 人工智能!\n\n  spaces  ", "Don't QWEN3 x\r\ny"):
        assert tokenizer.encode(text) == reference.encode(text).ids
        assert tokenizer.decode(reference.encode(text).ids) == text
    messages = [{"role": "user", "content": "Hi there"}]
    hf_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    hf_tokenizer.chat_template = QWEN_LIKE_TEMPLATE
    expected = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert apply_chat_template(tokenizer.chat_template, messages, add_generation_prompt=True) == expected
    assert tokenizer.eot_id == reference.token_to_id("<|im_end|>")
    from llm_from_scratch.loading import load_pretrained   # the one entry every command uses
    loaded, loaded_tokenizer = load_pretrained(str(tmp_path))
    assert type(loaded) is Qwen3Model and loaded_tokenizer.encode("Don't") == reference.encode("Don't").ids


def test_config_round_trip_and_the_registry():
    cfg = qwen3_config_from_hf(make_hf_qwen3("mha-untied").config.to_dict())
    assert Qwen3Config.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["model_type"] == "qwen3"
    rebuilt = model_from_config(cfg.to_dict())   # what loading a checkpoint does
    assert type(rebuilt) is Qwen3Model and rebuilt.cfg == cfg
    micro = create_model("qwen3-micro", vocab_size=65)
    assert type(micro) is Qwen3Model and micro.cfg.context_length == 128 and micro.cfg.qk_norm
    with pytest.raises(ValueError, match="not 'qwen3'"):
        qwen3_config_from_hf({"model_type": "llama"})


def test_named_models_offline_say_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path))
    with pytest.raises(Exception, match="Qwen/Qwen3-0.6B") as error:
        load_pretrained_qwen3("qwen3-0.6b")
    assert "load_pretrained('path/to/folder')" in str(error.value)
    from llm_from_scratch.loading import load_pretrained
    with pytest.raises(Exception, match="Qwen/Qwen3-0.6B-Base"):
        load_pretrained("qwen3-0.6b-base")
    with pytest.raises(ValueError, match="unknown Qwen3 model"):
        load_pretrained_qwen3("qwen3-72b")
