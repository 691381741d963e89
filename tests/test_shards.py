"""Token shards: chunked multi-process tokenizing, the file format, reuse, validation, windows."""

import argparse
import json
import os
import pickle

import numpy as np
import pytest
import torch

from llm_from_scratch.data import GPTDatasetV1
from llm_from_scratch.data import shards as shards_module
from llm_from_scratch.data.shards import (
    ShardError,
    ShardSet,
    TokenWindowDataset,
    check_shard_tokenizer,
    find_safe_cut,
    iter_text_chunks,
    load_tokens,
    prepare_shards,
    token_dtype,
)
from llm_from_scratch.data.tiny_stories import tiny_stories
from llm_from_scratch.tokenizers import CharTokenizer, Tokenizer, register_tokenizer_type

# Small chunks force many chunk boundaries (and several pool tasks) on a small text.
CHUNK = 2000


def corpus_text(num_stories=120, seed=0):
    """Stories with blank lines, <|endoftext|>, trailing spaces, CRLF and a long line: boundary traps."""
    stories = tiny_stories(num_stories, seed=seed).split("\n\n")
    for i in range(0, len(stories), 7):
        stories[i] = stories[i].replace(". ", ".  \n", 2)  # trailing spaces before a newline
    for i in range(3, len(stories), 11):
        stories[i] = stories[i].replace("\n", "\r\n")
    text = "\n\n<|endoftext|>\n\n".join(stories[:len(stories) // 2]) + "\n\n" + "\n\n".join(stories[len(stories) // 2:])
    return text + "\n" + "x" * 300 + " y\n\n\n"


@pytest.fixture
def corpus(tmp_path):
    train, validation = tmp_path / "train.txt", tmp_path / "validation.txt"
    train.write_text(corpus_text(120), encoding="utf-8", newline="")
    validation.write_text(corpus_text(20, seed=1), encoding="utf-8", newline="")
    return train, validation


@pytest.fixture
def char_tokenizer(corpus):
    return CharTokenizer("".join(read_text(path) for path in corpus))


def read_text(path):
    return path.read_bytes().decode("utf-8")


def prepare(corpus, tokenizer, out_dir, **kwargs):
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("chunk_bytes", CHUNK)
    kwargs.setdefault("progress", False)
    return prepare_shards(corpus[0], corpus[1], tokenizer, out_dir, **kwargs)


# --------------------------------------------------------------------------------------
# Chunking and tokenizing
# --------------------------------------------------------------------------------------


def test_chunks_join_to_the_text_and_cut_after_a_line_last_letter(corpus):
    stats = {}
    chunks = list(iter_text_chunks(corpus[0], CHUNK, stats))
    assert len(chunks) > 10 and "".join(chunks) == read_text(corpus[0])
    assert stats["inexact_cuts"] == 0
    for chunk in chunks[:-1]:
        assert chunk[-1].isalnum()  # the line's punctuation and newline start the next chunk
    assert find_safe_cut("The end.\n\nOnce upon") == len("The end")
    assert find_safe_cut("no newline at all") is None


def test_chunked_two_process_tokenizing_equals_encoding_the_whole_text(corpus, char_tokenizer, tmp_path):
    shard_set = prepare(corpus, char_tokenizer, tmp_path / "out", num_workers=2)
    assert shard_set.meta["num_workers"] == 2 and shard_set.meta["inexact_cuts"] == 0
    for split, path in zip(("train", "validation"), corpus):
        tokens = load_tokens(getattr(shard_set, split))
        assert tokens.tolist() == char_tokenizer.encode(read_text(path))
        assert shard_set.meta["counts"][split] == len(tokens)


def test_one_and_two_workers_write_identical_files(corpus, char_tokenizer, tmp_path):
    one = prepare(corpus, char_tokenizer, tmp_path / "one", num_workers=1)
    two = prepare(corpus, char_tokenizer, tmp_path / "two", num_workers=2)
    assert one.meta["num_workers"] == 1 and two.meta["num_workers"] == 2
    for split in ("train", "validation"):
        assert getattr(one, split).read_bytes() == getattr(two, split).read_bytes()


@pytest.mark.integration
def test_gpt2_chunked_ids_equal_encoding_the_whole_text(corpus, tmp_path):
    from llm_from_scratch.tokenizers import get_tokenizer

    tokenizer = get_tokenizer("gpt2")
    shard_set = prepare(corpus, tokenizer, tmp_path / "gpt2", num_workers=2, chunk_bytes=500)
    meta = shard_set.meta
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 50257 and meta["eot_id"] == 50256
    train_ids = load_tokens(shard_set.train).tolist()
    assert train_ids == tokenizer.encode(read_text(corpus[0]))
    assert train_ids.count(50256) > 10  # <|endoftext|> in the text became the special token
    assert load_tokens(shard_set.validation).tolist() == tokenizer.encode(read_text(corpus[1]))
    # Why the cut is not simply "after a newline": GPT-2 encodes two newlines before a word as
    # two pieces, but at the end of a chunk as one token.
    assert tokenizer.encode("The end.\n\n") + tokenizer.encode("Once") != tokenizer.encode("The end.\n\nOnce")
    assert tokenizer.encode("The end") + tokenizer.encode(".\n\nOnce") == tokenizer.encode("The end.\n\nOnce")


def test_non_utf8_and_empty_files_are_clear_errors(tmp_path, char_tokenizer):
    bad, empty, good = tmp_path / "bad.txt", tmp_path / "empty.txt", tmp_path / "good.txt"
    bad.write_bytes("caf\u00e9 ".encode("latin-1"))
    empty.write_text("")
    good.write_text("hello")
    with pytest.raises(ShardError, match="not UTF-8.*byte 3"):
        prepare_shards(bad, good, CharTokenizer("cafe hlo"), tmp_path / "o1", num_workers=1, progress=False)
    with pytest.raises(ShardError, match="validation text file .* is empty"):
        prepare_shards(good, empty, CharTokenizer("hello"), tmp_path / "o2", num_workers=1, progress=False)


# --------------------------------------------------------------------------------------
# File format
# --------------------------------------------------------------------------------------


@register_tokenizer_type("test-big-vocab")
class BigVocabTokenizer(Tokenizer):
    """Ids above 65535: one per character, offset into a vocabulary of 70,000."""

    name = "big"
    eot_id = 69999

    @property
    def vocab_size(self):
        return 70000

    def encode(self, text, allowed_special=None):
        return [69000 + ord(char) for char in text]

    def decode(self, ids):
        return "".join(chr(int(i) - 69000) for i in ids)

    def to_config(self):
        return {"type": self.config_type}

    @classmethod
    def from_config(cls, config):
        return cls()


def test_dtype_is_uint16_when_the_vocabulary_fits_else_uint32(corpus, char_tokenizer, tmp_path):
    assert token_dtype(50257) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(100277) == np.uint32
    small = prepare(corpus, char_tokenizer, tmp_path / "small")
    assert small.meta["dtype"] == "uint16"
    assert small.train.stat().st_size == 2 * small.meta["counts"]["train"]

    big = prepare(corpus, BigVocabTokenizer(), tmp_path / "big")
    meta = json.loads((tmp_path / "big" / "meta.json").read_text())
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70000 and meta["eot_id"] == 69999
    assert big.train.stat().st_size == 4 * meta["counts"]["train"]
    tokens = load_tokens(big.train)
    assert tokens.dtype == np.dtype("<u4") and int(tokens.max()) > 65535
    assert tokens.tolist() == BigVocabTokenizer().encode(read_text(corpus[0]))
    # raw little-endian ids, no header: any tool can read them
    assert np.fromfile(big.train, dtype="<u4").tolist() == tokens.tolist()


def test_meta_json_describes_the_shards(corpus, char_tokenizer, tmp_path):
    shard_set = prepare(corpus, char_tokenizer, tmp_path / "out", name="tiny")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["format"] == "llmfs-token-shards" and meta["version"] == 1 and meta["name"] == "tiny"
    assert meta["tokenizer"] == char_tokenizer.to_config()
    assert meta["vocab_size"] == char_tokenizer.vocab_size and meta["eot_id"] is None
    assert set(meta["counts"]) == set(meta["sources"]) == {"train", "validation"}
    assert meta["sources"]["train"]["size"] == corpus[0].stat().st_size
    assert isinstance(shard_set, ShardSet) and shard_set.directory == tmp_path / "out"
    assert shard_set.meta["reused"] is False


def test_default_out_dir_is_in_the_cache_named_after_corpus_and_tokenizer(corpus, char_tokenizer, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "cache"))
    shard_set = prepare_shards(*corpus, char_tokenizer, name="my corpus", num_workers=1, progress=False)
    folder = shard_set.directory
    assert folder.parent == tmp_path / "cache" / "shards"
    assert folder.name == f"my_corpus-{shards_module.tokenizer_hash(char_tokenizer)}"
    other = prepare_shards(*corpus, CharTokenizer(read_text(corpus[0]) + read_text(corpus[1]) + "#"),
                           name="my corpus", num_workers=1, progress=False)
    assert other.directory != folder  # another tokenizer, another folder


# --------------------------------------------------------------------------------------
# Reuse, rebuild, atomicity
# --------------------------------------------------------------------------------------


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_second_call_reuses_and_changes_trigger_a_rebuild(corpus, char_tokenizer, tmp_path):
    out = tmp_path / "out"
    first = prepare(corpus, char_tokenizer, out)
    before = mtimes(out)
    again = prepare(corpus, char_tokenizer, out)
    assert again.meta["reused"] is True and mtimes(out) == before  # nothing rewritten
    assert again.meta["counts"] == first.meta["counts"]

    # the text changed (same size, so only the mtime tells)
    text = read_text(corpus[1])
    corpus[1].write_text(text[::-1], encoding="utf-8", newline="")
    os.utime(corpus[1], ns=(corpus[1].stat().st_atime_ns, corpus[1].stat().st_mtime_ns + 10**9))
    rebuilt = prepare(corpus, char_tokenizer, out)
    assert rebuilt.meta["reused"] is False
    assert load_tokens(rebuilt.validation).tolist() == char_tokenizer.encode(text[::-1])

    # another tokenizer for the same folder
    other = CharTokenizer("".join(char_tokenizer.chars) + "#")
    assert prepare(corpus, other, out).meta["tokenizer"] == other.to_config()
    # force
    before = mtimes(out)
    assert prepare(corpus, other, out, force=True).meta["reused"] is False
    assert mtimes(out)["train.bin"] != before["train.bin"]


def test_a_failure_leaves_no_partial_shard(corpus, char_tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = {"n": 0}
    real_encode_chunk = shards_module._encode_chunk

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("injected failure")
        return real_encode_chunk(*args)

    monkeypatch.setattr(shards_module, "_encode_chunk", failing)
    with pytest.raises(RuntimeError, match="injected"):
        prepare(corpus, char_tokenizer, out)
    assert list(out.iterdir()) == []  # no .bin, no temporary file, no meta.json
    monkeypatch.undo()

    good = prepare(corpus, char_tokenizer, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # A failure inside a worker process (a character the tokenizer does not know) while
    # rebuilding: the previous shards stay complete and valid.
    corpus[1].write_text(read_text(corpus[1]) + "\u00a7", encoding="utf-8")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        prepare(corpus, char_tokenizer, out, num_workers=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert load_tokens(good.train).tolist() == char_tokenizer.encode(read_text(corpus[0]))


# --------------------------------------------------------------------------------------
# Clear errors for corrupt or mismatched shards
# --------------------------------------------------------------------------------------


@pytest.fixture
def prepared(corpus, char_tokenizer, tmp_path):
    return prepare(corpus, char_tokenizer, tmp_path / "out")


def test_missing_meta_or_bin(prepared):
    prepared.validation.unlink()
    with pytest.raises(ShardError, match="missing shard file .*validation.bin.*--force"):
        load_tokens(prepared.validation)
    (prepared.directory / "meta.json").unlink()
    with pytest.raises(ShardError, match="no meta.json"):
        load_tokens(prepared.train)


@pytest.mark.parametrize("extra_bytes", [1, 2])  # not a multiple of the item size / one token too many
def test_truncated_or_grown_bin(prepared, extra_bytes):
    with open(prepared.train, "ab") as file:
        file.write(b"\0" * extra_bytes)
    with pytest.raises(ShardError, match="corrupt or truncated shard .*train.bin.*llmfs prepare --force"):
        load_tokens(prepared.train)


def test_truncated_bin_is_rebuilt_by_prepare(prepared, corpus, char_tokenizer):
    data = prepared.train.read_bytes()
    prepared.train.write_bytes(data[: len(data) // 2])
    rebuilt = prepare(corpus, char_tokenizer, prepared.directory)
    assert rebuilt.meta["reused"] is False and prepared.train.read_bytes() == data


def test_id_outside_the_vocabulary(prepared):
    tokens = np.memmap(prepared.train, dtype="<u2", mode="r+")
    tokens[len(tokens) // 2] = 60000
    tokens.flush()
    del tokens
    with pytest.raises(ShardError, match="token id 60000.*vocabulary has only"):
        load_tokens(prepared.train)


def test_shards_made_with_another_tokenizer(prepared, char_tokenizer):
    check_shard_tokenizer(prepared.meta, char_tokenizer)  # same tokenizer: fine
    other = CharTokenizer("abc")
    with pytest.raises(ShardError, match="prepared with the tokenizer char .* requested tokenizer is char"):
        check_shard_tokenizer(prepared.meta, other)


def test_corpus_smaller_than_one_window(prepared):
    n = prepared.meta["counts"]["validation"]
    assert len(TokenWindowDataset(prepared.validation, max_length=n - 1)) == 1  # exactly one window fits
    with pytest.raises(ValueError, match=f"there are {n:,} tokens.*needs max_length \\+ 1 = {n + 1:,}.*smaller"):
        TokenWindowDataset(prepared.validation, max_length=n)


# --------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_length,stride", [(16, None), (16, 16), (16, 5), (7, 30), (1, 1)])
def test_windows_equal_gptdatasetv1_windows(prepared, max_length, stride):
    ids = load_tokens(prepared.validation)
    ours = TokenWindowDataset(prepared.validation, max_length, stride)
    book = GPTDatasetV1(torch.as_tensor(ids.astype(np.int64)), None, max_length, stride or max_length)
    assert len(ours) == len(book) > 0
    for i in list(range(min(len(ours), 50))) + [len(ours) - 1, -1]:
        (x, y), (bx, by) = ours[i], book[i]
        assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (max_length,)
        assert torch.equal(x, bx) and torch.equal(y, by)
    with pytest.raises(IndexError):
        ours[len(ours)]


def test_dataset_reads_from_the_memmap_and_pickles_the_file_name(prepared):
    dataset = TokenWindowDataset(prepared.train, max_length=32)
    assert isinstance(dataset.tokens, np.memmap)  # nothing loaded into RAM
    assert dataset.num_tokens == prepared.meta["counts"]["train"]
    payload = pickle.dumps(dataset)
    assert len(payload) < 2000  # the file name travels to DataLoader workers, not the ids
    copy = pickle.loads(payload)
    assert isinstance(copy.tokens, np.memmap)
    assert all(torch.equal(a, b) for a, b in zip(copy[3], dataset[3]))

    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True)
    x, y = next(iter(loader))
    assert x.shape == y.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])


def test_dataset_also_takes_an_array(prepared):
    ids = np.arange(100, dtype=np.uint16)
    x, y = TokenWindowDataset(ids, 10, 10)[2]
    assert x.tolist() == list(range(20, 30)) and y.tolist() == list(range(21, 31))
    assert len(TokenWindowDataset(torch.arange(100), 10)) == len(range(0, 90, 10))


# --------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------


def run_prepare_cli(argv):
    from llm_from_scratch.cli import prepare as prepare_cli

    parser = argparse.ArgumentParser(prog="llmfs")
    prepare_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_prepares_then_reuses(corpus, char_tokenizer, tmp_path, capsys):
    tokenizer_file = char_tokenizer.save(tmp_path / "char.json")
    out = tmp_path / "cli-out"
    argv = ["prepare", "--dataset", str(corpus[0].parent), "--tokenizer", str(tokenizer_file),
            "--num_workers", "2", "--out_dir", str(out), "--no-progress"]
    assert run_prepare_cli(argv) == 0
    printed = capsys.readouterr().out
    tokens = json.loads((out / "meta.json").read_text())["counts"]
    assert f"{tokens['train']:,} tokens" in printed and "uint16" in printed and "tokens/s" in printed
    assert load_tokens(out / "train.bin").tolist() == char_tokenizer.encode(read_text(corpus[0]))

    argv = [a.replace("--num_workers", "--num-workers").replace("--out_dir", "--out-dir") for a in argv]
    assert run_prepare_cli(argv) == 0
    assert "Up to date" in capsys.readouterr().out
    assert run_prepare_cli(argv + ["--force"]) == 0
    assert "Tokenized" in capsys.readouterr().out
