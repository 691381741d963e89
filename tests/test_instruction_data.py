"""Instruction data (chapter 7): prompt formats, dataset, collate, loading/splitting, synthetic set.

Expected tensors come from two independent places:
- the book's own printed notebook outputs (ch07.ipynb and exercise-solutions.ipynb of
  rasbt/LLMs-from-scratch), copied here as numbers: the toy collate example and two rows of real
  GPT-2 token ids with and without prompt masking;
- derivations by hand from the algorithm, written out step by step next to each case.
"""

import calendar
import json
import re
from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

from llm_from_scratch.data.instructions import (
    BOOK_INSTRUCTION_DATA_URL,
    PROMPT_STYLES,
    ChatTemplateStyle,
    InstructionDataset,
    custom_collate_fn,
    extract_response,
    format_generation_prompt,
    format_input,
    format_prompt,
    format_response,
    instruction_collate,
    instruction_dataloader,
    load_instruction_data,
    split_instruction_data,
    validate_instruction_data,
)
from llm_from_scratch.data.synthetic_instructions import (
    CAPITALS,
    TASKS,
    exact_match,
    exact_match_accuracy,
    main,
    make_instruction_set,
    normalize_answer,
    regular_plural,
    task_capacity,
    write_instruction_set,
)

PAD = 50256
IGN = -100


@pytest.fixture(scope="module")
def gpt2():
    from llm_from_scratch.tokenizers import get_tokenizer

    return get_tokenizer("gpt2")


# The book's exercise-7.2 sample data (three entries of its instruction-data.json).
BOOK_SAMPLES = [
    {"instruction": "What is an antonym of 'complicated'?", "input": "",
     "output": "An antonym of 'complicated' is 'simple'."},
    {"instruction": "Sort the following list in alphabetical order.", "input": "Zebra, Elephant, Crocodile",
     "output": "Crocodile, Elephant, Zebra"},
    {"instruction": "Arrange the given numbers in descending order.", "input": "5, 12, 8, 3, 15",
     "output": "15, 12, 8, 5, 3."},
]

# --------------------------------------------------------------------------------------
# Collate: exact tensors
# --------------------------------------------------------------------------------------


def test_toy_batch_matches_the_book():
    # Printed by the book's custom_collate_fn for inputs_1=[0..4], inputs_2=[5, 6], inputs_3=[7, 8, 9].
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]])
    assert inputs.dtype == targets.dtype == torch.long
    assert inputs.tolist() == [[0, 1, 2, 3, 4],
                               [5, 6, PAD, PAD, PAD],
                               [7, 8, 9, PAD, PAD]]
    assert targets.tolist() == [[1, 2, 3, 4, PAD],
                                [6, PAD, IGN, IGN, IGN],
                                [8, 9, PAD, IGN, IGN]]


def test_toy_batch_mask_prompt_by_hand():
    # Book exercise 7.2 items: (prompt_length, ids). Row 0: prompt = tokens 0, 1, 2 (length 3).
    # padded = [0,1,2,3,4,E]; targets = [1,2,3,4,E]; targets[j] is token j+1. The prompt tokens that
    # get predicted are 1 and 2, at target positions 0 and 1 = targets[:3-1]. Position 2 predicts 3,
    # the first response token, and stays.
    # Row 1: [5, 6] with prompt length 1: targets[:0] -> nothing masked: [6, E, -, -, -].
    # Row 2: [7, 8, 9] with prompt length 3 (the whole thing): targets [8, 9, E, -, -] -> [-, -, E, -, -].
    inputs, targets = instruction_collate([(3, [0, 1, 2, 3, 4]), (1, [5, 6]), (3, [7, 8, 9])])
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD], [7, 8, 9, PAD, PAD]]
    assert targets.tolist() == [[IGN, IGN, 3, 4, PAD],
                                [6, PAD, IGN, IGN, IGN],
                                [IGN, IGN, PAD, IGN, IGN]]
    # the same items as dicts, masking switched on by the collate instead of by the items
    items = [{"input_ids": [0, 1, 2, 3, 4], "prompt_length": 3}, {"input_ids": [5, 6], "prompt_length": 1},
             {"input_ids": [7, 8, 9], "prompt_length": 3}]
    assert instruction_collate(items, mask_prompt=True)[1].tolist() == targets.tolist()
    assert instruction_collate(items)[1].tolist() == [[1, 2, 3, 4, PAD], [6, PAD, IGN, IGN, IGN],
                                                      [8, 9, PAD, IGN, IGN]]
    # mask_prompt=False overrides items that ask for masking; prompt length 0 masks nothing
    assert instruction_collate([(3, [0, 1, 2, 3, 4])], mask_prompt=False)[1].tolist() == [[1, 2, 3, 4, PAD]]
    assert instruction_collate([(0, [0, 1, 2])])[1].tolist() == [[1, 2, PAD]]


