"""The loop for learning from preferences (DPO) and from rewards (GRPO): steps, checkpoints, logs.

Chapter 5's loop (`training/trainer.py`, `GPTTrainer`) walks over a fixed data set and
minimizes cross-entropy. Preference tuning and reinforcement learning differ in *what one step
is*: a DPO step scores a batch of answer pairs under the model and a frozen reference; a GRPO
step first lets the model answer (sampling), grades the answers, and only then computes a loss.
Everything around the step is the same, and lives here once:

    for step in range(start, max_steps):
        torch.manual_seed(seed + step)          # each step's randomness depends on its number only
        metrics = step_fn(step)                 # the method's work; it calls loss.backward()
        clip the gradient norm; optimizer.step(); scheduler.step()
        log metrics (log.jsonl, TensorBoard, PNG); every eval_interval: held-out accuracy, last.pt

Exact resume, simply: a step's data (which prompts, which pairs) and its sampling seed are
functions of the step number, and the global random generator is reseeded from it. So a run
restarted from `last.pt` (weights, optimizer, scheduler, step, logs) takes exactly the steps the
uninterrupted run takes. Ctrl-C or `kill` saves `last.pt` at the start of the interrupted step.

With LoRA, the checkpoints hold only the trainable tensors (a few MB instead of the whole model);
resuming loads them on top of the same start model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from llm_from_scratch.training.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class PolicyState:
    """Where a run is: the step, the time spent and what was logged."""

    step: int = 0
    seconds: float = 0.0                      # training time (held-out evaluations excluded)
    history: list[dict[str, float]] = field(default_factory=list)      # one record per step
    evaluations: list[dict[str, Any]] = field(default_factory=list)    # held-out accuracy records


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that training changes (all of them, or only the LoRA adapters)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


class PolicyTrainer:
    """Runs `step_fn(step) -> metrics` for `max_steps` optimizer steps (see the module docstring).

    `evaluate(model) -> {name: value}` (optional) measures held-out accuracy at the start, every
    `eval_interval` steps and at the end. `info` joins every checkpoint (what the run is).
    """

    def __init__(self, model: torch.nn.Module, *, max_steps: int, lr: float, out_dir: str | Path,
                 weight_decay: float = 0.0, warmup_steps: int = 0, min_lr_ratio: float = 0.1,
                 grad_clip: float | None = 1.0, seed: int = 123, precision: str = "auto",
                 eval_interval: int | None = None, evaluate: Callable[[torch.nn.Module], dict] | None = None,
                 info: dict[str, Any] | None = None, progress: bool = True, desc: str = "training",
                 plot_keys: tuple[str, ...] = ()):
        from llm_from_scratch.training.optim import build_optimizer, build_scheduler
        from llm_from_scratch.training.precision import choose_precision

        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.model, self.max_steps, self.seed = model, max_steps, seed
        self.device = next(model.parameters()).device
        self.grad_clip, self.evaluate_fn, self.info = grad_clip, evaluate, dict(info or {})
        self.eval_interval = eval_interval or max(1, max_steps // 5)
        self.out_dir = Path(out_dir)
        self.progress, self.desc, self.plot_keys = progress, desc, plot_keys
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = build_optimizer(model, lr, weight_decay)
        self.scheduler = build_scheduler(self.optimizer, warmup_steps, max_steps, min_lr_ratio)
        self.precision_choice = choose_precision(precision, self.device)
        self.precision = self.precision_choice.name
        self.state = PolicyState()
        self._tensorboard = None

    # ----------------------------------------------------------------------------- precision
    def autocast(self):
        """The run's precision for forward passes (fp32: a no-op)."""
        from llm_from_scratch.training.precision import PRECISIONS

        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32")

    # ----------------------------------------------------------------------------- loop
    def train(self, step_fn: Callable[[int], dict[str, float]]) -> list[dict[str, float]]:
        state = self.state
        if state.step == 0 and not state.evaluations:
            self._evaluate()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.max_steps, initial=state.step, desc=self.desc, unit="step", dynamic_ncols=True)
        try:
            while state.step < self.max_steps:
                self._updating = False
                clock = time.perf_counter()
                torch.manual_seed(self.seed + state.step)
                try:
                    metrics = step_fn(state.step)
                    grad_norm = self._update()
                except KeyboardInterrupt:
                    self._save_on_interrupt(bar)
                    self.plot()              # the curves so far: an interrupted run is looked at too
                    raise
                state.seconds += time.perf_counter() - clock
                state.step += 1
                record = {"step": state.step, "seconds": state.seconds, "lr": self.scheduler.get_last_lr()[0],
                          "grad_norm": grad_norm, **{k: float(v) for k, v in metrics.items()}}
                if not math.isfinite(record.get("loss", 0.0)):
                    raise FloatingPointError(f"the loss became {record['loss']} at step {state.step}: "
                                             "lower the learning rate")
                state.history.append(record)
                self._log(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{record[k]:.3g}" for k in self.plot_keys[:3] if k in record})
                if state.step % self.eval_interval == 0 or state.step == self.max_steps:
                    self._evaluate(bar)
                    self.save(self.out_dir / "last.pt")
        finally:
            if bar is not None:
                bar.close()
            if self._tensorboard is not None:
                self._tensorboard.close()
                self._tensorboard = None
        self.plot()
        return state.history

    def _update(self) -> float:
        """Clip, step the optimizer and the schedule, clear the gradients; the norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip or float("inf"))
        self._updating = True
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(norm)

    def _evaluate(self, bar=None) -> None:
        if self.evaluate_fn is None:
            return
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                values = self.evaluate_fn(self.model)
        finally:
            self.model.train(was_training)
        record = {"step": self.state.step, **values}
        self.state.evaluations.append(record)
        text = f"step {self.state.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()
                                                       if isinstance(v, (int, float)))
        (bar.write if bar is not None else print)(text)
        self._log({f"heldout/{k}": v for k, v in values.items() if isinstance(v, (int, float))}, jsonl=False)

    def _save_on_interrupt(self, bar) -> None:
        if bar is not None:
            bar.close()
        if getattr(self, "_updating", False):
            print(f"\nInterrupted during an optimizer update; {self.out_dir / 'last.pt'} is from the last evaluation.")
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.save(self.out_dir / "last.pt")
        print(f"\nInterrupted: saved {self.out_dir / 'last.pt'} at step {self.state.step}; continue with --resume.")

    # ----------------------------------------------------------------------------- output
    def _log(self, record: dict[str, Any], jsonl: bool = True) -> None:
        """One line of log.jsonl and TensorBoard scalars (`tensorboard --logdir <out_dir>`)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if jsonl:
            with open(self.out_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter
            self._tensorboard = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)):
                self._tensorboard.add_scalar(name if "/" in name else f"train/{name}", value, self.state.step)

    def plot(self) -> Path | None:
        """<out_dir>/training.png: the logged figures per step (smoothed) and held-out accuracy."""
        history, evaluations = self.state.history, self.state.evaluations
        keys = [k for k in self.plot_keys if history and k in history[-1]]
        held_out = sorted({k for e in evaluations for k, v in e.items() if k != "step" and isinstance(v, float)})
        panels = keys + (["held-out accuracy"] if held_out else [])
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
                window = max(1, len(values) // 20)
                smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
                          for i in range(len(values))]
                ax.plot(steps, smooth)
            ax.set_title(key.replace("_", " "), fontsize=9)
            ax.set_xlabel("step")
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        path = self.out_dir / "training.png"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        return {"trainable": trainable_state(self.model), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "policy_state": asdict(self.state),
                "precision": self.precision, **self.info}

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, self.checkpoint_state())

    def resume(self, path: str | Path) -> None:
        """Continue from `last.pt` of the same run (same start model, method and settings)."""
        ckpt = load_checkpoint(path, map_location=self.device)
        if "policy_state" not in ckpt:
            raise ValueError(f"{path} is not a DPO/GRPO training checkpoint (it has no 'policy_state')")
        for key in ("method", "lora"):
            if key in self.info and ckpt.get(key) != self.info[key]:
                raise ValueError(f"{path} was written by a run with {key}={ckpt.get(key)!r}, this run has "
                                 f"{key}={self.info[key]!r}: resume with the same settings or use a new --out_dir")
        names = {name for name, p in self.model.named_parameters() if p.requires_grad}
        if set(ckpt["trainable"]) != names:
            raise ValueError(f"{path} does not hold this run's trainable tensors (LoRA or not, rank, model)")
        with torch.no_grad():
            parameters = dict(self.model.named_parameters())
            for name, tensor in ckpt["trainable"].items():
                parameters[name].copy_(tensor)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state = PolicyState(**ckpt["policy_state"])
        self.precision = ckpt.get("precision", self.precision)
        # the log again as of this step (the interrupted run may have logged steps after it)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        from llm_from_scratch.io.atomic import write_atomically
        write_atomically(self.out_dir / "log.jsonl",
                         "".join(json.dumps(r) + "\n" for r in self.state.history).encode("utf-8"))
