"""The native decode step: one new token per row through all of a DecoderLM's blocks in one C call.

`DecoderLM.hidden_states` runs a one-token step through `NativeDecoder.layers` instead of
`DecoderLM.layers` when this module can describe the model to the kernels (`kernels/native.py`,
`kernels/decode_cpu.c`); everything else (prefills, training, other devices and dtypes, LoRA
layers, dropout in train mode, a compiled step) keeps the PyTorch path. Both compute the same
function in fp32 (tests/test_native_decode.py holds them to each other for GPT-2, Llama and
Qwen3 configurations, with and without quantized weights, padding and sliding windows).

What the kernels get: pointers into the model's own tensors (no copy of any weight), gathered
into C structures once per KV cache (`DecoderLM.new_kv_cache` builds a `NativeDecoder`, or
records why it cannot). The embedding lookup stays in PyTorch (one operation, and for GPT-2 the
position embedding); the C step then runs every block and the final norm, and writes each
layer's new key and value into the cache's storage itself (`KVCache.kernel_storage`). The
output head stays a PyTorch module call, which for int8/int4 heads is itself a native
matrix-vector product.

C code must never read a pointer into a freed tensor, and a model changes (LoRA layers added or
merged, `.to(...)`, weights loaded with `assign=True`, `quantize_model`). So the description
keeps the storages it points into alive, it is rebuilt with every new cache and whenever a
module, parameter or buffer has been registered anywhere since it was made (PyTorch's global
registration hooks count them), and `DecoderLM._apply` drops it. Building one costs well under
a millisecond. It never runs in train mode, with gradients, under autocast (PyTorch computes in
bf16 there), or on a cache of another batch size: `NativeDecoder.applies`.
"""

from __future__ import annotations

import ctypes
import logging
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_from_scratch.kernels import native
from llm_from_scratch.model.fused_attention import _SDPA_HAS_GQA
from llm_from_scratch.model.layers import FeedForward, LayerNorm, RMSNorm, SwiGLUFeedForward

log = logging.getLogger(__name__)

_last_logged: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its last log line


def _linear(module: nn.Module, shape: tuple[int, int], keep: list) -> native.Linear:
    """The kernels' description of one projection (with its bias), or ValueError with the reason."""
    bias = getattr(module, "bias", None)
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        raise ValueError(f"a {type(module).__name__} has a {bias.dtype} bias")
    if hasattr(module, "kernel_matrix"):                     # Int8Linear, Int4Linear
        matrix = module.kernel_matrix(with_bias=True)
        tensors = [t for t in (*module.buffers(recurse=False), bias) if t is not None]
    elif type(module) is nn.Linear:
        weight = module.weight
        if weight.dtype != torch.float32 or not weight.is_contiguous():
            raise ValueError(f"a Linear weight is {weight.dtype}{'' if weight.is_contiguous() else ', not contiguous'}")
        matrix = native.linear(native.FORMAT_F32, weight, weight.shape[1], weight.shape[1], bias=bias)
        tensors = [t for t in (weight, bias) if t is not None]
    else:
        raise ValueError(f"{type(module).__name__} layers (e.g. LoRA) run on the PyTorch path")
    if (matrix.rows, matrix.cols) != shape:
        raise ValueError(f"a {matrix.rows} x {matrix.cols} matrix where the configuration says {shape[0]} x {shape[1]}")
    keep.extend(t.untyped_storage() for t in tensors)  # the memory the kernels read stays alive
    return matrix


def _norm(module: nn.Module | None, dim: int, keep: list) -> native.Norm:
    if module is None:
        return native.Norm(None, None)
    if isinstance(module, RMSNorm):
        tensors = (module.weight, None)
    elif isinstance(module, LayerNorm):
        tensors = (module.scale, module.shift)
    else:
        raise ValueError(f"{type(module).__name__} norms run on the PyTorch path")
    for t in tensors:
        if t is not None and (t.dtype != torch.float32 or not t.is_contiguous() or t.numel() != dim):
            raise ValueError(f"a norm's parameters are {t.dtype} of shape {tuple(t.shape)}")
        if t is not None:
            keep.append(t.untyped_storage())
    return native.Norm(*(native.pointer(t) for t in tensors))