def test_truncation_to_allowed_max_length():
    # The book truncates after padding and masking: the first 3 columns of the toy result.
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], allowed_max_length=3)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, PAD], [7, 8, 9]]
    assert targets.tolist() == [[1, 2, 3], [6, PAD, IGN], [8, 9, PAD]]
    # longer than the batch: nothing changes
    inputs, _ = custom_collate_fn([[0, 1, 2, 3, 4]], allowed_max_length=100)
    assert inputs.shape == (1, 5)


def test_eos_different_from_pad_and_pad_id_inside_an_example():
    # eos 99 appended, 0 pads: [5, 6] in a batch of width 5 -> inputs [5, 6, 99, 0, 0], targets [6, 99, -, -, -]
    inputs, targets = instruction_collate([[1, 2, 3, 4, 5], [5, 6]], pad_token_id=0, eos_token_id=99)
    assert inputs.tolist() == [[1, 2, 3, 4, 5], [5, 6, 99, 0, 0]]
    assert targets.tolist() == [[2, 3, 4, 5, 99], [6, 99, IGN, IGN, IGN]]
    # An end-of-text id inside an example is an ordinary target; only what follows the appended one is ignored.
    inputs, targets = instruction_collate([[1, PAD, 2], [3]])
    assert inputs.tolist() == [[1, PAD, 2], [3, PAD, PAD]]
    assert targets.tolist() == [[PAD, 2, PAD], [PAD, IGN, IGN]]


def test_partial_device_and_tensor_items():
    collate = partial(custom_collate_fn, device=torch.device("cpu"), allowed_max_length=4, ignore_index=-1)
    inputs, targets = collate([torch.tensor([7, 8, 9]), (5, 6)])
    assert inputs.device.type == "cpu"
    assert inputs.tolist() == [[7, 8, 9], [5, 6, PAD]]
    assert targets.tolist() == [[8, 9, PAD], [6, PAD, -1]]


def test_collate_errors():
    with pytest.raises(ValueError, match="empty batch"):
        instruction_collate([])
    with pytest.raises(ValueError, match="no tokens"):
        instruction_collate([[1, 2], []])
    with pytest.raises(ValueError, match="prompt length"):
        instruction_collate([[1, 2, 3]], mask_prompt=True)
    with pytest.raises(ValueError, match="allowed_max_length"):
        instruction_collate([[1, 2, 3]], allowed_max_length=0)
    with pytest.raises(TypeError, match="sequence of token ids"):
        instruction_collate([["a", "b"]])
    with pytest.warns(RuntimeWarning, match="NaN"):
        instruction_collate([(5, [1, 2, 3, 4, 5, 6])], allowed_max_length=3)


# --------------------------------------------------------------------------------------
# Real text with the GPT-2 tokenizer, against the book's printed tensors
# --------------------------------------------------------------------------------------

