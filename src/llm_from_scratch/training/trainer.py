"""The training loop (chapter 5), the one every command of the project uses.

    for each step:
        for each of `grad_accum_steps` micro-batches:
            loss = cross_entropy(model(inputs), targets) / grad_accum_steps
            loss.backward()                       # gradients add up across micro-batches
        clip the gradient norm                    # one bad batch cannot blow up the weights
        optimizer.step(); scheduler.step()        # AdamW, warmup + cosine learning rate
        every `eval_interval` steps: train/val loss, a sample, checkpoints

Everything else here is bookkeeping that makes long runs pleasant and safe: a progress bar with
loss, learning rate, tokens/s and ETA; checkpoints written atomically (`best_model.pt` at the
lowest validation loss, `last.pt` always) with the optimizer, scheduler, RNG states and data
position, so `resume_from=` continues exactly where a run stopped; TensorBoard event files and a
loss-curve PNG; and data-parallel training over several processes (see `distributed.py`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, RandomSampler

from llm_from_scratch.training.checkpoint import (clean_state_dict, load_checkpoint, rng_state, save_checkpoint,
                                                 set_rng_state)
from llm_from_scratch.training.cpu_speed import keep_freed_memory
from llm_from_scratch.training.distributed import DistInfo, EpochBatchSampler, all_reduce_mean, init_distributed
from llm_from_scratch.training.evaluation import sample_indices, scored_targets, split_loss
from llm_from_scratch.training.losses import calc_loss_batch, perplexity
from llm_from_scratch.training.optim import build_optimizer, build_scheduler
from llm_from_scratch.training.precision import PRECISIONS, PrecisionChoice, choose_precision, model_step_timer


@dataclass
class TrainerConfig:
    # How long: the first of these that is set wins (steps are optimizer updates).
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
    # Evaluation and output
    eval_interval: int | None = None  # default: 10 evaluations per run
    eval_batches: int = 20            # batches per evaluation: a fixed, seeded sample of the whole split
    final_eval_tokens: int | None = 1_000_000  # the end-of-run fp32 loss: whole split up to this many
                                      # tokens, else a seeded sample of about this size (None: always all)
    sample_prompt: str | None = None  # needs a tokenizer
    sample_tokens: int = 50
    out_dir: str | None = None        # where checkpoints, log and plot go (None: nowhere)
    resume_from: str | None = None    # a last.pt to continue from
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
        where = "whole split" if last.get("final_val_whole_split") else "large sample"
        text += f", final {last['final_val_loss']:.4f} ({where}, fp32)"
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
    best_val_loss: float = float("inf")
    history: list[dict[str, float]] = field(default_factory=list)


class GPTTrainer:
    """`GPTTrainer(model, train_loader, val_loader).train()` trains with sensible defaults.

    Settings are `TrainerConfig` fields, given as a config or as keywords
    (`GPTTrainer(model, train, val, max_steps=500, lr=1e-3)`). `tokenizer` is optional: with
    it, evaluations print a sample and checkpoints record which tokenizer the model needs.
    """

    def __init__(self, model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader | None = None,
                 config: TrainerConfig | None = None, tokenizer=None, extra_checkpoint_info: dict | None = None,
                 metrics: Callable[["GPTTrainer"], dict[str, float]] | None = None, **overrides: Any):
        self.config = cfg = TrainerConfig(**{**(asdict(config) if config else {}), **overrides})
        if cfg.precision not in PRECISIONS and cfg.precision != "auto":
            raise ValueError(f"precision must be auto or one of {list(PRECISIONS)}, got {cfg.precision!r}")
        if len(train_loader) == 0:
            raise ValueError("The training data loader is empty: the text is shorter than one batch of windows. "
                             "Use more text, a smaller batch size or a shorter context.")
        if cfg.grad_accum_steps < 1:
            raise ValueError("grad_accum_steps must be >= 1")
        self.device = auto_device(cfg.device)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA GPU; use --precision bf16 (CPU and GPU) or fp32.")
        if self.device.type == "cpu" and cfg.tune_malloc:
            keep_freed_memory()
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.dist.is_distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        torch.manual_seed(cfg.seed + self.dist.rank)  # dropout differs per rank; the weights come from rank 0
        self.model = model.to(self.device)
        self.batch_size = train_loader.batch_size
        self.train_loader, self.val_loader = self._per_rank_loader(train_loader), val_loader
        self.tokenizer = tokenizer
        self.extra_checkpoint_info = extra_checkpoint_info or {}
        # More figures for each evaluation (e.g. classification accuracy): called with the
        # trainer, in eval mode; the values join the log, TensorBoard and a plot of their own.
        self.metrics = metrics

        self.total_steps = self._total_steps()
        self.warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else min(200, self.total_steps // 20)
        self.eval_interval = cfg.eval_interval or max(1, self.total_steps // 10)
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.optimizer, cfg.muon_lr)
        self.scheduler = build_scheduler(self.optimizer, self.warmup_steps, self.total_steps, cfg.min_lr_ratio)
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
        # The fused loss needs a model whose forward takes `targets` (GPTModel does).
        self.fused_loss = cfg.fused_loss and "targets" in inspect.signature(self.model.forward).parameters
        self._use_sparse_embedding_grad()
        self._tensorboard = None
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
        if requested == "auto" and resumed is not None and resumed.get("precision") in PRECISIONS:
            choice = PrecisionChoice(resumed["precision"], "auto: kept from the run being resumed")
        else:
            timer, shape_key = self._precision_step_timer() if requested == "auto" else (None, None)
            choice = choose_precision(requested, self.device, timer, shape_key)
        if self.dist.is_distributed:
            shared = [choice]
            torch.distributed.broadcast_object_list(shared, src=0)
            choice = shared[0]
        return choice

    def _precision_step_timer(self):
        """(timer, shape key) for precision "auto": one forward + backward step on the first
        training batch (see precision.model_step_timer)."""
        if self.device.type != "cpu":
            return None, None
        inputs, targets = (t.to(self.device) for t in self._first_batch)

        def loss(model, x, y):
            return model(x, targets=y) if self.fused_loss else calc_loss_batch(x, y, model, self.device)
        return model_step_timer(self.model, inputs, targets, loss, f"fused loss {self.fused_loss}")

    # ----------------------------------------------------------------------------- schedule
    def _per_rank_loader(self, loader: DataLoader) -> DataLoader:
        """Rebuild a plain DataLoader around an `EpochBatchSampler`: seeded per-epoch shuffles
        (exact resume) and, under torchrun, each rank its own slice of every global batch."""
        if loader.batch_size is None:  # the caller brought its own batch sampler: use it as is
            return loader
        sampler = EpochBatchSampler(
            len(loader.dataset), loader.batch_size, shuffle=isinstance(loader.sampler, RandomSampler),
            seed=self.config.seed, drop_last=loader.drop_last, rank=self.dist.rank, world_size=self.dist.world_size)
        # A private generator: creating an iterator draws a seed from it, not from the global RNG
        # that dropout uses (a resumed run creates one iterator more than an uninterrupted one).
        return DataLoader(loader.dataset, batch_sampler=sampler, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                          generator=torch.Generator().manual_seed(self.config.seed))

    @functools.cached_property
    def _first_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the first batch of the training data, unshuffled."""
        dataset = self.train_loader.dataset
        return self.train_loader.collate_fn([dataset[i] for i in range(min(self.batch_size or 1, len(dataset)))])

    @functools.cached_property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step, over all ranks (of the first batch: batches of texts
        padded per batch vary; `TrainState.tokens_seen` counts the real ones)."""
        return self._first_batch[0].numel() * self.config.grad_accum_steps * self.dist.world_size

    def _total_steps(self) -> int:
        cfg = self.config
        steps_per_epoch = max(1, len(self.train_loader) // cfg.grad_accum_steps)
        if cfg.max_steps is not None:
            return cfg.max_steps
        if cfg.epochs is not None:
            return max(1, math.ceil(cfg.epochs * steps_per_epoch))
        if cfg.max_tokens is not None:
            return max(1, math.ceil(cfg.max_tokens / self.tokens_per_step))
        return min(cfg.default_max_steps, steps_per_epoch)

    # ----------------------------------------------------------------------------- data
    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Micro-batches forever, epoch after epoch, resuming at the saved position.

        Each epoch's shuffle is seeded with (seed + epoch), so the order of batches depends only
        on the epoch number: a resumed run sees exactly the batches the first run would have.
        """
        batch_sampler, sampler = self.train_loader.batch_sampler, self.train_loader.sampler
        while True:
            if hasattr(batch_sampler, "set_epoch"):
                batch_sampler.set_epoch(self.state.epoch)
            elif isinstance(sampler, RandomSampler):
                if sampler.generator is None:
                    sampler.generator = torch.Generator()
                sampler.generator.manual_seed(self.config.seed + self.state.epoch)
            skip = self.state.batch_in_epoch
            for i, batch in enumerate(self.train_loader):
                if i < skip:
                    continue
                self.state.batch_in_epoch = i + 1
                yield batch
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

    # ----------------------------------------------------------------------------- loop
    def _use_sparse_embedding_grad(self) -> None:
        """A tied token embedding gets a dense gradient from the head anyway: let the embedding
        lookup add only the rows of the tokens in the batch into it, instead of building a second
        dense (vocab, emb_dim) gradient that is mostly zeros. Only where that is safe: a tied
        embedding (the sum stays dense, so AdamW and clipping see a dense gradient), one process
        (DDP buckets need dense gradients), no torch.compile."""
        embedding, head = getattr(self.model, "tok_emb", None), getattr(self.model, "out_head", None)
        tied = (isinstance(embedding, torch.nn.Embedding) and head is not None
                and getattr(head, "weight", None) is embedding.weight)
        if (self.config.sparse_embedding_grad and tied and not self.dist.is_distributed
                and not self.config.compile):
            embedding.sparse = True

    def _autocast(self):
        enabled = self.precision != "fp32"
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=enabled)

    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one micro-batch (through DDP/compile wrappers, if any)."""
        if self.fused_loss:
            return self.forward_model(inputs.to(self.device), targets=targets.to(self.device))
        return calc_loss_batch(inputs, targets, self.forward_model, self.device)

    def train(self) -> list[dict[str, float]]:
        cfg, state = self.config, self.state
        self.model.train()
        batches = self._batches()
        progress = self._progress_bar()
        if state.step >= self.total_steps:
            print(f"Nothing to do: already at step {state.step} of {self.total_steps}.")
        start_time, start_tokens = time.perf_counter(), state.tokens_seen
        while state.step < self.total_steps:
            # Where this step starts, so that Ctrl-C can save a checkpoint a resumed run continues
            # from exactly (the micro-batches of an unfinished step are simply done again).
            step_start = (state.epoch, state.batch_in_epoch, rng_state())
            self._updating = False  # only now does step_start match the weights again
            step_clock = time.perf_counter()
            try:
                train_loss = self._train_step(batches)
            except KeyboardInterrupt:
                self._save_on_interrupt(step_start, progress)
                raise
            state.train_seconds += time.perf_counter() - step_clock
            elapsed = time.perf_counter() - start_time
            tokens_per_s = (state.tokens_seen - start_tokens) / max(elapsed, 1e-9)
            self._log_scalars({"train/step_loss": train_loss, "train/lr": self.scheduler.get_last_lr()[0]})
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{train_loss:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                                     tok_s=f"{tokens_per_s:,.0f}")
            if state.step % self.eval_interval == 0 or state.step == self.total_steps:
                self._evaluate_and_save(train_loss, tokens_per_s, progress)
        if progress is not None:
            progress.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self.out_dir is not None and state.history and self.dist.is_main:
            from llm_from_scratch.training.plots import plot_losses, plot_metrics
            plot_losses(state.history, self.out_dir / "loss.png")
            accuracy_keys = [key for key in state.history[-1] if key.endswith("accuracy")]
            if accuracy_keys:
                plot_metrics(state.history, accuracy_keys, self.out_dir / "accuracy.png", ylabel="accuracy")
        if self.dist.is_distributed:  # every rank returns when rank 0 has written everything
            torch.distributed.barrier()
        return state.history

    def _train_step(self, batches) -> float:
        """One optimizer step over `grad_accum_steps` micro-batches; returns the mean loss."""
        cfg, state = self.config, self.state
        loss_sum, tokens = 0.0, 0
        for micro_step in range(cfg.grad_accum_steps):
            inputs, targets = next(batches)
            tokens += inputs.numel()
            # Under DDP, gradients are averaged across ranks only after the last micro-batch:
            # all-reducing after every micro-batch would send the same data N times.
            sync = self.ddp_model is None or micro_step == cfg.grad_accum_steps - 1
            with (contextlib.nullcontext() if sync else self.ddp_model.no_sync()), self._autocast():
                loss = self._loss(inputs, targets)
            self.scaler.scale(loss / cfg.grad_accum_steps).backward()
            loss_sum += loss.item()
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self._updating = True  # from here on the weights change: an interrupt must not save
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        state.step += 1
        state.tokens_seen += tokens * self.dist.world_size

        train_loss = all_reduce_mean(loss_sum / cfg.grad_accum_steps, self.dist)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"Loss became {train_loss} at step {state.step}. Lower the learning "
                                     f"rate (now {cfg.lr}) or use fp32/bf16 instead of fp16.")
        # `_updating` stays True until train() has taken the next step's starting point: an
        # interrupt in between must not save this step's weights with the previous step's data position.
        return train_loss

    def _save_on_interrupt(self, step_start, progress) -> None:
        if progress is not None:
            progress.close()
        if self.out_dir is None or not self.dist.is_main:
            return
        if getattr(self, "_updating", False):
            print(f"\nInterrupted during an optimizer update; the last checkpoint ({self.out_dir / 'last.pt'}) "
                  "is from the last evaluation.")
            return
        self.state.epoch, self.state.batch_in_epoch, rng = step_start
        self.optimizer.zero_grad(set_to_none=True)
        checkpoint = self.checkpoint_state()
        checkpoint["rng"] = rng
        save_checkpoint(self.out_dir / "last.pt", checkpoint)
        print(f"\nInterrupted: saved {self.out_dir / 'last.pt'} at step {self.state.step}; "
              "continue with --resume (llmfs train) or resume_from=.")

    def _log_scalars(self, values: dict[str, float]) -> None:
        """TensorBoard event files in <out_dir>/tensorboard (`tensorboard --logdir <out_dir>`)."""
        if self.out_dir is None or not self.dist.is_main:
            return
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter  # the `tensorboard` package is a dependency
            self._tensorboard = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
        for name, value in values.items():
            self._tensorboard.add_scalar(name, value, global_step=self.state.step)

    def _progress_bar(self):
        if not self.config.progress or not self.dist.is_main:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=self.total_steps, initial=self.state.step, desc="training", unit="step",
                    dynamic_ncols=True)

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self) -> tuple[float, float]:
        """(train loss, validation loss) in eval mode, each over the same fixed, seeded sample of
        `eval_batches` batches of windows spread over the whole split at every evaluation (see
        evaluation.py). The validation loss is nan when there is no validation data.

        Under torchrun each rank scores its slice of every batch and the sums are added up, so
        the figures equal a single process's.
        """
        self.model.eval()
        try:
            with self._autocast():
                # Views of the datasets, not the training loader: evaluating must not touch the
                # shuffling order of training.
                train_loss = self._sampled_loss(self.train_loader.dataset, self.batch_size,
                                                self.train_loader.collate_fn, seed_offset=1)
                val_loss = float("nan")
                if self.val_loader is not None and self.val_loader.batch_size is None:  # a custom loader
                    val_loss = self.loader_loss(self.val_loader, self.config.eval_batches)
                elif self.val_loader is not None:
                    val_loss = self._sampled_loss(self.val_loader.dataset, self.val_loader.batch_size,
                                                  self.val_loader.collate_fn)
        finally:
            self.model.train()
        return train_loss, val_loss

    def batch_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of one batch, without wrappers: the model's own loss (`model(x, targets=y)`,
        which also covers models such as a classifier whose loss is not next-token cross-entropy)
        with the fused loss, else the book's `calc_loss_batch`."""
        if self.fused_loss:
            return self.model(inputs.to(self.device), targets=targets.to(self.device))
        return calc_loss_batch(inputs, targets, self.model, self.device)

    def _sampled_loss(self, dataset, batch_size: int, collate_fn, seed_offset: int = 0) -> float:
        # eval_batches global batches (batch_size is per process): the same windows for any world size
        indices = sample_indices(len(dataset), self.config.eval_batches * batch_size * self.dist.world_size,
                                 self.config.seed + seed_offset)
        return split_loss(self.batch_loss, dataset, indices, batch_size, collate_fn, self.dist)[0]

    def loader_loss(self, loader, max_batches: int | None = None) -> float:
        """Mean loss per scored target over the first `max_batches` batches of `loader` (all by
        default), for a validation loader that brings its own batch sampler."""
        total, count = 0.0, 0
        with torch.no_grad():
            for i, (inputs, targets) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                n = scored_targets(targets)
                if n:
                    total += self.batch_loss(inputs, targets).item() * n
                    count += n
        return total / count if count else float("nan")

    def final_validation_loss(self) -> dict[str, Any] | None:
        """The number to compare runs by: the loss over the whole validation split, in fp32.

        A split of more than `final_eval_tokens` targets is scored on a seeded sample of windows
        of about that many targets instead (the result says which). None without validation data.
        """
        if self.val_loader is None:
            return None
        self.model.eval()
        try:
            if self.val_loader.batch_size is None:  # a custom loader: all of it
                return {"loss": self.loader_loss(self.val_loader), "whole_split": True}
            dataset, batch_size = self.val_loader.dataset, self.val_loader.batch_size
            limit = self.config.final_eval_tokens
            per_window = max(1, scored_targets(self.val_loader.collate_fn([dataset[0]])[1]))
            indices = sample_indices(len(dataset), None if limit is None else max(1, limit // per_window),
                                     self.config.seed + 2)
            bar = "final validation loss" if self.config.progress and len(indices) > 50 * batch_size else None
            loss, count = split_loss(self.batch_loss, dataset, indices, batch_size, self.val_loader.collate_fn,
                                     self.dist, progress=bar)
            return {"loss": loss, "tokens": count, "whole_split": len(indices) == len(dataset)}
        finally:
            self.model.train()

    def sample(self, prompt: str | None = None) -> str | None:
        prompt = prompt or self.config.sample_prompt
        if self.tokenizer is None or not prompt:
            return None
        from llm_from_scratch.generation import generate, text_to_token_ids, token_ids_to_text
        idx = text_to_token_ids(prompt, self.tokenizer).to(self.device)
        out = generate(self.model, idx, self.config.sample_tokens, temperature=0.0,
                       eos_id=getattr(self.tokenizer, "eot_id", None))
        return token_ids_to_text(out, self.tokenizer)

    def _extra_metrics(self) -> dict[str, float]:
        if self.metrics is None:
            return {}
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast():
                return {name: float(value) for name, value in self.metrics(self).items()}
        finally:
            self.model.train()

    def _evaluate_and_save(self, last_train_loss: float, tokens_per_s: float, progress) -> None:
        state = self.state
        final = None
        with torch.random.fork_rng(devices=[]):  # evaluating must not change training's randomness
            train_loss, val_loss = self.evaluate()
            if state.step == self.total_steps:
                final = self.final_validation_loss()
            extra = self._extra_metrics()
            sample = self.sample() if self.dist.is_main else None
        has_val = not math.isnan(val_loss)
        record = {"step": state.step, "tokens": state.tokens_seen, "epoch": state.epoch,
                  "train_loss": train_loss, "val_loss": val_loss if has_val else None, "step_loss": last_train_loss,
                  "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": tokens_per_s, "precision": self.precision,
                  "train_seconds": state.train_seconds,
                  **extra}
        if final is not None and not math.isnan(final["loss"]):
            record.update(final_val_loss=final["loss"], final_val_whole_split=final["whole_split"],
                          final_val_tokens=final.get("tokens"))
        state.history.append(record)
        validation = (f"val loss {val_loss:.3f} (ppl {perplexity(val_loss):.1f})" if has_val
                      else "no validation data")
        message = (f"step {state.step}/{self.total_steps} | tokens {state.tokens_seen:,} | train loss {train_loss:.3f} "
                   f"| {validation} | {tokens_per_s:,.0f} tok/s"
                   + "".join(f" | {name} {value:.3f}" for name, value in extra.items()))
        final_line = ""
        if "final_val_loss" in record:
            tokens = f"{record['final_val_tokens']:,} tokens" if record["final_val_tokens"] else "all batches"
            how = (f"the whole validation split ({tokens})" if record["final_val_whole_split"]
                   else f"a seeded sample of the validation split ({tokens})")
            final_line = (f"\nfinal validation loss {record['final_val_loss']:.4f} (ppl "
                          f"{perplexity(record['final_val_loss']):.2f}) over {how}, fp32")
        if not self.dist.is_main:
            return
        scalars = {"eval/train_loss": train_loss, "speed/tokens_per_s": tokens_per_s,
                   **{f"eval/{name}": value for name, value in extra.items()}}
        if has_val:
            scalars.update({"eval/val_loss": val_loss, "eval/val_perplexity": perplexity(val_loss)})
        self._log_scalars(scalars)
        message += f"\n  sample: {sample!r}" if sample else ""
        (progress.write if progress is not None else print)(message + final_line)
        if self.out_dir is not None:
            with open(self.out_dir.mkdir(parents=True, exist_ok=True) or self.out_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            checkpoint = self.checkpoint_state()
            if "final_val_loss" in record:
                checkpoint["final_val_loss"] = record["final_val_loss"]
            if (has_val and val_loss < state.best_val_loss) or (not has_val and state.step == self.total_steps):
                state.best_val_loss = val_loss if has_val else state.best_val_loss
                checkpoint["best_val_loss"] = state.best_val_loss
                save_checkpoint(self.out_dir / "best_model.pt", checkpoint)
            save_checkpoint(self.out_dir / "last.pt", checkpoint)

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        model_cfg = getattr(self.model, "cfg", None)
        return {
            "model": clean_state_dict(self.model.state_dict()),
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
        }

    def resume(self, path: str | Path, ckpt: dict[str, Any] | None = None) -> None:
        """Continue from a full training checkpoint (last.pt); `ckpt` if it is already loaded."""
        ckpt = ckpt if ckpt is not None else load_checkpoint(path, map_location=self.device)
        for key in ("model", "optimizer", "scheduler", "train_state", "rng"):
            if key not in ckpt:
                raise ValueError(f"{path} cannot be resumed from: it has no {key!r} entry "
                                 "(only full training checkpoints such as last.pt can).")
        try:
            self.model.load_state_dict(clean_state_dict(ckpt["model"]))
        except RuntimeError as exc:
            raise ValueError(f"{path} was saved from a different model configuration than the one being "
                             f"trained: {str(exc).splitlines()[0]}") from exc
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["train_state"])
        set_rng_state(ckpt["rng"])
