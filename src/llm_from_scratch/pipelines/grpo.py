"""GRPO in one call: reinforcement learning with verifiable rewards, what `llmfs finetune grpo` does.

    from llm_from_scratch.pipelines import GRPOConfig, finetune_grpo

    result = finetune_grpo(GRPOConfig(model="smollm2-135m-instruct", tasks="count_letters", lora=True,
                                      max_steps=100))
    result.scores["before"]["count_letters"], result.scores["after"]["count_letters"]

One step (the math is in `finetune/grpo.py`):

1. take the next `prompts_per_step` training questions (the "train" split of the tasks: held-out
   questions are never used), and let the model answer each one `group_size` times
   (`generation.sample_completions`, the one decoding loop, at `temperature`);
2. grade every answer with the task's checker: reward 1 if right, 0 if wrong, plus
   `format_reward` if it gave its answer in the asked format. An answer cut off at
   `max_new_tokens` gets 0 whatever it says: it never stated its final answer, and rewarding a
   number found in a ramble teaches rambling (measured: answers grew to the length limit and
   arithmetic fell from 13% to 2% held-out);
3. advantage = (reward - the group's mean) / the group's std: an answer counts as good if it is
   better than the model's *other* answers to the same question. A group that is all right or
   all wrong teaches nothing (advantage 0): the logged `no_signal` is the share of such groups;
4. the loss: the clipped policy ratio times the advantage, over the answer tokens only (the
   prompt and the padding are masked), plus an optional KL penalty to the start model; one
   optimizer update; or `inner_steps` updates over the same answers (PPO epochs: from the
   second on the policy has moved, the ratio differs from 1 and the clipping acts). The
   learning rate is the step's for all of them (the schedule counts steps), and the logged
   `grad_norm` is the last update's.

The answers are sampled at `temperature` from the whole of the tokenizer's vocabulary, and the
log-probabilities are those of that very distribution (no top-k or top-p: a truncated
distribution would need its own renormalised probabilities in every ratio). Dropout is off
(pipelines/policy.py). `max_new_tokens` defaults to 96 or what the model's context leaves
after the longest prompt.

Logged per step (log.jsonl, TensorBoard, training.png): reward, accuracy, answer length,
entropy, the share of answers cut off, the share of groups without signal, KL, clip fraction;
the training accuracy per family when a step mixes families; held-out greedy pass@1 per
family every `eval_interval` steps. Exact resume: a step's questions and sampling seed depend
only on the step number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from llm_from_scratch.generation.defaults import POLICY_SAMPLING_TEMPERATURE
from llm_from_scratch.pipelines.common import PipelineError
from llm_from_scratch.tasks import POLICY_TRAINING_TASKS
from llm_from_scratch.pipelines.policy import (PolicyConfig, PolicyMethod, PolicyResult, answer_budget,
                                               frozen_reference, prepare_policy, run_policy)

GRPOResult = PolicyResult


@dataclass
class GRPOConfig(PolicyConfig):
    """The settings of `finetune_grpo`: `PolicyConfig`'s plus the questions, the groups and the loss."""

    FULL_WEIGHTS_LR: ClassVar[float] = 1e-5   # ablation (docs 22): 3e-6 moved nothing in 10 steps

    tasks: str = POLICY_TRAINING_TASKS   # training families (comma-separated), a group, or "all"
    difficulty: int | None = None        # 1-3 (None: each family's mix)
    prompts_per_step: int = 8            # questions per step
    group_size: int = 8                  # answers sampled per question (G)
    temperature: float = POLICY_SAMPLING_TEMPERATURE  # sampling temperature of the answers
    top_p: float | None = None           # refused: the ratios need the probabilities of the distribution
                                         # sampled from, and top-p cuts and renormalises it
    clip_eps: float = 0.2                # the policy ratio is clipped to [1 - eps, 1 + eps]
    kl_coef: float = 0.0                 # KL penalty to the start model (0: off, as in DAPO / Dr. GRPO)
    format_reward: float = 0.0           # added for an answer in the asked format ("Answer: ...")
    grade_truncated: bool = False        # grade answers cut off at max_new_tokens too (default: reward 0)
    inner_steps: int = 1                 # gradient steps on each batch of answers
    scale_rewards: bool = True           # divide by the group's std (False: only subtract the mean)
    aggregation: str = "token"           # token (mean over all answer tokens), sequence (per answer first) or
                                         # constant (sum / (answers * max_new_tokens): Dr. GRPO)


GRPO_PLOT = ("reward", "accuracy", "completion_tokens", "truncated", "entropy", "no_signal", "kl")


