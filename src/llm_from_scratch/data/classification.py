"""Text classification data (chapter 6): a CSV of (text, label) rows -> padded token ids + label ids.

To classify a text with a GPT model, every text in a batch becomes a row of token ids of the same
length ``max_length``:

    "You won a prize!"  ->  [1639, 1839, 257, 11596, 0]  -> [1639, 1839, 257, 11596, 0, 50256, 50256, ...]
                            (tokenize)                      (pad on the right up to max_length)

Longer texts are cut to ``max_length`` tokens (their beginning is kept). The padding token is the
end-of-text token (id 50256 for GPT-2): the model knows it from pretraining, and it adds no new
id to the vocabulary. Labels are strings in the CSV (``ham``/``spam``, ``positive``/``negative``/
``neutral``, ``0``/``1``...) and become ids ``0 .. num_classes-1``.

Each dataset also keeps the real length of every (truncated) text, ``dataset.lengths``, because a
classifier that reads the output at the *last real token* needs it: with right padding the last
*position* of a short message is a padding token (see ``docs/14-classification-data.md``). Ask for
it per item with ``return_lengths=True``: items become ``(input_ids, label, length)`` and a
:class:`~torch.utils.data.DataLoader` batch ``(inputs (B, T), labels (B,), lengths (B,))``.
The default, ``(input_ids, label)``, is the book's.

The book's names are here: :class:`SpamDataset` (with the book's signature) and the loaders of
:func:`create_classification_loaders` (batch size 8, training batches shuffled with a seeded
generator and ``drop_last=True``, validation/test padded to the training set's ``max_length``).
:func:`split_classification_csv` cuts one CSV of your own into train/validation/test files.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from llm_from_scratch.io.atomic import write_atomically
from llm_from_scratch.data.sliding_window import encode_text
from llm_from_scratch.data.sms_spam import SPLIT_FILES, create_balanced_dataset, random_split


def encode_and_pad(text: str, tokenizer: Any, max_length: int, pad_token_id: int) -> tuple[list[int], int]:
    """One text -> ``(ids, length)``: ``ids`` has exactly ``max_length`` entries, ``length`` real ones.

    Truncates to the first ``max_length`` tokens, then pads on the right with ``pad_token_id``.
    This is what the dataset does to each row, and what a ``classify_text`` function must do to
    a new text so that the model sees it the way it saw the training data.
    """
    ids = encode_text(text, tokenizer)[:max_length]
    return ids + [pad_token_id] * (max_length - len(ids)), len(ids)


def default_pad_token_id(tokenizer: Any) -> int | None:
    """The tokenizer's end-of-text id: ``eot_id`` (our tokenizers) or ``eot_token`` (tiktoken)."""
    for attribute in ("eot_id", "eot_token"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, int):
            return value
    return None


