"""Instruction data for supervised fine-tuning (chapter 7): prompt formats, dataset, collate, loading.

An instruction example is a dict with three strings (the "Alpaca" format)::

    {"instruction": "Convert the following word to uppercase.", "input": "apple", "output": "APPLE"}

``input`` may be empty. To fine-tune a language model on such examples, each one is written out
as a single text in a fixed *prompt format*, for example the Alpaca style::

    Below is an instruction that describes a task. Write a response that appropriately completes the request.

    ### Instruction:
    Convert the following word to uppercase.

    ### Input:
    apple

    ### Response:
    APPLE

and the model is trained on that text with the ordinary next-token loss. Three details make it
work (see :func:`instruction_collate`):

1. examples differ in length, so a batch is **padded** to its longest example;
2. padding positions get the target ``-100`` (``ignore_index``), which ``cross_entropy`` skips,
   so padding adds nothing to the loss;
3. but the **first** end-of-text token after each example stays a real target: it is how the
   model learns to *stop* after its answer. Without it, the fine-tuned model rambles on.

Optionally (``mask_prompt=True``) the instruction part is masked out of the loss too, so the
model is only trained to write responses, not to reproduce prompts.

Split of work (the prompt styles live in `data/prompt_styles.py` and are importable from here):

- prompt styles: :func:`format_input` (the book's Alpaca prompt), :data:`PROMPT_STYLES`
  (``"alpaca"``, ``"phi3"``), :class:`ChatTemplateStyle` (any chat template), and
  :func:`format_prompt` / :func:`format_response` / :func:`format_generation_prompt`;
- data: :func:`load_instruction_data` (JSON/JSONL file, ``"book"``, ``"synthetic"``),
  :func:`validate_instruction_data`, :func:`split_instruction_data` (85/5/10 like the book);
- tensors: :class:`InstructionDataset`, :func:`instruction_collate` (= the book's
  ``custom_collate_fn``), :func:`instruction_dataloader`.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from llm_from_scratch.data.prompt_styles import (  # noqa: F401 - the styles are public here too
    ALPACA,
    CHAT_END_MARKERS,
    END_OF_TEXT,
    PHI3,
    PROMPT_STYLES,
    ChatRenderer,
    ChatTemplateStyle,
    PromptStyle,
    StyleLike,
    TemplateStyle,
    extract_response,
    format_generation_prompt,
    format_input,
    format_input_phi3,
    format_prompt,
    format_response,
    get_prompt_style,
)

#: The book's instruction set (1,100 entries), canonical address.
BOOK_INSTRUCTION_DATA_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json"
)

#: Keys every entry must have (``input`` is optional and defaults to "").
REQUIRED_KEYS = ("instruction", "output")


# --------------------------------------------------------------------------------------
# Loading, validating and splitting
# --------------------------------------------------------------------------------------


def validate_instruction_data(entries: Any, source: str = "the instruction data") -> list[dict[str, Any]]:
    """Check ``entries`` is a list of {instruction, input, output} dicts; return normalized copies.

    ``instruction`` and ``output`` are required strings; ``input`` may be missing or None (-> "").
    Other keys (say ``"task"`` or ``"model_response"``) are kept. The error names the entry
    index and what is wrong, because "KeyError: 'output'" on entry 731 of 52,000 helps nobody.
    """
    if isinstance(entries, Mapping) or isinstance(entries, (str, bytes)) or not isinstance(entries, Iterable):
        raise ValueError(f"{source} must be a list of {{'instruction', 'input', 'output'}} objects, "
                         f"got {type(entries).__name__}")
    checked = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ValueError(f"{source}: entry {index} must be an object with 'instruction', 'input' and "
                             f"'output', got {type(entry).__name__}: {entry!r:.100}")
        for key in REQUIRED_KEYS:
            if key not in entry:
                raise ValueError(f"{source}: entry {index} has no {key!r} key (it has {sorted(entry)}); every "
                                 "entry needs 'instruction' and 'output' ('input' may be empty)")
        entry = dict(entry)
        if entry.get("input") is None:
            entry["input"] = ""
        for key in ("instruction", "input", "output"):
            if not isinstance(entry[key], str):
                raise ValueError(f"{source}: entry {index}: {key!r} must be a string, got "
                                 f"{type(entry[key]).__name__} {entry[key]!r:.60}")
        if not entry["instruction"].strip():
            raise ValueError(f"{source}: entry {index} has an empty 'instruction'")
        checked.append(entry)
    if not checked:
        raise ValueError(f"{source} holds no entries")
    return checked


def read_instruction_file(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON list (``.json``) or one JSON object per line (``.jsonl``/``.ndjson``), validated."""
    path = Path(path).expanduser()
    text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        entries = _parse_jsonl(text, path)
    else:
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            if error.msg == "Extra data":  # several JSON values: JSON Lines with a .json name
                entries = _parse_jsonl(text, path)
            else:
                raise ValueError(f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: "
                                 f"{error.msg})") from None
    return validate_instruction_data(entries, source=str(path))


