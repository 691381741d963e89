"""Byte-level BPE trained from scratch (llm_from_scratch.tokenizers.bpe), checked against the libraries.

* our pure-Python encoder == tiktoken built from our exported ranks file == our fast encode;
* our incremental trainer == a textbook trainer that recounts every pair after every merge;
* our trainer vs Hugging Face ``tokenizers``: same merges until the first tie, similar compression.

Everything is trained on small texts made here, so the file runs in a few seconds, offline.
"""

import argparse
import json
import random
from collections import Counter

import pytest
import tiktoken
import tiktoken.load

from llm_from_scratch.data.tiny_stories import tiny_stories
from llm_from_scratch.tokenizers import TiktokenTokenizer, get_tokenizer, tokenizer_from_config
from llm_from_scratch.tokenizers.bpe import (
    GPT4_SPLIT_PATTERN,
    BPETokenizer,
    IncrementalPairCounts,
    count_chunks,
    merge_pair,
)

ENDOFTEXT = "<|endoftext|>"

ENGLISH = (
    "Byte pair encoding was first described in 1994 as a way to compress data. It replaces the most "
    "frequent pair of neighbouring bytes with a byte that does not occur in the data, and repeats. "
    "Language models use the same idea to build their vocabularies: they don't compress files, they "
    "learn which pieces of words occur together often enough to deserve a token of their own. "
    "Isn't it remarkable that we'll get words like 'the', ' and' and ' tokenization' out of it?\n"
)
CHINESE = (
    "字节对编码最早是一种数据压缩方法。它反复把最常见的相邻字节对替换成一个新的符号。"
    "语言模型用同样的办法来建立词表：常见的词变成一个词元，少见的词被拆成几个片段。"
    "因为从字节开始，所以任何语言的文本都可以编码，不会出现未知的字符。\n"
)
CODE = (
    "def merge_pair(word, pair, new_id):\n"
    "    merged, i = [], 0\n"
    "    while i < len(word):\n"
    "        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:\n"
    "            merged.append(new_id)\n"
    "            i += 2\n"
    "        else:\n"
    "            merged.append(word[i]); i += 1\n"
    "    return merged  # 100% of the 12345 cases\n"
)
EMOJI = "I ❤️ 🦀 and 👩‍👩‍👧‍👦 families! 🎉🎉🎉 café naïve e\u0301 Ωμέγα привет"
WHITESPACE = "a  b   c\n\n\n  \t\tindented\r\n   trailing   \n\n    \n \u00a0x\t\n"

IDENTITY_TEXTS = {
    "english": ENGLISH,
    "chinese": CHINESE,
    "code": CODE,
    "emoji": EMOJI,
    "whitespace": WHITESPACE,
    "endoftext": f"The first story ends here.{ENDOFTEXT}The second begins.{ENDOFTEXT}\n{ENDOFTEXT}",
    "empty": "",
    "unseen": "Zebra quartz jumps, 7777777 times; ¿qué? ÄÖÜß 日本語のテキスト 🐍🐍",
}


@pytest.fixture(scope="module")
def corpus() -> str:
    # English, Chinese, code and emoji, so that merges include multi-byte tokens of every kind.
    return tiny_stories(num_stories=120) + ENGLISH * 3 + CHINESE * 4 + CODE * 3 + EMOJI * 2 + WHITESPACE


@pytest.fixture(scope="module")
def tokenizer(corpus) -> BPETokenizer:
    return BPETokenizer.train(corpus, vocab_size=700, progress=False)


@pytest.fixture
def no_tiktoken_file_cache(monkeypatch):
    # tiktoken.load caches files by their *path* in a temp folder: a new file at an old path would
    # be read from the cache. An empty TIKTOKEN_CACHE_DIR turns that cache off.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")


# --------------------------------------------------------------------------------------
# Identity: our encoder, tiktoken on our ranks file, our fast encode
# --------------------------------------------------------------------------------------


def test_pattern_is_tiktoken_cl100k():
    import tiktoken_ext.openai_public as openai_public
    import inspect

    # Read from tiktoken's own definition of cl100k_base (without downloading its ranks).
    assert GPT4_SPLIT_PATTERN in inspect.getsource(openai_public.cl100k_base)
    assert GPT4_SPLIT_PATTERN.startswith("'(?i:[sdmt]|ll|ve|re)|")