class ClassificationDataset(Dataset):
    """Rows of a CSV file as ``(input_ids, label)`` tensors for fine-tuning a classifier.

    Args:
        csv_path: a CSV file with a header row (UTF-8; an Excel byte-order mark is fine).
        tokenizer: any tokenizer with ``encode(text)`` (ours, or a ``tiktoken`` encoding).
        max_length: pad/truncate every text to this many tokens. Default: the longest encoded
            text of this file, capped at ``context_length``. Give the training set's value to
            the validation and test sets (the loaders below do).
        pad_token_id: id used for padding. Default: the tokenizer's end-of-text id (50256 for
            GPT-2); required for tokenizers without one.
        text_column, label_column: column names. Exact match first, then ignoring case, so the
            book's ``Text``/``Label`` files work with the defaults.
        label_names: the class names in id order, e.g. ``["ham", "spam"]``. Default: the sorted
            distinct labels of this file (numerically when they are all whole numbers, so
            ``"2" < "10"``). A label not in ``label_names`` is an error.
        context_length: the model's context length; ``max_length`` may not exceed it and the
            default ``max_length`` is capped by it. None: no cap.
        return_lengths: items are ``(input_ids, label, length)`` instead of ``(input_ids, label)``.

    Attributes: ``texts`` and ``label_strings`` (as read), ``labels`` (LongTensor (N,)),
    ``lengths`` (LongTensor (N,), real tokens per row after truncation, at least 1),
    ``label_names``, ``label_to_id``, ``num_classes``, ``max_length``, ``pad_token_id``,
    ``num_truncated`` (rows longer than ``max_length``), ``longest_encoded_length`` (before
    truncation).
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        tokenizer: Any,
        max_length: int | None = None,
        pad_token_id: int | None = None,
        text_column: str = "text",
        label_column: str = "label",
        label_names: Sequence[str] | None = None,
        *,
        context_length: int | None = None,
        return_lengths: bool = False,
    ):
        self.csv_path = Path(csv_path)
        self.return_lengths = return_lengths
        self.texts, self.label_strings, self.line_numbers = read_classification_csv(
            self.csv_path, text_column, label_column
        )

        # Labels: strings -> ids.
        if label_names is None:
            label_names = self._default_label_names(self.label_strings)
        self.label_names = [str(name).strip() for name in label_names]
        if len(set(self.label_names)) != len(self.label_names) or not self.label_names:
            raise ValueError(f"label_names must be distinct and non-empty, got {self.label_names}")
        self.label_to_id = {name: index for index, name in enumerate(self.label_names)}
        unknown = [(line, label) for line, label in zip(self.line_numbers, self.label_strings)
                   if label not in self.label_to_id]
        if unknown:
            line, label = unknown[0]
            found = sorted({label for _, label in unknown})
            raise ValueError(
                f"{self.csv_path}: line {line} has the label {label!r}, which is not one of the known "
                f"labels {self.label_names} ({len(unknown)} rows have unknown labels: {found[:10]}). "
                "For validation/test files the known labels are the training set's: every class must "
                "appear in the training data. Or pass label_names= listing all classes."
            )
        self.labels = torch.tensor([self.label_to_id[label] for label in self.label_strings], dtype=torch.long)

        # Texts: tokenize once. All ids are kept in one flat tensor (with offsets) rather than one
        # padded row per text, so memory is proportional to the real number of tokens.
        if pad_token_id is None:
            pad_token_id = default_pad_token_id(tokenizer)
            if pad_token_id is None:
                raise ValueError(
                    f"{type(tokenizer).__name__} has no end-of-text token to pad with; pass pad_token_id="
                )
        vocab_size = getattr(tokenizer, "vocab_size", None) or getattr(tokenizer, "n_vocab", None)
        if not isinstance(pad_token_id, int) or pad_token_id < 0 or (
            isinstance(vocab_size, int) and pad_token_id >= vocab_size
        ):
            allowed = f"0 .. {vocab_size - 1}" if isinstance(vocab_size, int) else "a non-negative int"
            raise ValueError(f"pad_token_id must be an id of the tokenizer ({allowed}), got {pad_token_id!r}")
        self.pad_token_id = pad_token_id

        encoded = [self._encode(text, line, tokenizer) for text, line in zip(self.texts, self.line_numbers)]
        full_lengths = [len(ids) for ids in encoded]
        self.longest_encoded_length = max(full_lengths)
        self.max_length = self._choose_max_length(max_length, context_length)

        self.lengths = torch.tensor([min(n, self.max_length) for n in full_lengths], dtype=torch.long)  # (N,)
        self.num_truncated = sum(n > self.max_length for n in full_lengths)
        self._offsets = torch.zeros(len(encoded) + 1, dtype=torch.long)  # row i is _ids[_offsets[i]:_offsets[i+1]]
        self._offsets[1:] = torch.cumsum(self.lengths, dim=0)
        self._ids = torch.tensor(
            [token for ids in encoded for token in ids[: self.max_length]], dtype=torch.long
        )  # (total real tokens,)

    # ----------------------------------------------------------------------------------

    def _default_label_names(self, labels: Sequence[str]) -> list[str]:
        """Sorted distinct labels; whole numbers sort as numbers."""
        distinct = set(labels)
        if all(label.removeprefix("-").isdecimal() for label in distinct):
            return sorted(distinct, key=int)
        return sorted(distinct)

    def _encode(self, text: str, line: int, tokenizer: Any) -> list[int]:
        try:
            ids = encode_text(text, tokenizer)
        except Exception as error:
            raise ValueError(f"{self.csv_path}: cannot tokenize the text on line {line}: {error}") from error
        if not ids:
            raise ValueError(f"{self.csv_path}: the text on line {line} encodes to no tokens at all")
        return ids

    def _choose_max_length(self, max_length: int | None, context_length: int | None) -> int:
        if context_length is not None and (not isinstance(context_length, int) or context_length < 1):
            raise ValueError(f"context_length must be a positive whole number, got {context_length!r}")
        if max_length is None:
            if context_length is None:
                return self.longest_encoded_length
            return min(self.longest_encoded_length, context_length)
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive whole number, got {max_length!r}")
        if context_length is not None and max_length > context_length:
            raise ValueError(
                f"max_length={max_length} is longer than the model's context_length={context_length}; "
                f"use max_length <= {context_length} (texts are truncated to it)"
            )
        return max_length

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def _longest_encoded_length(self) -> int:
        """The book's method name for :attr:`longest_encoded_length`."""
        return self.longest_encoded_length

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} rows")
        start, end = int(self._offsets[index]), int(self._offsets[index + 1])
        input_ids = torch.full((self.max_length,), self.pad_token_id, dtype=torch.long)  # (max_length,)
        input_ids[: end - start] = self._ids[start:end]
        if self.return_lengths:
            return input_ids, self.labels[index], self.lengths[index]  # (T,), (), ()
        return input_ids, self.labels[index]  # (T,), ()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.csv_path)!r}, rows={len(self)}, classes={self.label_names}, "
            f"max_length={self.max_length}, truncated={self.num_truncated})"
        )


