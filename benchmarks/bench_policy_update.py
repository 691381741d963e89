"""How long one GRPO/DPO update takes: the output head at every position, or at the answers only.

    .venv/bin/python benchmarks/bench_policy_update.py                  # 3 rounds, fp32 and bf16 (~50 min)
    .venv/bin/python benchmarks/bench_policy_update.py --precisions bf16   # ~25 min: a trial is ~4 min

The update of a policy-learning step (`pipelines/grpo.py`) is a forward and a backward pass
over prompt + answer rows, of which only the answer tokens are scored. The output head (576 x
49,152 for SmolLM2) is a fifth of the model's work per position, and a task prompt in the chat
template is longer than its answer. `token_logprobs_and_entropy(..., only=mask)` applies the
head at the answer positions only. This measures what that saves, on SmolLM2-135M-Instruct with
LoRA rank 16 (as `llmfs finetune grpo --lora` trains it), 64 rows of real count_letters prompts
and a 25-token answer each, in micro-batches of 16 rows (the GRPO default):

- `head-all`: the head at every position (`only=None`), the answer tokens picked out after;
- `head-answers`: the head at the answer positions only (`only=mask`), what the trainers do.

Every trial is a fresh process that builds the model, runs one warm-up update and then times
one update (forward + backward of the masked GRPO loss for all 64 rows). Before timing, each
child checks that the two ways give the same loss and LoRA gradients (float32: 1e-5 relative).
Trials run interleaved (A B A B ...), per precision; medians and the ratio are reported.
Writes benchmarks/results/policy_update.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import available_cores, cpu_description, run_child  # noqa: E402

VARIANTS = ("head-all", "head-answers")
OUT = Path(__file__).resolve().parent / "results"
ROWS, MICRO_BATCH, ANSWER_TOKENS = 64, 16, 25


def build():
    """SmolLM2-135M-Instruct with LoRA adapters (B made non-zero, as after some training), and
    64 packed count_letters prompts + answers."""
    import torch

    from llm_from_scratch.evaluation.tasks import task_prompts
    from llm_from_scratch.finetune.lora import apply_lora
    from llm_from_scratch.finetune.sequences import pack_completions
    from llm_from_scratch.loading import load_model
    from llm_from_scratch.tasks import make_instances

    loaded = load_model("smollm2-135m-instruct", device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    torch.manual_seed(0)
    apply_lora(model, 16, 32)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".B"):
                parameter.normal_(std=0.01)
    model.train()
    prompts = task_prompts(tokenizer, make_instances("count_letters", ROWS, split="train", seed=0))
    answers = [torch.randint(0, tokenizer.vocab_size, (ANSWER_TOKENS,), generator=torch.Generator().manual_seed(i))
               .tolist() for i in range(ROWS)]
    packed = pack_completions(prompts, answers, pad_id=tokenizer.eot_id or 0)
    return model, packed


def update(model, packed, variant: str, precision: str) -> float:
    """One masked GRPO-style loss over all rows, forward and backward in micro-batches; the loss."""
    import torch

    from llm_from_scratch.finetune.grpo import grpo_loss
    from llm_from_scratch.finetune.sequences import token_logprobs_and_entropy

    advantages = torch.linspace(-1.0, 1.0, ROWS)
    mask = packed.completion_mask
    total = 0.0
    for start in range(0, ROWS, MICRO_BATCH):
        part = slice(start, start + MICRO_BATCH)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logps, _ = token_logprobs_and_entropy(model, packed.input_ids[part],
                                                  only=mask[part] if variant == "head-answers" else None)
        logps = logps.float()
        loss, _ = grpo_loss(logps, logps.detach(), advantages[part], mask[part])
        (loss * MICRO_BATCH / ROWS).backward()
        total += float(loss) * MICRO_BATCH / ROWS
    return total


def child(variant: str, precision: str) -> None:
    import torch

    model, packed = build()
    lora = [p for p in model.parameters() if p.requires_grad]
    # correctness first: both ways give the same loss and gradients (fp32)
    results = {}
    for way in VARIANTS:
        model.zero_grad(set_to_none=True)
        results[way] = (update(model, packed, way, "fp32"), [p.grad.clone() for p in lora])
    (loss_a, grads_a), (loss_b, grads_b) = results["head-all"], results["head-answers"]
    assert abs(loss_a - loss_b) <= 1e-5 * max(1.0, abs(loss_a)), (loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model.zero_grad(set_to_none=True)
    update(model, packed, variant, precision)          # warm-up in the timed precision
    model.zero_grad(set_to_none=True)
    started = time.perf_counter()
    update(model, packed, variant, precision)
    seconds = time.perf_counter() - started
    tokens = int(packed.input_ids.numel())
    print(json.dumps({"variant": variant, "precision": precision, "seconds": seconds, "tokens": tokens,
                      "answer_tokens": int(packed.completion_mask.sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--trial", nargs=2, metavar=("VARIANT", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(OUT / "policy_update.json"))
    args = parser.parse_args()
    if args.trial:
        child(*args.trial)
        return
    import torch

    environment = {"cpu": cpu_description(), "cores": available_cores(), "torch": torch.__version__,
                   "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"{environment['cpu']}, {environment['cores']} cores, torch {torch.__version__}")
    env = {"LLMFS_OFFLINE": "1"}
    raw: dict = {p: {v: [] for v in VARIANTS} for p in args.precisions}
    for r in range(args.rounds):
        for precision in args.precisions:
            for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                result = run_child([sys.executable, __file__, "--trial", variant, precision], env)
                raw[precision][variant].append(result)
                print(f"round {r + 1} {precision} {variant:<13} {result['seconds']:6.2f} s "
                      f"({result['answer_tokens']} answer tokens of {result['tokens']})", flush=True)
    summary = {}
    print("\n| precision | head at every position | head at answers only | ratio |\n|---|---|---|---|")
    for precision in args.precisions:
        medians = {v: statistics.median(t["seconds"] for t in raw[precision][v]) for v in VARIANTS}
        summary[precision] = {**{f"median_seconds_{v}": s for v, s in medians.items()},
                              "speedup": medians["head-all"] / medians["head-answers"]}
        print(f"| {precision} | {medians['head-all']:.2f} s | {medians['head-answers']:.2f} s | "
              f"{summary[precision]['speedup']:.2f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "policy_update", "environment": environment, "rounds": args.rounds,
                               "summary": summary, "trials": raw}, indent=1) + "\n")
    print(f"\n{out}")


if __name__ == "__main__":
    main()