# exercise-solutions.ipynb, exercise 7.2: inputs[1] and targets[1] of the three samples above,
# batched with instruction masking (shape [3, 64]).
BOOK_MASKED_INPUTS_1 = [
    21106, 318, 281, 12064, 326, 8477, 257, 4876, 13, 19430, 257, 2882, 326, 20431, 32543, 262, 2581, 13,
    198, 198, 21017, 46486, 25, 198, 42758, 262, 1708, 1351, 287, 24830, 605, 1502, 13, 198, 198, 21017,
    23412, 25, 198, 57, 37052, 11, 42651, 11, 9325, 19815, 576, 198, 198, 21017, 18261, 25, 198, 34, 12204,
    375, 576, 11, 42651, 11, 1168, 37052, 50256, 50256]
BOOK_MASKED_TARGETS_1 = [IGN] * 46 + [
    198, 198, 21017, 18261, 25, 198, 34, 12204, 375, 576, 11, 42651, 11, 1168, 37052, 50256, IGN, IGN]


def test_book_masked_example(gpt2):
    dataset = InstructionDataset(BOOK_SAMPLES, gpt2, mask_prompt=True)
    inputs, targets = instruction_collate([dataset[i] for i in range(3)])
    assert inputs.shape == targets.shape == (3, 64)
    assert inputs[1].tolist() == BOOK_MASKED_INPUTS_1
    assert targets[1].tolist() == BOOK_MASKED_TARGETS_1
    # what is left to learn: the response header, the answer and one end-of-text (as the book shows)
    kept = targets[1][targets[1] != IGN].tolist()
    assert gpt2.decode(kept) == "\n\n### Response:\nCrocodile, Elephant, Zebra<|endoftext|>"


def test_book_unmasked_example(gpt2):
    # ch07.ipynb prints inputs[0] and targets[0] of a shuffled training batch of width 69: this entry.
    entry = {"instruction": "Rewrite the sentence using a simile.", "input": "The baby is very cute.",
             "output": "The baby is as cute as a button."}
    book_inputs = [
        21106, 318, 281, 12064, 326, 8477, 257, 4876, 13, 19430, 257, 2882, 326, 20431, 32543, 262, 2581, 13,
        198, 198, 21017, 46486, 25, 198, 30003, 6525, 262, 6827, 1262, 257, 985, 576, 13, 198, 198, 21017,
        23412, 25, 198, 464, 5156, 318, 845, 13779, 13, 198, 198, 21017, 18261, 25, 198, 464, 5156, 318, 355,
        13779, 355, 257, 4936, 13] + [PAD] * 9
    book_targets = book_inputs[1:60] + [PAD] + [IGN] * 9
    dataset = InstructionDataset([entry], gpt2)
    longer = list(range(69))  # another batch member that makes the batch 69 wide
    inputs, targets = instruction_collate([dataset[0], longer])
    assert inputs.shape == (2, 69)
    assert inputs[0].tolist() == book_inputs
    assert targets[0].tolist() == book_targets


def test_dataset_items_and_prompt_lengths(gpt2):
    dataset = InstructionDataset(BOOK_SAMPLES, gpt2)
    assert len(dataset) == 3
    for i, entry in enumerate(BOOK_SAMPLES):
        item = dataset[i]
        assert set(item) == {"input_ids", "prompt_length", "mask_prompt"} and item["mask_prompt"] is False
        prompt, full = format_input(entry), format_input(entry) + format_response(entry)
        assert item["input_ids"] == gpt2.encode(full) == dataset.encoded_texts[i]
        assert item["prompt_length"] == len(gpt2.encode(prompt))
        assert gpt2.decode(item["input_ids"][:item["prompt_length"]]) == prompt
    assert dataset.max_length() == max(len(ids) for ids in dataset.encoded_texts) + 1