def _parse_jsonl(text: str, path: Path) -> list[Any]:
    entries = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number} is not valid JSON ({error.msg})") from None
    return entries


def book_instruction_data_path() -> Path:
    """Where the book's instruction-data.json is cached (download it with ``load_instruction_data("book")``)."""
    from llm_from_scratch.assets import cache_dir

    return cache_dir("datasets", "instruction") / "instruction-data.json"


def _download_book_data() -> list[dict[str, Any]]:
    from llm_from_scratch.assets import download

    path = book_instruction_data_path()
    download(BOOK_INSTRUCTION_DATA_URL, path, desc="instruction-data.json")
    try:
        return read_instruction_file(path)
    except ValueError:
        path.unlink(missing_ok=True)  # a broken download (an HTML error page...) must not stick
        raise


def load_instruction_data(path_or_name: str | Path) -> list[dict[str, Any]]:
    """Instruction entries from a file or a name.

    - ``"book"``: the book's 1,100-entry ``instruction-data.json``, downloaded once from GitHub
      into the project cache. No offline copy exists (no package carries it), so without the web
      you get an error that says what to do instead.
    - ``"synthetic"``: the project's own set with exact answers (``make_instruction_set()``:
      1,100 entries, seed 123), made on the spot.
    - a path to a ``.json`` list or a ``.jsonl`` file of ``{instruction, input, output}`` objects.
    """
    if isinstance(path_or_name, str) and path_or_name in {"book", "synthetic"}:
        if path_or_name == "synthetic":
            from llm_from_scratch.data.synthetic_instructions import make_instruction_set

            return make_instruction_set()
        from llm_from_scratch.assets import Source, load_from_sources

        cached = book_instruction_data_path()
        if cached.exists():
            try:
                return read_instruction_file(cached)
            except ValueError:
                cached.unlink(missing_ok=True)
        return load_from_sources(
            "the book's instruction data (instruction-data.json)",
            [Source(f"canonical source: {BOOK_INSTRUCTION_DATA_URL}", _download_book_data, online_only=True)],
            how_to_fix=[
                f"download {BOOK_INSTRUCTION_DATA_URL} in a browser and pass its path "
                "(`--data path/to/instruction-data.json`, or load_instruction_data('path/to/file.json'))",
                f"or put the file at {cached}",
                "or use the project's own instruction set, which needs no download: `--data synthetic` "
                "(make_instruction_set() in llm_from_scratch.data.synthetic_instructions)",
            ],
        )
    path = Path(path_or_name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no instruction data file at {path}. Give a .json list or .jsonl file of "
            "{'instruction', 'input', 'output'} objects, 'book' (the book's data, downloaded) or "
            "'synthetic' (the project's own set)")
    return read_instruction_file(path)


class InstructionSplits(NamedTuple):
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]


def split_instruction_data(entries: Sequence[Mapping[str, Any]], train: float = 0.85, test: float = 0.10,
                           seed: int | None = None) -> InstructionSplits:
    """Split like the book: the first 85% trains, the next 10% tests, the rest (~5%) validates.

    Sizes are ``int(n * train)`` and ``int(n * test)``; 1,100 entries give 935 / 55 / 110
    (train / validation / test). The book does **not** shuffle (its file is already in random
    order), and neither do we by default; pass ``seed`` to shuffle a copy first. Returns
    ``(train, validation, test)`` as a named tuple.
    """
    if not 0 < train <= 1 or not 0 <= test < 1 or train + test > 1:
        raise ValueError(f"need 0 < train <= 1, 0 <= test < 1 and train + test <= 1; got train={train}, test={test}")
    entries = list(entries)
    if seed is not None:
        random.Random(seed).shuffle(entries)
    train_portion = int(len(entries) * train)
    test_portion = int(len(entries) * test)
    return InstructionSplits(
        train=entries[:train_portion],
        validation=entries[train_portion + test_portion:],
        test=entries[train_portion:train_portion + test_portion],
    )


# --------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------


