"""A language model turned into a text classifier (chapter 6).

The recipe of the material: keep the pretrained transformer, replace its output head (emb_dim ->
vocabulary) by a small one (emb_dim -> num_classes), and read the head's output at **one**
position of the sequence. Because attention is causal, only the last token has seen the whole
text, so that is the position to read.

**Which "last"?** Texts of a batch are padded on the right to one length. The material reads
position -1, which for a short text is a padding token: its hidden state has "seen" the text
plus a run of end-of-text tokens, and the classifier has to learn to see through them. We read
the **last real token** instead (`pool="last_token"`, the default): its hidden state is exactly
what the model computes for the text alone (causal attention never looks right, so the padding
after it changes nothing). `pool="last_position"` keeps the material's behaviour.

Which parts train (`set_trainable`): ``last_block`` (the material's choice: the last
transformer block, the final norm and the new head), ``all``, ``head`` only, or ``lora``
(low-rank adapters on every linear layer plus the new head; see `lora.py`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

POOLING = ("last_token", "last_position")
TRAINABLE = ("last_block", "all", "head", "lora")


class SequenceClassifier(nn.Module):
    """`base` (GPTModel or LlamaModel) with a `num_classes` head read at one position.

    forward(input_ids (b, T)) -> class logits (b, num_classes); with `targets` (b,) it returns
    the mean cross-entropy instead (the trainer's interface).
    """

    def __init__(self, base: nn.Module, num_classes: int, pad_token_id: int | None, pool: str = "last_token"):
        super().__init__()
        if pool not in POOLING:
            raise ValueError(f"pool must be one of {POOLING}, got {pool!r}")
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        if pool == "last_token" and pad_token_id is None:
            raise ValueError("pool='last_token' needs the pad_token_id to find where each text ends")
        self.base = base
        self.cfg = base.cfg
        self.num_classes, self.pad_token_id, self.pool = num_classes, pad_token_id, pool
        # The new head replaces the vocabulary head (and unties it from the token embedding).
        base.out_head = nn.Linear(base.cfg.emb_dim, num_classes).to(base.tok_emb.weight.device)

    def last_token_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Position of each row's last real token: the position before the run of trailing pads.

        input_ids: (b, T) -> (b,). A text that fills the whole row ends at T - 1. Only *trailing*
        pad tokens count, so a pad id inside a text (if it can occur) does not confuse it.
        """
        if self.pool == "last_position":
            return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        is_pad = (input_ids == self.pad_token_id).int()
        trailing_pads = is_pad.flip(1).cumprod(dim=1).sum(dim=1)   # (b,)
        return (input_ids.shape[1] - 1 - trailing_pads).clamp(min=0)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.base.hidden_states(input_ids)                 # (b, T, emb_dim)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        pooled = hidden[rows, self.last_token_index(input_ids)]     # (b, emb_dim)
        logits = self.base.out_head(pooled)                         # (b, num_classes)
        if targets is not None:
            return F.cross_entropy(logits.float(), targets)
        return logits

    def classifier_config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "pad_token_id": self.pad_token_id, "pool": self.pool}


def set_trainable(classifier: SequenceClassifier, trainable: str, lora_rank: int = 16,
                  lora_alpha: float = 16.0) -> SequenceClassifier:
    """Freeze the model, then unfreeze what `trainable` names (see the module doc)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    base = classifier.base
    if trainable == "lora":
        from llm_from_scratch.finetune.lora import apply_lora
        apply_lora(base, lora_rank, lora_alpha, train_also=("out_head",))
        return classifier
    for parameter in classifier.parameters():
        parameter.requires_grad = trainable == "all"
    train = [base.out_head]
    if trainable == "last_block":
        train += [base.trf_blocks[-1], base.final_norm]
    for module in train:
        for parameter in module.parameters():
            parameter.requires_grad = True
    return classifier


@torch.no_grad()
def classify_texts(model: SequenceClassifier, tokenizer, texts: Sequence[str], max_length: int | None = None,
                   device=None) -> torch.Tensor:
    """Class probabilities (len(texts), num_classes) for raw texts, one text at a time (no padding
    needed then; the result does not depend on the pooling)."""
    device = device or next(model.parameters()).device
    context = model.cfg.context_length
    limit = min(max_length or context, context)
    model.eval()
    rows = []
    for text in texts:
        ids = tokenizer.encode(text)[:limit] or [model.pad_token_id or 0]
        logits = model(torch.tensor([ids], device=device))
        rows.append(torch.softmax(logits.float(), dim=-1)[0])
    return torch.stack(rows)


def classify_review(text: str, model: nn.Module, tokenizer, device, max_length: int | None = None,
                    pad_token_id: int = 50256) -> str:
    """The material's function: 'spam' or 'not spam' for one text.

    As in the material, the text is truncated to `max_length` (or the context), padded with
    `pad_token_id` to that length, and the logits are read at the classifier's pooling position
    (a `SequenceClassifier` reads the last real token; a plain model with a 2-class head, as in
    the material, is read at the last position).
    """
    model.eval()
    ids = tokenizer.encode(text)
    context = model.cfg.context_length if hasattr(model, "cfg") else len(ids)
    max_length = min(max_length or context, context)
    ids = ids[:max_length]
    ids = ids + [pad_token_id] * (max_length - len(ids))
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device))
        if logits.dim() == 3:  # a plain language model with a class head: last position, as the book
            logits = logits[:, -1, :]
    return "spam" if int(logits.argmax(dim=-1)) == 1 else "not spam"


def build_classifier(base: nn.Module, num_classes: int, pad_token_id: int | None, pool: str = "last_token",
                     trainable: str = "last_block", lora_rank: int = 16, lora_alpha: float = 16.0
                     ) -> SequenceClassifier:
    """`SequenceClassifier` + `set_trainable` in one call."""
    classifier = SequenceClassifier(base, num_classes, pad_token_id, pool)
    return set_trainable(classifier, trainable, lora_rank, lora_alpha)


def load_classifier(path, device=None):
    """(classifier in eval mode, tokenizer, checkpoint dict) from a `llmfs finetune classify` checkpoint."""
    from llm_from_scratch.io.checkpoints import clean_state_dict, load_checkpoint
    from llm_from_scratch.model.registry import model_from_config
    from llm_from_scratch.tokenizers import tokenizer_from_config

    ckpt = load_checkpoint(path, map_location="cpu")
    task = ckpt.get("task") or {}
    if task.get("type") != "classification":
        raise ValueError(f"{path} is not a classifier checkpoint (written by llmfs finetune classify); "
                         "use llmfs generate for language models")
    base = model_from_config(ckpt["model_config"])
    classifier = SequenceClassifier(base, task["num_classes"], task.get("pad_token_id"), task.get("pool", "last_token"))
    if task.get("trainable") == "lora":
        from llm_from_scratch.finetune.lora import apply_lora
        apply_lora(base, task.get("lora_rank", 16), task.get("lora_alpha", 16.0), train_also=("out_head",))
    try:
        classifier.load_state_dict(clean_state_dict(ckpt["model"]))
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit the recorded classifier ({str(exc).splitlines()[0]})") from exc
    if device is not None:
        classifier.to(device)
    tokenizer = tokenizer_from_config(ckpt["tokenizer"]) if ckpt.get("tokenizer") else None
    return classifier.eval(), tokenizer, ckpt
