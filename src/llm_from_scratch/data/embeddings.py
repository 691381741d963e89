"""Chapter 2's last step: token ids -> vectors the model can compute with.

A token embedding maps each id to a learned vector; a position embedding adds a learned vector
for each position, because attention by itself does not know the order of tokens. `GPTModel`
does exactly this with its `tok_emb` and `pos_emb` layers.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class TokenAndPositionEmbedding(nn.Module):
    def __init__(self, vocab_size: int, emb_dim: int, context_length: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, emb_dim)       # one row per token id
        self.pos_emb = nn.Embedding(context_length, emb_dim)   # one row per position

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        # token_ids: (b, T) -> (b, T, emb_dim); the (T, emb_dim) positions broadcast over the batch
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        return self.tok_emb(token_ids) + self.pos_emb(positions)
