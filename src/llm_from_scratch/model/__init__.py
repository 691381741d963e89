"""Attention (chapter 3), the GPT model (chapter 4), and the later families (Llama, Qwen3), all
configurations of one decoder core (`decoder.py`); `registry.py` builds any of them by name."""

from llm_from_scratch.model.config import GPT_CONFIG_124M, PRESETS, GPTConfig, preset_config
from llm_from_scratch.model.decoder import Architecture, DecoderBlock, DecoderLM
from llm_from_scratch.model.fused_attention import CausalSelfAttention, FusedMultiHeadAttention
from llm_from_scratch.model.gpt import GPT, GPTModel, TransformerBlock
from llm_from_scratch.model.kv_cache import KVCache
from llm_from_scratch.model.layers import GELU, FeedForward, LayerNorm, RMSNorm, SwiGLUFeedForward
from llm_from_scratch.model.llama import LLAMA_PRESETS, LlamaConfig, LlamaModel
from llm_from_scratch.model.qwen3 import QWEN3_PRESETS, Qwen3Config, Qwen3Model
from llm_from_scratch.model.registry import create_model, model_from_config, model_types

__all__ = [
    "GPT", "GPTConfig", "GPTModel", "GPT_CONFIG_124M", "PRESETS", "preset_config",
    "Architecture", "DecoderBlock", "DecoderLM", "CausalSelfAttention",
    "FusedMultiHeadAttention", "TransformerBlock", "KVCache", "LayerNorm", "GELU", "FeedForward",
    "RMSNorm", "SwiGLUFeedForward",
    "LlamaConfig", "LlamaModel", "LLAMA_PRESETS", "Qwen3Config", "Qwen3Model", "QWEN3_PRESETS",
    "create_model", "model_from_config", "model_types",
]
