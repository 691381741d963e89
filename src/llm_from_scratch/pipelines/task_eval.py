"""Evaluating a model on verifiable tasks in one call: what `llmfs evaluate tasks` does.

    from llm_from_scratch.pipelines import TaskEvalConfig, evaluate_tasks

    result = evaluate_tasks(TaskEvalConfig(model="smollm2-135m-instruct", tasks="addition,reverse_words",
                                           num_examples=50, num_samples=8))
    result.summary["addition"]["greedy"], result.summary["addition"]["vote@8"]

The stage: the model (a name or one of our checkpoints; `dtype`/`quantize` as for generation)
-> `num_examples` held-out instances per family (the "test" split of `llm_from_scratch.tasks`,
never shown to GRPO/DPO training), plus GSM8K / MATH-500 files a user already has -> greedy
answers and `num_samples` sampled answers each, decoded in batches by the one decoding loop ->
greedy pass@1, pass@k and vote@k per family (`evaluation/tasks.py`) -> a table on the terminal,
`<out>.json` (summary and every answer) and `<out>.png` (the table as bars).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llm_from_scratch.generation.defaults import TASK_EVAL_TEMPERATURE
from llm_from_scratch.pipelines.common import PipelineError


@dataclass
class TaskEvalConfig:
    """The settings of `evaluate_tasks`; the defaults are `llmfs evaluate tasks`'s."""

    model: str | None = None             # a pretrained model: name or path ...
    checkpoint: str | Path | None = None  # ... or a checkpoint written by llmfs (exactly one of the two)
    tasks: str = "all"                   # "all", or family names separated by commas
    num_examples: int = 200              # held-out instances per family: enough that a 10-point change shows
                                         # (McNemar, `evaluation.significance`); greedy on all nine: ~8 min
    difficulty: int | None = None        # 1-3 (None: each family's fixed mix)
    gsm8k: str | Path | None = None      # a GSM8K-format JSONL file (question, answer "... #### 72")
    math500: str | Path | None = None    # a MATH-500-format JSONL file (problem, answer)
    num_samples: int = 8                 # sampled answers per question (0: greedy only)
    temperature: float = TASK_EVAL_TEMPERATURE
    top_p: float | None = None
    top_k: int | None = None
    vote: bool = True                    # report majority vote (self-consistency) over the samples
    greedy: bool = True                  # also answer greedily (pass@1)
    max_new_tokens: int | None = None    # None: TASK_EVAL_MAX_NEW_TOKENS, or what the model's context leaves
    batch_size: int = 32                 # rows decoded together
    seed: int = 0                        # which instances, and the sampling
    style: str = "auto"                  # prompt format: the chat template for chat models, else alpaca
    out: str | Path | None = None        # JSON and PNG go to <out>.json/.png (None: nothing written)
    device: str = "auto"
    dtype: str = "fp32"
    quantize: str = "none"
    compile: bool = False                # compile the one-token decode step (generation/compiled.py)
    progress: bool = True


@dataclass
class TaskEvalResult:
    summary: dict[str, dict[str, float]]  # family (and "all") -> count, greedy, pass@k, vote@k, sampled, mean_tokens
    records: list[dict[str, Any]]         # one per instance: its answers and which were right
    table: str
    json_path: Path | None = None
    png_path: Path | None = None


