"""Loss curves as pictures: train and validation loss against steps (and tokens seen on top)."""

from __future__ import annotations

from pathlib import Path


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


def _save(fig, path: str | Path) -> Path:
    """Write the figure as a PNG (folders made as needed) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
