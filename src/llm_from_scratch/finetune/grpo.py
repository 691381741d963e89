"""Group Relative Policy Optimization (GRPO): reinforcement learning with verifiable rewards.

For tasks whose answers can be *checked* (a math result, a unit test, a required format) we do
not need preference pairs: let the model try, check, and make the attempts that passed more
likely. GRPO (Shao et al. 2024, "DeepSeekMath"; the RL algorithm of DeepSeek-R1) is the simplest
form of this that works well. One step:

1. For each of P prompts, sample G completions from the current policy ("old" policy,
   pi_old), with gradients off. Score each with the reward function: r_1 .. r_G per prompt.
2. Advantage of a completion = how much better it did than its *siblings*:

       A_i = (r_i - mean(r_1 .. r_G)) / (std(r_1 .. r_G) + eps)        (`group_advantages`)

   The group mean replaces PPO's learned value function (a second network as big as the
   policy): the other answers to the same prompt are the baseline. Every token of
   completion i gets the same A_i.
3. Record log pi_old of every completion token once, then take one or more gradient steps on
   the PPO-style clipped objective, per token t of completion i (`grpo_loss`):

       ratio = pi(token) / pi_old(token) = exp(log pi - log pi_old)
       objective = min( ratio * A_i,  clip(ratio, 1 - eps, 1 + eps) * A_i )
       loss_token = -objective + kl_coef * KL_k3(pi || pi_ref)

   With a single gradient step per batch, pi == pi_old (but detached), ratio == 1 and the
   gradient is the plain policy gradient -A_i * d log pi(token). The clip only matters on
   later steps over the same samples: once a token's probability has moved by more than eps
   in the direction its advantage asks for, it stops being pushed (its gradient is 0). A move
   in the *wrong* direction is never clipped: the min picks the unclipped, worse term.

4. The KL term keeps the policy near a frozen reference pi_ref (the model before RL). It uses
   Schulman's "k3" estimator, with d = log pi_ref - log pi at the sampled token:

       k3 = exp(d) - d - 1

   Its mean over samples from pi is an unbiased estimate of KL(pi || pi_ref), and every single
   value is >= 0 (exp(d) >= 1 + d), unlike the plain estimate -d. Recent recipes for verifiable
   rewards (DAPO, for one) drop it (kl_coef = 0); it is here for the original algorithm.

Averaging the token losses (`aggregation`):

* "token": sum over all completion tokens of the batch / their number. Every token weighs the
  same, so a long answer is not down-weighted per token (with the original average a long wrong
  answer is punished less per token than a short one). This is DAPO's "token-level policy
  gradient loss" (Yu et al. 2025).
* "sequence": the mean over completions of each completion's own token mean (the GRPO paper).
  A long answer's tokens each weigh less than a short one's: a long wrong answer is punished
  less per token, which lets wrong answers grow (Liu et al. call this the length bias).
* "constant": the sum over all completion tokens / (completions * `constant`), with `constant`
  the longest allowed answer (Dr. GRPO: Liu et al. 2025, "Understanding R1-Zero-Like
  Training"). A token's weight depends neither on its own answer's length nor on the other
  answers' lengths in the batch; together with ``scale=False`` (no division by the group's std)
  this is Dr. GRPO.

Why the population std (unbiased=False) in the advantages: the group *is* the whole population
we normalize; with G = 2 and rewards (1, 0) it gives advantages +1, -1 (the sample std would
give +-0.71). Dr. GRPO argues for no division at all (``scale=False``): dividing by the std gives
prompts that are nearly always solved (or nearly never) the largest advantages. A group whose
rewards are all equal (all right or all wrong) has advantage exactly 0: there is nothing to learn
from it, and it should be filtered out or re-sampled when that is cheap.
"""

from __future__ import annotations

import torch

from llm_from_scratch.finetune.sequences import masked_mean