class NativeDecoder:
    """A DecoderLM described to the native kernels; `layers(...)` is a drop-in for `model.layers`
    on one-token steps with a KV cache."""

    def __init__(self, model, lib):
        arch = model.arch
        if "layers" in model.__dict__:  # someone replaced the PyTorch step on this instance: theirs runs
            raise ValueError("this model's `layers` is replaced on the instance")
        norm_weight = next(model.final_norm.parameters())
        if norm_weight.device.type != "cpu":
            raise ValueError(f"the model is on {norm_weight.device.type}, the native step runs on the CPU")
        if norm_weight.dtype != torch.float32:
            raise ValueError(f"the native step runs fp32 activations, this model's are {norm_weight.dtype}")
        if arch.positions == "rope":
            if model.rope.cos.dtype != torch.float32 or model.rope.cos.device.type == "meta":
                model.rope.rebuild()
        self.lib, self.arch = lib, arch
        self._model = weakref.ref(model)  # (no reference cycle: the model holds this decoder)
        self.changes = _module_changes[0]
        E, F, q_dim, kv_dim = arch.emb_dim, arch.hidden_dim, arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
        keep: list = []
        layers = (native.Layer * arch.n_layers)()
        for i, block in enumerate(model.trf_blocks):
            att, ff = block.att, block.ff
            if isinstance(ff, SwiGLUFeedForward):
                up, gate, down = ff.fc2, _linear(ff.fc1, (F, E), keep), ff.fc3
            elif isinstance(ff, FeedForward):
                up, gate, down = ff.layers[0], native.Linear(), ff.layers[2]
            else:
                raise ValueError(f"{type(ff).__name__} feed-forwards run on the PyTorch path")
            layers[i] = native.Layer(_norm(block.norm1, E, keep), _norm(block.norm2, E, keep),
                                     _norm(att.q_norm, arch.head_dim, keep), _norm(att.k_norm, arch.head_dim, keep),
                                     _linear(att.qkv, (q_dim + 2 * kv_dim, E), keep),
                                     _linear(att.out_proj, (E, q_dim), keep), _linear(up, (F, E), keep), gate,
                                     _linear(down, (E, F), keep))
        # the norms again, on their own: the prefill hands them to the kernels one at a time
        self.norms = [(layers[i].norm1, layers[i].norm2) for i in range(arch.n_layers)]
        self.final_norm = _norm(model.final_norm, E, keep)
        if arch.positions == "rope":
            keep += [model.rope.cos.untyped_storage(), model.rope.sin.untyped_storage()]
        self.structure = native.Model(
            arch.n_layers, E, arch.n_heads, arch.n_kv_heads, arch.head_dim, F,
            native.NORM_RMS if arch.norm == "rmsnorm" else native.NORM_LAYER, native.MLP_CODES[arch.mlp],
            int(arch.positions == "rope"), arch.sliding_window or 0, arch.norm_eps, layers, self.final_norm,
            native.pointer(model.rope.cos) if arch.positions == "rope" else None,
            native.pointer(model.rope.sin) if arch.positions == "rope" else None)
        self._keep = (keep, layers)

    def applies(self, model, kv_cache, batch: int) -> bool:
        """Whether this step may run now (checked every step: cheap). Not in train mode (dropout),
        not with gradients (the kernels record no graph; decoding runs in inference mode), not
        under autocast (the PyTorch path would compute in bf16 there), and only on the fp32 cache
        of this batch (a mismatch gets the PyTorch path's own error)."""
        return (not model.training and not torch.is_grad_enabled() and not _autocast_on()
                and kv_cache.keys.dtype == torch.float32 and kv_cache.batch_size == batch
                and (kv_cache.left_padding is None or kv_cache.left_padding.numel() == batch))

    def layers(self, in_idx: torch.Tensor, positions: torch.Tensor, kv_cache) -> torch.Tensor:
        """(b, 1) token ids at `positions` -> (b, 1, emb_dim) final-normed hidden states, storing
        each layer's key and value of the new token in `kv_cache` (its `advance` follows)."""
        model, arch = self._model(), self.arch
        batch = in_idx.shape[0]
        x = model.tok_emb(in_idx)                                       # (b, 1, emb_dim), a new tensor
        if arch.positions == "learned":
            x = x + model.pos_emb(positions)
        x = x.reshape(batch, arch.emb_dim).float().contiguous()
        row_positions = positions.reshape(-1).expand(batch) if positions.dim() == 1 else positions.reshape(batch)
        row_positions = row_positions.to(torch.int64).contiguous()
        keys, values, length, pad = kv_cache.kernel_storage()
        needed = self.lib.llmfs_decode_work_floats(ctypes.byref(self.structure), batch, keys.shape[3])
        work = native.scratch("decode step", torch.float32, needed)
        pad = None if pad is None else pad.to(torch.int64).contiguous()
        native.use_torch_threads(self.lib)
        status = self.lib.llmfs_decode_step(
            ctypes.byref(self.structure), x.data_ptr(), batch, row_positions.data_ptr(), keys.data_ptr(),
            values.data_ptr(), keys.shape[3], length, native.pointer(pad), work.data_ptr(), work.numel())
        if status != 0:
            raise RuntimeError(f"native decode step failed (status {status})")
        return x.view(batch, 1, arch.emb_dim)


    def prefill(self, in_idx: torch.Tensor, positions: torch.Tensor, kv_cache) -> torch.Tensor:
        """(b, T) token ids at `positions` -> (b, T, emb_dim) final-normed hidden states, storing every
        layer's keys and values in `kv_cache` (its `prepare` came before, its `advance` follows).

        The matrix products are the layers' own calls (for quantized layers the kernels' many-row
        path: BLAS on the converted matrix) and the attention is PyTorch's; what lies between them
        (norms, residual adds, QK-norm, RoPE, the cache writes, the activation) is one kernel call
        each, over all tokens, instead of a dozen operations each (`DecoderLM.layers`)."""
        model, arch, lib = self._model(), self.arch, self.lib
        batch, tokens = in_idx.shape
        rows = batch * tokens
        x = model.tok_emb(in_idx)                                       # (b, T, emb_dim), a new tensor
        if arch.positions == "learned":
            x = x + model.pos_emb(positions)
        x = x.reshape(rows, arch.emb_dim).float().contiguous()          # the residual stream
        row_positions = (positions.expand(batch, tokens) if positions.dim() == 1 else positions)
        row_positions = row_positions.reshape(rows).to(torch.int64).contiguous()
        keys, values, length, _ = kv_cache.kernel_storage()
        end, structure = length + tokens, ctypes.byref(self.structure)
        native.use_torch_threads(lib)
        h = torch.empty_like(x)                                         # the normed input of each part
        lib.llmfs_add_norm_rows(structure, ctypes.byref(self.norms[0][0]), x.data_ptr(), None, h.data_ptr(), rows)
        for l, block in enumerate(model.trf_blocks):
            att, ff = block.att, block.ff
            qkv = _for_kernel(att.qkv(h), rows)                         # (b*T, q_dim + 2 kv_dim)
            lib.llmfs_rope_and_store(structure, l, qkv.data_ptr(), batch, tokens, row_positions.data_ptr(),
                                     keys.data_ptr(), values.data_ptr(), keys.shape[3], length)
            queries = qkv[:, :att.q_dim].view(batch, tokens, arch.n_heads, arch.head_dim).transpose(1, 2)
            context = attend(queries, keys[l, :, :, :end], values[l, :, :, :end], kv_cache)
            out = _for_kernel(att.out_proj(context.transpose(1, 2).reshape(rows, att.q_dim)), rows)
            lib.llmfs_add_norm_rows(structure, ctypes.byref(self.norms[l][1]), x.data_ptr(), out.data_ptr(),
                                    h.data_ptr(), rows)                 # x += attention; h = norm2(x)
            if isinstance(ff, SwiGLUFeedForward):
                hidden, up = _for_kernel(ff.fc1(h), rows), _for_kernel(ff.fc2(h), rows)
                lib.llmfs_activation(structure, hidden.data_ptr(), up.data_ptr(), hidden.numel())
                out = ff.fc3(hidden)
            else:
                hidden = _for_kernel(ff.layers[0](h), rows)
                lib.llmfs_activation(structure, hidden.data_ptr(), None, hidden.numel())
                out = ff.layers[2](hidden)
            following = self.norms[l + 1][0] if l + 1 < arch.n_layers else self.final_norm
            lib.llmfs_add_norm_rows(structure, ctypes.byref(following), x.data_ptr(), _for_kernel(out, rows).data_ptr(),
                                    h.data_ptr(), rows)                 # x += feed-forward; h = next norm(x)
        return h.view(batch, tokens, arch.emb_dim)