@pytest.mark.parametrize("name", list(IDENTITY_TEXTS))
def test_python_encoder_tiktoken_and_fast_encode_agree(tokenizer, tmp_path, no_tiktoken_file_cache, name):
    text = IDENTITY_TEXTS[name]
    ranks_file = tokenizer.save_tiktoken(tmp_path / "ours.tiktoken")
    ranks = tiktoken.load.load_tiktoken_bpe(str(ranks_file))
    assert ranks == tokenizer.to_tiktoken_ranks()
    reference = tiktoken.Encoding(name="ours", pat_str=GPT4_SPLIT_PATTERN, mergeable_ranks=ranks,
                                  special_tokens={ENDOFTEXT: len(ranks)})

    ours_python = tokenizer.encode_python(text)
    from_ranks_file = reference.encode(text, allowed_special={ENDOFTEXT})
    ours_fast = tokenizer.encode(text)
    assert ours_python == from_ranks_file == ours_fast
    assert tokenizer.decode(ours_fast) == text
    # The project's TiktokenTokenizer reads the same file into the same ids.
    wrapped = TiktokenTokenizer(ranks_file=ranks_file, pat_str=tokenizer.pattern, special_tokens=tokenizer.special_tokens)
    assert wrapped.encode(text) == ours_fast
    assert get_tokenizer(ranks_file).encode(text) == ours_fast  # its defaults are our defaults


def test_encoders_agree_on_random_text(tokenizer):
    # Random mixtures of the awkward parts (spaces before newlines, contractions, digits, combining
    # marks, 4-byte characters) find corner cases of the regex that hand-written texts miss.
    pieces = ["a", "the", " ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "7", "123", "!", "?!", ".", "中", "文",
              "🙂", "é", "e\u0301", "\u00a0", "Story", " tokens", ENDOFTEXT, "_", "(", "))"]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        ids = tokenizer.encode(text)
        assert tokenizer.encode_python(text) == ids, repr(text)
        assert tokenizer.decode(ids) == text


def test_special_tokens_follow_the_rules(tokenizer):
    text = f"a{ENDOFTEXT}b"
    eot = tokenizer.eot_id
    assert eot == tokenizer.vocab_size - 1 == 699
    assert tokenizer.encode(ENDOFTEXT) == tokenizer.encode_python(ENDOFTEXT) == [eot]
    assert tokenizer.decode([eot]) == ENDOFTEXT
    for encode in (tokenizer.encode, tokenizer.encode_python):
        with pytest.raises(ValueError, match="special token"):
            encode(text, allowed_special=set())  # tiktoken's rule: not allowed -> error
        assert encode(text, allowed_special="all") == encode(text)
    assert eot not in tokenizer.encode_ordinary_python(text)
    # A partial UTF-8 character decodes to the replacement character, like tiktoken.
    assert tokenizer.decode(list("中".encode())[:2]) == "\ufffd"
    with pytest.raises(ValueError):
        tokenizer.decode([tokenizer.vocab_size])


# --------------------------------------------------------------------------------------
# The trainer: incremental bookkeeping vs a textbook full recount
# --------------------------------------------------------------------------------------


def naive_train(chunk_counts: Counter, num_merges: int, byte_order=None) -> tuple[list[tuple[int, int]], list[bool]]:
    """Textbook BPE: recount every pair after every merge (slow, obviously right).

    Ties go to the smallest (left id, right id), like ours; ``byte_order`` (byte -> position)
    compares the 256 byte ids in another order (merged ids, 256 and up, stay as they are).
    Also returns, per merge, whether another pair had the same top count (a tie).
    """
    def order(token_id: int) -> int:
        return byte_order[token_id] if byte_order is not None and token_id < 256 else token_id

    words = [(list(chunk.encode("utf-8")), count) for chunk, count in chunk_counts.items()]
    merges, ties = [], []
    for new_id in range(256, 256 + num_merges):
        pair_counts = Counter()
        for word, count in words:
            for pair in zip(word, word[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], order(pair[0]), order(pair[1])))
        ties.append(list(pair_counts.values()).count(pair_counts[best]) > 1)
        merges.append(best)
        new_words = []
        for word, count in words:
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            new_words.append((merged, count))
        words = new_words
    return merges, ties


def merges_as_bytes(merges: list[tuple[int, int]]) -> list[tuple[bytes, bytes]]:
    token_bytes = [bytes([byte]) for byte in range(256)]
    for left, right in merges:
        token_bytes.append(token_bytes[left] + token_bytes[right])
    return [(token_bytes[left], token_bytes[right]) for left, right in merges]