def check_grpo_config(c: GRPOConfig) -> None:
    for name in ("prompts_per_step", "group_size", "max_steps", "inner_steps", "micro_batch", "max_new_tokens"):
        if getattr(c, name) is not None and getattr(c, name) < 1:
            raise PipelineError(f"{name} must be at least 1, got {getattr(c, name)}")
    if c.group_size < 2:
        raise PipelineError("group_size must be at least 2: GRPO compares the answers of one group")
    if c.top_p is not None:
        raise PipelineError("GRPO samples from the model's whole distribution: top-p would cut it, and the "
                            "policy ratios would then need the renormalised probabilities of the cut one. "
                            "Leave --top_p out (lower --temperature for more focused answers)")
    if c.temperature <= 0:
        raise PipelineError(f"GRPO samples its answers: give --temperature > 0 (default {POLICY_SAMPLING_TEMPERATURE})")
    if c.kl_coef < 0 or c.clip_eps <= 0:
        raise PipelineError("kl_coef must be >= 0 and clip_eps > 0")
    from llm_from_scratch.finetune.grpo import AGGREGATIONS

    if c.aggregation not in AGGREGATIONS:
        raise PipelineError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {c.aggregation!r}")


QUESTION_POOL = 512   # training questions per family at most: a longer run takes them again, in order


