"""The incremental detokenizer: whole characters only, stop strings held back and never released,
and the released pieces joined equal to decoding all the ids at once."""

import pytest

from llm_from_scratch.generation import IncrementalDetokenizer


class ByteTokenizer:
    """UTF-8 bytes as tokens: every multi-byte character spans several tokens."""

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


class SpaceDroppingTokenizer:
    """Like SentencePiece: word tokens carry their leading space, and the first token of a decoded
    sequence loses it. Decoding tokens one by one and gluing the pieces would lose every space."""

    words = ["▁Hello", "▁world", "!", "▁again"]

    def decode(self, ids):
        return "".join(self.words[i] for i in ids).replace("▁", " ").removeprefix(" ")


def run(detok, ids):
    pieces = [detok.add(t) for t in ids]
    pieces.append(detok.finish())
    return pieces


@pytest.mark.parametrize("text", ["人工智能 ok 🙂", "Grüße, 世界! Ça va? 🙂 done", "plain ascii"])
def test_multibyte_characters_split_over_tokens_are_released_whole(text):
    ids = list(text.encode("utf-8"))
    pieces = run(IncrementalDetokenizer(ByteTokenizer()), ids)
    assert "".join(pieces) == text == ByteTokenizer().decode(ids)
    assert all("\ufffd" not in p for p in pieces)
    if text.startswith("人"):
        assert pieces[:3] == ["", "", "人"]  # three bytes, released with the third


def test_gpt2_tokens_that_are_half_characters():
    from llm_from_scratch.tokenizers import get_tokenizer

    gpt2_tokenizer = get_tokenizer("gpt2")
    text = "Grüße, 世界! Ça va? 🙂 done"
    ids = gpt2_tokenizer.encode(text)
    assert any("\ufffd" in gpt2_tokenizer.decode([t]) for t in ids)  # some tokens are partial characters
    pieces = run(IncrementalDetokenizer(gpt2_tokenizer), ids)
    assert "".join(pieces) == text == gpt2_tokenizer.decode(ids)
    assert all("\ufffd" not in p for p in pieces)


def test_context_dependent_decoding_equals_decoding_all_at_once():
    tok = SpaceDroppingTokenizer()
    ids = [0, 1, 2, 3, 1]
    pieces = run(IncrementalDetokenizer(tok), ids)
    assert "".join(pieces) == tok.decode(ids) == "Hello world! again world"


@pytest.mark.parametrize("stop, expected", [
    (["STOP"], "Hello world. "),
    (["world", "STOP"], "Hello "),
    (["more"], "Hello world. STOP and "),
    (["STOPPED"], "Hello world. STOP and more"),   # never completed: everything comes out at the end
    (["d. S"], "Hello worl"),                        # a stop string across token boundaries
])
def test_stop_strings_are_held_back_and_never_released(stop, expected):
    text = "Hello world. STOP and more"
    ids = list(text.encode("utf-8"))
    detok = IncrementalDetokenizer(ByteTokenizer(), stop=stop)
    released = ""
    for t in ids:
        released += detok.add(t)
        # at no moment has any part of a stop string that is completed later been handed out
        assert not any(s in released for s in stop)
        assert expected.startswith(released)
        if detok.stopped:
            break
    released += detok.finish()
    assert released == expected == detok.text
    assert detok.stopped == (expected != text)


def test_text_that_only_looks_like_a_stop_is_released_once_it_is_not():
    detok = IncrementalDetokenizer(ByteTokenizer(), stop=["</s>"])
    assert [detok.add(t) for t in b"a</"] == ["a", "", ""]   # "</" might begin "</s>"
    assert detok.add(ord("b")) == "</b"                        # it did not
    assert not detok.stopped


def test_bytes_that_never_make_a_character_are_released_after_a_bound():
    detok = IncrementalDetokenizer(ByteTokenizer(), max_pending=3)
    assert [detok.add(t) for t in (0xF0, 0x9F)] == ["", ""]   # 2 of an emoji's 4 bytes: wait
    assert detok.add(0x98) == "\ufffd"                        # 3 tokens waited: released as they are
    assert detok.add(ord("A")) == "A" and detok.finish() == ""


def test_finish_releases_an_incomplete_character_and_nothing_after_a_stop():
    detok = IncrementalDetokenizer(ByteTokenizer())
    assert detok.add(0xF0) == ""
    assert detok.finish() == "\ufffd"
    with pytest.raises(ValueError, match="empty"):
        IncrementalDetokenizer(ByteTokenizer(), stop=[""])