def test_prompt_length_when_a_token_crosses_the_boundary(gpt2):
    # An instruction ending in "\n": alone, the prompt ends with token 198 ("\n"); in the full text
    # that newline merges with the response's "\n\n" into 628 ("\n\n") + 198. Only the shared
    # prefix counts as prompt, so the merged token (which carries response text) is still learned.
    entry = {"instruction": "Say hi\n", "input": "", "output": "hi"}
    prompt_ids = gpt2.encode(format_input(entry))
    full_ids = gpt2.encode(format_input(entry) + format_response(entry))
    assert prompt_ids[-1] == 198 and full_ids[len(prompt_ids) - 1] == 628  # the premise of this test
    dataset = InstructionDataset([entry], gpt2, mask_prompt=True)
    assert dataset.prompt_lengths == [len(prompt_ids) - 1]
    _, targets = instruction_collate([dataset[0]])
    kept = targets[0][targets[0] != IGN].tolist()
    assert kept[0] == 628 and gpt2.decode(kept) == "\n\n\n### Response:\nhi<|endoftext|>"


def test_padding_does_not_change_the_loss(gpt2):
    """Why pad + -100 works: a padded batch has the same loss as its examples run one by one."""
    from llm_from_scratch.model import GPTConfig, GPTModel

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=128, emb_dim=16, n_heads=2, n_layers=1,
                               drop_rate=0.0)).eval()
    entries = make_instruction_set(n=4, seed=5)
    dataset = InstructionDataset(entries, gpt2, mask_prompt=True)
    inputs, targets = instruction_collate([dataset[i] for i in range(4)])
    with torch.no_grad():
        batch_loss = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        # reference: each example alone, no padding; sum -log p over its response tokens and end-of-text
        total, count = 0.0, 0
        for i in range(4):
            ids = dataset.encoded_texts[i] + [PAD]
            log_probs = torch.log_softmax(model(torch.tensor([ids[:-1]]))[0], dim=-1)
            for position in range(dataset.prompt_lengths[i] - 1, len(ids) - 1):
                total -= log_probs[position, ids[position + 1]].item()
                count += 1
    assert int((targets != IGN).sum()) == count
    assert batch_loss.item() == pytest.approx(total / count, rel=1e-5)


def test_dataloader_with_gpt2(gpt2):
    entries = make_instruction_set(n=10, seed=7)
    dataset = InstructionDataset(entries, gpt2)
    loader = DataLoader(dataset, batch_size=4, shuffle=False, drop_last=False,
                        collate_fn=partial(custom_collate_fn, device="cpu", allowed_max_length=1024))
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    row = 0
    for inputs, targets in batches:
        assert inputs.shape == targets.shape
        for r in range(inputs.shape[0]):
            ids = dataset.encoded_texts[row]
            n = len(ids)
            text = format_prompt(entries[row]) + format_response(entries[row])
            assert gpt2.decode(inputs[r, :n].tolist()) == text
            assert targets[r, :n].tolist() == ids[1:] + [PAD]
            assert (targets[r, n:] == IGN).all() and (inputs[r, n:] == PAD).all()
            row += 1
    # the convenience wrapper gives the same batches
    wrapped = list(instruction_dataloader(entries, gpt2, batch_size=4))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, wrapped))


# --------------------------------------------------------------------------------------
# Prompt styles
# --------------------------------------------------------------------------------------


def test_alpaca_format_is_the_books():
    entry = {"instruction": "Identify the correct spelling of the following word.", "input": "Ocassion",
             "output": "The correct spelling is 'Occasion.'"}
    # as printed in ch07.ipynb
    assert format_input(entry) + format_response(entry) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nIdentify the correct spelling of the following word.\n\n### Input:\n"
        "Ocassion\n\n### Response:\nThe correct spelling is 'Occasion.'")
    no_input = BOOK_SAMPLES[0]
    assert format_prompt(no_input, "alpaca") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nWhat is an antonym of 'complicated'?")
    assert format_generation_prompt(no_input).endswith("complicated'?\n\n### Response:\n")


