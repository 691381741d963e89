"""Pretraining as one call: `pretrain(PretrainConfig(...))` is everything `llmfs train` does.

    from llm_from_scratch.pipelines import PretrainConfig, pretrain

    result = pretrain(PretrainConfig(model_type="llama-micro", dataset="shakespeare", max_steps=500))
    result.best_checkpoint, result.final_val_loss
    pretrain(PretrainConfig(model_type="llama-micro", max_steps=1000, resume=True))  # continue it

The stage, step by step:

1. **Fresh or resumed.** With `resume`, the checkpoint decides the model, the tokenizer and the
   corpus; a `model_type` or `tokenizer` that disagrees with it is an error. A fresh run in a
   folder that holds an earlier one first moves the earlier files to `previous/<time>/`.
2. **Corpus -> tokenizer -> token shards**, tokenized once and memory-mapped (`data/shards.py`).
3. **The recipe and the model**: the recipe (`training/recipes.py`: `book` or `modern`) fills
   in the settings left at None; then a preset of any family by name (`model/registry.py`:
   `gpt-micro`, `llama-micro`, ...) with the tokenizer's vocabulary, the recipe's switches and
   the overrides, or exactly the architecture a resumed checkpoint recorded.
4. **`GPTTrainer`** (`training/trainer.py`): evaluation, samples, checkpoints, TensorBoard and
   loss.png in `out_dir`. SIGTERM saves `last.pt` like Ctrl-C (see `common.py`).
5. A summary of the run, printed and returned as a `PretrainResult`.

Several processes (`torchrun --nproc_per_node=2 -m llm_from_scratch train ...`): rank 0 downloads
and tokenizes while the other ranks wait at a barrier, then they read what it wrote; only rank 0
prints and moves an earlier run aside.

Why a config and one function: the command line (`cli/train.py`) only turns flags into a
`PretrainConfig`, so a script, a notebook or a test makes the very same run with the same call.
torch and the training code are imported inside the functions: `llmfs --help` reads `DEFAULTS`
from this module and should stay quick.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from llm_from_scratch.pipelines.common import PipelineError, RunFiles, sigterm_as_ctrl_c

# The no-flag main job: a character-level gpt-micro on Shakespeare, a few minutes on a CPU. (With
# the GPT-2 tokenizer the same model runs ~29x slower on a CPU: its 50,257-way output layer
# dwarfs a 0.8M-parameter body.)
DEFAULTS = dict(model_type="gpt-micro", dataset="shakespeare", tokenizer="char", max_steps=2000)

# What each evaluation's sample continues, per named corpus (others: "The").
SAMPLE_PROMPTS = {"shakespeare": "KING", "chinese": "中国", "wikitext2": "The history of",
                  "the-verdict": "I had always"}


@dataclass
class PretrainConfig:
    """The settings of one pretraining run; the defaults are `llmfs train`'s.

    `model_type`, `dataset` and `tokenizer` left at None mean: the checkpoint's when resuming,
    else `DEFAULTS`. Of `max_steps`, `epochs` and `max_tokens` the first one set decides how long
    the run is; with none set it is `DEFAULTS["max_steps"]` steps.
    """

    # what to train
    model_type: str | None = None       # any name of model.registry.model_types()
    dataset: str | Path | None = None   # a corpus name (data/corpora.py) or a path to your text
    tokenizer: str | None = None        # gpt2, cl100k_base, o200k_base, char, or a tokenizer file
    vocab: str = "auto"                 # compact (only the ids the corpus uses), full, or auto: compact when
                                        # the corpus uses under half of the tokenizer's ids (tokenizers/compact.py)
    context_length: int | None = None   # override the preset's
    dropout: float | None = None        # override the preset's drop_rate
    recipe: str | None = None           # book | modern (training/recipes.py); None: the checkpoint's, else book
    # architecture switches (None: the recipe's, else the preset's); see model/config.py
    norm: str | None = None             # layernorm | rmsnorm
    positions: str | None = None        # learned | rope
    mlp: str | None = None              # gelu | relu2 | swiglu
    bias: bool | None = None            # biases in the output projections and the feed-forward
    qk_norm: bool | None = None
    logit_softcap: float | None = None  # 0: none (turns a recipe's cap off)
    zero_init: bool | None = None       # residual projections (and an untied head) start at zero
    tie_weights: bool | None = None     # the head shares the token embedding
    # how long
    max_steps: int | None = None
    epochs: float | None = None
    max_tokens: int | None = None
    # optimization
    batch_size: int = 16                # windows per batch per process
    grad_accum: int = 1                 # micro-batches per optimizer step
    lr: float | None = None             # None: the recipe's, else 6e-4 for the gpt2* presets, 2e-3 others
    optimizer: str | None = None        # adamw | muon (None: the recipe's, else adamw)
    muon_lr: float | None = None        # Muon's peak learning rate (None: the recipe's, else 0.02)
    windows: str | None = None          # grid (disjoint windows) | random (any offset); None: recipe's, else grid
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"             # auto, fp32, bf16, fp16 (training/precision.py)
    fused_loss: bool = True             # False: the loss from full logits, the book's way
    compile: bool = False
    device: str = "auto"
    seed: int = 123
    # evaluation and output
    eval_interval: int | None = None    # None: sized to the run (training/next_token.py)
    eval_batches: int | None = None     # None: sized to the run
    final_eval_tokens: int | str = "auto"  # the end-of-run fp32 score: auto (sized to the run), all, or a count
    sample_prompt: str | None = None    # None: one that suits the corpus
    out_dir: str | Path | None = None   # None: checkpoints/<model_type>
    resume: bool | str | Path | None = None  # True (or "auto"): <out_dir>/last.pt; a path: that checkpoint
    num_workers: int | None = None      # processes that tokenize the corpus
    progress: bool = True


@dataclass
class PretrainResult(RunFiles):
    """What a run produced: where its files are, its evaluation history, the trained model."""

    out_dir: Path
    model_type: str
    model: Any                          # the trained model (GPTModel, LlamaModel, ...), on its device
    tokenizer: Any
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation (= log.jsonl)

    @property
    def final_val_loss(self) -> float | None:
        """The loss on the whole validation split at the end of the run (fp32)."""
        return self.history[-1].get("final_val_loss") if self.history else None


def pretrain(config: PretrainConfig) -> PretrainResult:
    """Pretrain a model as `config` says (see the module docstring); bad input raises PipelineError."""
    import torch
    from torch.utils.data import DataLoader

    from llm_from_scratch.data.corpora import corpus_files
    from llm_from_scratch.data.shards import TokenWindowDataset, check_shard_tokenizer, prepare_shards
    from llm_from_scratch.model.compact_vocab import attach_vocabulary
    from llm_from_scratch.model.registry import model_from_config
    from llm_from_scratch.tokenizers.compact import choose_vocabulary
    from llm_from_scratch.training import GPTTrainer, load_checkpoint
    from llm_from_scratch.training.distributed import init_distributed
    from llm_from_scratch.training.trainer import auto_device, validation_summary

    c = config
    started = time.perf_counter()
    dist_info = init_distributed(auto_device(c.device).type)

    def barrier():
        if dist_info.is_distributed:
            torch.distributed.barrier()

    # 1. Fresh or resumed: a resumed run takes its model type from the checkpoint.
    model_type = c.model_type or DEFAULTS["model_type"]
    out_dir = Path(c.out_dir or Path("checkpoints") / model_type)
    resume_path = _resume_path(c.resume, out_dir)
    checkpoint = load_checkpoint(resume_path) if resume_path else None
    if checkpoint is not None:
        saved_type = checkpoint.get("model_type")
        if c.model_type and saved_type and c.model_type != saved_type:
            raise PipelineError(f"{resume_path} is a {saved_type} checkpoint, not {c.model_type}: drop "
                                "--model_type or resume another checkpoint.")
        model_type = saved_type or model_type
    else:
        _check_model_type(model_type)  # before any download: a typo should fail at once
    recorded = checkpoint or {}  # your own text is found again by its path, a named corpus by its name
    dataset = c.dataset or recorded.get("dataset_path") or recorded.get("dataset") or DEFAULTS["dataset"]

    # 2. Corpus, tokenizer, shards. Rank 0 downloads and tokenizes; the other ranks wait, then reuse it.
    if dist_info.is_main:
        corpus = corpus_files(dataset)
    barrier()
    if not dist_info.is_main:
        corpus = corpus_files(dataset)
    model_tokenizer = _tokenizer(c.tokenizer, checkpoint, resume_path, corpus)
    tokenizer = getattr(model_tokenizer, "base", model_tokenizer)   # the shards hold the tokenizer's own ids
    if dist_info.is_main:
        shards = prepare_shards(corpus.train, corpus.validation, tokenizer, name=corpus.name,
                                num_workers=c.num_workers, progress=c.progress)
    barrier()
    if not dist_info.is_main:
        shards = prepare_shards(corpus.train, corpus.validation, tokenizer, name=corpus.name, progress=False)
    check_shard_tokenizer(shards.meta, tokenizer)
    if checkpoint is None:      # a fresh run: all of the tokenizer's ids, or only those the corpus uses
        try:
            model_tokenizer = choose_vocabulary(tokenizer, shards.id_counts(), c.vocab)
        except ValueError as exc:
            raise PipelineError(str(exc)) from exc
    elif c.vocab != "auto" and (c.vocab == "compact") != (model_tokenizer is not tokenizer):
        raise PipelineError(f"{resume_path} was trained with the {'full' if model_tokenizer is tokenizer else 'compact'} "
                            f"vocabulary, not --vocab {c.vocab}: drop --vocab to continue it as it was.")
    id_map = getattr(model_tokenizer, "to_compact", None)

    # 3. The recipe's defaults, the model's configuration and the data cut into windows of its
    #    context length (every offset a possible start with windows="random").
    recipe, c = _with_recipe(c, checkpoint)
    cfg = _model_config(c, model_type, checkpoint, model_tokenizer.vocab_size, recipe)
    if cfg.vocab_size < model_tokenizer.vocab_size:
        raise PipelineError(f"the model's vocabulary ({cfg.vocab_size}) is smaller than the tokenizer's "
                            f"({model_tokenizer.vocab_size}): they do not belong together.")
    train_set = TokenWindowDataset(shards.train, cfg.context_length, stride=1 if c.windows == "random" else None,
                                   id_map=id_map)
    val_set = TokenWindowDataset(shards.validation, cfg.context_length, id_map=id_map)
    global_batch = c.batch_size * dist_info.world_size
    if len(train_set) < global_batch:
        raise PipelineError(f"the training split has {len(train_set)} windows of {cfg.context_length} tokens, "
                            f"fewer than one batch of {global_batch}: use a smaller --batch_size "
                            "or --context_length, or more text.")
    train_loader = DataLoader(train_set, batch_size=c.batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=c.batch_size, shuffle=False)

    torch.manual_seed(c.seed)  # the same initial weights for the same seed
    model = attach_vocabulary(model_from_config(cfg), model_tokenizer)   # (compact: the reserved id)
    if dist_info.is_main and checkpoint is None:
        _archive_previous_run(out_dir)
    barrier()
    if dist_info.is_main:
        counts = shards.meta["counts"]
        print(f"llmfs train: {model_type}, recipe {recipe.name} ({model.num_parameters():,} parameters, "
              f"context {cfg.context_length}) on "
              f"{corpus.name} ({counts['train']:,} train / {counts['validation']:,} validation tokens, "
              f"tokenizer {tokenizer.name}); batch {c.batch_size} x {dist_info.world_size} process(es) x "
              f"{c.grad_accum} accumulation; output in {out_dir}")
        print(_describe_vocabulary(model_tokenizer, tokenizer, c.vocab, resumed=checkpoint is not None))

    # 4. The training loop.
    sample_prompt = c.sample_prompt or SAMPLE_PROMPTS.get(corpus.name, "The")
    trainer = GPTTrainer(
        model, train_loader, val_loader, tokenizer=model_tokenizer,
        max_steps=_max_steps(c), epochs=c.epochs, max_tokens=c.max_tokens,
        lr=c.lr or _default_lr(model_type), min_lr_ratio=c.min_lr_ratio, warmup_steps=c.warmup_steps,
        weight_decay=c.weight_decay, grad_clip=c.grad_clip, grad_accum_steps=c.grad_accum,
        **{k: v for k, v in (("optimizer", c.optimizer), ("muon_lr", c.muon_lr)) if v is not None},
        eval_interval=c.eval_interval, eval_batches=c.eval_batches, final_eval_tokens=c.final_eval_tokens,
        sample_prompt=sample_prompt,
        out_dir=str(out_dir), resume_from=str(resume_path) if resume_path else None, device=c.device,
        precision=c.precision, compile=c.compile, seed=c.seed, progress=c.progress, fused_loss=c.fused_loss,
        extra_checkpoint_info={"model_type": model_type, "recipe": recipe.name, "dataset": corpus.name,
                               "dataset_path": _user_text_path(dataset, corpus)},
    )
    if dist_info.is_main:
        print(f"device {trainer.device}, {trainer.precision_choice.describe()}"
              f"{', fused head + loss' if trainer.method.fused_loss else ''}; evaluating every "
              f"{trainer.eval_interval} steps on {trainer.method.eval_batches} batch"
              f"{'es' if trainer.method.eval_batches != 1 else ''}")
    with sigterm_as_ctrl_c():
        history = trainer.train()

    # 5. The summary.
    if dist_info.is_main and history:
        last = history[-1]
        wall = time.perf_counter() - started
        print(f"\nDone in {wall / 60:.1f} min ({trainer.time_split(wall)}): step {last['step']}, "
              f"{last['tokens']:,} tokens, train loss {last['train_loss']:.3f}, {validation_summary(history)}.\n"
              f"  {out_dir / 'best_model.pt'}\n  {out_dir / 'last.pt'}\n  {out_dir / 'loss.png'}\n"
              f"  tensorboard --logdir {out_dir / 'tensorboard'}\n"
              f"Generate: llmfs generate --checkpoint {out_dir / 'best_model.pt'} --prompt {sample_prompt!r}")
    if dist_info.is_distributed:
        torch.distributed.destroy_process_group()
    return PretrainResult(out_dir, model_type, model, model_tokenizer, list(history))


def _resume_path(resume, out_dir: Path) -> Path | None:
    """The checkpoint to continue: None (a fresh run), <out_dir>/last.pt, or the one named."""
    if resume is None or resume is False:
        return None
    path = out_dir / "last.pt" if resume is True or resume == "auto" else Path(resume)
    if not path.is_file():
        raise PipelineError(f"--resume: no checkpoint at {path}. Start without --resume, or point --resume "
                            "at a last.pt written by an earlier run.")
    return path


def _check_model_type(model_type: str) -> None:
    from llm_from_scratch.model.registry import preset_model_config

    try:
        preset_model_config(model_type)
    except ValueError as exc:  # "Unknown model preset 'x'. Choose one of: ..."
        raise PipelineError(str(exc)) from exc


def _tokenizer(name: str | None, checkpoint: dict | None, resume_path: Path | None, corpus):
    """A resumed run keeps its checkpoint's tokenizer (a different one asked for is an error);
    a fresh run builds the one named, by default DEFAULTS["tokenizer"]."""
    from llm_from_scratch.tokenizers import tokenizer_from_config

    if checkpoint is None or not checkpoint.get("tokenizer"):
        return _build_tokenizer(name or DEFAULTS["tokenizer"], corpus)
    tokenizer = tokenizer_from_config(checkpoint["tokenizer"])
    # "char" is rebuilt from the corpus, so the name alone says nothing to compare: the checkpoint's counts
    own = getattr(tokenizer, "base", tokenizer)    # a compact vocabulary's tokenizer is its base's
    if name and name != "char" and _build_tokenizer(name, corpus).to_config() != own.to_config():
        raise PipelineError(f"{resume_path} was trained with the {tokenizer.name!r} tokenizer, not {name!r}: "
                            "drop --tokenizer to use the checkpoint's.")
    return tokenizer


def _describe_vocabulary(model_tokenizer, tokenizer, asked: str, resumed: bool) -> str:
    """The run's vocabulary line: "vocabulary: 1,095 of 100,277 ids (compact)" or "... (full)"."""
    if model_tokenizer is not tokenizer:
        why = "the checkpoint's" if resumed else "the ids this corpus uses, and one for every other id (--vocab full keeps all)"
        return f"{model_tokenizer.describe()}: {why}"
    why = " (the checkpoint's)" if resumed else (
        " (--vocab auto: the corpus uses at least half of them)" if asked == "auto" else "")
    return f"vocabulary: {tokenizer.vocab_size:,} ids (full){why}"