def training_questions(c: GRPOConfig) -> list:
    """The run's training questions, families interleaved so that every step mixes them. Step s
    takes questions s*P .. s*P + P - 1, wrapping around: any number of steps works, whatever
    the number of distinct questions a family has at a difficulty (multiplication at level 1
    has about 600). Families make their questions in a fixed order, so a smaller pool is a
    prefix of a bigger one."""
    from llm_from_scratch.pipelines.task_eval import gather_instances

    wanted = min(c.prompts_per_step * c.max_steps, QUESTION_POOL)
    while True:
        try:
            return gather_instances(c.tasks, wanted, split="train", seed=c.seed, difficulty=c.difficulty,
                                    interleave=True)
        except PipelineError:
            if wanted <= c.prompts_per_step:     # not even one step's worth: say why
                raise
            wanted = max(c.prompts_per_step, wanted // 2)


class GRPOMethod(PolicyMethod):
    """GRPO as a method of the training loop: a step samples, grades, and takes `inner_steps`
    optimizer updates on the same answers (PPO epochs: the ratio and the clipping act from the
    second on)."""

    name = "GRPO"
    plot_keys = GRPO_PLOT

    def __init__(self, model, tokenizer, config: GRPOConfig, questions: list, reference=None):
        from llm_from_scratch.evaluation.tasks import task_prompts
        from llm_from_scratch.generation.completions import sampling_vocab_size

        self.model, self.tokenizer, self.c, self.questions = model, tokenizer, config, questions
        self.prompts = task_prompts(tokenizer, questions)
        self.max_new_tokens = answer_budget(config, self.prompts, model.cfg.context_length)
        self.vocab_size = sampling_vocab_size(model, tokenizer)   # sampling and log-probs alike
        self.reference = reference
        self.pad_id = tokenizer.eot_id if tokenizer.eot_id is not None else 0

    def questions_of(self, step: int) -> list[int]:
        n = self.c.prompts_per_step
        return [(step * n + i) % len(self.questions) for i in range(n)]

    def rollouts(self, trainer, step: int):
        """The step's questions, each answered group_size times; (question indices, completions)."""
        from llm_from_scratch.generation.completions import sample_completions
        from llm_from_scratch.generation.sampling import SamplingParams

        c = self.c
        chosen = self.questions_of(step)
        params = SamplingParams(max_tokens=self.max_new_tokens, temperature=c.temperature,
                                seed=c.seed * 1_000_003 + step)
        with trainer.autocast():  # the run's precision (bf16 samples faster where the CPU has bf16 units)
            groups = sample_completions(self.model, self.tokenizer, [self.prompts[i] for i in chosen], params,
                                        num_samples=c.group_size, batch_size=c.batch_size)
        return chosen, groups

    def logprobs(self, model, input_ids, mask, *, entropy: bool = False):
        """Log-probabilities (and entropies) of the answer tokens under the distribution the
        answers were sampled from: the sampling temperature, the tokenizer's vocabulary."""
        from llm_from_scratch.finetune.sequences import token_logprobs_and_entropy

        logps, entropies = token_logprobs_and_entropy(model, input_ids, only=mask, temperature=self.c.temperature,
                                                      vocab_size=self.vocab_size, with_entropy=entropy)
        return logps.float(), entropies

    def train_step(self, trainer, step: int) -> dict[str, float]:
        import torch

        from llm_from_scratch.finetune.grpo import group_advantages, grpo_loss
        from llm_from_scratch.finetune.sequences import pack_completions
        from llm_from_scratch.tasks import check_answer, has_answer_format

        c = self.c
        started = time.perf_counter()
        chosen, groups = self.rollouts(trainer, step)
        sample_seconds = time.perf_counter() - started
        prompts, completions, rewards, correct, formatted, row_families, truncated = [], [], [], [], [], [], []
        for index, group in zip(chosen, groups):
            for completion in group:
                finished = c.grade_truncated or completion.finish_reason == "stop"  # not cut off
                right = finished and check_answer(self.questions[index], completion.text)
                well_formed = finished and has_answer_format(completion.text)
                truncated.append(float(completion.finish_reason != "stop"))
                prompts.append(self.prompts[index])
                row_families.append(self.questions[index].family)
                completions.append(completion.training_ids)
                correct.append(float(right))
                formatted.append(float(well_formed))
                rewards.append(float(right) + c.format_reward * float(well_formed))
        rewards_t = torch.tensor(rewards)
        advantages = group_advantages(rewards_t, c.group_size, scale=c.scale_rewards)       # (n,)
        no_signal = (rewards_t.view(-1, c.group_size).std(dim=1) == 0).float().mean().item()
        packed = pack_completions(prompts, completions, self.pad_id, max_length=self.model.cfg.context_length)
        device = trainer.device
        input_ids = packed.input_ids.to(device)                                             # (n, T)
        mask = packed.completion_mask.float().to(device)                                    # (n, T-1)
        advantages = advantages.to(device)
        total_tokens = mask.sum().clamp(min=1.0)
        parts = [slice(r, r + c.micro_batch) for r in range(0, len(prompts), c.micro_batch)]

        # log pi_old: the policy that sampled, before any update of this step. With one update it
        # is the policy being trained itself (taken, detached, from the same forward pass: ratio
        # = 1 exactly); with more, it is computed once, before the first.
        old = ref = None
        with torch.no_grad(), trainer.autocast():
            if c.inner_steps > 1:
                old = [self.logprobs(self.model, input_ids[p], mask[p])[0] for p in parts]
            if c.kl_coef > 0:                     # the reference: the start model
                ref = [self.reference_logprobs(input_ids[p], mask[p]) for p in parts]
        metrics_sum: dict[str, float] = {}
        entropy_sum = 0.0
        for inner in range(c.inner_steps):        # PPO epochs: an optimizer update per pass
            for j, part in enumerate(parts):
                with trainer.autocast():
                    logps, entropy = self.logprobs(self.model, input_ids[part], mask[part], entropy=inner == 0)
                loss, metrics = grpo_loss(logps, logps.detach() if old is None else old[j], advantages[part],
                                          mask[part], clip_eps=c.clip_eps,
                                          ref_logps=None if ref is None else ref[j], kl_coef=c.kl_coef,
                                          aggregation=c.aggregation, constant=self.max_new_tokens)
                # weight each micro-batch by its share, so the sum is the whole batch's loss
                weight = (mask[part].sum() / total_tokens if c.aggregation == "token"
                          else torch.tensor(len(range(*part.indices(len(prompts)))) / len(prompts)))
                trainer.backward(loss * weight)
                for k, v in {"loss": loss.item(), **metrics}.items():
                    metrics_sum[k] = metrics_sum.get(k, 0.0) + float(v) * float(weight) / c.inner_steps
                if inner == 0:
                    entropy_sum += float((entropy.float() * mask[part]).sum())
                if inner == c.inner_steps - 1:    # the last pass: what the updates before it did
                    for k in ("clip_fraction", "ratio_mean"):
                        metrics_sum[f"{k}_last"] = metrics_sum.get(f"{k}_last", 0.0) + metrics[k] * float(weight)
            trainer.update()
        lengths = [len(ids) for ids in completions]
        by_family: dict[str, list[float]] = {}   # training accuracy per family, when a step mixes them
        for family, right in zip(row_families, correct):
            by_family.setdefault(family, []).append(right)
        if len(by_family) > 1:
            metrics_sum.update({f"accuracy/{name}": sum(v) / len(v) for name, v in by_family.items()})
        return {**metrics_sum, "reward": sum(rewards) / len(rewards), "accuracy": sum(correct) / len(correct),
                "format": sum(formatted) / len(formatted), "completion_tokens": sum(lengths) / len(lengths),
                "truncated": sum(truncated) / len(truncated),
                "entropy": entropy_sum / float(total_tokens), "no_signal": no_signal,
                "sample_seconds": sample_seconds}

    def reference_logprobs(self, input_ids, mask):
        """Log-probabilities under the start model: the LoRA model with its adapters switched off,
        or a frozen copy of the whole model."""
        if self.reference is not None:
            return self.logprobs(self.reference, input_ids, mask)[0]
        from llm_from_scratch.finetune.lora import lora_disabled
        with lora_disabled(self.model):
            return self.logprobs(self.model, input_ids, mask)[0]


def finetune_grpo(config: GRPOConfig) -> GRPOResult:
    """Train with GRPO as `config` says (see the module docstring); bad input raises PipelineError."""
    c = config
    check_grpo_config(c)
    questions = training_questions(c)
    prepared = prepare_policy(c, "grpo")
    reference = frozen_reference(prepared) if c.kl_coef > 0 else None
    method = GRPOMethod(prepared.model, prepared.tokenizer, c, questions, reference)
    return run_policy(c, prepared, method, f"training on {c.tasks} ({len(questions)} questions, {c.prompts_per_step} "
                      f"x {c.group_size} answers of up to {method.max_new_tokens} tokens per step)")
