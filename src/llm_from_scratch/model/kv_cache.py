"""A key/value cache for fast autoregressive generation.

Without a cache, generating token t+1 runs the whole model over all t previous tokens again.
But in a causal model the keys and values of earlier tokens never change once computed, so we
can keep them: each new step then only computes the query/key/value of the *new* token and
attends over the stored keys and values. That turns the cost of a step from O(t) forward work
into O(1) forward work plus an O(t) attention read.

The cache is preallocated for `max_len` positions (no `torch.cat` per step, which would copy
the whole cache every token) and filled from the left; `length` says how many positions hold
real keys/values.
"""

from __future__ import annotations

import torch


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
    ):
        shape = (n_layers, batch_size, n_heads, max_len, head_dim)
        # empty, not zeros: positions past `length` are never read, and zero-filling a cache for
        # a full 1024-token GPT-2 context would cost ~75 MB of writes per generate() call.
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0  # positions 0 .. length-1 are filled
        # Batched generation of prompts of different lengths pads them on the left so that all
        # rows end at the same column: left_padding[i] columns of row i hold no token.
        self.left_padding: torch.Tensor | None = None  # (batch,) long, or None: no padding

    def update(self, layer: int, new_keys: torch.Tensor, new_values: torch.Tensor):
        """Store the keys/values of new tokens for one layer; return all keys/values so far.

        new_keys, new_values: (batch, n_heads, num_new_tokens, head_dim)
        returns two tensors of shape (batch, n_heads, length + num_new_tokens, head_dim)
        """
        start = self.length
        end = start + new_keys.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: it holds {self.max_len} positions but {end} are needed. "
                "Create a larger cache or reset it (generation does this when the context slides)."
            )
        self.keys[layer, :, :, start:end] = new_keys
        self.values[layer, :, :, start:end] = new_values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, num_tokens: int) -> None:
        """Called once per forward pass, after every layer has stored its keys/values."""
        self.length += num_tokens

    def reset(self) -> None:
        self.length = 0

    def set_left_padding(self, pad_counts: torch.Tensor | list[int]) -> None:
        """Declare that row i starts with pad_counts[i] padding columns (before any forward)."""
        pad = torch.as_tensor(pad_counts, dtype=torch.long, device=self.keys.device)
        if pad.shape != (self.keys.shape[1],):
            raise ValueError(f"need one padding count per row ({self.keys.shape[1]}), got shape {tuple(pad.shape)}")
        self.left_padding = pad if bool(pad.any()) else None

    def positions(self, num_new: int) -> torch.Tensor:
        """Positions of the next `num_new` tokens: (num_new,) shared by every row, or (batch,
        num_new) when rows are left-padded (a row's first real token is its position 0)."""
        columns = torch.arange(self.length, self.length + num_new, device=self.keys.device)
        if self.left_padding is None:
            return columns
        return (columns[None, :] - self.left_padding[:, None]).clamp(min=0)

    def attention_mask(self, num_new: int) -> torch.Tensor | None:
        """Which cached columns each new token may attend to, for the attention of this step.

        Returns None when plain causal attention (or none, for one new token) is right, else a
        boolean mask (batch or 1, 1, num_new, length + num_new): causal, and without the padding
        columns. A padding query attends to itself only, which keeps its softmax finite; its
        output is never used.
        """
        past = self.length
        if self.left_padding is None and (past == 0 or num_new == 1):
            return None
        device = self.keys.device
        query = torch.arange(past, past + num_new, device=device)[:, None]   # (T, 1)
        key = torch.arange(past + num_new, device=device)[None, :]           # (1, L)
        mask = key <= query                                                   # causal, (T, L)
        if self.left_padding is None:
            return mask
        pad = self.left_padding[:, None, None, None]                          # (b, 1, 1, 1)
        return (mask & (key >= pad)) | (key == query)                         # (b, 1, T, L)

    def keep_rows(self, rows: torch.Tensor | list[int]) -> None:
        """Keep only these batch rows (a finished sequence leaves the batch)."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.keys.device)
        self.keys = self.keys.index_select(1, rows)
        self.values = self.values.index_select(1, rows)
        if self.left_padding is not None:
            self.left_padding = self.left_padding.index_select(0, rows)
