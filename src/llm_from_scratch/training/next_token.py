"""Learning from a data set of (inputs, targets) batches: chapter 5's step, as a training method.

Pretraining, instruction tuning and classification all learn this way, so they share this one
method of the training loop (`trainer.py`):

    for each of `grad_accum_steps` micro-batches:
        loss = model's loss(inputs, targets) / grad_accum_steps    # cross-entropy for a language
        loss.backward()                                            # model; a classifier's own loss
    trainer.update()                                               # clip, AdamW step

It also owns what is particular to a data set: the epochs and the position in them (so a
resumed run sees exactly the batches the first run would have), each rank's slice of a batch
under torchrun, and the evaluation - the train and validation loss on a fixed sample of
windows, and at the end the loss over the whole validation split in fp32 (`evaluation.py`).

**Evaluation sized to the run.** Scoring windows costs time that training does not get. With
the defaults (no `eval_interval`, `eval_batches` or `final_eval_tokens` given), the evaluations
of a run together score at most `EVAL_TOKEN_SHARE` (0.3) forward tokens per training token - a
training token costs about three forward tokens (forward, and a backward twice as dear) plus its
share of the optimizer step, so that is at most about 10% of the training time. The final score
(in fp32) takes up to half of the budget: the whole validation split when it fits, else a seeded
sample of that size; what it leaves goes to up to 10 evaluations of up to 20 batches.
A 20-step smoke test thus evaluates once, at the end, on a few batches; a long run gets the
full 10 x 20 batches and a final score over up to a million tokens. The floor is one
evaluation of one batch of each split, and one batch for the final score: a run of a handful
of steps spends more than its share (3 steps score about as many tokens as they train on). Any of the three settings
given explicitly wins. The sizes depend only on the run's settings, so a resumed run evaluates
at the same steps.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, RandomSampler

from llm_from_scratch.training.distributed import EpochBatchSampler, all_reduce_mean
from llm_from_scratch.training.evaluation import sample_indices, scored_targets, split_loss
from llm_from_scratch.training.losses import calc_loss_batch, perplexity
from llm_from_scratch.training.method import TrainingMethod
from llm_from_scratch.training.precision import model_step_timer

EVAL_TOKEN_SHARE = 0.3      # forward tokens evaluated per training token, all evaluations together
FINAL_SHARE = 1 / 2         # the part of that budget the final score may take (what it leaves: the rest)
MAX_EVALUATIONS = 10        # evaluations per run at most (with the default sizes)
MAX_EVAL_BATCHES = 20       # batches per evaluation at most
MAX_FINAL_TOKENS = 1_000_000  # the final score's sample at most (a bigger split is sampled)


class NextTokenMethod(TrainingMethod):
    """Batches from `train_loader`, the model's loss on them; train/validation loss evaluations.

    `metrics(trainer) -> {name: value}` (optional) adds figures to each evaluation, for example a
    classifier's accuracy; they join the log, TensorBoard and a plot of their own.
    """

    name = "training"
    log_every_step = False                # a line of log.jsonl per evaluation: the loss curve
    saves_best_model = True
    supports_distributed = True

    def __init__(self, train_loader: DataLoader, val_loader: DataLoader | None = None,
                 metrics: Callable[[Any], dict[str, float]] | None = None):
        if len(train_loader) == 0:
            raise ValueError("The training data loader is empty: the text is shorter than one batch of windows. "
                             "Use more text, a smaller batch size or a shorter context.")
        if val_loader is not None and val_loader.batch_size is not None and len(val_loader.dataset) == 0:
            raise ValueError("The validation data loader is empty: the validation text is shorter than one "
                             "window. Use more text (or a larger validation share), or pass no validation loader.")
        self.train_loader, self.val_loader, self.metrics = train_loader, val_loader, metrics
        self.batch_size = train_loader.batch_size
        self._batch_iterator: Iterator | None = None

    # ----------------------------------------------------------------------------- setup
    def bind(self, trainer) -> None:
        self.trainer = trainer
        self.train_loader = self._per_rank_loader(self.train_loader)
        # The fused loss needs a model whose forward takes `targets` (GPTModel does).
        self.fused_loss = (trainer.config.fused_loss
                           and "targets" in inspect.signature(trainer.model.forward).parameters)
        self._use_sparse_embedding_grad()

    def _per_rank_loader(self, loader: DataLoader) -> DataLoader:
        """Rebuild a plain DataLoader around an `EpochBatchSampler`: seeded per-epoch shuffles
        (exact resume) and, under torchrun, each rank its own slice of every global batch."""
        if loader.batch_size is None:  # the caller brought its own batch sampler: use it as is
            return loader
        dist, seed = self.trainer.dist, self.trainer.config.seed
        sampler = EpochBatchSampler(len(loader.dataset), loader.batch_size,
                                    shuffle=isinstance(loader.sampler, RandomSampler), seed=seed,
                                    drop_last=loader.drop_last, rank=dist.rank, world_size=dist.world_size)
        # A private generator: creating an iterator draws a seed from it, not from the global RNG
        # that dropout uses (a resumed run creates one iterator more than an uninterrupted one).
        return DataLoader(loader.dataset, batch_sampler=sampler, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                          generator=torch.Generator().manual_seed(seed))

    def _use_sparse_embedding_grad(self) -> None:
        """A tied token embedding gets a dense gradient from the head anyway: let the embedding
        lookup add only the rows of the tokens in the batch into it, instead of building a second
        dense (vocab, emb_dim) gradient that is mostly zeros. Only where that is safe: a tied
        embedding (the sum stays dense, so AdamW and clipping see a dense gradient), one process
        (DDP buckets need dense gradients), no torch.compile."""
        model, cfg = self.trainer.model, self.trainer.config
        embedding, head = getattr(model, "tok_emb", None), getattr(model, "out_head", None)
        tied = (isinstance(embedding, torch.nn.Embedding) and head is not None
                and getattr(head, "weight", None) is embedding.weight)
        if cfg.sparse_embedding_grad and tied and not self.trainer.dist.is_distributed and not cfg.compile:
            embedding.sparse = True

    @functools.cached_property
    def first_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the first batch of the training data, unshuffled."""
        dataset = self.train_loader.dataset
        return self.train_loader.collate_fn([dataset[i] for i in range(min(self.batch_size or 1, len(dataset)))])

    @functools.cached_property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step, over all ranks (of the first batch: batches of texts
        padded per batch vary; `TrainState.tokens_seen` counts the real ones)."""
        trainer = self.trainer
        return self.first_batch[0].numel() * trainer.config.grad_accum_steps * trainer.dist.world_size

    def total_steps(self, trainer) -> int:
        cfg = trainer.config
        steps_per_epoch = max(1, len(self.train_loader) // cfg.grad_accum_steps)
        if cfg.max_steps is not None:
            return cfg.max_steps
        if cfg.epochs is not None:
            return max(1, math.ceil(cfg.epochs * steps_per_epoch))
        if cfg.max_tokens is not None:
            return max(1, math.ceil(cfg.max_tokens / self.tokens_per_step))
        return min(cfg.default_max_steps, steps_per_epoch)

    def size_evaluation(self, trainer) -> None:
        """How often, on how many batches, and the final score on how many tokens (see the module
        docstring): trainer.eval_interval, self.eval_batches, self.final_eval_tokens."""
        cfg, total, world = trainer.config, trainer.total_steps, trainer.dist.world_size
        train_batch = max(1, self.first_batch[0].numel() * world)     # tokens of one global batch
        val_batch, split_tokens = 0, None
        if self.val_loader is not None:
            val_batch, split_tokens = train_batch, None
            if self.val_loader.batch_size is not None:                 # (a custom loader: unknown)
                dataset = self.val_loader.dataset
                window = self.val_loader.collate_fn([dataset[0]])[0].numel()
                val_batch = self.val_loader.batch_size * window * world
                split_tokens = len(dataset) * window
        budget = EVAL_TOKEN_SHARE * total * self.tokens_per_step
        if cfg.final_eval_tokens == "auto":   # the whole split if it fits in its share, else a sample
            self.final_eval_tokens = 0 if self.val_loader is None else int(min(
                MAX_FINAL_TOKENS, split_tokens or math.inf, max(val_batch, budget * FINAL_SHARE)))
        else:
            self.final_eval_tokens = None if cfg.final_eval_tokens == "all" else int(cfg.final_eval_tokens)
        periodic = max(0.0, budget - (self.final_eval_tokens or 0))
        per_batch = train_batch + val_batch      # an evaluation scores as many batches of each split

        def fitting(tokens: float, per_unit: float, cap: int) -> int:
            return int(max(1, min(cap, tokens // per_unit)))

        if cfg.eval_interval:
            evaluations = math.ceil(total / cfg.eval_interval)
        elif cfg.eval_batches:
            evaluations = fitting(periodic, cfg.eval_batches * per_batch, MAX_EVALUATIONS)
        else:
            batches = fitting(periodic, MAX_EVALUATIONS * per_batch, MAX_EVAL_BATCHES)
            evaluations = fitting(periodic, batches * per_batch, MAX_EVALUATIONS)
        trainer.eval_interval = cfg.eval_interval or math.ceil(total / evaluations)
        self.eval_batches = cfg.eval_batches or fitting(periodic, evaluations * per_batch, MAX_EVAL_BATCHES)

    def precision_step_timer(self, trainer):
        """(timer, shape key) for precision "auto": one forward + backward step on the first
        training batch (see precision.model_step_timer)."""
        if trainer.device.type != "cpu":
            return None, None
        inputs, targets = (t.to(trainer.device) for t in self.first_batch)

        def loss(model, x, y):
            return model(x, targets=y) if self.fused_loss else calc_loss_batch(x, y, model, trainer.device)
        return model_step_timer(trainer.model, inputs, targets, loss, f"fused loss {self.fused_loss}")

    # ----------------------------------------------------------------------------- data
    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Micro-batches forever, epoch after epoch, resuming at the saved position.

        Each epoch's shuffle is seeded with (seed + epoch), so the order of batches depends only
        on the epoch number: a resumed run sees exactly the batches the first run would have.
        """
        state, seed = self.trainer.state, self.trainer.config.seed
        batch_sampler, sampler = self.train_loader.batch_sampler, self.train_loader.sampler
        while True:
            if hasattr(batch_sampler, "set_epoch"):
                batch_sampler.set_epoch(state.epoch)
            elif isinstance(sampler, RandomSampler):
                if sampler.generator is None:
                    sampler.generator = torch.Generator()
                sampler.generator.manual_seed(seed + state.epoch)
            skip = state.batch_in_epoch
            for i, batch in enumerate(self.train_loader):
                if i < skip:
                    continue
                state.batch_in_epoch = i + 1
                yield batch
            state.epoch += 1
            state.batch_in_epoch = 0

    # ----------------------------------------------------------------------------- the step
    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one micro-batch (through DDP/compile wrappers, if any)."""
        trainer = self.trainer
        if self.fused_loss:
            return trainer.forward_model(inputs.to(trainer.device), targets=targets.to(trainer.device))
        return calc_loss_batch(inputs, targets, trainer.forward_model, trainer.device)

    def train_step(self, trainer, step: int) -> dict[str, float]:
        """One optimizer step over `grad_accum_steps` micro-batches; {"loss": their mean loss}."""
        if self._batch_iterator is None:   # made at the first step: after a resume set the position
            self._batch_iterator = self._batches()
        accum = trainer.config.grad_accum_steps
        loss_sum, tokens = 0.0, 0
        for micro_step in range(accum):
            inputs, targets = next(self._batch_iterator)
            tokens += inputs.numel()
            # Under DDP, gradients are averaged across ranks only after the last micro-batch:
            # all-reducing after every micro-batch would send the same data N times.
            with trainer.accumulating(last=micro_step == accum - 1), trainer.autocast():
                loss = self._loss(inputs, targets)
            trainer.backward(loss / accum)
            loss_sum += loss.item()
        trainer.update()
        trainer.state.tokens_seen += tokens * trainer.dist.world_size
        return {"loss": all_reduce_mean(loss_sum / accum, trainer.dist)}

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self, trainer, final: bool) -> dict[str, Any]:
        """Train and validation loss on the run's fixed sample (under the run's autocast), the
        extra metrics, a greedy sample, and at the last step the final validation loss (fp32)."""
        with trainer.autocast():
            train_loss, val_loss = self.sampled_losses()
        values: dict[str, Any] = {"train_loss": train_loss, "val_loss": None if math.isnan(val_loss) else val_loss}
        if final:
            result = self.final_validation_loss()
            if result is not None and not math.isnan(result["loss"]):
                values.update(final_val_loss=result["loss"], final_val_whole_split=result["whole_split"],
                              final_val_tokens=result.get("tokens"))
        if self.metrics is not None:
            with trainer.autocast():
                values.update({name: float(v) for name, v in self.metrics(trainer).items()})
        if trainer.dist.is_main:
            values["sample"] = self.sample()
        return values

    def sampled_losses(self) -> tuple[float, float]:
        """(train loss, validation loss), each over the same fixed, seeded sample of
        `eval_batches` batches of windows spread over the whole split at every evaluation (see
        evaluation.py); nan without validation data. Under torchrun each rank scores its slice
        of every batch and the sums are added up, so the figures equal a single process's."""
        # Views of the datasets, not the training loader: evaluating must not touch the
        # shuffling order of training.
        train_loss = self._sampled_loss(self.train_loader.dataset, self.batch_size, self.train_loader.collate_fn,
                                        seed_offset=1)
        val_loss = float("nan")
        if self.val_loader is not None and self.val_loader.batch_size is None:  # a custom loader
            val_loss = self.loader_loss(self.val_loader, self.eval_batches)
        elif self.val_loader is not None:
            val_loss = self._sampled_loss(self.val_loader.dataset, self.val_loader.batch_size,
                                          self.val_loader.collate_fn)
        return train_loss, val_loss

    def batch_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of one batch, without wrappers: the model's own loss (`model(x, targets=y)`,
        which also covers models such as a classifier whose loss is not next-token cross-entropy)
        with the fused loss, else the book's `calc_loss_batch`."""
        model, device = self.trainer.model, self.trainer.device
        if self.fused_loss:
            return model(inputs.to(device), targets=targets.to(device))
        return calc_loss_batch(inputs, targets, model, device)

    def _sampled_loss(self, dataset, batch_size: int, collate_fn, seed_offset: int = 0) -> float:
        # eval_batches global batches (batch_size is per process): the same windows for any world size
        dist, seed = self.trainer.dist, self.trainer.config.seed
        indices = sample_indices(len(dataset), self.eval_batches * batch_size * dist.world_size, seed + seed_offset)
        return split_loss(self.batch_loss, dataset, indices, batch_size, collate_fn, dist)[0]

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
        """The number to compare runs by: the loss over the validation split, in fp32.

        A split of more than `final_eval_tokens` targets (sized to the run by default, see the
        module docstring) is scored on a seeded sample of windows of about that many targets
        instead; the result says which. None without validation data.
        """
        if self.val_loader is None:
            return None
        if self.val_loader.batch_size is None:  # a custom loader: all of it
            return {"loss": self.loader_loss(self.val_loader), "whole_split": True}
        dataset, batch_size = self.val_loader.dataset, self.val_loader.batch_size
        limit, progress = self.final_eval_tokens, self.trainer.config.progress
        per_window = max(1, scored_targets(self.val_loader.collate_fn([dataset[0]])[1]))
        indices = sample_indices(len(dataset), None if limit is None else max(1, limit // per_window),
                                 self.trainer.config.seed + 2)
        bar = "final validation loss" if progress and len(indices) > 50 * batch_size else None
        loss, count = split_loss(self.batch_loss, dataset, indices, batch_size, self.val_loader.collate_fn,
                                 self.trainer.dist, progress=bar)
        return {"loss": loss, "tokens": count, "whole_split": len(indices) == len(dataset)}

    def sample(self, prompt: str | None = None) -> str | None:
        """A greedy continuation of the sample prompt (None without a tokenizer or prompt)."""
        trainer = self.trainer
        prompt = prompt or trainer.config.sample_prompt
        if trainer.tokenizer is None or not prompt:
            return None
        from llm_from_scratch.generation import generate, text_to_token_ids, token_ids_to_text
        idx = text_to_token_ids(prompt, trainer.tokenizer).to(trainer.device)
        out = generate(trainer.model, idx, trainer.config.sample_tokens, temperature=0.0,
                       eos_id=getattr(trainer.tokenizer, "eot_id", None))
        return token_ids_to_text(out, trainer.tokenizer)

    def describe_evaluation(self, values: dict[str, Any]) -> str:
        val_loss = values.get("val_loss")
        validation = (f"val loss {val_loss:.3f} (ppl {perplexity(val_loss):.1f})" if val_loss is not None
                      else "no validation data")
        skip = {"train_loss", "val_loss", "sample", "final_val_loss", "final_val_whole_split", "final_val_tokens"}
        text = f"train loss {values['train_loss']:.3f} | {validation}" + "".join(
            f" | {name} {value:.3f}" for name, value in values.items()
            if name not in skip and isinstance(value, (int, float)))
        if values.get("sample"):
            text += f"\n  sample: {values['sample']!r}"
        if values.get("final_val_loss") is not None:
            tokens = f"{values['final_val_tokens']:,} tokens" if values.get("final_val_tokens") else "all batches"
            how = (f"the whole validation split ({tokens})" if values["final_val_whole_split"]
                   else f"a seeded sample of the validation split ({tokens})")
            text += (f"\nfinal validation loss {values['final_val_loss']:.4f} (ppl "
                     f"{perplexity(values['final_val_loss']):.2f}) over {how}, fp32")
        return text

    def plot(self, trainer) -> None:
        """loss.png (train/validation loss), accuracy.png when an evaluation measures accuracy."""
        history = trainer.state.history
        if trainer.out_dir is None or not history:
            return
        from llm_from_scratch.training.plots import plot_losses, plot_metrics
        plot_losses(history, trainer.out_dir / "loss.png")
        accuracy_keys = [key for key in history[-1] if key.endswith("accuracy")]
        if accuracy_keys:
            plot_metrics(history, accuracy_keys, trainer.out_dir / "accuracy.png", ylabel="accuracy")