class SpamDataset(ClassificationDataset):
    """The book's class: ``SpamDataset(csv_file, tokenizer, max_length=None, pad_token_id=50256)``.

    Reads files from :func:`~llm_from_scratch.data.sms_spam.prepare_sms_spam` (``text``/``label``,
    label ``ham``/``spam``) as well as the book's own (``Text``/``Label``, label 0/1). ``ham``
    is always 0 and ``spam`` 1, even in a file that holds only one of them. Items are
    ``(input_ids, label)``; further keyword arguments go to :class:`ClassificationDataset`.
    """

    def __init__(self, csv_file: str | os.PathLike, tokenizer: Any, max_length: int | None = None,
                 pad_token_id: int = 50256, **kwargs: Any):
        super().__init__(csv_file, tokenizer, max_length=max_length, pad_token_id=pad_token_id, **kwargs)

    def _default_label_names(self, labels: Sequence[str]) -> list[str]:
        distinct = set(labels)
        for names in (["ham", "spam"], ["0", "1"]):
            if distinct <= set(names):
                return names
        return super()._default_label_names(labels)


def read_classification_csv(
    path: str | os.PathLike, text_column: str = "text", label_column: str = "label"
) -> tuple[list[str], list[str], list[int]]:
    """Read ``(texts, labels, line_numbers)`` from a CSV file with a header row.

    Labels are stripped of surrounding spaces; texts are kept as they are. Raises
    FileNotFoundError / ValueError saying what is wrong and where: a missing file, an empty
    file, a missing column (listing the columns that exist), a row with an empty text or
    label, a file with no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    texts: list[str] = []
    labels: list[str] = []
    line_numbers: list[int] = []
    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # the default (128 KiB per field) would refuse long texts
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if header is None or not any(cell.strip() for cell in header):
                raise ValueError(
                    f"{path} is empty; a classification CSV needs a header row naming its columns "
                    f"(e.g. {text_column},{label_column}) and one row per example"
                )
            text_index = _column_index(header, text_column, "text_column", path)
            label_index = _column_index(header, label_column, "label_column", path)
            for record in reader:
                if not record or not any(cell.strip() for cell in record):
                    continue  # blank line
                line = reader.line_num
                text = record[text_index] if text_index < len(record) else ""
                label = record[label_index].strip() if label_index < len(record) else ""
                if not label:
                    raise ValueError(f"{path}: the row ending on line {line} has an empty label "
                                     f"(column {header[label_index]!r}); fill it in or remove the row")
                if not text:
                    raise ValueError(f"{path}: the row ending on line {line} has an empty text "
                                     f"(column {header[text_index]!r}); fill it in or remove the row")
                texts.append(text)
                labels.append(label)
                line_numbers.append(line)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error}); save it as UTF-8 CSV") from error
    except csv.Error as error:
        raise ValueError(f"{path} is not a readable CSV file: {error}") from error
    finally:
        csv.field_size_limit(old_limit)
    if not texts:
        raise ValueError(f"{path} has a header but no rows")
    return texts, labels, line_numbers


def _column_index(header: list[str], wanted: str, argument: str, path: Path) -> int:
    """Position of column ``wanted``: exact name first, then ignoring case and spaces."""
    names = [name.strip() for name in header]
    if wanted in names:
        return names.index(wanted)
    folded = [index for index, name in enumerate(names) if name.lower() == wanted.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError(
        f"{path} has no column {wanted!r}; its columns are {names}. "
        f"Pass {argument}= with the right name (--{argument} on the command line)."
    )


def create_classification_loaders(
    train_csv: str | os.PathLike,
    val_csv: str | os.PathLike,
    test_csv: str | os.PathLike | None,
    tokenizer: Any,
    batch_size: int = 8,
    *,
    max_length: int | None = None,
    context_length: int | None = None,
    pad_token_id: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    return_lengths: bool = False,
    num_workers: int = 0,
    drop_last: bool = True,
    seed: int = 123,
) -> tuple[DataLoader, DataLoader, DataLoader | None]:
    """The book's three loaders: ``(train_loader, val_loader, test_loader)``.

    The training set decides ``max_length`` (its longest text, capped at ``context_length``,
    unless given) and the label names; validation and test are padded/truncated to the same
    length and must only use the training set's labels. Training batches are shuffled by a
    generator seeded with ``seed`` (same order every run) and, as in the book, the last
    incomplete batch is dropped (``drop_last``) unless that would leave no batch at all.
    ``test_csv=None`` gives ``None`` for the test loader. ``tokenizer`` may be a name
    (``"gpt2"``). The datasets are ``loader.dataset``; ``train_loader.dataset.num_classes``
    sizes the classification head.
    """
    if isinstance(tokenizer, (str, Path)):
        from llm_from_scratch.tokenizers import get_tokenizer

        tokenizer = get_tokenizer(tokenizer)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
    columns = {"text_column": text_column, "label_column": label_column, "pad_token_id": pad_token_id,
               "return_lengths": return_lengths}
    train_set = ClassificationDataset(train_csv, tokenizer, max_length, label_names=label_names,
                                      context_length=context_length, **columns)
    same_as_train = {"label_names": train_set.label_names, "context_length": context_length,
                     "pad_token_id": train_set.pad_token_id, "text_column": text_column,
                     "label_column": label_column, "return_lengths": return_lengths}
    val_set = ClassificationDataset(val_csv, tokenizer, train_set.max_length, **same_as_train)
    test_set = (ClassificationDataset(test_csv, tokenizer, train_set.max_length, **same_as_train)
                if test_csv is not None else None)

    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator,
                              drop_last=drop_last and len(train_set) >= batch_size, num_workers=num_workers)
    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, drop_last=False,
                            num_workers=num_workers)
    test_loader = (DataLoader(test_set, batch_size=batch_size, shuffle=False, drop_last=False,
                              num_workers=num_workers) if test_set is not None else None)
    return train_loader, val_loader, test_loader


def split_classification_csv(
    csv_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    text_column: str = "text",
    label_column: str = "label",
    balance: bool = False,
    train_frac: float = 0.7,
    validation_frac: float = 0.1,
    seed: int = 123,
) -> dict[str, Path]:
    """Split one CSV file into ``train.csv``, ``validation.csv``, ``test.csv`` in ``out_dir``.

    The same steps as the SMS data (:mod:`llm_from_scratch.data.sms_spam`): optionally balance
    the classes by undersampling (``balance=True``), shuffle with ``seed``, cut
    ``train_frac`` / ``validation_frac`` / the rest. The files have the columns ``text,label``
    whatever the input's were, so they load with the default column names. Returns
    ``{"train": path, "validation": path, "test": path}``. Labels that occur in validation or
    test but not in training make the loaders fail loudly, so very rare classes need more data
    (or ``balance=True``).
    """
    texts, labels, _ = read_classification_csv(csv_path, text_column, label_column)
    rows = list(zip(labels, texts))
    if balance:
        rows = create_balanced_dataset(rows, seed=seed)
    parts = random_split(rows, train_frac=train_frac, validation_frac=validation_frac, seed=seed)
    paths = {}
    for (split, file_name), part in zip(SPLIT_FILES.items(), parts):
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows((text, label) for label, text in part)
        paths[split] = Path(out_dir) / file_name
        write_atomically(paths[split], buffer.getvalue().encode("utf-8"))
    return paths
