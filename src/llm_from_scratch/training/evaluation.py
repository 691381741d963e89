"""How the trainer measures loss during a run: a fixed sample of windows spread over a split,
and the whole split at the end.

Why a sample, and why this one. Evaluating every window at every evaluation costs as much as
many training steps, so each evaluation scores `eval_batches` batches. Taking the *first*
batches of the split measures only the beginning of the text (for a corpus of plays, the first
plays), a biased estimate: on Shakespeare it read 1.961 where the whole split gives 1.894.
Here the windows are a seeded random sample of the whole split, drawn once: every evaluation of
a run scores the very same windows, so the points of the curve are comparable with each other.

Why a final pass. At the end of a run the loss over the whole split (or, for a big corpus, over
a large stated sample) is computed in fp32: that is the number to compare runs, presets and
other projects by, and it equals `llmfs evaluate perplexity --stride <context length>` on the
same checkpoint (disjoint windows; both score every token of the split once).

Why weighted by tokens. The loss of a split is the mean over its scored tokens, which is what
perplexity measures, so each batch's mean loss is weighted by how many targets it scored (the
last batch may be smaller; instruction data leaves prompt tokens out with the target -100).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch.utils.data import default_collate

from llm_from_scratch.training.distributed import DistInfo, EpochBatchSampler

IGNORE_INDEX = -100
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (inputs, targets) -> mean loss


def sample_indices(num_items: int, num_samples: int | None, seed: int) -> list[int]:
    """`num_samples` distinct indices out of range(num_items), seeded, in increasing order
    (all of them when `num_samples` is None or not smaller than `num_items`)."""
    if num_samples is None or num_samples >= num_items:
        return list(range(num_items))
    return list(_sample(num_items, num_samples, seed))


@functools.lru_cache(maxsize=8)
def _sample(num_items: int, num_samples: int, seed: int) -> tuple[int, ...]:
    """Drawn once per split and size: every evaluation of a run asks for the same windows, and a
    permutation of millions of windows is not free."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(sorted(torch.randperm(num_items, generator=generator)[:num_samples].tolist()))


def scored_targets(targets: torch.Tensor) -> int:
    """How many targets a batch's loss averages over (targets of -100 are not scored)."""
    return int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def split_loss(loss_fn: LossFn, dataset, indices: Sequence[int], batch_size: int, collate_fn=None,
               dist: DistInfo | None = None, progress: str | None = None) -> tuple[float, int]:
    """(mean loss per scored target, number of scored targets) over `dataset[indices]`.

    Under torchrun each rank scores its slice of every batch and the sums are added up, so the
    result equals one process's. `progress` names a progress bar (None: no bar).
    """
    dist = dist or DistInfo()
    sampler = EpochBatchSampler(len(indices), batch_size, shuffle=False, drop_last=False,
                                rank=dist.rank, world_size=dist.world_size)
    collate_fn = collate_fn or default_collate
    bar = None
    if progress is not None and dist.is_main:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(sampler), desc=progress, unit="batch", leave=False, dynamic_ncols=True)
    total, count = 0.0, 0
    for positions in sampler:  # this rank's slice of each batch (empty for some ranks at the end)
        if not positions:
            continue
        inputs, targets = collate_fn([dataset[indices[p]] for p in positions])
        n = scored_targets(targets)
        if n:
            total += float(loss_fn(inputs, targets)) * n
            count += n
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if dist.is_distributed:
        sums = torch.tensor([total, float(count)], dtype=torch.float64)
        torch.distributed.all_reduce(sums)
        total, count = sums[0].item(), int(sums[1].item())
    return (total / count if count else float("nan")), count
