"""A resumed run continues the run it resumes, with the settings and start model it started with.

`--resume` exists so that an interrupted run ends as if it had never stopped (exact resume). That
only holds when the second command trains the way the first did. The risk is quiet: a run started
at temperature 1.0 and resumed after the default became 0.8 samples its second half at 0.8, and
nobody notices the mixture of two recipes. So a fine-tuning stage hands the trainer its
`RunSettings` (the stage's config as a dict, a fingerprint of the start weights, and which of its
settings may change); every checkpoint records them, and on resume `check_resumed_settings`
compares them with the command's before the checkpoint is restored:

* a setting that shapes training and differs is an error that names each change and the flags
  that continue the run as it started; so is other start weights (compared by content, so a
  moved or renamed copy of the same model is fine);
* the learning rate and weight decay come back with the optimizer and its schedule whatever the
  command says, so a difference there is a note ("not used"), not an error, and the settings the
  resumed run records are the ones it trains with;
* what only sets the length, the scoring, the progress bar or where files are (`MAY_CHANGE`, every
  `eval_*` setting, and the stage's own: e.g. DPO's sampling settings, once its pairs are saved)
  may change; `--precision auto` keeps the run's precision;
* settings an older checkpoint did not record cannot be checked and are let through.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every stage: how long the run goes, how it shows progress, where it runs and where its files are
# (the start model is compared by its weights, `start_weights`, not by name or path).
MAY_CHANGE = frozenset({"max_steps", "epochs", "resume", "progress", "device", "out_dir", "checkpoint", "model",
                        "precision"})   # precision: checked against the precision the run trained in
RESTORED = ("lr", "weight_decay")      # come back with the optimizer: the run's own are used
LORA_SHAPE = ("lora_rank", "lora_alpha")

# store_true switches: given as `--name` or left out (the rest of the booleans have `--no-name`)
SWITCHES = frozenset({"lora", "grade_truncated", "mask_prompt", "skip_baseline", "resume"})


@dataclass
class RunSettings:
    """What a fine-tuning run records so that `--resume` can check it: `values`, the stage's
    settings (with "start_weights", `weights_fingerprint` of the start model); `may_change`, the
    stage's own settings that may differ on resume (besides `MAY_CHANGE` and `eval_*`)."""

    values: dict[str, Any]
    may_change: frozenset = field(default_factory=frozenset)

    @classmethod
    def of(cls, config: Any, start_model=None, may_change=()) -> "RunSettings":
        values = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()}
        if start_model is not None:
            values["start_weights"] = weights_fingerprint(start_model)
        return cls(values, frozenset(may_change))


def weights_fingerprint(model, sample: int = 4096) -> str:
    """A short hash of a model's tensors: names, shapes, dtypes and `sample` values of each, spread
    evenly over the whole tensor. The same weights give the same hash wherever they are loaded
    from; another model (or the same one trained further) almost surely another. Fast: it copies
    a few KB per tensor (taken on the tensor's own device)."""
    import torch

    digest = hashlib.blake2b(digest_size=12)
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        picked = flat[::max(1, flat.numel() // sample)].cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(picked.contiguous().view(torch.uint8).numpy().tobytes())   # the raw bytes, any dtype
    return digest.hexdigest()


def check_resumed_settings(saved: dict[str, Any] | None, settings: RunSettings, path: str | Path,
                           saved_precision: str | None = None) -> list[str]:
    """Compare the settings a checkpoint recorded (`saved`) with this command's.

    Raises ValueError naming every setting that differs and shapes training; returns notes for
    `RESTORED` settings the command asks to change (the run keeps its own). `saved_precision` is
    the precision the run trained in: an explicit, different `--precision` is an error ("auto"
    keeps the run's)."""
    if not saved:
        return []
    current = settings.values
    free = MAY_CHANGE | settings.may_change | (frozenset() if _uses_lora(current) else frozenset(LORA_SHAPE))
    changed = [(k, saved[k], v) for k, v in current.items()
               if k in saved and k not in free and k not in RESTORED and k != "start_weights"
               and not k.startswith("eval_") and saved[k] != v]
    requested = current.get("precision", "auto")
    if saved_precision and requested not in (None, "auto") and requested != saved_precision:
        changed.append(("precision", saved_precision, requested))
    problems = []
    if changed:
        listed = "; ".join(f"{k}: the run has {old!r}, this command {new!r}" for k, old, new in changed)
        flags = " ".join(as_flag(k, old) for k, old, _ in changed)
        problems.append(f"other settings ({listed}). A default may have changed since it started. Continue it as "
                        f"it started ({flags})")
    if saved.get("start_weights") and current.get("start_weights") not in (None, saved["start_weights"]):
        problems.append("another start model (its weights differ from the ones this run started from: "
                        f"{current.get('checkpoint') or current.get('model')}). Resume from the same --model or "
                        "--checkpoint")
    if problems:
        raise ValueError(f"{path} is a run with " + "; and with ".join(problems)
                         + ", or start a new run in another --out_dir.")
    return [f"this command's {k} {current[k]!r} is not used: a resumed run continues with its own {k} {saved[k]!r} "
            "(restored with its optimizer); start a new run to change it"
            for k in RESTORED if saved.get(k) is not None and current.get(k) is not None and saved[k] != current[k]]


def _uses_lora(values: dict[str, Any]) -> bool:
    """LoRA adapters train (instruct/DPO/GRPO: lora=True; classify: trainable="lora")."""
    return bool(values.get("lora")) or values.get("trainable") == "lora"


def as_flag(name: str, value: Any) -> str:
    """How a setting is given on the command line: `--lr 1e-05`, `--lora`, `without --lora`,
    `--no-scale_rewards`, `without --max_new_tokens` (its default)."""
    if isinstance(value, bool):
        if name in SWITCHES:
            return f"--{name}" if value else f"without --{name}"
        return f"--{name}" if value else f"--no-{name}"
    if value is None:
        return "--tasks none" if name == "tasks" else f"without --{name}"
    text = str(value)
    return f"--{name} {text!r}" if " " in text else f"--{name} {text}"