def test_phi3_format_is_the_exercise_solution():
    entry = {"instruction": "Identify the correct spelling of the following word.", "input": "Ocassion",
             "output": "The correct spelling is 'Occasion.'"}
    assert format_prompt(entry, "phi3") == "<|user|>\nIdentify the correct spelling of the following word.\nOcassion"
    assert format_prompt(BOOK_SAMPLES[0], "phi3") == "<|user|>\nWhat is an antonym of 'complicated'?"
    assert format_response(entry, "phi3") == "\n<|assistant|>:\nThe correct spelling is 'Occasion.'"
    assert format_generation_prompt(entry, "phi3").endswith("Ocassion\n<|assistant|>:\n")
    assert set(PROMPT_STYLES) == {"alpaca", "phi3"}


def test_extract_response():
    assert extract_response(" 12<|endoftext|>junk") == "12"
    assert extract_response("\n\n### Response:\nParis\n\n### Instruction:\nmore") == "Paris"  # the book's way
    assert extract_response("<|assistant|>: cold<|user|>\nagain", "phi3") == "cold"
    assert extract_response("5<|im_end|>\n<|im_start|>user", lambda m, g: "") == "5"


def chatml(messages, add_generation_prompt):
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def test_chat_template_style(gpt2):
    entry = {"instruction": "Add the two numbers.", "input": "2 and 3", "output": "5"}
    assert format_prompt(entry, chatml) == "<|im_start|>user\nAdd the two numbers.\n\n2 and 3<|im_end|>\n"
    assert format_response(entry, chatml) == "<|im_start|>assistant\n5<|im_end|>\n"
    assert format_generation_prompt(entry, chatml) == (
        "<|im_start|>user\nAdd the two numbers.\n\n2 and 3<|im_end|>\n<|im_start|>assistant\n")
    style = ChatTemplateStyle(chatml, system="Be brief.")
    assert style.prompt(entry).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    dataset = InstructionDataset([entry], gpt2, style=style, mask_prompt=True)
    ids, prompt_length = dataset.encoded_texts[0], dataset.prompt_lengths[0]
    assert gpt2.decode(ids[prompt_length:]) == "<|im_start|>assistant\n5<|im_end|>\n"

    def bad(messages, add_generation_prompt):  # renders the user turn differently when an answer follows
        return "".join(f"[{m['role']}:{m['content']}|{len(messages)}]" for m in messages)

    with pytest.raises(ValueError, match="not a prefix"):
        format_response(entry, bad)


def test_chat_template_module_works_as_style():
    chat_template = pytest.importorskip("llm_from_scratch.tokenizers.chat_template")
    render = partial(chat_template.apply_chat_template, None)
    style = ChatTemplateStyle(lambda messages, add_generation_prompt:
                              render(messages, add_generation_prompt=add_generation_prompt))
    entry = {"instruction": "What is 2 plus 3?", "input": "", "output": "5"}
    assert style.prompt(entry) + style.response(entry) == chatml(style.messages(entry, with_answer=True), False)


def test_unknown_style():
    with pytest.raises(ValueError, match="known styles: alpaca, phi3"):
        format_prompt(BOOK_SAMPLES[0], "vicuna")
    with pytest.raises(TypeError):
        format_prompt(BOOK_SAMPLES[0], 42)


# --------------------------------------------------------------------------------------
# Validation, loading, splitting
# --------------------------------------------------------------------------------------


