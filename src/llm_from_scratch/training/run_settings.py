"""A resumed run continues the run it resumes, with the settings it started with.

`--resume` exists so that an interrupted run ends as if it had never stopped (exact resume). That
only holds when the second command trains the way the first did. The risk is quiet: a run started
at temperature 1.0 and resumed after the default became 0.8 samples its second half at 0.8, and
nobody notices the mixture of two recipes. So a fine-tuning stage hands the trainer its settings
(`run_settings`, the stage's config as a dict); every checkpoint records them, and on resume
`check_resumed_settings` compares them with the command's before anything is restored:

* a setting that shapes training and differs is an error that names each change and the flags
  that continue the run as it started;
* the learning rate and weight decay come back with the optimizer and its schedule whatever the
  command says, so a difference there is a note ("not used"), not an error, and the settings the
  resumed run records are the ones it trains with;
* what only sets the length, the scoring, the progress bar or where things are (`MAY_CHANGE`, and
  every `eval_*` setting) may change;
* settings an older checkpoint did not record cannot be checked and are let through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# How long the run goes, how it is scored and shown, where it runs and where files are (moved
# paths; the start model is checked by name, `model_type`); rows computed together for the same
# gradient sum (`micro_batch`); LoRA's rank and alpha (the trainer checks the adapters themselves).
MAY_CHANGE = frozenset({"max_steps", "epochs", "resume", "progress", "device", "out_dir", "checkpoint", "model",
                        "data", "validation_data", "micro_batch", "skip_baseline", "lora_rank", "lora_alpha",
                        "precision"})   # precision: checked against the precision the run trained in
RESTORED = ("lr", "weight_decay")      # come back with the optimizer: the run's own are used

# store_true switches: given as `--name` or left out (the rest of the booleans have `--no-name`)
SWITCHES = frozenset({"lora", "grade_truncated", "mask_prompt", "skip_baseline", "compile"})


def recorded_settings(config: Any) -> dict[str, Any]:
    """A stage config as the dict a checkpoint records (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()}


def check_resumed_settings(saved: dict[str, Any] | None, current: dict[str, Any], path: str | Path,
                           saved_precision: str | None = None) -> list[str]:
    """Compare the settings a checkpoint recorded (`saved`) with this command's (`current`).

    Raises ValueError naming every setting that differs and shapes training; returns notes for
    `RESTORED` settings the command asks to change (the run keeps its own). `saved_precision` is
    the precision the run trained in: an explicit, different `--precision` is an error ("auto"
    keeps the run's)."""
    if not saved:
        return []
    changed = [(k, saved[k], v) for k, v in current.items()
               if k in saved and k not in MAY_CHANGE and k not in RESTORED and not k.startswith("eval_")
               and saved[k] != v]
    requested = current.get("precision", "auto")
    if saved_precision and requested not in (None, "auto") and requested != saved_precision:
        changed.append(("precision", saved_precision, requested))
    if changed:
        listed = "; ".join(f"{k}: the run has {old!r}, this command {new!r}" for k, old, new in changed)
        flags = " ".join(as_flag(k, old) for k, old, _ in changed)
        raise ValueError(f"{path} is a run with other settings ({listed}). A default may have changed since it "
                         f"started. Continue it as it started ({flags}), or start a new run in another --out_dir.")
    return [f"--{k} {current[k]!r} is not used: a resumed run continues with its own {k} {saved[k]!r} "
            "(restored with its optimizer); start a new run to change it"
            for k in RESTORED if saved.get(k) is not None and current.get(k) is not None and saved[k] != current[k]]


def as_flag(name: str, value: Any) -> str:
    """How a setting is given on the command line: `--lr 1e-05`, `--lora`, `without --lora`,
    `--no-scale_rewards`, `without --max_new_tokens` (its default)."""
    if isinstance(value, bool):
        if name in SWITCHES:
            return f"--{name}" if value else f"without --{name}"
        return f"--{name}" if value else f"--no-{name}"
    if value is None:
        return "--tasks none" if name == "tasks" else f"without --{name}"
    return f"--{name} {value}"
