"""`llmfs evaluate`: perplexity on text, accuracy of a classifier, an LLM judge for answers, and
verifiable tasks (greedy pass@1, pass@k, majority vote).

    llmfs evaluate perplexity --model smollm2-135m-instruct --dataset shakespeare --max_tokens 20000
    llmfs evaluate perplexity --checkpoint checkpoints/gpt-micro/best_model.pt --text my.txt --stride 64
    llmfs evaluate accuracy --checkpoint checkpoints/classify-smollm2-135m-instruct/best_model.pt --csv test.csv
    llmfs evaluate judge --responses checkpoints/instruct-smollm2-135m-instruct/test-responses.json
    llmfs evaluate judge --responses answers.json --judge openai:gpt-4o-mini      # OPENAI_API_KEY, OPENAI_BASE_URL
    llmfs evaluate judge --responses answers.json --judge ollama:llama3@http://localhost:11434
    llmfs evaluate judge --responses answers.json --judge local:smollm2-135m-instruct   # weak, offline
    llmfs evaluate tasks --model smollm2-135m-instruct --tasks all --num_examples 50 --num_samples 8
    llmfs evaluate tasks --checkpoint checkpoints/grpo-smollm2-135m-instruct/final_model.pt --tasks addition
    llmfs evaluate tasks --model smollm2-135m-instruct --tasks none --gsm8k gsm8k_test.jsonl --num_samples 0
    llmfs evaluate compare before.json after.json        # two `tasks --out` runs: paired test per family
    llmfs evaluate compare vote8.json                    # one run's vote@k against its greedy answers
    llmfs evaluate compare runs/grpo/heldout-before.json rft=runs/rft/heldout-after.json runs/grpo/heldout-after.json
                                                         # a start and several runs: which wins each family
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm_from_scratch.cli.common import (CommandError, add_flag, add_inference_flags, add_model_flags, command_parser,
                                         load_from_args)
from llm_from_scratch.generation.defaults import SURFACE_DEFAULTS

TASK_DEFAULTS = SURFACE_DEFAULTS["tasks"]  # `evaluate tasks`' sampling defaults


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "evaluate", "perplexity, classification accuracy, LLM-judge scores", __doc__)
    kinds = p.add_subparsers(dest="kind", metavar="WHAT")

    q = kinds.add_parser("perplexity", help="perplexity of a model on a text or a corpus split")
    add_model_flags(q, inference=True)
    add_flag(q, "text", default=None, help="a text file")
    add_flag(q, "dataset", default=None, help="a corpus name (shakespeare, wikitext2, ...) or path, as in llmfs train")
    add_flag(q, "split", default="validation", choices=["train", "validation"])
    add_flag(q, "stride", type=int, default=None, help="window step (default: half the context)")
    add_flag(q, "max_tokens", type=int, default=None, help="score only the first N tokens")
    add_flag(q, "device", default="auto")
    q.set_defaults(handler=run_perplexity)

    a = kinds.add_parser("accuracy", help="accuracy of a fine-tuned classifier on a CSV")
    add_flag(a, "checkpoint", required=True)
    add_flag(a, "csv", required=True)
    add_flag(a, "text_column", default="text")
    add_flag(a, "label_column", default="label")
    add_flag(a, "batch_size", type=int, default=8)
    add_flag(a, "device", default="auto")
    a.set_defaults(handler=run_accuracy)

    j = kinds.add_parser("judge", help="score answers 0-100 against the references with a judge model")
    add_flag(j, "responses", required=True, help="JSON list of entries with instruction, output and the response")
    add_flag(j, "judge", default="ollama",
             help="ollama[:MODEL[@HOST]] (default llama3 on localhost:11434), openai[:MODEL], local:NAME_OR_CHECKPOINT")
    add_flag(j, "response_key", default="model_response")
    add_flag(j, "retries", type=int, default=2, help="asks again when a reply holds no number (default %(default)s)")
    add_flag(j, "out", default=None, help="write the entries with their scores here (JSON)")
    add_inference_flags(j)  # for a local: judge
    j.set_defaults(handler=run_judge)

    _add_tasks(kinds)
    c = kinds.add_parser("compare", help="two `evaluate tasks --out` runs on the same questions: intervals and "
                                         "McNemar's paired test per family; or a start and several runs "
                                         "(START.json NAME=RUN.json ...): which run wins each family; or one "
                                         "run with samples: its vote@k against its greedy answers")
    add_flag(c, "before", help="the first run's JSON (from --out)")
    add_flag(c, "after", help="the second run's JSON")
    c.add_argument("runs", nargs="*", help="or: BEFORE.json AFTER.json; or START.json and two or more "
                   "runs, each PATH or NAME=PATH (a training run's heldout-after.json is named by its folder); "
                   "or one RUN.json of `evaluate tasks --num_samples K`: vote@K against greedy, paired")
    add_flag(c, "metric", default="greedy", choices=["greedy", "vote"], help="which score to compare (default greedy)")
    add_flag(c, "plot", default=None, help="also draw the runs' scores per family, with intervals, as this PNG")
    c.set_defaults(handler=run_compare)
    p.set_defaults(handler=lambda args: (p.print_help(), 0)[1])


def run_compare(args: argparse.Namespace) -> int:
    from llm_from_scratch.evaluation.significance import (compare_methods, compare_records, format_comparison,
                                                          format_methods, plot_methods)

    paths = [x for x in (args.before, args.after) if x] + list(args.runs)
    if not paths:
        raise CommandError("give two runs: llmfs evaluate compare BEFORE.json AFTER.json (from evaluate tasks --out), "
                           "the start and several runs: llmfs evaluate compare START.json rft=A.json grpo=B.json, "
                           "or one run with samples: llmfs evaluate compare RUN.json (its vote against greedy)")
    names, runs = [], []
    for spec in paths:
        name, path = run_label(spec)
        try:
            runs.append(json.loads(Path(path).read_text(encoding="utf-8"))["records"])
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"{path}: not a run written by `llmfs evaluate tasks --out` or a training run's "
                               f"heldout-*.json ({exc})") from exc
        names.append(name)
    if len(set(names[1:])) != len(names) - 1:
        raise CommandError(f"two runs have the same name ({', '.join(names[1:])}): name them, as NAME=PATH")
    if len(runs) == 1:
        if args.plot or args.metric != "greedy":
            raise CommandError("one run is compared with itself, vote against greedy: --plot and --metric need two "
                               "or more runs")
        return _compare_vote_with_greedy(paths[0], runs[0])
    try:
        if len(runs) == 2:
            text = format_comparison(compare_records(runs[0], runs[1], metric=args.metric))
        else:
            text = format_methods(compare_methods(runs[0], dict(zip(names[1:], runs[1:])), metric=args.metric))
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{args.metric}: {paths[0]} -> {', '.join(paths[1:])}")
    print(text)
    if args.plot:
        plot_methods(runs[0], dict(zip(names[1:], runs[1:])), args.plot, metric=args.metric)
        print(f"picture: {args.plot}")
    return 0


def _compare_vote_with_greedy(path: str, records: list) -> int:
    """One run's majority vote against its own greedy answers, question by question: does voting
    over the samples beat the one greedy answer, family by family?"""
    from llm_from_scratch.evaluation.significance import compare_records, format_comparison

    if not records or "vote_correct" not in records[0]:
        raise CommandError(f"{path} has no votes: one run is compared with itself, vote@k against greedy, so it "
                           "needs samples (llmfs evaluate tasks --num_samples 8 --out RUN); or give two runs")
    k = len(records[0].get("samples") or []) or "k"
    try:
        table = compare_records(records, records, metric="greedy", after_metric="vote")
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    print(f"greedy -> vote@{k}, the same questions: {path}")
    print(format_comparison(table, labels=("greedy", f"vote@{k}")))
    return 0


def run_label(spec: str) -> tuple[str, str]:
    """(name, path) of a compare argument: "NAME=PATH", or PATH named by its file (by its folder
    for a training run's heldout-before/after.json)."""
    name, sep, path = spec.partition("=")
    if sep and name and path and not Path(spec).exists() and not any(c in name for c in "/\\"):
        return name, path
    path = Path(spec)
    return (path.parent.name if path.stem.startswith("heldout-") else path.stem) or spec, spec


def _add_tasks(kinds) -> None:
    t = command_parser(kinds, "tasks", "accuracy on verifiable tasks: greedy pass@1, pass@k, majority vote", __doc__)
    add_model_flags(t, inference=True)
    add_flag(t, "tasks", default="all",
             help="task families, comma-separated (addition, subtraction, multiplication, word_problems, "
                  "reverse_words, reverse_letters, count_letters, sort_numbers, compare), all (default) or none")
    add_flag(t, "num_examples", type=int, default=200,
             help="held-out questions per family (default %(default)s: enough that a 10-point change shows)")
    add_flag(t, "difficulty", type=int, default=None, choices=[1, 2, 3], help="only this level (default: a mix)")
    add_flag(t, "gsm8k", default=None, help="a GSM8K-format JSONL file you have (question, answer '... #### 72')")
    add_flag(t, "math500", default=None, help="a MATH-500-format JSONL file you have (problem, answer)")
    add_flag(t, "num_samples", type=int, default=8,
             help="sampled answers per question for pass@k and the vote (default %(default)s; 0: greedy only)")
    add_flag(t, "temperature", type=float, default=TASK_DEFAULTS["temperature"],
             help="sampling temperature (default %(default)s)")
    add_flag(t, "top_p", type=float, default=TASK_DEFAULTS["top_p"])
    add_flag(t, "top_k", type=int, default=TASK_DEFAULTS["top_k"])
    add_flag(t, "vote", action=argparse.BooleanOptionalAction, default=True,
             help="majority vote over the samples (self-consistency; default on)")
    add_flag(t, "greedy", action=argparse.BooleanOptionalAction, default=True, help="greedy pass@1 (default on)")
    add_flag(t, "max_new_tokens", type=int, default=None,
             help=f"longest answer (default {TASK_DEFAULTS['max_tokens']}, or what the model's context leaves "
                  "after the longest prompt)")
    add_flag(t, "batch_size", type=int, default=32, help="answers decoded together (default %(default)s)")
    add_flag(t, "seed", type=int, default=0, help="which questions, and the sampling (default %(default)s)")
    add_flag(t, "style", default="auto", choices=["auto", "alpaca", "phi3", "chat"])
    add_flag(t, "out", default=None, help="write OUT.json (every answer) and OUT.png (the table as bars)")
    add_flag(t, "device", default="auto")
    add_flag(t, "progress", action=argparse.BooleanOptionalAction, default=True)
    t.set_defaults(handler=run_tasks)


def run_tasks(args: argparse.Namespace) -> int:
    from llm_from_scratch.cli.common import config_from_args
    from llm_from_scratch.pipelines import TaskEvalConfig, evaluate_tasks

    if (args.model is None) == (args.checkpoint is None):
        raise CommandError("give --model NAME (a pretrained model) or --checkpoint PATH (one of ours)")
    evaluate_tasks(config_from_args(TaskEvalConfig, args, tasks="" if args.tasks == "none" else args.tasks))
    return 0


def run_perplexity(args: argparse.Namespace) -> int:
    from llm_from_scratch.evaluation.perplexity import perplexity_of_text
    from llm_from_scratch.training.trainer import auto_device

    if (args.text is None) == (args.dataset is None):
        raise CommandError("give --text FILE or --dataset NAME (one of them)")
    if args.text is not None:
        path = Path(args.text)
        if not path.is_file():
            raise CommandError(f"no text file at {path}")
    else:
        from llm_from_scratch.data.corpora import corpus_files
        files = corpus_files(args.dataset)
        path = files.train if args.split == "train" else files.validation
    text = path.read_text(encoding="utf-8")
    loaded = load_from_args(args, auto_device(args.device))
    stride = args.stride or max(1, loaded.context_length // 2)
    result = perplexity_of_text(loaded.model, loaded.tokenizer, text, stride=stride, max_tokens=args.max_tokens)
    print(f"{loaded.name} on {path}: perplexity {result['perplexity']:.3f} (loss {result['loss']:.4f} over "
          f"{result['tokens']:,} tokens; windows of {loaded.context_length}, stride {stride})")
    return 0


def run_accuracy(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from llm_from_scratch.data.classification import ClassificationDataset
    from llm_from_scratch.cli.classify import load_classifier_from_args
    from llm_from_scratch.evaluation.accuracy import calc_accuracy_loader

    model, tokenizer, task, device = load_classifier_from_args(args)
    data = ClassificationDataset(args.csv, tokenizer, max_length=task.get("max_length"),
                                 pad_token_id=task.get("pad_token_id"), text_column=args.text_column,
                                 label_column=args.label_column, label_names=task.get("label_names"),
                                 context_length=model.cfg.context_length)
    accuracy = calc_accuracy_loader(DataLoader(data, batch_size=args.batch_size), model, device)
    print(f"accuracy {accuracy:.2%} on {len(data)} texts of {args.csv}")
    return 0


def run_judge(args: argparse.Namespace) -> int:
    from llm_from_scratch.evaluation.judge import JudgeUnavailableError, score_responses

    path = Path(args.responses)
    if not path.is_file():
        raise CommandError(f"no responses file at {path}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise CommandError(f"{path} must hold a JSON list of entries")
    judge = args.judge
    if judge.startswith("local:"):
        from llm_from_scratch.evaluation.judge import make_judge
        try:
            judge = make_judge(judge, dtype=args.dtype, quantize=args.quantize)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    elif (args.dtype, args.quantize) != ("fp32", "none"):
        raise CommandError("--dtype and --quantize apply to a local judge (--judge local:NAME) only")
    try:
        report = score_responses(entries, args.response_key, judge, retries=args.retries, progress=True)
    except JudgeUnavailableError as exc:
        raise CommandError(str(exc)) from exc
    print(report.summary())
    if args.out:
        scored = [{**entry, "judge_score": score} for entry, score in zip(entries, report.scores)]
        Path(args.out).write_text(json.dumps(scored, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"scores written to {args.out}")
    return 0
