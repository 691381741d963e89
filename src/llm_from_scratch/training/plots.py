"""Training curves as pictures: train and validation loss against steps (and tokens seen on top),
other figures recorded at evaluations, and a panel per logged figure for methods that log every
step (DPO, GRPO: reward, accuracy, entropy, ... with the held-out accuracy beside them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def plot_losses(history: list[dict[str, float]], path: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [h["train_loss"] for h in history], label="train loss", marker="o", markersize=3)
    validation = [(h["step"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if validation:  # none without validation data
        ax.plot([p[0] for p in validation], [p[1] for p in validation], label="validation loss (sample)",
                linestyle="--", marker="o", markersize=3)
    final = [(h["step"], h["final_val_loss"]) for h in history if h.get("final_val_loss") is not None]
    if final:
        ax.plot([p[0] for p in final], [p[1] for p in final], label="final validation loss (whole split, fp32)",
                linestyle="none", marker="*", markersize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if len(steps) > 1 and steps[-1] > 0:
        tokens_per_step = history[-1]["tokens"] / steps[-1]
        top = ax.secondary_xaxis("top", functions=(lambda s: s * tokens_per_step, lambda t: t / tokens_per_step))
        top.set_xlabel("tokens seen")
    return _save(fig, path)


def plot_metrics(history: list[dict[str, float]], keys: list[str], path: str | Path, ylabel: str = "") -> Path:
    """Other figures recorded at each evaluation (e.g. train/val accuracy) against steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(h["step"], h[key]) for h in history if key in h]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=key.replace("_", " "), marker="o",
                markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_step_figures(history: list[dict[str, Any]], evaluations: list[dict[str, Any]], keys: tuple[str, ...],
                      path: str | Path) -> Path | None:
    """One panel per figure in `keys` logged at every step (raw and smoothed), and one of the
    held-out figures measured at each evaluation; None when there is nothing to draw."""
    keys = tuple(k for k in keys if history and k in history[-1])
    held_out = sorted({k for e in evaluations for k, v in e.items() if k != "step" and isinstance(v, float)})
    panels = list(keys) + (["held-out accuracy"] if held_out else [])
    if not panels:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, key in zip(axes.flat, panels):
        if key == "held-out accuracy":
            for name in held_out:
                points = [(e["step"], e[name]) for e in evaluations if name in e]
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=name)
            ax.legend(fontsize=7)
        else:
            values = [h.get(key, float("nan")) for h in history]
            ax.plot(steps, values, alpha=0.35)
            window = max(1, len(values) // 20)      # a running mean over a twentieth of the run
            smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
                      for i in range(len(values))]
            ax.plot(steps, smooth)
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write the figure as a PNG (folders made as needed) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
