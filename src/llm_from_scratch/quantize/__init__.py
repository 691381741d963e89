"""Weight-only quantization for fast, lean inference: int8 per channel, int4 in groups.

* `int8`: the idea (one scale per output channel), `Int8Linear`, `Int8Embedding`;
* `int4`: groups of 32 with a scale and a minimum (llama.cpp's Q4_1), `Int4Linear`;
* `gguf_blocks`: a GGUF file's Q8_0/Q4_0/Q4_1 blocks read as those values, no float copy;
* `formats`: the registry of formats (`FORMATS`, `QuantFormat`) and the check of a
  ``--quantize`` value (`resolve_format`);
* `model`: `quantize_model(model, "int8")` for a whole model, and `quantized_model_from_state`.

`llm_from_scratch.loading.load_model(..., quantize="int8")` and the `--quantize` flag of
`generate`, `chat`, `serve` and `evaluate` use it. docs/20-quantization.md explains it.
"""

from llm_from_scratch.quantize.formats import FORMATS, QUANTIZE_MODES, QuantFormat, check_quantize, resolve_format
from llm_from_scratch.quantize.int4 import Int4Linear, dequantize_groups, quantize_groups
from llm_from_scratch.quantize.int8 import (Int8Embedding, Int8Linear, dequantize_per_channel,
                                            quantize_per_channel)
from llm_from_scratch.quantize.model import (is_quantized, quantization_of, quantize_model,
                                             quantized_model_from_state)

__all__ = ["FORMATS", "Int4Linear", "Int8Embedding", "Int8Linear", "QUANTIZE_MODES", "QuantFormat", "check_quantize",
           "dequantize_groups", "dequantize_per_channel", "is_quantized", "quantization_of", "quantize_groups",
           "quantize_model", "quantize_per_channel", "quantized_model_from_state", "resolve_format"]
