"""Attention (chapter 3), the GPT model (chapter 4), and the Llama architecture."""

from llm_from_scratch.model.config import GPT_CONFIG_124M, PRESETS, GPTConfig, preset_config
from llm_from_scratch.model.fused_attention import FusedMultiHeadAttention
from llm_from_scratch.model.gpt import GPT, GPTModel, TransformerBlock
from llm_from_scratch.model.kv_cache import KVCache
from llm_from_scratch.model.layers import GELU, FeedForward, LayerNorm
from llm_from_scratch.model.llama import LLAMA_PRESETS, LlamaConfig, LlamaModel

__all__ = [
    "GPT", "GPTConfig", "GPTModel", "GPT_CONFIG_124M", "PRESETS", "preset_config",
    "FusedMultiHeadAttention", "TransformerBlock", "KVCache", "LayerNorm", "GELU", "FeedForward",
    "LlamaConfig", "LlamaModel", "LLAMA_PRESETS",
]