def test_incremental_trainer_equals_full_recount():
    text = tiny_stories(num_stories=40) + ENGLISH + CHINESE * 2 + CODE + EMOJI + WHITESPACE
    num_merges = 300
    expected, _ = naive_train(count_chunks([text]), num_merges)
    trained = BPETokenizer.train(text, vocab_size=256 + num_merges + 1, progress=False)
    assert trained.merges == expected
    # Every merged token is the concatenation of its pair.
    for new_id, (left, right) in enumerate(trained.merges, start=256):
        assert trained.token_bytes[new_id] == trained.token_bytes[left] + trained.token_bytes[right]


def test_incremental_counts_stay_equal_to_a_recount():
    text = tiny_stories(num_stories=30) + CHINESE + CODE + "aaaaaaa bbb aaaa " * 3
    counts = IncrementalPairCounts(count_chunks([text]))
    for new_id in range(256, 256 + 150):
        (pair, _count) = counts.most_frequent_pair()
        counts.merge(pair, new_id)
    recount, where = Counter(), {}
    for index, (word, word_count) in enumerate(zip(counts.words, counts.word_counts)):
        for pair in zip(word, word[1:]):
            recount[pair] += word_count
            where.setdefault(pair, set()).add(index)
    assert {pair: n for pair, n in counts.pair_counts.items() if n} == dict(recount)
    # Every word that contains a pair is listed for it (words that lost it may stay listed).
    assert all(word_indices <= counts.words_with_pair[pair] for pair, word_indices in where.items())


def test_forbidden_pairs_are_skipped():
    # The trainer forbids a pair whose merged bytes already are a token (a safety net: two
    # tokens with the same bytes would be ambiguous for tiktoken). The heap must skip it.
    counts = IncrementalPairCounts(Counter({" ab": 3, " cd": 2}))
    assert counts.most_frequent_pair() == ((32, 97), 3)
    counts.forbid((32, 97))
    counts.forbid((97, 98))
    assert counts.most_frequent_pair() == ((32, 99), 2)


def test_merge_pair_left_to_right():
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([7, 7, 7], (7, 7), 9) == [9, 7]
    assert merge_pair([7, 7, 7, 7], (7, 7), 9) == [9, 9]


def test_tie_break_is_smallest_pair_and_deterministic():
    # " ab" and " cd" both occur 3 times: pairs (32, 97) and (32, 99) tie; the smaller ids win.
    tokenizer = BPETokenizer.train(" ab ab ab cd cd cd", vocab_size=258, special_tokens=(), progress=False)
    assert tokenizer.merges[:2] == [(32, 97), (32, 99)]
    again = BPETokenizer.train(" ab ab ab cd cd cd", vocab_size=258, special_tokens=(), progress=False)
    assert again.token_bytes == tokenizer.token_bytes


def test_chunks_are_counted_once_and_special_tokens_are_not_learned():
    counts = count_chunks([f"the cat{ENDOFTEXT} the cat"], special_tokens=[ENDOFTEXT])
    assert counts == Counter({"the": 1, " cat": 2, " the": 1})
    with pytest.warns(UserWarning, match="ran out of pairs"):  # only "ab" is left to learn
        tokenizer = BPETokenizer.train(f"{ENDOFTEXT}ab{ENDOFTEXT}" * 50, vocab_size=300, progress=False)
    assert all(b"<|" not in token for token in tokenizer.token_bytes)


# --------------------------------------------------------------------------------------
# Against a library: Hugging Face tokenizers
# --------------------------------------------------------------------------------------


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table byte -> printable character, which HF's ByteLevel uses to store bytes as text."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


# HF's regex engine (Oniguruma, Ruby syntax) reads `\p{N}{1,3}+` as "one or more runs of 1-3 digits"
# (so "1994" stays one chunk), where tiktoken and the regex module read a possessive "1-3 digits".
# An atomic group says the latter in both dialects.
GPT4_PATTERN_FOR_ONIGURUMA = GPT4_SPLIT_PATTERN.replace(r"\p{N}{1,3}+", r"(?>\p{N}{1,3})")


def test_oniguruma_pattern_differs_only_in_the_digit_rule():
    assert GPT4_PATTERN_FOR_ONIGURUMA != GPT4_SPLIT_PATTERN
    sample = ENGLISH + CODE + WHITESPACE + "12345678 ab1234cd"
    assert count_chunks([sample], GPT4_PATTERN_FOR_ONIGURUMA) == count_chunks([sample])


def hf_train(text: str, vocab_size: int, same_pre_split: bool):
    """Train HF's BPE; with ``same_pre_split`` it cuts text with our (GPT-4) regex, else with GPT-2's."""
    hf = pytest.importorskip("tokenizers")
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

    tokenizer = hf.Tokenizer(models.BPE())
    if same_pre_split:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT4_PATTERN_FOR_ONIGURUMA), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer


def hf_merges_as_bytes(hf_tokenizer) -> list[tuple[bytes, bytes]]:
    to_byte = {char: byte for byte, char in gpt2_bytes_to_unicode().items()}
    merges = json.loads(hf_tokenizer.to_str())["model"]["merges"]
    pairs = [merge.split(" ") if isinstance(merge, str) else merge for merge in merges]
    return [tuple(bytes(to_byte[c] for c in part) for part in pair) for pair in pairs]


def test_same_algorithm_as_huggingface_up_to_the_tie_break():
    text = tiny_stories(num_stories=100) + ENGLISH * 5 + CHINESE * 3 + CODE * 2 + EMOJI
    vocab_size = 600
    hf = hf_train(text, vocab_size, same_pre_split=True)
    ours = BPETokenizer.train(text, vocab_size, progress=False)
    chunk_counts = count_chunks([text])

    # Both cut the text into the same chunks (HF stores bytes as GPT-2's printable characters).
    to_byte = {char: byte for byte, char in gpt2_bytes_to_unicode().items()}
    hf_chunks = Counter(bytes(to_byte[c] for c in piece).decode() for piece, _ in hf.pre_tokenizer.pre_tokenize_str(text))
    assert hf_chunks == chunk_counts

    # Until two pairs tie for the top count, every correct trainer must pick the same pair.
    ours_merges = merges_as_bytes(ours.merges)
    hf_merges = hf_merges_as_bytes(hf)
    assert len(hf_merges) == len(ours_merges) == vocab_size - 257
    _, ties = naive_train(chunk_counts, len(ours_merges))
    first_tie = ties.index(True)
    assert first_tie >= 5
    assert hf_merges[:first_tie] == ours_merges[:first_tie]
    assert hf_merges != ours_merges  # ties were broken differently

    # On a tie, HF also takes the smallest pair of ids, but its ids number the 256 bytes in the
    # order of GPT-2's printable characters (printable bytes first), ours in byte order. The
    # textbook trainer with HF's byte order reproduces every one of HF's merges: HF and we run the
    # same algorithm, and differ only in how ties are broken.
    table = gpt2_bytes_to_unicode()
    hf_byte_order = {byte: position for position, byte in enumerate(sorted(range(256), key=table.get))}
    textbook_with_hf_ties, _ = naive_train(chunk_counts, len(ours_merges), byte_order=hf_byte_order)
    assert merges_as_bytes(textbook_with_hf_ties) == hf_merges

    # Different tie-breaks, nearly the same vocabulary, and the same compression within 1%.
    hf_tokens = {a + b for a, b in hf_merges}
    assert len(hf_tokens & set(ours.token_bytes)) >= 0.9 * len(hf_tokens)
    ours_count, hf_count = len(ours.encode(text)), len(hf.encode(text).ids)
    assert abs(ours_count - hf_count) <= 0.01 * hf_count


def test_compression_close_to_huggingface_default_byte_level():
    # HF's default ByteLevel pre-tokenizer uses GPT-2's regex, so chunks (and merges) differ a bit;
    # the number of tokens each needs for the text should still be close.
    text = tiny_stories(num_stories=200) + ENGLISH * 4 + CODE * 3
    hf = hf_train(text, 500, same_pre_split=False)
    ours = BPETokenizer.train(text, 500, progress=False)
    ours_count, hf_count = len(ours.encode(text)), len(hf.encode(text).ids)
    assert abs(ours_count - hf_count) <= 0.10 * hf_count
    assert hf.decode(hf.encode(text).ids) == text == ours.decode(ours.encode(text))


# --------------------------------------------------------------------------------------
# Saving, loading, sizes, errors
# --------------------------------------------------------------------------------------


def test_save_load_round_trip(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path / "tok.json")
    for loaded in (BPETokenizer.load(path), get_tokenizer(path), get_tokenizer(str(path)),
                   tokenizer_from_config(json.loads(json.dumps(tokenizer.to_config())))):
        assert isinstance(loaded, BPETokenizer)
        assert loaded.token_bytes == tokenizer.token_bytes
        assert loaded.special_tokens == tokenizer.special_tokens
        assert loaded.pattern == tokenizer.pattern and loaded.name == tokenizer.name
        assert loaded.vocab_size == tokenizer.vocab_size == 700 and loaded.eot_id == 699
        assert loaded.encode(ENGLISH + CHINESE) == tokenizer.encode(ENGLISH + CHINESE)
    # The merges are not stored, but recovered from the tokens' bytes.
    assert BPETokenizer.load(path).merges == tokenizer.merges
    # Compact: about as big as the tokens in base64 (it goes into every checkpoint).
    config = tokenizer.to_config()
    assert config["type"] == "bpe"
    merged_bytes = sum(len(token) for token in tokenizer.token_bytes[256:])
    assert len(json.dumps(config)) < 2 * merged_bytes + 5 * tokenizer.num_merges + 1000


