"""What a training method brings to the one training loop, and nothing more.

Every way this project trains a model - pretraining and instruction tuning (next-token
cross-entropy), classification (cross-entropy on a label), DPO (pairs of answers) and GRPO
(sampled answers and rewards) - runs through the same loop, `training/trainer.py`:

    for step in range(start, total_steps):
        metrics = method.train_step(trainer, step)   # the method's work: forward, loss, backward,
                                                     # and trainer.update() once or more
        scheduler.step(); log metrics
        every eval_interval steps: method.evaluate(trainer), checkpoints

The loop owns everything that is the same for all of them: the optimizer and the learning-rate
schedule, precision (autocast and fp16's gradient scaler), gradient clipping, checkpoints that
resume exactly, Ctrl-C and `kill` saving `last.pt`, the progress bar, log.jsonl, TensorBoard and
the pictures, data-parallel training. A method only says how a step's gradient is made, what an
evaluation measures, and which figures it logs. It never calls `optimizer.step()` itself: it asks
the trainer (`trainer.update()`), so clipping, the scaler and the count of updates stay in one
place. A step may update more than once: GRPO's PPO epochs take one update per pass over the
same sampled answers.

Why an object and not a bag of callbacks: the methods are few, each keeps a little state (the
data position, sampled pairs, a reference model) and a learner reads a method top to bottom
in one file (`next_token.py`, `pipelines/dpo.py`, `pipelines/grpo.py`).
"""

from __future__ import annotations

from typing import Any

# The trainer is named in quotes only: `trainer.py` imports this module, not the other way round.


class TrainingMethod:
    """The base every method derives from; the defaults suit a method without data loaders."""

    name = "training"                   # shown on the progress bar
    plot_keys: tuple[str, ...] = ()     # per-step figures drawn into training.png
    log_every_step = True               # log.jsonl and history: a line per step (else per evaluation)
    evaluate_at_start = False           # also evaluate before the first step (a "before" score)
    saves_best_model = False            # keep best_model.pt at the lowest validation loss
    supports_distributed = False        # may run under torchrun
    train_mode = True                   # the model in train mode while training (dropout on, if any)

    def bind(self, trainer: "GPTTrainer") -> None:
        """Called once by the trainer before anything else (the device and ranks are known)."""

    def total_steps(self, trainer: "GPTTrainer") -> int:
        """How many steps the run takes when the config gives `max_steps` (the default)."""
        if trainer.config.max_steps is None:
            raise ValueError(f"{self.name} needs max_steps")
        return trainer.config.max_steps

    def size_evaluation(self, trainer: "GPTTrainer") -> None:
        """Choose how often and how much to evaluate (may set trainer.eval_interval)."""
        trainer.eval_interval = trainer.config.eval_interval or max(1, trainer.total_steps // 5)

    def precision_step_timer(self, trainer: "GPTTrainer"):
        """(timer, shape key) with which precision "auto" times a step, or (None, None)."""
        return None, None

    def train_step(self, trainer: "GPTTrainer", step: int) -> dict[str, float]:
        """Make the gradient of step `step` and call `trainer.update()` at least once; return
        the step's figures (a "loss" among them)."""
        raise NotImplementedError

    def evaluate(self, trainer: "GPTTrainer", final: bool) -> dict[str, Any]:
        """Figures of the model as it is now (in eval mode, without gradients); `final` at the
        last step. Numbers go to the log, TensorBoard and the pictures."""
        return {}

    def describe_evaluation(self, values: dict[str, Any]) -> str:
        """One line about an evaluation's figures, for the terminal."""
        return ", ".join(f"{k} {v:.3f}" for k, v in values.items() if isinstance(v, (int, float)))

    def plot(self, trainer: "GPTTrainer") -> None:
        """Draw the run's pictures into trainer.out_dir (called at the end and on Ctrl-C)."""
        from llm_from_scratch.training.plots import plot_step_figures

        if trainer.out_dir is not None:
            plot_step_figures(trainer.state.history, trainer.state.evaluations, self.plot_keys,
                              trainer.out_dir / "training.png")
