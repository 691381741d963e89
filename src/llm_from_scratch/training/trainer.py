"""The training loop (chapter 5), the one every way of training in the project runs through.

    for each step:
        metrics = method.train_step(trainer, step)   # the gradient: for pretraining, the mean
                                                     # cross-entropy over grad_accum micro-batches
            ... trainer.update()                     # clip the gradient norm, optimizer step
        scheduler.step()                             # warmup + cosine learning rate
        every `eval_interval` steps: method.evaluate(), log, checkpoints

What a step *is* differs by method (`method.py`): next-token prediction on a data set
(`next_token.py`: pretraining, instruction tuning, classification), preference pairs (DPO,
`pipelines/dpo.py`), sampled answers and their rewards (GRPO, `pipelines/grpo.py`). Everything
else is here, once, for all of them:

* the optimizer (AdamW or Muon) and the schedule, gradient clipping, precision (autocast, and
  fp16's gradient scaler on CUDA), gradient accumulation with DDP's no_sync;
* a progress bar; a line per evaluation (or per step, for methods that log every step) in
  log.jsonl; TensorBoard event files; pictures of the curves;
* checkpoints written atomically: `last.pt` at every evaluation, `best_model.pt` at the lowest
  validation loss, with the optimizer, scheduler, random-generator states and data position,
  so that `resume_from=` continues exactly where a run stopped - also after Ctrl-C or `kill`,
  which save `last.pt` at the start of the interrupted step;
* data-parallel training over several processes (`distributed.py`).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from llm_from_scratch.training.checkpoint import (clean_state_dict, load_checkpoint, rng_state, save_checkpoint,
                                                 set_rng_state)
from llm_from_scratch.training.cpu_speed import keep_freed_memory
from llm_from_scratch.training.distributed import DistInfo, init_distributed
from llm_from_scratch.training.method import TrainingMethod
from llm_from_scratch.training.optim import build_optimizer, build_scheduler
from llm_from_scratch.training.run_settings import RunSettings, check_resumed_settings
from llm_from_scratch.training.precision import PRECISIONS, PrecisionChoice, choose_precision


@dataclass
class TrainerConfig:
    # How long: the first of these that is set wins (steps are calls of method.train_step).
    max_steps: int | None = None
    epochs: float | None = None
    max_tokens: int | None = None
    default_max_steps: int = 1000  # used when none of the three is set: a quick, bounded run
    # Optimization
    lr: float = 6e-4                # peak learning rate
    min_lr_ratio: float = 0.1       # cosine decays to lr * min_lr_ratio
    warmup_steps: int | None = None  # default: 5% of the steps, at most 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    optimizer: str = "adamw"          # adamw | muon (Muon for the blocks' matrices, AdamW for the rest)
    muon_lr: float = 0.02             # Muon's peak learning rate (same schedule as lr)
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    # Evaluation and output: None/"auto" sizes them to the run (next_token.py), a value wins
    eval_interval: int | None = None  # steps between evaluations
    eval_batches: int | None = None   # batches per evaluation: a fixed, seeded sample of the whole split
    final_eval_tokens: int | str = "auto"  # the end-of-run fp32 loss: whole split up to this many tokens,
                                      # else a seeded sample of about this size ("all": always all)
    sample_prompt: str | None = None  # needs a tokenizer
    sample_tokens: int = 50
    out_dir: str | None = None        # where checkpoints, log and plot go (None: nowhere)
    resume_from: str | None = None    # a last.pt to continue from
    checkpoint_trainable_only: bool = False  # last.pt holds only the trained tensors (LoRA: a few MB)
    # Hardware
    device: str = "auto"              # auto | cpu | cuda | mps
    precision: str = "auto"           # auto | fp32 | bf16 | fp16 (fp16 needs CUDA); see precision.py
    compile: bool = False
    # Speed-ups that do not change the math (see model/linear_cross_entropy.py, cpu_speed.py)
    fused_loss: bool = True           # head + cross-entropy in chunks, no (b, T, vocab) logits kept
    sparse_embedding_grad: bool = True  # tied embedding: add its gradient rows into the head's
    tune_malloc: bool = True          # CPU/glibc: reuse freed big blocks (no page faults per step)
    seed: int = 123
    progress: bool = True


def validation_summary(history: list[dict[str, Any]]) -> str:
    """The validation figures of a finished run, for the last line a command prints."""
    last = history[-1]
    sampled = [h["val_loss"] for h in history if h.get("val_loss") is not None]
    if not sampled:
        return "no validation data"
    text = f"validation loss {last['val_loss']:.3f} (best {min(sampled):.3f}; sampled windows)"
    if last.get("final_val_loss") is not None:
        tokens = f"{last['final_val_tokens']:,} tokens" if last.get("final_val_tokens") else "all batches"
        where = "whole split" if last.get("final_val_whole_split") else "a sample"
        text += f", final {last['final_val_loss']:.4f} ({where}, {tokens}, fp32)"
    return text


def auto_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class TrainState:
    """Where training is: everything needed (besides weights/optimizer) to continue exactly."""
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches already consumed in the current epoch
    tokens_seen: int = 0
    train_seconds: float = 0.0  # time spent in training steps (evaluations and checkpoints excluded)
    eval_seconds: float = 0.0   # time spent in evaluations
    best_val_loss: float = float("inf")
    history: list[dict[str, Any]] = field(default_factory=list)      # the lines of log.jsonl
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # per evaluation, for methods that
                                                                     # log every step (history is per step)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that training changes (all of them, or only the LoRA adapters)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


class GPTTrainer:
    """`GPTTrainer(model, train_loader, val_loader).train()` trains with sensible defaults.

    Settings are `TrainerConfig` fields, given as a config or as keywords
    (`GPTTrainer(model, train, val, max_steps=500, lr=1e-3)`). `tokenizer` is optional: with
    it, evaluations print a sample and checkpoints record which tokenizer the model needs.
    `method=` trains another way than next-token prediction on the loaders (DPO, GRPO; see
    method.py); `extra_checkpoint_info` joins every checkpoint. `run_settings`, a fine-tuning
    stage's settings and start model, too: a resumed run must have the same (run_settings.py).
    """

    def __init__(self, model: torch.nn.Module, train_loader: DataLoader | None = None,
                 val_loader: DataLoader | None = None, config: TrainerConfig | None = None, tokenizer=None,
                 extra_checkpoint_info: dict | None = None,
                 metrics: Callable[["GPTTrainer"], dict[str, float]] | None = None,
                 method: TrainingMethod | None = None, run_settings: RunSettings | None = None,
                 **overrides: Any):
        self.config = cfg = TrainerConfig(**{**(asdict(config) if config else {}), **overrides})
        if cfg.precision not in PRECISIONS and cfg.precision != "auto":
            raise ValueError(f"precision must be auto or one of {list(PRECISIONS)}, got {cfg.precision!r}")
        if cfg.grad_accum_steps < 1:
            raise ValueError("grad_accum_steps must be >= 1")
        if cfg.final_eval_tokens is None:        # the earlier spelling of "all"
            cfg.final_eval_tokens = "all"
        if not (cfg.final_eval_tokens in ("auto", "all") or (isinstance(cfg.final_eval_tokens, int)
                                                             and cfg.final_eval_tokens > 0)):
            raise ValueError(f"final_eval_tokens must be 'auto', 'all' or a positive number of tokens, "
                             f"got {cfg.final_eval_tokens!r}")
        if method is None:
            if train_loader is None:
                raise ValueError("give a train_loader (next-token training) or a method")
            from llm_from_scratch.training.next_token import NextTokenMethod
            method = NextTokenMethod(train_loader, val_loader, metrics)
        self.method = method
        self.device = auto_device(cfg.device)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA GPU; use --precision bf16 (CPU and GPU) or fp32.")
        if self.device.type == "cpu" and cfg.tune_malloc:
            keep_freed_memory()
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.dist.is_distributed and not method.supports_distributed:
            raise ValueError(f"{method.name} does not run under torchrun: start it as one process")
        if self.dist.is_distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        torch.manual_seed(cfg.seed + self.dist.rank)  # dropout differs per rank; the weights come from rank 0
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.extra_checkpoint_info = extra_checkpoint_info or {}
        self.run_settings = run_settings
        self.state = TrainState()
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        self.ddp_model = None
        self.forward_model = self.model
        if self.dist.is_distributed:
            from torch.nn.parallel import DistributedDataParallel
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = self.forward_model = DistributedDataParallel(self.model, device_ids=device_ids)
        if cfg.compile:
            self.forward_model = torch.compile(self.forward_model)
        method.bind(self)

        self.total_steps = method.total_steps(self)
        if self.total_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.total_steps}")
        self.warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else min(200, self.total_steps // 20)
        method.size_evaluation(self)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.optimizer, cfg.muon_lr)
        self.scheduler = build_scheduler(self.optimizer, self.warmup_steps, self.total_steps, cfg.min_lr_ratio)
        self._tensorboard = None
        self._updates = 0
        resumed = load_checkpoint(cfg.resume_from, map_location=self.device) if cfg.resume_from else None
        self.precision_choice = self._choose_precision(resumed)
        self.precision = self.precision_choice.name
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        if resumed is not None:
            self.resume(cfg.resume_from, resumed)

    # ----------------------------------------------------------------------------- precision
    def _choose_precision(self, resumed: dict | None) -> PrecisionChoice:
        """fp32/bf16/fp16 for this run (see precision.py). A resumed run keeps the precision it
        started with; under torchrun every rank takes rank 0's choice."""
        requested = self.config.precision
        kept = resumed.get("precision") if resumed is not None else None
        if requested == "auto" and kept == "fp16" and self.device.type != "cuda":
            raise ValueError(f"{self.config.resume_from} trained in fp16, which needs a CUDA GPU: resume it on one")
        if requested == "auto" and kept in PRECISIONS:
            choice = PrecisionChoice(kept, "auto: kept from the run being resumed")
        else:
            timer, shape_key = self.method.precision_step_timer(self) if requested == "auto" else (None, None)
            choice = choose_precision(requested, self.device, timer, shape_key)
        if self.dist.is_distributed:
            shared = [choice]
            torch.distributed.broadcast_object_list(shared, src=0)
            choice = shared[0]
        return choice

    def autocast(self):
        """The run's precision for forward passes (fp32: a no-op)."""
        enabled = self.precision != "fp32"
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=enabled)

    # ----------------------------------------------------------------------------- what methods call
    def accumulating(self, last: bool):
        """Around a micro-batch's forward and backward: under DDP, gradients are averaged across
        ranks only after the `last` micro-batch of a step (all-reducing after each would send the
        same data N times)."""
        return contextlib.nullcontext() if self.ddp_model is None or last else self.ddp_model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), through fp16's gradient scaler when there is one."""
        self.scaler.scale(loss).backward()

    def update(self) -> float:
        """Clip the gradient norm, take an optimizer step and clear the gradients; returns the
        norm before clipping (nan when neither clipping nor logging asks for it)."""
        norm = float("nan")
        if self.config.grad_clip or self.method.log_every_step:
            self.scaler.unscale_(self.optimizer)
            norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.config.grad_clip or float("inf")))
        self._updating = True  # from here on the weights change: an interrupt must not save
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._updates += 1
        self._last_grad_norm = norm
        return norm

    # ----------------------------------------------------------------------------- loop
    def train(self) -> list[dict[str, Any]]:
        cfg, state, method = self.config, self.state, self.method
        self.model.train(method.train_mode)
        progress = self._progress_bar()
        self._seconds_at_start = (state.train_seconds, state.eval_seconds)
        if state.step >= self.total_steps:
            print(f"Nothing to do: already at step {state.step} of {self.total_steps}.")
        if state.step == 0 and method.evaluate_at_start and not state.evaluations:
            self._evaluate_and_save(progress, tokens_per_s=0.0, save=False)
        start_time, start_tokens = time.perf_counter(), state.tokens_seen
        self._stop_requested = False
        try:
            with self._interrupts_wait_for_the_step():
                self._loop(progress, start_time, start_tokens)
        finally:
            if progress is not None:
                progress.close()
            if self._tensorboard is not None:
                self._tensorboard.close()
                self._tensorboard = None
        if self.dist.is_main:
            method.plot(self)
        if self.dist.is_distributed:  # every rank returns when rank 0 has written everything
            torch.distributed.barrier()
        return state.history

    def _loop(self, progress, start_time: float, start_tokens: int) -> None:
        state, method = self.state, self.method
        while state.step < self.total_steps:
            # Where this step starts, so that Ctrl-C can save a checkpoint a resumed run continues
            # from exactly (the micro-batches of an unfinished step are simply done again).
            step_start = (state.epoch, state.batch_in_epoch, rng_state())
            self._updating, self._updates = False, 0  # only now does step_start match the weights again
            step_clock = time.perf_counter()
            try:
                metrics = method.train_step(self, state.step)
            except KeyboardInterrupt:
                self._save_on_interrupt(step_start, progress)
                if self.dist.is_main:
                    method.plot(self)   # the curves so far: an interrupted run is looked at too
                raise
            if self._updates == 0:
                raise RuntimeError(f"{type(method).__name__}.train_step did not call trainer.update()")
            self.scheduler.step()
            state.step += 1
            state.train_seconds += time.perf_counter() - step_clock
            self._updating = False                   # the step is whole: its end is a clean point
            try:
                if self._stop_requested:             # Ctrl-C came during the step's updates
                    raise KeyboardInterrupt
                self._after_step(metrics, start_time, start_tokens, progress)
            except KeyboardInterrupt:                # now, or during an evaluation: save this step
                self._save_at_step_end(progress)
                raise

    @contextlib.contextmanager
    def _interrupts_wait_for_the_step(self):
        """Ctrl-C (and `kill`, where the caller turned SIGTERM into Ctrl-C) during a step's
        optimizer updates stops the run when the step is complete instead of in the middle: the
        weights have already changed, so the step's start is no longer a point to save, and with
        several updates per step (GRPO's PPO epochs) that window is most of the step. At any
        other moment the interrupt acts at once, as usual."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self._updating:
                self._stop_requested = True
                return
            previous[signum](signum, frame)          # raises KeyboardInterrupt

        handled = [sig for sig, old in previous.items() if callable(old)]   # not SIG_DFL / SIG_IGN
        for sig in handled:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig in handled:
                signal.signal(sig, previous[sig])

    def time_split(self, wall_seconds: float) -> str:
        """Where the wall time of this `train()` call (and what the caller did around it) went:
        "training 45 s (71%), evaluation 6 s (9%), other 13 s (20%)"."""
        train0, eval0 = getattr(self, "_seconds_at_start", (0.0, 0.0))
        training, evaluation = self.state.train_seconds - train0, self.state.eval_seconds - eval0
        other = max(0.0, wall_seconds - training - evaluation)
        wall = max(wall_seconds, 1e-9)
        return ", ".join(f"{name} {seconds:.0f} s ({seconds / wall:.0%})" for name, seconds in
                         (("training", training), ("evaluation", evaluation), ("other", other)))

    def _after_step(self, metrics: dict[str, float], start_time: float, start_tokens: int, progress) -> None:
        cfg, state = self.config, self.state
        loss = float(metrics.get("loss", 0.0))
        if not math.isfinite(loss):
            raise FloatingPointError(f"Loss became {loss} at step {state.step}. Lower the learning "
                                     f"rate (now {cfg.lr}) or use fp32/bf16 instead of fp16.")
        lr = self.scheduler.get_last_lr()[0]
        elapsed = time.perf_counter() - start_time
        tokens_per_s = (state.tokens_seen - start_tokens) / max(elapsed, 1e-9)
        scalars = {"train/step_loss": loss, "train/lr": lr}
        if self.method.log_every_step:
            record = {"step": state.step, "seconds": state.train_seconds, "lr": lr,
                      "grad_norm": self._last_grad_norm, **{k: float(v) for k, v in metrics.items()}}
            state.history.append(record)
            self._write_log_line(record)
            scalars.update({k if "/" in k else f"train/{k}": v for k, v in record.items() if k != "step"})
        self._log_scalars(scalars)
        if progress is not None:
            progress.update(1)
            keys = [k for k in self.method.plot_keys[:3] if k in metrics] or ["loss"]
            postfix = {k: f"{float(metrics[k]):.3g}" for k in keys if k in metrics}
            postfix["lr"] = f"{lr:.2e}"
            if state.tokens_seen:
                postfix["tok_s"] = f"{tokens_per_s:,.0f}"
            progress.set_postfix(postfix)
        if state.step % self.eval_interval == 0 or state.step == self.total_steps:
            self._evaluate_and_save(progress, tokens_per_s, step_loss=loss)

    def _save_at_step_end(self, progress) -> None:
        """last.pt as of the end of the step just taken (evaluations change nothing that training
        uses: a run resumed from here continues exactly)."""
        if progress is not None:
            progress.close()
        if self.out_dir is None or not self.dist.is_main:
            return
        self.optimizer.zero_grad(set_to_none=True)
        save_checkpoint(self.out_dir / "last.pt", self.checkpoint_state())
        print(f"\nInterrupted: saved {self.out_dir / 'last.pt'} at step {self.state.step}; "
              "continue with --resume or resume_from=.")

    def _save_on_interrupt(self, step_start, progress) -> None:
        if progress is not None:
            progress.close()
        if self.out_dir is None or not self.dist.is_main:
            return
        if getattr(self, "_updating", False):   # (only without a signal: an exception in an update)
            last = self.out_dir / "last.pt"
            print(f"\nInterrupted during an optimizer update; " + (
                f"the last checkpoint ({last}) is from the last evaluation." if last.is_file()
                else "no checkpoint was saved yet: start again without --resume."))
            return
        self.state.epoch, self.state.batch_in_epoch, rng = step_start
        self.optimizer.zero_grad(set_to_none=True)
        checkpoint = self.checkpoint_state()
        checkpoint["rng"] = rng
        save_checkpoint(self.out_dir / "last.pt", checkpoint)
        print(f"\nInterrupted: saved {self.out_dir / 'last.pt'} at step {self.state.step}; "
              "continue with --resume or resume_from=.")

    # ----------------------------------------------------------------------------- evaluation and output
    def _evaluate_and_save(self, progress, tokens_per_s: float, step_loss: float | None = None,
                           save: bool = True) -> None:
        state, method = self.state, self.method
        clock = time.perf_counter()
        final = state.step == self.total_steps
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():  # must not change training's randomness
                values = method.evaluate(self, final)
        finally:
            self.model.train(was_training)
        state.eval_seconds += time.perf_counter() - clock
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        message = f"step {state.step}/{self.total_steps} | "
        if method.log_every_step:
            state.evaluations.append({"step": state.step, **numbers})
            scalars = {f"heldout/{k}": v for k, v in numbers.items()}
        else:
            record = {"step": state.step, "tokens": state.tokens_seen, "epoch": state.epoch,
                      **{k: v for k, v in values.items() if k != "sample"}, "step_loss": step_loss,
                      "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": tokens_per_s,
                      "precision": self.precision, "train_seconds": state.train_seconds}
            state.history.append(record)
            scalars = {"speed/tokens_per_s": tokens_per_s, **{f"eval/{k}": v for k, v in numbers.items()}}
            message += f"tokens {state.tokens_seen:,} | {tokens_per_s:,.0f} tok/s | "
        if not self.dist.is_main:
            return
        self._log_scalars(scalars)
        (progress.write if progress is not None else print)(
            (message + method.describe_evaluation(values)).removesuffix(" | "))
        if self.out_dir is None or not save:
            return
        if not method.log_every_step:
            self._write_log_line(state.history[-1])
        checkpoint = self.checkpoint_state()
        if values.get("final_val_loss") is not None:
            checkpoint["final_val_loss"] = values["final_val_loss"]
        val_loss = values.get("val_loss")
        if method.saves_best_model and ((val_loss is not None and val_loss < state.best_val_loss)
                                        or (val_loss is None and final)):
            state.best_val_loss = val_loss if val_loss is not None else state.best_val_loss
            checkpoint["best_val_loss"] = state.best_val_loss
            save_checkpoint(self.out_dir / "best_model.pt", checkpoint)
        save_checkpoint(self.out_dir / "last.pt", checkpoint)

    def _write_log_line(self, record: dict[str, Any]) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _log_scalars(self, values: dict[str, float]) -> None:
        """TensorBoard event files in <out_dir>/tensorboard (`tensorboard --logdir <out_dir>`)."""
        if self.out_dir is None or not self.dist.is_main:
            return
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter  # the `tensorboard` package is a dependency
            self._tensorboard = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._tensorboard.add_scalar(name, value, global_step=self.state.step)

    def _progress_bar(self):
        if not self.config.progress or not self.dist.is_main:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=self.total_steps, initial=self.state.step, desc=self.method.name, unit="step",
                    dynamic_ncols=True)

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        model_cfg = getattr(self.model, "cfg", None)
        weights = ({"trainable": trainable_state(self.model)} if self.config.checkpoint_trainable_only
                   else {"model": clean_state_dict(self.model.state_dict())})
        return {
            **weights,
            "model_config": model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else None,
            "tokenizer": self.tokenizer.to_config() if hasattr(self.tokenizer, "to_config") else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "train_state": asdict(self.state),
            "trainer_config": asdict(self.config),
            "rng": rng_state(),
            "precision": self.precision,
            "precision_reason": self.precision_choice.reason,
            **self.extra_checkpoint_info,
            **({"run_settings": self.run_settings.values} if self.run_settings is not None else {}),
        }

    def resume(self, path: str | Path, ckpt: dict[str, Any] | None = None) -> None:
        """Continue from a full training checkpoint (last.pt); `ckpt` if it is already loaded."""
        ckpt = ckpt if ckpt is not None else load_checkpoint(path, map_location=self.device)
        if "policy_state" in ckpt and "train_state" not in ckpt:   # DPO/GRPO before the one loop
            old = ckpt["policy_state"]
            ckpt["train_state"] = {"step": old["step"], "train_seconds": old.get("seconds", 0.0),
                                   "history": old.get("history", []), "evaluations": old.get("evaluations", [])}
        weights = "trainable" if "trainable" in ckpt else "model"
        for key in (weights, "optimizer", "scheduler", "train_state"):
            if key not in ckpt:
                raise ValueError(f"{path} cannot be resumed from: it has no {key!r} entry "
                                 "(only the last.pt of a run with the same settings can).")
        for key in ("method", "lora"):
            if key in self.extra_checkpoint_info and ckpt.get(key) != self.extra_checkpoint_info[key]:
                raise ValueError(f"{path} was written by a run with {key}={ckpt.get(key)!r}, this run has "
                                 f"{key}={self.extra_checkpoint_info[key]!r}: resume with the same settings "
                                 "or use a new --out_dir")
        notes, saved = [], None
        if self.run_settings is not None:   # (DPO/GRPO checkpoints of older versions: "<method>_config")
            saved = ckpt.get("run_settings", ckpt.get(f"{self.method.name.lower()}_config"))
            notes = check_resumed_settings(saved, self.run_settings, path, ckpt.get("precision"))
        if weights == "trainable":
            names = {name for name, p in self.model.named_parameters() if p.requires_grad}
            if set(ckpt["trainable"]) != names:
                raise ValueError(f"{path} does not hold this run's trainable tensors (LoRA or not, rank, model)")
            with torch.no_grad():
                parameters = dict(self.model.named_parameters())
                for name, tensor in ckpt["trainable"].items():
                    parameters[name].copy_(tensor)
        else:
            try:
                self.model.load_state_dict(clean_state_dict(ckpt["model"]))
            except RuntimeError as exc:
                raise ValueError(f"{path} was saved from a different model configuration than the one being "
                                 f"trained: {str(exc).splitlines()[0]}") from exc
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.run_settings is not None:   # record what the run trains with, not what was asked
            for key in self.run_settings.may_change & set(saved or {}):   # e.g. DPO's: what made its saved pairs
                self.run_settings.values[key] = saved[key]
            self.run_settings.values["lr"] = self.scheduler.base_lrs[0]
            if "weight_decay" in (saved or {}):
                self.run_settings.values["weight_decay"] = saved["weight_decay"]
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["train_state"])
        for note in notes if self.dist.is_main else ():
            print(f"note: {note}")
        if "rng" in ckpt:          # (DPO/GRPO checkpoints from before the one loop have none: they
            set_rng_state(ckpt["rng"])   # seed every draw from the step number, so they need none)
        if self.method.log_every_step and self.out_dir is not None and self.dist.is_main:
            # the log again as of this step (the interrupted run may have logged steps after it)
            from llm_from_scratch.io.atomic import write_atomically
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self.out_dir / "log.jsonl",
                             "".join(json.dumps(r) + "\n" for r in self.state.history).encode("utf-8"))