def _encode(tokenizer: Any, text: str, allowed_special: Any) -> list[int]:
    try:
        ids = tokenizer.encode(text, allowed_special=allowed_special)
    except TypeError:  # a tokenizer whose encode() takes only the text
        ids = tokenizer.encode(text)
    return [int(i) for i in ids]


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class InstructionDataset(Dataset):
    """Entries tokenized once, in a prompt style, with each prompt's length remembered.

    Item ``i`` is a dict ``{"input_ids": list[int], "prompt_length": int, "mask_prompt": bool}``:
    the token ids of ``prompt + response`` (no end-of-text yet: :func:`instruction_collate`
    appends it, as in the book), how many leading tokens are the prompt, and whether this dataset
    asks for the prompt to be masked out of the loss. ``encoded_texts`` (the book's name) and
    ``prompt_lengths`` hold the same as lists.

    The full text is tokenized in one piece, exactly as the book does. The prompt length is the
    number of leading tokens shared with the prompt tokenized alone; the two only differ if a
    merge crosses the prompt/response boundary, and then the shared part (slightly less) is what
    gets masked, never a response token.
    """

    def __init__(self, data: Sequence[Mapping[str, Any]], tokenizer: Any, style: StyleLike = "alpaca",
                 mask_prompt: bool = False, allowed_special: Any = None):
        self.data = validate_instruction_data(data)
        self.style = get_prompt_style(style)
        self.mask_prompt = bool(mask_prompt)
        allowed = self.style.allowed_special if allowed_special is None else allowed_special
        self.encoded_texts: list[list[int]] = []
        self.prompt_lengths: list[int] = []
        for entry in self.data:
            prompt = self.style.prompt(entry)
            full_ids = _encode(tokenizer, prompt + self.style.response(entry), allowed)
            prompt_ids = _encode(tokenizer, prompt, allowed)
            self.encoded_texts.append(full_ids)
            self.prompt_lengths.append(_common_prefix_length(prompt_ids, full_ids))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.encoded_texts[index], "prompt_length": self.prompt_lengths[index],
                "mask_prompt": self.mask_prompt}

    def max_length(self) -> int:
        """Tokens in the longest example (+1 for the end-of-text token the collate appends)."""
        return max(len(ids) for ids in self.encoded_texts) + 1


# --------------------------------------------------------------------------------------
# Collate: pad, shift, mask
# --------------------------------------------------------------------------------------


def _unpack_item(item: Any, position: int) -> tuple[list[int], int | None, bool]:
    """(token ids, prompt length or None, masking asked for by the item) from one batch item.

    Accepted: our dataset's dicts; the book's exercise 7.2 tuples ``(instruction_length, ids)``
    (which always mask); plain lists/tuples/tensors of ids (the book's main chapter).
    """
    if isinstance(item, Mapping):
        if "input_ids" not in item:
            raise ValueError(f"batch item {position} is a dict without 'input_ids' (keys: {sorted(item)})")
        ids, prompt_length, mask = item["input_ids"], item.get("prompt_length"), bool(item.get("mask_prompt", False))
    elif (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int)
          and not isinstance(item[1], int)):
        (prompt_length, ids), mask = item, True
    else:
        ids, prompt_length, mask = item, None, False
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    try:
        ids = [int(i) for i in ids]
    except (TypeError, ValueError):
        raise TypeError(f"batch item {position} must be a sequence of token ids, got {type(item).__name__}") from None
    if not ids:
        raise ValueError(f"batch item {position} has no tokens")
    return ids, prompt_length, mask