def _build_tokenizer(name: str, corpus):
    from llm_from_scratch.tokenizers import CharTokenizer, get_tokenizer

    if name == "char":  # a character vocabulary is built from the corpus itself
        text = corpus.train.read_text(encoding="utf-8") + corpus.validation.read_text(encoding="utf-8")
        return CharTokenizer(text)
    return get_tokenizer(name)


#: PretrainConfig fields that are switches of the model's configuration (model/config.py).
ARCHITECTURE_SWITCHES = ("norm", "positions", "mlp", "bias", "qk_norm", "logit_softcap", "zero_init", "tie_weights")


def _with_recipe(c: PretrainConfig, checkpoint: dict | None):
    """(the Recipe, `c` with the recipe's training defaults filled in where `c` says None).
    A resumed run keeps its checkpoint's recipe; naming another one is an error."""
    from llm_from_scratch.training.recipes import get_recipe

    saved = (checkpoint or {}).get("recipe")
    if checkpoint is not None and c.recipe and c.recipe != (saved or "book"):
        raise PipelineError(f"the run being resumed was trained with --recipe {saved or 'book'}, not {c.recipe}: "
                            "drop --recipe to continue it.")
    try:
        recipe = get_recipe(c.recipe or saved or "book")
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
    filled = replace(c, **{k: v for k, v in recipe.training.items() if getattr(c, k) is None})
    for name, allowed in (("optimizer", ("adamw", "muon")), ("windows", ("grid", "random"))):
        if getattr(filled, name) not in (None, *allowed):
            raise PipelineError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(filled, name)!r}")
    return recipe, filled


