"""A key/value cache for fast autoregressive generation, and every operation on it.

Without a cache, generating token t+1 runs the whole model over all t previous tokens again.
But in a causal model the keys and values of earlier tokens never change once computed, so we
can keep them: each new step then only computes the query/key/value of the *new* token and
attends over the stored keys and values. That turns the cost of a step from O(t) forward work
into O(1) forward work plus an O(t) attention read.

The cache is preallocated for `max_len` columns (no `torch.cat` per step, which would copy the
whole cache every token) and filled from the left; `length` says how many columns hold real
keys/values.

Several prompts decode together in one cache by padding them on the **left**, so that every
row ends in the same column (`set_left_padding`). The cache then gives each row its own
positions (`positions`) and hides the padding from the attention (`attention_mask`).

**Fixed width** (``fixed_width=True``, what a compiled decode step uses): the attention then
always reads all `max_len` columns, and a mask hides those not filled yet, so every step has the
same tensor shapes and one compiled graph serves them all (a growing cache would change shape
every token). The extra columns cost a little attention arithmetic, no weight reads.

The cache owns its state: only the methods below change `keys`, `values`, `length` and
`left_padding` (outside code reads them, through read-only properties). The operations:

* the model's side: `prepare` once per forward pass (the new tokens' `step_positions`, the
  attention's `step_mask`, and where they go), `update` once per layer (store new keys/values),
  then `advance`; or, for the native one-token step, `kernel_storage` (the kernel stores the
  new column of every layer itself) then `advance`;
* the decoding loop's side: `set_left_padding` (before a prefill), `reset` (start over),
  `keep_rows` (finished rows leave), `slide` (forget the oldest columns), and `merge`
  (rows of several caches in one new batch: how a request joins a running batch).
"""

from __future__ import annotations

from typing import Sequence

import torch


def sliding_window_mask(num_new: int, past: int, window: int, device: torch.device,
                        width: int | None = None) -> torch.Tensor:
    """(num_new, width) booleans (width: past + num_new by default): causal, and each query sees
    only the `window` most recent columns up to itself (query column q sees key column k when
    0 <= q - k < window)."""
    query = torch.arange(past, past + num_new, device=device)[:, None]
    key = torch.arange(width if width is not None else past + num_new, device=device)[None, :]
    return (key <= query) & (query - key < window)


