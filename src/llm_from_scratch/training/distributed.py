"""Data-parallel training across processes (and machines) with PyTorch's own engine.

Launch with ``torchrun --nproc_per_node=N -m llm_from_scratch train ...``. torchrun starts N
copies of the program and tells each its RANK, LOCAL_RANK and WORLD_SIZE through environment
variables. Each process (a *rank*) holds a full copy of the model and trains on its own slice of
every global batch; after `backward()`, DistributedDataParallel (DDP) averages the gradients
across ranks (an all-reduce), so every copy takes the same optimizer step and stays identical.

With a global batch of B windows split over N ranks of B/N each, the averaged gradient is the
gradient of the whole batch: N processes compute what one process computes with batch B (tested).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 prints, logs and writes checkpoints."""
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when started by torchrun; a no-op for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        # NCCL talks GPU to GPU; gloo works on CPUs (and everywhere else).
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    info = DistInfo(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    world_size=dist.get_world_size())
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.is_distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.item() / info.world_size


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of dataset indices for one rank, reshuffled every epoch from (seed + epoch).

    Every rank computes the same permutation; global batch k is positions
    [k * B, (k + 1) * B) of it, with B = batch_size * world_size, and rank r takes its
    r-th slice of batch_size indices. With world_size 1 this is an ordinary seeded shuffle.
    Because the order depends only on (seed, epoch), a resumed run can skip to where it was.
    """

    def __init__(self, num_items: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_items, self.batch_size = num_items, batch_size
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        # With several ranks every batch must be full, or the ranks would do different amounts of work.
        self.drop_last = drop_last or world_size > 1
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        global_batch = self.batch_size * self.world_size
        return self.num_items // global_batch if self.drop_last else math.ceil(self.num_items / global_batch)

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        global_batch = self.batch_size * self.world_size
        for k in range(len(self)):
            batch = order[k * global_batch:(k + 1) * global_batch]
            yield batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
