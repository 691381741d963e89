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