class KVCache:
    """Keys and values of every layer, shape (n_layers, batch, n_heads, max_len, head_dim)."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        head_dim: int,
        max_len: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        fixed_width: bool = False,
    ):
        shape = (n_layers, batch_size, n_heads, max_len, head_dim)
        # empty, not zeros: columns past `length` are never read, and zero-filling a cache for
        # a full 1024-token GPT-2 context would cost ~75 MB of writes per generate() call. A
        # fixed-width cache reads every column (masked), and a masked NaN from `empty` memory
        # would still poison the attention's weighted sum (0 * NaN): it starts zeroed.
        make = torch.zeros if fixed_width else torch.empty
        self._keys = make(shape, dtype=dtype, device=device)
        self._values = make(shape, dtype=dtype, device=device)
        self._length = 0  # columns 0 .. length-1 are filled
        # Row i starts with left_padding[i] columns that hold no token (None: no padding).
        self._left_padding: torch.Tensor | None = None  # (batch,) long
        self.fixed_width = fixed_width
        # set by `prepare` for the forward pass under way
        self.step_positions: torch.Tensor | None = None
        self.step_mask: torch.Tensor | None = None
        self.step_is_causal = False
        self._step_columns: torch.Tensor | None = None

    # ---- what outside code may read -----------------------------------------------------------

    @property
    def keys(self) -> torch.Tensor:
        return self._keys

    @property
    def values(self) -> torch.Tensor:
        return self._values

    @property
    def length(self) -> int:
        """How many columns are filled (the same for every row; padding columns count)."""
        return self._length

    @property
    def left_padding(self) -> torch.Tensor | None:
        return self._left_padding

    @property
    def max_len(self) -> int:
        return self._keys.shape[3]

    @property
    def batch_size(self) -> int:
        return self._keys.shape[1]

    @property
    def room(self) -> int:
        """How many more columns fit."""
        return self.max_len - self._length

    def row_lengths(self) -> list[int]:
        """Real (non-padding) columns per row: each row's prompt plus its generated tokens so far."""
        if self._left_padding is None:
            return [self._length] * self.batch_size
        return [self._length - int(p) for p in self._left_padding]

    # ---- the model's side ------------------------------------------------------------------

    def prepare(self, num_new: int, sliding_window: int | None = None) -> None:
        """Once per forward pass, before the layers: where the `num_new` new tokens sit
        (`step_positions`), whom they attend to (`step_mask`, or `step_is_causal`), and, for a
        fixed-width cache, the columns `update` writes. Every layer then reads these tensors
        instead of recomputing them (and a compiled step reads no Python number that changes)."""
        end = self._length + num_new
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: it holds {self.max_len} positions but {end} are needed. "
                "Create a larger cache or reset it (generation does this when the context slides)."
            )
        self.step_positions = self.positions(num_new)
        device = self._keys.device
        if self.fixed_width:
            query = torch.arange(self._length, end, device=device)[:, None]     # (T, 1)
            key = torch.arange(self.max_len, device=device)[None, :]            # (1, max_len)
            mask = key <= query                                                 # causal; unfilled columns hidden
            if self._left_padding is not None:
                pad = self._left_padding[:, None, None, None]
                mask = (mask & (key >= pad)) | (key == query)                   # (b, 1, T, max_len)
            if sliding_window is not None:
                mask = mask & sliding_window_mask(num_new, self._length, sliding_window, device, self.max_len)
            self.step_mask = mask if mask.dim() == 4 else mask[None, None]
            self.step_is_causal = False
            self._step_columns = torch.arange(self._length, end, device=device)
            return
        mask = self.attention_mask(num_new)
        self.step_is_causal = mask is None and self._length == 0 and num_new > 1
        if sliding_window is not None and end > sliding_window:
            band = sliding_window_mask(num_new, self._length, sliding_window, device)
            mask = band if mask is None else mask & band
            self.step_is_causal = False
        self.step_mask = mask

    def update(self, layer: int, new_keys: torch.Tensor, new_values: torch.Tensor):
        """Store the keys/values of new tokens for one layer; return all keys/values so far.

        new_keys, new_values: (batch, n_heads, num_new_tokens, head_dim)
        returns two tensors of shape (batch, n_heads, length + num_new_tokens, head_dim), or
        (batch, n_heads, max_len, head_dim) for a fixed-width cache (`step_mask` hides the rest)
        """
        if self.fixed_width:  # tensor columns, full-width views: the same shapes at every step
            self._keys[layer].index_copy_(2, self._step_columns, new_keys)
            self._values[layer].index_copy_(2, self._step_columns, new_values)
            return self._keys[layer], self._values[layer]
        start = self._length
        end = start + new_keys.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: it holds {self.max_len} positions but {end} are needed. "
                "Create a larger cache or reset it (generation does this when the context slides)."
            )
        self._keys[layer, :, :, start:end] = new_keys
        self._values[layer, :, :, start:end] = new_values
        return self._keys[layer, :, :, :end], self._values[layer, :, :, :end]

    def kernel_storage(self) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
        """(keys, values, length, left_padding) for a kernel that stores one new column itself
        (the native decode step, `model/native_decode.py`): it writes column `length` of every
        layer and reads columns up to it; `advance` then follows as after `update`. The storage
        is contiguous (n_layers, batch, heads, max_len, head_dim)."""
        if self.fixed_width:
            raise ValueError("a fixed-width cache belongs to the compiled step")
        if self._length >= self.max_len:
            raise ValueError(f"KV cache is full: it holds {self.max_len} positions")
        self._keys, self._values = self._keys.contiguous(), self._values.contiguous()  # (no copy when they are)
        return self._keys, self._values, self._length, self._left_padding

    def advance(self, num_tokens: int) -> None:
        """Called once per forward pass, after every layer has stored its keys/values."""
        self._length += num_tokens

    def positions(self, num_new: int) -> torch.Tensor:
        """Positions of the next `num_new` tokens: (num_new,) shared by every row, or (batch,
        num_new) when rows are left-padded (a row's first real token is its position 0)."""
        columns = torch.arange(self._length, self._length + num_new, device=self._keys.device)
        if self._left_padding is None:
            return columns
        return (columns[None, :] - self._left_padding[:, None]).clamp(min=0)

    def attention_mask(self, num_new: int) -> torch.Tensor | None:
        """Which cached columns each new token may attend to, for the attention of this step.

        Returns None when plain causal attention (or none, for one new token) is right, else a
        boolean mask (batch or 1, 1, num_new, length + num_new): causal, and without the padding
        columns. A padding query attends to itself only, which keeps its softmax finite; its
        output is never used.
        """
        past = self._length
        if self._left_padding is None and (past == 0 or num_new == 1):
            return None
        device = self._keys.device
        query = torch.arange(past, past + num_new, device=device)[:, None]   # (T, 1)
        key = torch.arange(past + num_new, device=device)[None, :]           # (1, L)
        mask = key <= query                                                   # causal, (T, L)
        if self._left_padding is None:
            return mask
        pad = self._left_padding[:, None, None, None]                         # (b, 1, 1, 1)
        return (mask & (key >= pad)) | (key == query)                         # (b, 1, T, L)

    # ---- the decoding loop's side -----------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (the memory stays allocated): the next forward is a new prefill."""
        self._length = 0
        self._left_padding = None

    def set_left_padding(self, pad_counts: torch.Tensor | Sequence[int]) -> None:
        """Declare that row i starts with pad_counts[i] padding columns (before the prefill)."""
        pad = torch.as_tensor(pad_counts, dtype=torch.long, device=self._keys.device)
        if pad.shape != (self.batch_size,):
            raise ValueError(f"need one padding count per row ({self.batch_size}), got shape {tuple(pad.shape)}")
        self._left_padding = pad if bool(pad.any()) else None

    def keep_rows(self, rows: torch.Tensor | Sequence[int]) -> None:
        """Keep only these batch rows, in this order (a finished sequence leaves the batch).

        Padding columns that every kept row has are dropped too (`slide`): they hold nothing,
        and the attention of the next steps no longer reads them.
        """
        rows = torch.as_tensor(rows, dtype=torch.long, device=self._keys.device)
        self._keys = self._keys.index_select(1, rows)
        self._values = self._values.index_select(1, rows)
        if self._left_padding is not None:
            self._left_padding = self._left_padding.index_select(0, rows)
            common = int(self._left_padding.min()) if len(rows) else 0
            if common > 0:
                self.slide(common)

    def slide(self, num_columns: int) -> None:
        """Forget the `num_columns` oldest columns of every row; the others move to the front, so
        the room at the end grows by `num_columns`.

        Exact when those columns are padding in every row (`keep_rows` uses it so): positions
        (column minus padding) and what each token attends to stay the same. Dropping real
        tokens is the "sliding window" approximation: the kept keys/values were computed while
        the dropped tokens were still visible, so a model continuing from the slid cache does
        not compute what it would compute on the shortened text. `generate` wants exactly that
        text's result, so when its window slides it re-prefills the window instead.
        """
        if not 0 <= num_columns <= self._length:
            raise ValueError(f"can slide by 0..{self._length} columns (the filled ones), got {num_columns}")
        if num_columns == 0:
            return
        kept = self._length - num_columns
        # clone: source and destination overlap
        self._keys[:, :, :, :kept] = self._keys[:, :, :, num_columns:self._length].clone()
        self._values[:, :, :, :kept] = self._values[:, :, :, num_columns:self._length].clone()
        self._length = kept
        if self._left_padding is not None:
            pad = (self._left_padding - num_columns).clamp(min=0)
            self._left_padding = pad if bool(pad.any()) else None

    @classmethod
    def merge(cls, parts: Sequence[tuple["KVCache", int]], extra: int) -> "KVCache":
        """One new cache holding the given rows of several caches, left-padded to a common end.

        `parts`: (cache, row) pairs, in the order of the new batch. Each row's real columns (its
        prompt and generated tokens so far) are copied right-aligned so that they all end at
        column L (the longest row's length), after ``L - its length`` padding columns. A token
        keeps its position (column - padding) and sees exactly the tokens it saw before, so the
        next steps compute what they would have computed in the old caches. `extra`: columns
        to leave free for new tokens.

        Padding columns are zero-filled: they are masked out, but a masked NaN (`empty` memory)
        would still poison the attention's weighted sum (0 * NaN = NaN).
        """
        if not parts:
            raise ValueError("merge needs at least one (cache, row) pair")
        if extra < 0:
            raise ValueError(f"extra must be >= 0 (free columns for new tokens), got {extra}")
        lengths = [cache.row_lengths()[row] for cache, row in parts]
        longest = max(lengths)
        first = parts[0][0]
        n_layers, _, n_heads, _, head_dim = first.keys.shape
        new = cls(n_layers, len(parts), n_heads, head_dim, longest + extra,
                  dtype=first.keys.dtype, device=first.keys.device, fixed_width=first.fixed_width)
        new._keys[:, :, :, :longest].zero_()
        new._values[:, :, :, :longest].zero_()
        for new_row, ((cache, row), n) in enumerate(zip(parts, lengths)):
            # keys: (n_layers, batch, heads, max_len, head_dim); copy the row's last n real columns
            new._keys[:, new_row, :, longest - n:longest] = cache.keys[:, row, :, cache.length - n:cache.length]
            new._values[:, new_row, :, longest - n:longest] = cache.values[:, row, :, cache.length - n:cache.length]
        new._length = longest
        new.set_left_padding([longest - n for n in lengths])
        return new
