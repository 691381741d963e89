"""The output head and the cross-entropy loss in one step, without storing the logits.

The usual training loss is two steps::

    logits = hidden @ W.T                      # (N, vocab): N = batch * tokens
    loss = F.cross_entropy(logits, targets)

For GPT-2 124M with a batch of 4 x 256 tokens the logits are 1024 x 50,257 floats: 206 MB.
Autograd keeps them (and the log-softmax of them) for the backward pass, and the backward pass
then walks over several tensors of that size again. On a CPU, where memory bandwidth is the
scarce thing, those passes and the page faults of allocating 200 MB buffers anew at every step
cost more than the head's matrix multiply itself.

`linear_cross_entropy` computes the same loss and the same gradients chunk by chunk: for a
chunk of tokens it computes the logits, their log-sum-exp and the loss, then, *in the same
buffer while it is still in cache*, the gradient of the loss with respect to the logits,

    d loss / d logits = (softmax(logits) - one_hot(targets)) / N

and from it the gradients of the hidden states (g @ W) and of the head's weight (g.T @ h).
The backward pass only has to hand those out. Nothing of size (N, vocab) outlives a chunk.

With a soft cap (``softcap=c``: logits = c * tanh(raw / c), see `DecoderLM.logits`) the chain
rule adds one factor, d logits / d raw = 1 - tanh(raw / c)^2, applied in the same chunk.

It is exact math, not an approximation: `tests/test_linear_cross_entropy.py` compares the loss
and both gradients with `F.cross_entropy` on the full logits.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # same convention as F.cross_entropy: targets equal to it add no loss
DEFAULT_CHUNK = 1024  # tokens per chunk: 1024 x 50,257 floats = 206 MB at most


def soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(logits / cap): every logit squashed smoothly into (-cap, cap); None: unchanged."""
    return logits if cap is None else cap * torch.tanh(logits / cap)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matrix multiplies would use here: autocast's when it is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward pass computes the loss *and* the gradients; backward pass scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, ignore_index, softcap=None, bias=None):
        # hidden: (N, emb_dim), weight: (vocab, emb_dim), targets: (N,)
        n = hidden.shape[0]
        compute = _compute_dtype(hidden)
        acc = torch.promote_types(compute, torch.float32)  # softmax and sums: fp32 at least
        valid = targets != ignore_index
        # F.cross_entropy's mean is over the non-ignored targets (a tensor: no sync, no graph break)
        scale = 1.0 / valid.sum().clamp(min=1).to(acc)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        w = weight.to(compute)  # cast once, not per chunk (no copy in fp32)
        with torch.autocast(hidden.device.type, enabled=False):  # we choose the dtypes ourselves
            for start in range(0, n, chunk):
                h = hidden[start:start + chunk].to(compute)          # (c, emb_dim)
                t = targets[start:start + chunk]                     # (c,)
                ok = valid[start:start + chunk]
                safe_t = t.masked_fill(~ok, 0)                       # any real index for gather
                logits = (h @ w.t()).to(acc)                         # (c, vocab): the only big buffer
                if softcap is not None:
                    squashed = torch.tanh(logits / softcap)          # (c, vocab)
                    logits = squashed * softcap
                if bias is not None:                                 # a constant per vocabulary row
                    logits = logits + bias.to(device=logits.device, dtype=acc)
                lse = torch.logsumexp(logits, dim=-1)                # (c,)
                token_loss = lse - logits.gather(1, safe_t[:, None]).squeeze(1)
                total += token_loss.masked_fill(~ok, 0.0).sum()
                # The gradient, in place: softmax = exp(logits - lse); minus 1 at the target.
                grad = logits.sub_(lse[:, None]).exp_()
                grad[torch.arange(len(t), device=t.device), safe_t] -= 1.0
                grad.mul_((ok.to(grad.dtype) * scale)[:, None])           # ignored rows get no gradient
                if softcap is not None:
                    grad.mul_(1.0 - squashed.square_())                # through the tanh
                grad = grad.to(compute)
                if need_hidden:
                    grad_hidden[start:start + chunk] = grad @ w        # (c, emb_dim)
                if need_weight:
                    if compute == grad_weight.dtype:
                        grad_weight.addmm_(grad.t(), h)              # (vocab, emb_dim), no temporary
                    else:
                        grad_weight += (grad.t() @ h).to(grad_weight.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total * scale

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        if not torch.compiler.is_compiling() and grad_loss.numel() == 1 and grad_loss.item() == 1.0:
            return grad_hidden, grad_weight, None, None, None, None, None  # plain loss.backward(): skip 2 passes
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight * grad_loss.to(grad_weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int = DEFAULT_CHUNK, ignore_index: int = IGNORE_INDEX,
                         softcap: float | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """mean cross_entropy(hidden @ weight.T, targets) over targets != ignore_index; with
    `softcap`, of softcap * tanh(hidden @ weight.T / softcap). `bias` (vocab,): a constant added
    to the (capped) logits, a compact vocabulary's offset of its reserved id (model/compact_vocab.py).

    hidden: (..., emb_dim) final hidden states; weight: (vocab, emb_dim) the output head's
    weight; targets: (...) token ids. Returns a scalar. Gradients flow to hidden and weight.
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree: "
                         "expected hidden (..., emb_dim) and targets (...)")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, chunk, ignore_index, softcap, bias)
    # No gradient wanted (evaluation): the same chunked loss, without the gradient work.
    acc = torch.promote_types(_compute_dtype(hidden), torch.float32)
    total = torch.zeros((), dtype=acc, device=hidden.device)
    valid = targets != ignore_index
    for start in range(0, hidden.shape[0], chunk):
        logits = soft_cap((hidden[start:start + chunk] @ weight.t()).to(acc), softcap)
        if bias is not None:
            logits = logits + bias.to(device=logits.device, dtype=acc)
        t, ok = targets[start:start + chunk], valid[start:start + chunk]
        token_loss = torch.logsumexp(logits, -1) - logits.gather(1, t.masked_fill(~ok, 0)[:, None]).squeeze(1)
        total += token_loss.masked_fill(~ok, 0.0).sum()
    return total / valid.sum().clamp(min=1).to(acc)
