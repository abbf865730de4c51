"""The order and indexing of a run's samples: training draws `(epoch, draw)` pairs, validation shards by rank.

Reproducibility contract: the training order of epoch e is a pure function of (train.seed, e, world size, rank) and
every sample's augmentation of (train.seed, e, draw) (see `MappedDataset.draw`), so a run resumed at an epoch boundary
sees exactly the batches an uninterrupted run would. The epoch travels with every index (`EpochSampler` yields
(epoch, draw) pairs), so it reaches worker processes whatever their lifetime.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from posepart.data.mixing import SourcePlan
from posepart.targets.mapper import MappedDataset


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, draw): a permutation drawn from a generator seeded by (seed, epoch), sharded over ranks.

    Like `DistributedSampler` (rank r takes every world-th index of the padded permutation, so all ranks run the same
    number of steps), but usable with one process too. Lightning calls `set_epoch` before each training epoch.
    With a `plan` (several sources), an epoch is `plan.draws` (weighted, see `SourcePlan`) instead of randperm(size).
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0,
                 plan: SourcePlan | None = None) -> None:
        size = plan.epoch_size if plan is not None else size
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.shuffle, self.plan = size, seed, shuffle, plan
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.per_rank = -(-size // num_replicas)  # ceil: pad by wrapping, as DistributedSampler
        self.resume_at: tuple[int, int] | None = None  # (epoch, draws): skip that many of that epoch, once

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.plan is not None:
            order = self.plan.draws(generator) if self.shuffle else sorted(self.plan.draws(generator))
        elif self.shuffle:
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.num_replicas
        order = (order * (-(-total // self.size)))[:total]
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.indices()
        if self.resume_at is not None and self.resume_at[0] == self.epoch:  # a run resumed inside this epoch
            indices, self.resume_at = indices[self.resume_at[1]:], None
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return self.per_rank


class MixedDataset(Dataset):
    """Index with (epoch, draw): finds the draw's source and sample (`SourcePlan.locate`), sets that source's epoch
    (in whichever process runs it) and maps the sample with augmentation stream `draw`. Adds `source` to the sample."""

    def __init__(self, parts: Sequence[MappedDataset], plan: SourcePlan) -> None:
        self.parts, self.plan = list(parts), plan

    def __len__(self) -> int:
        return self.plan.epoch_size

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, draw = key
        s, index = self.plan.locate(draw)
        mapped = self.parts[s]
        if epoch != mapped.epoch:
            mapped.set_epoch(epoch)
        sample = mapped.draw(index, draw)
        sample["source"] = np.int64(s)
        return sample


class ValidationSet(Dataset):
    """The validation sources one after another; samples carry `source` and `index` (position in this set), which
    `PosePartDataModule.val_item` turns back into the record (a broken sample's replacement names its own record)."""

    def __init__(self, parts: Sequence[MappedDataset]) -> None:
        self.parts = list(parts)
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        s = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return s, int(index - self.offsets[s])

    def __getitem__(self, index: int) -> dict[str, Any]:
        s, i = self.locate(index)
        sample = self.parts[s][i]
        sample["source"], sample["index"] = np.int64(s), np.int64(self.offsets[s] + int(sample["record"]))
        return sample


class ShardSampler(Sampler[int]):
    """Evaluation order: rank r gets indices r, r + world, ... (no padding, so no image is scored twice)."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.items = list(range(rank, size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
