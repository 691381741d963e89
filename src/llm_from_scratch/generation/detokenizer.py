"""Turning generated tokens into text as they arrive: whole characters only, stop strings held back.

Streaming text has two traps:

* **Half characters.** Byte-level BPE (GPT-2's, SmolLM2's) can split one character, say a
  Chinese character or an emoji, over several tokens. Decoding the first of them alone gives
  ``'\\ufffd'`` (the replacement character). So a piece of text is only released once it decodes
  to whole characters; the tokens of an unfinished character wait for the next ones.
* **Stop strings.** A stop string ("\\n\\nUser:") may arrive over several tokens. Text that could
  be the beginning of a stop string is held back until it is clear that it is not; when the
  stop string appears, the text ends right before it, and nothing of it was ever released.

How new text is found: some tokenizers decode a token differently depending on what precedes it
(SentencePiece drops the space of a sequence's first token), so decoding each token alone and
gluing the pieces together can go wrong. We decode a short window instead: the text of the
tokens since the last release *with the few tokens before them as context*, minus the text of
that context alone. (Hugging Face's and vLLM's streamers do the same.) The released pieces,
joined, are the text of all the ids decoded at once.
"""

from __future__ import annotations

from typing import Sequence

#: How many tokens a piece of text may wait for the rest of a multi-byte character (UTF-8 needs
#: at most 4 bytes; a byte-level token holds at least one). After that it is released as it is:
#: the model produced bytes that are not valid UTF-8, and waiting longer would not help.
MAX_PENDING_TOKENS = 8


class IncrementalDetokenizer:
    """Text of a growing list of token ids, released piece by piece.

        detok = IncrementalDetokenizer(tokenizer, stop=["\\n\\n"])
        for token in tokens:
            print(detok.add(token), end="")   # "" while a character or a possible stop waits
            if detok.stopped:
                break
        print(detok.finish(), end="")         # whatever was held back (never a stop string)

    `text` is the whole text so far (cut before a stop string once one appeared); `released`
    is how much of it has been handed out.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = (), max_pending: int = MAX_PENDING_TOKENS):
        if any(not s for s in stop):
            raise ValueError("stop strings must not be empty")
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.max_pending = max_pending
        self.token_ids: list[int] = []
        self.text = ""             # decoded text of token_ids[:read_offset]
        self.released = 0          # characters of `text` handed out
        self.stopped = False       # a stop string appeared: `text` ends before it
        self._prefix_offset = 0    # token_ids[prefix_offset:read_offset]: context for the next decode
        self._read_offset = 0      # tokens up to here are in `text`

    def add(self, token_id: int) -> str:
        """Add one generated token; return the new text that is safe to show (maybe "")."""
        if self.stopped:
            return ""
        self.token_ids.append(int(token_id))
        context = self.tokenizer.decode(self.token_ids[self._prefix_offset:self._read_offset])
        window = self.tokenizer.decode(self.token_ids[self._prefix_offset:])
        pending = len(self.token_ids) - self._read_offset
        if window.endswith("\ufffd") and pending < self.max_pending:
            return ""  # an incomplete character: wait for the next token
        self.text += window[len(context):]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.token_ids)
        return self._release(final=False)

    def finish(self) -> str:
        """No more tokens: return the rest, an incomplete character included (but nothing from a
        stop string on)."""
        if not self.stopped and self._read_offset < len(self.token_ids):
            context = self.tokenizer.decode(self.token_ids[self._prefix_offset:self._read_offset])
            self.text += self.tokenizer.decode(self.token_ids[self._prefix_offset:])[len(context):]
            self._prefix_offset = self._read_offset = len(self.token_ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        """Hand out the text that is safe; cut `text` at a stop string if one appeared."""
        safe = len(self.text)
        if self.stop and not self.stopped:
            # a stop string may begin up to len(stop) - 1 characters before the released end
            search_from = max(0, self.released - max(len(s) for s in self.stop) + 1)
            hits = [i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                self.stopped = True
                safe = len(self.text)
            elif not final:
                safe -= self._held_back()
        piece = self.text[self.released:safe]
        self.released = max(self.released, safe)
        return piece

    def _held_back(self) -> int:
        """Length of the longest end of `text` that is the beginning of a stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:k]):
                    longest = k
                    break
        return longest
