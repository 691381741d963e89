"""Direct Preference Optimization (DPO): learn from "this answer is better than that one".

Instruction fine-tuning (chapter 7) shows the model good answers. Preference tuning shows it
*pairs*: for a prompt x, a chosen answer y_w and a rejected answer y_l, and asks the model to
move probability from y_l to y_w. RLHF did this in two steps: fit a reward model to the pairs,
then maximize that reward with reinforcement learning (PPO) while a KL penalty keeps the policy
near a frozen reference model pi_ref (the model before this stage). Rafailov et al. (2023,
"Direct Preference Optimization: Your Language Model is Secretly a Reward Model") showed that
the best policy of that KL-penalized problem has a closed form, and that it can be turned
around: the reward is *implied* by the policy,

    r(x, y) = beta * log( pi(y | x) / pi_ref(y | x) )      (up to a term that depends on x only)

Put this reward into the Bradley-Terry model of preferences, P(y_w beats y_l) =
sigmoid(r(x, y_w) - r(x, y_l)), and the x-only term cancels. Maximizing the likelihood of the
observed preferences is then a plain classification loss on the policy itself:

    loss = -mean log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x))
                                      - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

No reward model, no sampling, no RL loop: four sequence log-probs per pair
(`sequences.sequence_logprob`), two of them from the frozen reference, computed once.

* beta sets how far the policy may drift from the reference: a small beta (0.1 is usual) lets
  the implied rewards be large for small changes of the log-probs, i.e. it trusts the data more.
* At the start policy == reference, every implied reward is 0 and the loss is log 2 = 0.693.
* The gradient is largest for pairs the model currently gets *wrong* (sigmoid of a negative
  margin is small, its log steep) and fades for pairs it already ranks right by a wide margin.

The data: one JSON object per line, ``{"prompt": ..., "chosen": ..., "rejected": ...}``
(`load_preference_pairs`, `save_preference_pairs`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from llm_from_scratch.io.atomic import write_atomically


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO loss of a batch of pairs; all four inputs are (b,) sequence log-probs.

    Returns (scalar loss, metrics). The metrics are means over the batch of the implied rewards
    beta * (log pi - log pi_ref): "reward_chosen", "reward_rejected", "reward_margin" (chosen
    minus rejected), and "reward_accuracy", the share of pairs whose chosen answer gets the
    higher reward. The reference log-probs are treated as constants (detached).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}: it scales the implied reward "
                         "beta * log(pi / pi_ref) (0.1 is the usual value)")
    inputs = {"policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps,
              "reference_chosen_logps": reference_chosen_logps,
              "reference_rejected_logps": reference_rejected_logps}
    for name, value in inputs.items():
        if value.dim() != 1 or value.shape != policy_chosen_logps.shape:
            raise ValueError(f"{name} must be a (batch,) tensor like policy_chosen_logps "
                             f"{tuple(policy_chosen_logps.shape)}, got {tuple(value.shape)}")
    if policy_chosen_logps.numel() == 0:
        raise ValueError("dpo_loss got an empty batch")

    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps.detach())        # (b,)
    rejected_rewards = beta * (policy_rejected_logps - reference_rejected_logps.detach())  # (b,)
    margins = chosen_rewards - rejected_rewards                                            # (b,)
    loss = -F.logsigmoid(margins).mean()   # logsigmoid, not log(sigmoid()): no log(0) for big margins

    with torch.no_grad():
        metrics = {
            "reward_chosen": float(chosen_rewards.mean()),
            "reward_rejected": float(rejected_rewards.mean()),
            "reward_margin": float(margins.mean()),
            "reward_accuracy": float((chosen_rewards > rejected_rewards).float().mean()),
        }
    return loss, metrics


@dataclass
class PreferencePair:
    """One preference: for `prompt`, the answer `chosen` is better than the answer `rejected`."""

    prompt: str
    chosen: str
    rejected: str


_KEYS = ("prompt", "chosen", "rejected")


def _pair_from(record: Any, where: str) -> PreferencePair:
    """A checked PreferencePair from one parsed JSON value; `where` names it in error messages."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with keys {list(_KEYS)}, "
                         f"got {type(record).__name__}")
    for key in _KEYS:
        if key not in record:
            raise ValueError(f"{where}: missing key {key!r} (each pair needs {list(_KEYS)})")
        if not isinstance(record[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {type(record[key]).__name__}")
        if not record[key].strip():
            raise ValueError(f"{where}: {key!r} is empty")
    if record["chosen"] == record["rejected"]:
        raise ValueError(f"{where}: 'chosen' and 'rejected' are the same text, so the pair teaches nothing")
    return PreferencePair(record["prompt"], record["chosen"], record["rejected"])


def load_preference_pairs(path: str | Path) -> list[PreferencePair]:
    """Preference pairs from a JSONL file (one object per line; blank lines are skipped) or from a
    ``.json`` file holding a list of such objects. Extra keys (an "id", a "source") are ignored.

    Raises FileNotFoundError for a missing file and ValueError, naming the file and the line
    (or list entry), for anything else that is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file {path} does not exist (expected JSONL with one "
                                '{"prompt": ..., "chosen": ..., "rejected": ...} per line)')
    text = path.read_text(encoding="utf-8")
    pairs: list[PreferencePair] = []
    if path.suffix.lower() == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: a .json preference file must hold a list of objects, "
                             f"got {type(records).__name__}")
        pairs = [_pair_from(record, f"{path}, entry {i}") for i, record in enumerate(records)]
    else:
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({error})") from None
            pairs.append(_pair_from(record, f"{path}, line {line_number}"))
    if not pairs:
        raise ValueError(f"{path}: no preference pairs in the file")
    return pairs


def save_preference_pairs(path: str | Path, pairs: Iterable[PreferencePair]) -> None:
    """Write pairs as JSONL (UTF-8, one object per line), atomically: a reader never sees half a file."""
    lines = [json.dumps(asdict(pair), ensure_ascii=False) for pair in pairs]
    write_atomically(path, ("\n".join(lines) + "\n").encode("utf-8") if lines else b"")
