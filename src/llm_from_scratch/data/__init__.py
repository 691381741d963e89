"""Data: from text to batches of token windows (chapter 2)."""

from llm_from_scratch.data.embeddings import TokenAndPositionEmbedding
from llm_from_scratch.data.sliding_window import GPTDatasetV1, create_dataloader_v1, create_dataloaders

__all__ = ["GPTDatasetV1", "create_dataloader_v1", "create_dataloaders", "TokenAndPositionEmbedding"]