AGGREGATIONS = ("token", "sequence", "constant")


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """(P * G,) rewards, ordered group by group -> (P * G,) advantages.

    Rows 0 .. G-1 are the G completions of prompt 0, rows G .. 2G-1 those of prompt 1, and so on.
    Each reward minus its group's mean; with `scale`, divided by the group's population std + eps.
    Groups with all rewards equal get exactly 0.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be a 1-D tensor (prompts * group_size,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size} "
                         "(expected prompts * group_size rewards, group by group)")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    grouped = rewards.float().view(-1, group_size)                       # (P, G)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)             # (P, G)
    if scale:
        group_std = grouped.std(dim=1, keepdim=True, unbiased=False)     # (P, 1)
        advantages = advantages / (group_std + eps)
    # The mean of equal floats need not equal them exactly (0.1 * 3 / 3): force the zeros.
    all_equal = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)      # (P, 1)
    advantages = torch.where(all_equal, torch.zeros_like(advantages), advantages)
    return advantages.view(-1)                                           # (P*G,)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(d) - d - 1 with d = ref_logps - logps; >= 0."""
    log_ratio = ref_logps - logps
    return torch.exp(log_ratio) - log_ratio - 1


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              *, clip_eps: float = 0.2, ref_logps: torch.Tensor | None = None, kl_coef: float = 0.0,
              aggregation: str = "token", constant: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped GRPO loss of a batch of completions, and metrics for logging.

    logps: (n, T-1) log-probs of the sampled tokens under the policy being trained (with grad).
    old_logps: (n, T-1) the same under the policy that sampled them (treated as constants).
    advantages: (n,) one per completion (`group_advantages`; treated as constants).
    mask: (n, T-1) 1 for completion tokens (`PackedCompletions.completion_mask`; float or bool).
    ref_logps: (n, T-1) under the frozen reference; required when kl_coef > 0.
    constant: the divisor per completion of aggregation="constant" (the longest allowed answer).

    Metrics: "clip_fraction" (share of completion tokens whose clipped term was taken and
    differs from the unclipped one), "ratio_mean", "kl" (mean k3 over completion tokens; 0.0
    without ref_logps). Positions outside the mask get no gradient and do not change the loss;
    rows without completion tokens add nothing (no NaN).
    """
    if logps.dim() != 2:
        raise ValueError(f"logps must be (completions, positions), got shape {tuple(logps.shape)}")
    for name, value in (("old_logps", old_logps), ("mask", mask), ("ref_logps", ref_logps)):
        if value is not None and value.shape != logps.shape:
            raise ValueError(f"{name} has shape {tuple(value.shape)}, logps has {tuple(logps.shape)}")
    if advantages.shape != (logps.shape[0],):
        raise ValueError(f"advantages must be ({logps.shape[0]},): one per completion, got {tuple(advantages.shape)}")
    if not 0 <= clip_eps < 1:
        raise ValueError(f"clip_eps must be in [0, 1), got {clip_eps}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    if kl_coef > 0 and ref_logps is None:
        raise ValueError(f"kl_coef={kl_coef} needs ref_logps (the reference model's log-probs); "
                         "pass them or set kl_coef=0")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if aggregation == "constant" and not (constant is not None and constant > 0):
        raise ValueError(f"aggregation='constant' needs constant > 0 (the longest allowed answer), got {constant}")

    keep = mask.bool()                                             # (n, T-1)
    zeros = torch.zeros_like(logps)

    def only_completion(values: torch.Tensor) -> torch.Tensor:
        # where() and not "* mask": a NaN or inf at a padding position must not leak into sums
        # or gradients.
        return torch.where(keep, values, zeros)

    log_ratio = only_completion(logps - old_logps.detach())        # (n, T-1), 0 off the mask
    ratio = torch.exp(log_ratio)                                   # (n, T-1)
    token_advantages = advantages.detach().to(logps.dtype)[:, None]  # (n, 1): one per completion
    unclipped = ratio * token_advantages                           # (n, T-1)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * token_advantages
    token_loss = -torch.minimum(unclipped, clipped)                # (n, T-1)

    kl = None
    if ref_logps is not None:
        # both sides zeroed off the mask: d = 0 there, so k3 = 0 (and no exp overflow on padding)
        kl = k3_kl(only_completion(logps), only_completion(ref_logps.detach()))   # (n, T-1)
        if kl_coef > 0:
            token_loss = token_loss + kl_coef * kl
    token_loss = only_completion(token_loss)

    tokens_per_row = keep.sum(dim=1)                               # (n,)
    if aggregation == "token":
        loss = token_loss.sum() / tokens_per_row.sum().clamp(min=1)
    elif aggregation == "constant":
        loss = token_loss.sum() / (logps.shape[0] * constant)
    else:
        row_means = token_loss.sum(dim=1) / tokens_per_row.clamp(min=1).to(logps.dtype)  # (n,)
        rows_with_tokens = (tokens_per_row > 0).sum().clamp(min=1)
        loss = row_means.sum() / rows_with_tokens                  # empty rows are left out

    with torch.no_grad():
        metrics = {
            "clip_fraction": float(masked_mean((clipped < unclipped).float(), keep)),
            "ratio_mean": float(masked_mean(ratio, keep)),
            "kl": float(masked_mean(kl, keep)) if kl is not None else 0.0,
        }
    return loss, metrics