def _for_kernel(t: torch.Tensor, rows: int) -> torch.Tensor:
    """A layer's output as the kernels read it: contiguous fp32 (rows, width); anything else would
    make C read or write past the tensor, so it is an error (`applies` keeps such cases away)."""
    if t.dtype != torch.float32 or t.dim() != 2 or t.shape[0] != rows:
        raise RuntimeError(f"native prefill: a layer gave {t.dtype} of shape {tuple(t.shape)}, expected fp32 rows")
    return t.contiguous()


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # pragma: no cover - torch < 2.4
        return torch.is_autocast_cpu_enabled()


#: How many times any module, parameter or buffer was registered anywhere (PyTorch's global
#: registration hooks): a decoder built at another count may describe replaced layers, so
#: `native_step_for` rebuilds it (quantize_model, apply_lora, load_state_dict(assign=True)...).
_module_changes = [0]


def _note_change(*_args) -> None:
    _module_changes[0] += 1


for _hook in ("register_module_module_registration_hook", "register_module_parameter_registration_hook",
              "register_module_buffer_registration_hook"):
    if hasattr(torch.nn.modules.module, _hook):
        getattr(torch.nn.modules.module, _hook)(_note_change)


def native_step_for(model, in_idx: torch.Tensor, kv_cache):
    """What `DecoderLM.hidden_states` runs instead of `model.layers` for these (b, T) token ids, or
    None (the PyTorch path): `NativeDecoder.layers` for one token per row, `.prefill` for several."""
    decoder = model.__dict__.get("native_decoder")
    if decoder is None or kv_cache is None or kv_cache.fixed_width:
        return None
    if decoder.changes != _module_changes[0]:  # a layer may have been replaced: describe the model again
        decoder = model.__dict__["native_decoder"] = native_decoder_for(model)
        if decoder is None:
            return None
    if in_idx.device.type != "cpu" or not decoder.applies(model, kv_cache, in_idx.shape[0]):
        return None
    # one token per row of a small batch: the one-call step. Many rows (a prompt, or a big batch of
    # one-token rows): the products are compute-bound, and BLAS does them better than matrix-vector loops
    rows = in_idx.shape[0] * in_idx.shape[1]
    return decoder.layers if in_idx.shape[1] == 1 and rows <= native.MATVEC_MAX_ROWS else decoder.prefill