def test_load_refuses_other_tokenizer_files(tmp_path):
    path = tmp_path / "char.json"
    path.write_text(json.dumps({"type": "char", "chars": ["a"]}))
    with pytest.raises(ValueError, match="not a 'bpe'"):
        BPETokenizer.load(path)


def test_chinese_training():
    text = CHINESE * 20 + "今天天气很好。我们去公园散步吧！" * 10
    tokenizer = BPETokenizer.train(text, vocab_size=400, progress=False)
    whole_characters = [t for t in tokenizer.token_bytes[256:] if _is_utf8(t) and len(t.decode()) >= 1]
    assert any(len(t.decode()) >= 2 for t in whole_characters), "should learn multi-character Chinese tokens"
    sample = "字节对编码：今天天气很好。"
    ids = tokenizer.encode(sample)
    assert ids == tokenizer.encode_python(sample)
    assert tokenizer.decode(ids) == sample
    assert len(ids) < len(sample.encode())


def _is_utf8(token: bytes) -> bool:
    try:
        token.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_vocab_size_counts_bytes_merges_and_special_tokens():
    tokenizer = BPETokenizer.train(ENGLISH * 3, vocab_size=300, special_tokens=(ENDOFTEXT, "<|pad|>"), progress=False)
    assert tokenizer.vocab_size == 300 and tokenizer.num_merges == 298 - 256
    assert tokenizer.special_tokens == {ENDOFTEXT: 298, "<|pad|>": 299}
    assert tokenizer.tiktoken_encoding.n_vocab == 300
    smallest = BPETokenizer.train("hello", vocab_size=257, progress=False)  # no merges: bytes only
    assert smallest.encode("hi") == [104, 105] and smallest.eot_id == 256


def test_too_small_vocab_and_empty_text_are_errors():
    with pytest.raises(ValueError, match="at least 257"):
        BPETokenizer.train("hello", vocab_size=256, progress=False)
    with pytest.raises(ValueError, match="at least 258"):
        BPETokenizer.train("hello", vocab_size=257, special_tokens=(ENDOFTEXT, "<|pad|>"), progress=False)
    for empty in ("", [], ["", ""], ENDOFTEXT * 3):
        with pytest.raises(ValueError, match="no text"):
            BPETokenizer.train(empty, vocab_size=300, progress=False)


def test_running_out_of_pairs_warns_and_stops():
    with pytest.warns(UserWarning, match="ran out of pairs"):
        tokenizer = BPETokenizer.train("ab ab ab", vocab_size=1000, progress=False)
    assert [tokenizer.token_bytes[i] for i in range(256, tokenizer.num_merges + 256)] == [b"ab", b" ab"]  # (a,b) occurs 3 times, then (" ", ab) twice
    assert tokenizer.encode("ab ab") == [256, 257]


def test_trains_on_a_list_of_texts():
    one = BPETokenizer.train(ENGLISH + ENDOFTEXT + CODE, vocab_size=320, progress=False)
    many = BPETokenizer.train([ENGLISH, CODE], vocab_size=320, progress=False)
    assert one.token_bytes == many.token_bytes


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    from llm_from_scratch.cli import tokenizer as tokenizer_command

    parser = argparse.ArgumentParser(prog="llmfs")
    tokenizer_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_train_and_encode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    text_file = tmp_path / "stories.txt"
    text_file.write_text(tiny_stories(num_stories=150), encoding="utf-8")
    out = tmp_path / "tok.json"
    assert run_cli(["tokenizer", "train", "--dataset", str(text_file), "--vocab_size", "400", "--out", str(out),
                    "--tiktoken-out", str(tmp_path / "tok.tiktoken"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "143 merges" in printed and "bytes per token" in printed and "pieces:" in printed
    tokenizer = get_tokenizer(out)
    assert tokenizer.vocab_size == 400
    assert (tmp_path / "tok.tiktoken").exists()

    assert run_cli(["tokenizer", "encode", "--tokenizer", str(out), "Mia went to the park. 你"]) == 0
    printed = capsys.readouterr().out
    assert str(tokenizer.encode("Mia went to the park. 你")) in printed
    assert "' park'" in printed and "b'\\xe4'" in printed