def instruction_collate(batch: Sequence[Any], pad_token_id: int = 50256, ignore_index: int = -100,
                        allowed_max_length: int | None = None, mask_prompt: bool | None = None,
                        device: str | torch.device = "cpu",
                        eos_token_id: int | None = None,
                        unknown_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a list of tokenized examples into ``(inputs, targets)``, both ``(batch, width)`` int64.

    For each example of ``n`` tokens (the book's algorithm, per row):

    1. append one end-of-text token (``eos_token_id``, by default ``pad_token_id``: the book uses
       ``<|endoftext|>`` = 50256 for both) -> ``n + 1`` tokens;
    2. pad with ``pad_token_id`` to ``longest + 1`` tokens, then take ``inputs = seq[:-1]`` and
       ``targets = seq[1:]`` (shift by one). So ``width`` = the longest example's ``n``;
    3. targets at padding positions become ``ignore_index``, **except the first end-of-text
       target** (position ``n - 1``), which teaches the model to stop;
    4. if masking the prompt (``mask_prompt=True``, or ``None`` and the dataset asked for it), the
       targets ``[:prompt_length - 1]`` become ``ignore_index`` too. Why ``- 1``: ``targets[j]`` is
       token ``j + 1``, the token predicted *from* position ``j``. Prompt tokens are
       ``0 .. prompt_length - 1``; the ones that are predicted are ``1 .. prompt_length - 1``, i.e.
       ``targets[0 .. prompt_length - 2]``. ``targets[prompt_length - 1]`` is the first response
       token, predicted from the last prompt token: that one must stay;
    5. cut inputs and targets to ``allowed_max_length`` columns if given;
    6. stack and move to ``device``.

    Padding targets are found by *position* (everything after the appended end-of-text), not by
    value as in the book, so an end-of-text token inside an example stays a normal target. For
    ordinary data the result is identical to the book's ``custom_collate_fn``.

    Items may be dicts from :class:`InstructionDataset`, the book's exercise tuples
    ``(prompt_length, ids)``, or plain sequences of ids. Use ``functools.partial`` to fix the
    keyword arguments for a DataLoader.
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    if allowed_max_length is not None and (not isinstance(allowed_max_length, int) or allowed_max_length < 1):
        raise ValueError(f"allowed_max_length must be a positive int or None, got {allowed_max_length!r}")
    eos = pad_token_id if eos_token_id is None else eos_token_id

    items = [_unpack_item(item, position) for position, item in enumerate(batch)]
    width = max(len(ids) for ids, _, _ in items)  # = book's batch_max_length - 1
    inputs = torch.full((len(items), width), pad_token_id, dtype=torch.long)      # (batch, width)
    targets = torch.full((len(items), width), ignore_index, dtype=torch.long)     # (batch, width)
    for row, (ids, prompt_length, item_mask) in enumerate(items):
        n = len(ids)
        sequence = torch.tensor(ids + [eos], dtype=torch.long)  # (n + 1,)
        inputs[row, :n] = sequence[:n]
        if n < width:
            inputs[row, n] = eos  # the appended end-of-text is an input too when there is room
        targets[row, :n] = sequence[1:]  # ids[1:] then the first end-of-text; the rest stays ignored
        masked = item_mask if mask_prompt is None else mask_prompt
        if masked:
            if prompt_length is None:
                raise ValueError(
                    f"mask_prompt is on but batch item {row} carries no prompt length; build the data with "
                    "InstructionDataset (items are dicts with 'prompt_length') or pass (prompt_length, ids) tuples")
            targets[row, :max(int(prompt_length) - 1, 0)] = ignore_index

    if unknown_id is not None:   # a compact vocabulary's reserved id stands for *any* unseen token:
        targets[targets == unknown_id] = ignore_index   # not something to learn to say (tokenizers/compact.py)
    if allowed_max_length is not None:
        inputs = inputs[:, :allowed_max_length]
        targets = targets[:, :allowed_max_length]
    if bool((targets == ignore_index).all()):
        warnings.warn(
            "every target in this batch is ignore_index (prompts longer than allowed_max_length?), so the loss "
            "of this batch is NaN; raise allowed_max_length or drop the longest examples", RuntimeWarning,
            stacklevel=2)
    return inputs.to(device), targets.to(device)


#: The book's name for the same function.
custom_collate_fn = instruction_collate


def instruction_dataloader(data: Sequence[Mapping[str, Any]] | InstructionDataset, tokenizer: Any = None, *,
                           batch_size: int = 8, style: StyleLike = "alpaca", mask_prompt: bool = False,
                           allowed_max_length: int | None = None, pad_token_id: int | None = None,
                           shuffle: bool = False, drop_last: bool = False, num_workers: int = 0,
                           device: str | torch.device = "cpu", generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader of ``(inputs, targets)`` batches, wired like the book's chapter 7.

    ``pad_token_id`` defaults to the tokenizer's end-of-text id (50256 for GPT-2). The book uses
    ``shuffle=True, drop_last=True`` for training and neither for validation/test.
    """
    dataset = data if isinstance(data, InstructionDataset) else InstructionDataset(
        data, tokenizer, style=style, mask_prompt=mask_prompt)
    if pad_token_id is None:
        pad_token_id = getattr(tokenizer, "eot_id", None)
        if pad_token_id is None:
            raise ValueError("the tokenizer has no end-of-text id; pass pad_token_id explicitly")
    from functools import partial

    collate = partial(instruction_collate, pad_token_id=pad_token_id, allowed_max_length=allowed_max_length,
                      device=device, unknown_id=getattr(tokenizer, "unknown_id", None))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, collate_fn=collate, generator=generator)


__all__ = [
    "ALPACA", "PHI3", "PROMPT_STYLES", "BOOK_INSTRUCTION_DATA_URL", "CHAT_END_MARKERS",
    "PromptStyle", "TemplateStyle", "ChatTemplateStyle", "get_prompt_style",
    "format_input", "format_input_phi3", "format_prompt", "format_response", "format_generation_prompt",
    "extract_response", "validate_instruction_data", "read_instruction_file", "load_instruction_data",
    "book_instruction_data_path", "split_instruction_data", "InstructionSplits", "InstructionDataset",
    "instruction_collate", "custom_collate_fn", "instruction_dataloader",
]