def test_validation_errors_name_the_entry():
    good = {"instruction": "a", "input": "", "output": "b"}
    with pytest.raises(ValueError, match=r"entry 2 has no 'output' key"):
        validate_instruction_data([good, good, {"instruction": "x", "input": ""}])
    with pytest.raises(ValueError, match=r"entry 0 has no 'instruction' key"):
        validate_instruction_data([{"output": "x"}])
    with pytest.raises(ValueError, match=r"entry 1: 'output' must be a string, got int 3"):
        validate_instruction_data([good, {"instruction": "a", "output": 3}])
    with pytest.raises(ValueError, match=r"entry 0 must be an object"):
        validate_instruction_data(["just text"])
    with pytest.raises(ValueError, match="must be a list"):
        validate_instruction_data({"instruction": "a", "output": "b"})
    with pytest.raises(ValueError, match="no entries"):
        validate_instruction_data([])
    # a missing or null input is fine and becomes ""; extra keys are kept
    assert validate_instruction_data([{"instruction": "a", "output": "b", "input": None, "task": "t"}]) == [
        {"instruction": "a", "output": "b", "input": "", "task": "t"}]


def test_load_json_and_jsonl(tmp_path):
    entries = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": "d", "output": "e"}]
    (tmp_path / "data.json").write_text(json.dumps(entries), encoding="utf-8")
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(e) for e in entries) + "\n\n", encoding="utf-8")
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(e) for e in entries), encoding="utf-8")
    for name in ("data.json", "data.jsonl", "lines.json"):
        assert load_instruction_data(tmp_path / name) == entries
    (tmp_path / "bad.jsonl").write_text(json.dumps(entries[0]) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_instruction_data(tmp_path / "bad.jsonl")
    (tmp_path / "bad.json").write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_instruction_data(str(tmp_path / "bad.json"))
    (tmp_path / "missing.json").write_text(json.dumps([entries[0], {"instruction": "x"}]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"missing\.json: entry 1 has no 'output'"):
        load_instruction_data(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="'book'"):
        load_instruction_data(tmp_path / "nope.json")


def test_book_data_offline_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    from llm_from_scratch.assets import AssetUnavailableError

    with pytest.raises(AssetUnavailableError) as info:
        load_instruction_data("book")
    message = str(info.value)
    assert BOOK_INSTRUCTION_DATA_URL in message and "--data" in message and "synthetic" in message


def test_book_data_download_is_cached_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMFS_OFFLINE", raising=False)
    import llm_from_scratch.assets as assets

    calls = []
    payload = {"body": json.dumps(BOOK_SAMPLES)}

    def fake_download(url, dest, **kwargs):
        calls.append(url)
        dest.write_text(payload["body"], encoding="utf-8")
        return dest

    monkeypatch.setattr(assets, "download", fake_download)
    assert load_instruction_data("book") == BOOK_SAMPLES
    assert load_instruction_data("book") == BOOK_SAMPLES  # second time from the cache
    assert calls == [BOOK_INSTRUCTION_DATA_URL]
    # a download that is not instruction data (an HTML error page) is reported and not kept
    (tmp_path / "datasets" / "instruction" / "instruction-data.json").unlink()
    payload["body"] = "<html>rate limited</html>"
    with pytest.raises(assets.AssetUnavailableError, match="not valid JSON"):
        load_instruction_data("book")
    assert not (tmp_path / "datasets" / "instruction" / "instruction-data.json").exists()


def test_split_like_the_book():
    data = [{"instruction": str(i), "input": "", "output": str(i)} for i in range(1100)]
    train, validation, test = split_instruction_data(data)
    assert (len(train), len(validation), len(test)) == (935, 55, 110)  # the book's printed sizes
    assert train == data[:935] and test == data[935:1045] and validation == data[1045:]  # unshuffled
    shuffled = split_instruction_data(data, seed=1)
    assert shuffled == split_instruction_data(data, seed=1) and shuffled.train != train
    assert sorted(e["instruction"] for part in shuffled for e in part) == sorted(e["instruction"] for e in data)
    assert split_instruction_data(data[:10], train=0.5, test=0.2) == (data[:5], data[7:10], data[5:7])
    for train_fraction, test_fraction in [(0, 0.1), (0.9, 0.2), (0.5, -0.1)]:
        with pytest.raises(ValueError, match="train"):
            split_instruction_data(data, train=train_fraction, test=test_fraction)


# --------------------------------------------------------------------------------------
# The synthetic instruction set
# --------------------------------------------------------------------------------------

# Hand-written plurals: a reference independent of regular_plural().
HAND_PLURALS = {
    "apple": "apples", "box": "boxes", "fox": "foxes", "bus": "buses", "church": "churches", "brush": "brushes",
    "dish": "dishes", "city": "cities", "baby": "babies", "party": "parties", "story": "stories", "toy": "toys",
    "key": "keys", "day": "days", "glass": "glasses", "class": "classes", "watch": "watches", "bench": "benches",
    "beach": "beaches", "lunch": "lunches", "shoe": "shoes", "house": "houses", "banana": "bananas",
}


def solve(entry):
    """An independent oracle: answer a synthetic question from its text alone."""
    text = entry["instruction"] + " " + entry["input"]
    numbers = [int(x) for x in re.findall(r"\d+", text)]
    quoted = re.findall(r"'([a-z]+)'", entry["instruction"])
    word = quoted[0] if quoted else entry["input"]
    task = entry["task"]
    days, months = list(calendar.day_name), list(calendar.month_name)[1:]
    if task == "add":
        return str(sum(numbers))
    if task == "subtract":
        a, b = numbers[::-1] if re.match(r"Subtract \d+ from", entry["instruction"]) else numbers
        return str(a - b)
    if task == "multiply":
        return str(numbers[0] * numbers[1])
    if task == "convert_units":  # the unit converted from decides the factor
        factors = {"kilometer": 1000, "meter": 100, "hour": 60, "minute": 60, "day": 24, "kilogram": 1000, "week": 7}
        amount, unit = re.search(r"(\d+) (kilometer|meter|hour|minute|day|kilogram|week)s?\b", text).groups()
        return str(int(amount) * factors[unit])
    if task == "reverse_word":
        return word[::-1]
    if task == "uppercase":
        return word.upper()
    if task == "plural":
        return HAND_PLURALS.get(word, word + "s")
    if task == "first_letter":
        return word[0]
    if task == "last_letter":
        return word[-1]
    if task == "count_letters":
        return str(len(word))
    if task in ("weekday", "month"):
        names = days if task == "weekday" else months
        name = next(n for n in names if n in text)
        step = 2 if "two days" in text else (1 if "after" in text else -1)
        return names[(names.index(name) + step) % len(names)]
    if task == "next_number":
        return str(numbers[0] + 1)
    if task == "previous_number":
        return str(numbers[0] - 1)
    if task == "next_letter":
        letter = re.findall(r"'([a-z])'", entry["instruction"]) or [entry["input"]]
        return chr(ord(letter[0]) + (1 if "after" in text else -1))
    if task == "compare":
        return str(max(numbers) if "larger" in text else min(numbers))
    if task == "even_odd":
        return "even" if numbers[0] % 2 == 0 else "odd"
    return None  # fact tables: checked separately


def test_synthetic_set_is_correct_distinct_and_deterministic():
    entries = make_instruction_set()
    assert len(entries) == 1100
    assert entries == make_instruction_set(n=1100, seed=123)
    assert entries != make_instruction_set(n=1100, seed=124)
    assert validate_instruction_data(entries) == entries
    assert len({(e["instruction"], e["input"]) for e in entries}) == 1100
    assert {e["task"] for e in entries} == set(TASKS)
    assert all(1 <= len(e["output"].split()) <= 3 for e in entries)
    assert sum(e["input"] != "" for e in entries) > 200  # the input field gets used
    checked = 0
    for entry in entries:
        expected = solve(entry)
        if expected is not None:
            assert entry["output"] == expected, entry
            checked += 1
    assert checked > 900
    # facts: a few known by heart, and the two capital tasks agree with each other
    for country, capital in {"France": "Paris", "Japan": "Tokyo", "Canada": "Ottawa", "Australia": "Canberra",
                             "Egypt": "Cairo", "Argentina": "Buenos Aires"}.items():
        assert CAPITALS[country] == capital
    for entry in entries:
        if entry["task"] == "capital":
            asked = re.search(r"(?:of|city of) ([A-Z][A-Za-z ]+)[?.]", entry["instruction"])
            country = entry["input"] or asked.group(1)
            assert entry["output"] == CAPITALS[country]
        if entry["task"] == "country_of_capital":
            assert CAPITALS[entry["output"]] in entry["instruction"] + entry["input"]
    uppercase = [e for e in entries if e["instruction"] == "Convert the following word to uppercase."]
    assert uppercase and all(e["output"] == e["input"].upper() for e in uppercase)


def test_regular_plural_matches_hand_written():
    for noun, plural in HAND_PLURALS.items():
        assert regular_plural(noun) == plural


def test_synthetic_set_options_and_errors():
    small = make_instruction_set(n=40, seed=1, tasks=["add", "opposite"])
    assert len(small) == 40 and {e["task"] for e in small} == {"add", "opposite"}
    with pytest.raises(ValueError, match="unknown task"):
        make_instruction_set(n=5, tasks=["poetry"])
    with pytest.raises(ValueError, match="positive"):
        make_instruction_set(n=0)


def test_capacity_is_exact():
    # even/odd: 101 numbers (0..100) x 2 phrasings = 202 distinct questions, no more
    assert task_capacity(["even_odd"]) == {"even_odd": 202}
    assert len(make_instruction_set(n=202, tasks=["even_odd"])) == 202
    with pytest.raises(ValueError, match="only 202"):
        make_instruction_set(n=203, tasks=["even_odd"])


def test_write_and_load_synthetic(tmp_path, capsys):
    json_path = write_instruction_set(tmp_path / "set.json", n=30, seed=3)
    jsonl_path = write_instruction_set(tmp_path / "set.jsonl", n=30, seed=3)
    assert load_instruction_data(json_path) == load_instruction_data(str(jsonl_path)) == make_instruction_set(30, 3)
    assert len(jsonl_path.read_text().splitlines()) == 30
    assert load_instruction_data("synthetic") == make_instruction_set()
    main([str(tmp_path / "cli.json"), "--n", "12", "--seed", "4"])
    assert "wrote 12 entries" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli.json").read_text()) == make_instruction_set(12, 4)


def test_exact_match():
    assert exact_match("12", "12") and exact_match(" 12. ", "12") and exact_match("12\n", "12")
    assert exact_match("paris", "Paris") and exact_match("'Paris'.", "Paris")
    assert exact_match("Buenos  Aires", "Buenos Aires")
    assert exact_match("\u201ccold\u201d!", "cold")
    assert not exact_match("The answer is 12", "12") and not exact_match("121", "12") and not exact_match("", "12")
    # all-caps references are compared case-sensitively (the uppercase task), unless told otherwise
    assert exact_match("APPLE", "APPLE") and not exact_match("apple", "APPLE")
    assert exact_match("apple", "APPLE", ignore_case=True) and not exact_match("paris", "Paris", ignore_case=False)
    assert exact_match("a", "A")  # a single letter is not "all caps"
    assert normalize_answer("  Hello   World?! ") == "hello world"
    assert exact_match_accuracy(["12", "x", "Paris"], ["12", "y", {"output": "paris"}]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match_accuracy(["1"], [])


def test_synthetic_through_every_style(gpt2):
    entries = make_instruction_set(n=6, seed=9)
    for style in ("alpaca", "phi3", chatml):
        dataset = InstructionDataset(entries, gpt2, style=style, mask_prompt=True)
        inputs, targets = instruction_collate([dataset[i] for i in range(6)])
        for i, entry in enumerate(entries):
            kept = targets[i][targets[i] != IGN].tolist()
            # with the prompt masked, exactly the response and one end-of-text are learned
            assert gpt2.decode(kept) == format_response(entry, style) + "<|endoftext|>"
