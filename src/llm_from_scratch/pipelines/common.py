"""What every pipeline stage shares: its error type and how it treats `kill`.

* `PipelineError`: bad input to a stage (no checkpoint to resume, a corpus smaller than one
  batch, a CSV without the named column...). The message says what is wrong and how to fix it.
  From Python it is an ordinary exception; the `llmfs` command line prints it as one line
  (`llmfs train: error: ...`, exit code 2) instead of a traceback. `cli/common.py` calls it
  `CommandError` (the commands raise the same error for bad flags).
* `RunFiles`: where a run's checkpoints are (the result of every training stage has them).
* `sigterm_as_ctrl_c()`: while a stage trains, SIGTERM (what `kill` and job schedulers send)
  behaves like Ctrl-C, so the trainer saves a `last.pt` that a resumed run continues exactly.

Only the standard library is imported here: the command line imports this module at start-up.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path


class PipelineError(Exception):
    """A problem with the input of a stage or a command: shown as a one-line error, no traceback."""


class RunFiles:
    """The checkpoints a training stage writes into its `out_dir` (a base of the result types)."""

    out_dir: Path

    @property
    def best_checkpoint(self) -> Path:
        """The weights of the evaluation with the lowest validation loss."""
        return self.out_dir / "best_model.pt"

    @property
    def last_checkpoint(self) -> Path:
        """The latest full training state: what --resume continues from."""
        return self.out_dir / "last.pt"


class FinetunedRunFiles(RunFiles):
    """A fine-tuning stage's files: the checkpoints, and the tuned model ready to use."""

    @property
    def final_model(self) -> Path:
        """The tuned model (LoRA merged in): what `--checkpoint` of every command loads."""
        return self.out_dir / "final_model.pt"


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """Schedulers and `kill` stop jobs with SIGTERM: during training, treat it like Ctrl-C so the
    trainer saves a checkpoint that a resumed run continues exactly. The previous handler comes
    back afterwards. Wrap the training loop only, not the tokenization before it: worker
    processes started inside would inherit the handler, and must keep the default."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): keep the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