def _model_config(c: PretrainConfig, model_type: str, checkpoint: dict | None, vocab_size: int, recipe):
    """The architecture a resumed checkpoint recorded, or the preset's with the recipe's switches
    and this run's overrides (a switch the model family does not have is an error when asked for
    explicitly; a recipe's is skipped)."""
    from llm_from_scratch.model.registry import config_from_dict, preset_model_config

    if checkpoint is not None and checkpoint.get("model_config"):
        return config_from_dict(checkpoint["model_config"])
    fields_of_family = {f.name for f in dataclass_fields(type(preset_model_config(model_type)))}
    explicit = {k: getattr(c, k) for k in ARCHITECTURE_SWITCHES if getattr(c, k) is not None}
    unknown = sorted(set(explicit) - fields_of_family)
    if unknown:
        raise PipelineError(f"{model_type} has no {', '.join(unknown)} switch (the GPT presets have them all): "
                            "drop the flag or choose a gpt-* preset.")
    overrides: dict[str, Any] = {k: v for k, v in recipe.model.items() if k in fields_of_family}
    overrides.update(explicit, vocab_size=vocab_size)
    if overrides.get("logit_softcap") == 0:
        overrides["logit_softcap"] = None  # --logit_softcap 0: no cap (turns a recipe's off)
    if c.context_length:
        overrides["context_length"] = c.context_length
    if c.dropout is not None:
        overrides["drop_rate"] = c.dropout  # the field's name in every family's config
    try:
        return preset_model_config(model_type, **overrides)
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"the model configuration is not valid: {exc}") from exc


def _archive_previous_run(out_dir: Path) -> None:
    """A fresh run in a folder that holds an earlier one moves the old files aside: nothing is lost."""
    old = [p for p in (out_dir / n for n in ("best_model.pt", "last.pt", "log.jsonl", "loss.png", "tensorboard"))
           if p.exists()]
    if not old:
        return
    target = out_dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for p in old:
        shutil.move(str(p), str(target / p.name))
    print(f"{out_dir} held an earlier run: moved it to {target} (use --resume to continue a run instead).")


def _user_text_path(dataset: str | Path, corpus) -> str | None:
    """The absolute path of your own text (a checkpoint's `dataset` is only its name, e.g. the
    folder's), so that resuming needs no `dataset`; None for a named corpus."""
    from llm_from_scratch.data.corpora import available_corpora

    if corpus.name in available_corpora():
        return None
    return str(Path(dataset).expanduser().resolve())


def _default_lr(model_type: str) -> float:
    return 6e-4 if model_type.startswith("gpt2") else 2e-3


def _max_steps(c: PretrainConfig) -> int | None:
    if c.max_steps is None and c.epochs is None and c.max_tokens is None:
        return DEFAULTS["max_steps"]
    return c.max_steps