def gather_instances(tasks: str, num_examples: int, *, split: str = "test", seed: int = 0,
                     difficulty: int | None = None, gsm8k=None, math500=None, interleave: bool = False) -> list:
    """`num_examples` instances of every family `tasks` names, then those of the given files.

    Family after family; with `interleave` the families take turns instead (the first question of
    each, then the second of each, ...), so that any stretch of the list - a training step's
    questions - mixes them."""
    from llm_from_scratch import tasks as task_lib

    if num_examples < 1:
        raise PipelineError(f"num_examples must be at least 1, got {num_examples}")
    instances = []
    try:
        families = task_lib.parse_task_list(tasks) if tasks else []
        for family in families:
            instances += task_lib.make_instances(family, num_examples, split=split, seed=seed, difficulty=difficulty)
        if gsm8k:
            instances += task_lib.load_gsm8k(gsm8k, limit=num_examples)
        if math500:
            instances += task_lib.load_math500(math500, limit=num_examples)
    except (ValueError, FileNotFoundError) as exc:
        raise PipelineError(str(exc)) from exc
    if interleave:
        by_family: dict[str, list] = {}
        for instance in instances:
            by_family.setdefault(instance.family, []).append(instance)
        queues = list(by_family.values())
        instances = [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]
    if not instances:
        raise PipelineError("no task instances: give --tasks (e.g. all, or addition,reverse_words) and/or "
                            "--gsm8k / --math500 files")
    return instances


def evaluate_tasks(config: TaskEvalConfig) -> TaskEvalResult:
    """Score a model on held-out task instances as `config` says (see the module docstring)."""
    from llm_from_scratch.evaluation.tasks import evaluate_on_tasks, format_table, plot_summary
    from llm_from_scratch.loading import load_model
    from llm_from_scratch.training.trainer import auto_device

    c = config
    if c.num_samples < 0:
        raise PipelineError(f"num_samples must be 0 (greedy only) or more, got {c.num_samples}")
    if c.num_samples > 0 and c.temperature <= 0:
        raise PipelineError(f"sampling several answers needs --temperature > 0 (e.g. {TASK_EVAL_TEMPERATURE}); "
                            "use --num_samples 0 for greedy answers only")
    if not c.greedy and c.num_samples == 0:
        raise PipelineError("nothing to measure: --no-greedy and --num_samples 0")
    instances = gather_instances(c.tasks, c.num_examples, seed=c.seed, difficulty=c.difficulty,
                                 gsm8k=c.gsm8k, math500=c.math500)
    try:
        loaded = load_model(model=c.model, checkpoint=c.checkpoint, device=auto_device(c.device), dtype=c.dtype,
                            quantize=c.quantize)
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
    if c.compile:
        from llm_from_scratch.generation.compiled import compile_decoding
        print(compile_decoding(loaded.model))
    started = time.perf_counter()
    print(f"llmfs evaluate tasks: {loaded.name}, {len(instances)} held-out questions; greedy "
          f"{'yes' if c.greedy else 'no'}, {c.num_samples} samples each at temperature {c.temperature}")
    try:
        summary, records = evaluate_on_tasks(
            loaded.model, loaded.tokenizer, instances, num_samples=c.num_samples, temperature=c.temperature,
            top_p=c.top_p, top_k=c.top_k, max_new_tokens=c.max_new_tokens, greedy=c.greedy,
            batch_size=c.batch_size, seed=c.seed, style=c.style, progress=c.progress)
    except ValueError as exc:            # e.g. a --max_new_tokens that does not fit the context
        raise PipelineError(str(exc)) from exc
    if not c.vote:
        for row in summary.values():
            row.pop(f"vote@{c.num_samples}", None)
    table = format_table(summary, c.num_samples)
    seconds = time.perf_counter() - started
    print(table)
    print(f"done in {seconds / 60:.1f} min")
    json_path = png_path = None
    if c.out:
        from llm_from_scratch.assets import write_atomically

        base = Path(c.out)
        base = base.with_suffix("") if base.suffix in (".json", ".png") else base
        base.parent.mkdir(parents=True, exist_ok=True)
        json_path, png_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".png")
        report = {"model": loaded.name, "config": {k: str(v) if isinstance(v, Path) else v
                                                   for k, v in asdict(c).items()},
                  "seconds": seconds, "summary": summary, "records": records}
        write_atomically(json_path, (json.dumps(report, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
        plot_summary(summary, c.num_samples, png_path, title=f"{loaded.name}: held-out task instances")
        print(f"  {json_path}\n  {png_path}")
    return TaskEvalResult(summary, records, table, json_path, png_path)