def attend(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, kv_cache) -> torch.Tensor:
    """PyTorch's attention of (b, H, T, hd) queries over the cache's (b, Hkv, past + T, hd) keys and
    values, with the cache's mask for this step (causal, padding, sliding window)."""
    grouped = keys.shape[1] != queries.shape[1]
    if grouped and not _SDPA_HAS_GQA:  # pragma: no cover - torch < 2.5: copy each group's keys/values
        groups = queries.shape[1] // keys.shape[1]
        keys, values, grouped = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1), False
    extra = {"enable_gqa": True} if grouped else {}
    return F.scaled_dot_product_attention(queries, keys, values, attn_mask=kv_cache.step_mask,
                                          is_causal=kv_cache.step_is_causal, **extra)


def native_decoder_for(model) -> NativeDecoder | None:
    """A NativeDecoder for `model` as it is now, or None (the reason goes to the log, once per
    model and reason) when the one-token step must stay on the PyTorch path."""
    lib = native.library()
    try:
        if lib is None:
            raise ValueError(native.status())
        decoder, reason = NativeDecoder(model, lib), None
    except ValueError as exc:
        decoder, reason = None, str(exc)
    line = f"decode step: {native.status()}" if decoder else f"decode step: PyTorch operations ({reason})"
    if _last_logged.get(model) != line:
        _last_logged[model] = line
        log.info("%s", line)
    model.__dict__["decode_path"] = line
    return decoder


def decode_path_of(model) -> str:
    """The one-line answer to "which path decodes this model here?" (what `llmfs generate` prints)."""
    native_decoder_for(model)
    return model.__dict__["decode_path"]
