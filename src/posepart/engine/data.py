"""`PosePartDataModule`: datasets, mappers and loaders of a training run, built from a `Config`.

Reproducibility contract: the training order of epoch e is a pure function of (train.seed, e, world size, rank) and
every sample's augmentation of (train.seed, e, index) (see `MappedDataset`), so a run resumed at an epoch boundary
sees exactly the batches an uninterrupted run would. The epoch travels with every index (`EpochSampler` yields
(epoch, index) pairs), so it reaches worker processes whatever their lifetime.
"""

from __future__ import annotations

from typing import Any, Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from posepart.data.format import DatasetError, PosePartDataset
from posepart.data.mapper import MappedDataset, Mapper, TargetConfig
from posepart.engine.config import Config, ConfigError
from posepart.schema import Schema


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index): a permutation drawn from a generator seeded by (seed, epoch), sharded over ranks.

    Like `DistributedSampler` (rank r takes every world-th index of the padded permutation, so all ranks run the same
    number of steps), but usable with one process too. Lightning calls `set_epoch` before each training epoch.
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.per_rank = -(-size // num_replicas)  # ceil: pad by wrapping, as DistributedSampler

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.num_replicas
        order = (order * (-(-total // self.size)))[:total]
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.indices()])

    def __len__(self) -> int:
        return self.per_rank


class EpochDataset(Dataset):
    """Index with (epoch, index): sets the epoch of the wrapped `MappedDataset` (in whichever process runs it)."""

    def __init__(self, mapped: MappedDataset) -> None:
        self.mapped = mapped

    def __len__(self) -> int:
        return len(self.mapped)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        if epoch != self.mapped.epoch:
            self.mapped.set_epoch(epoch)
        return self.mapped[index]


class ShardSampler(Sampler[int]):
    """Evaluation order: rank r gets indices r, r + world, ... (no padding, so no image is scored twice)."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.items = list(range(rank, size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _open(root: Any, key: str) -> PosePartDataset:
    try:
        return PosePartDataset.open(root)
    except DatasetError as err:
        raise DatasetError(f"{key} ({root}): {err}") from None


class PosePartDataModule(pl.LightningDataModule):
    """Opens `data.train` / `data.val` (posepart format) at construction, so `schema` is known before the model."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        data = config.data
        if data.train is None:
            raise ConfigError("data.train: no training dataset given (set it in the config or pass --train ROOT)")
        self.targets = TargetConfig(input_size=data.input_size, stride=data.stride, sigma=data.sigma,
                                    paf_width=data.paf_width)
        self.train_set = _open(data.train, "data.train")
        self.val_set = _open(data.val, "data.val") if data.val is not None else None
        if self.val_set is not None and self.val_set.schema != self.train_set.schema:
            raise DatasetError(f"data.val ({data.val}) has a different schema than data.train ({data.train})")
        self.augment = data.augment
        seed = config.train.seed
        self.train_mapped = MappedDataset(Mapper(self.train_set, self.targets, self.augment), seed=seed)
        self.val_mapped = (MappedDataset(Mapper(self.val_set, self.targets, None), seed=seed)
                           if self.val_set is not None else None)

    @property
    def schema(self) -> Schema:
        return self.train_set.schema

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, dataset: Dataset, sampler: Sampler, *, drop_last: bool = False) -> DataLoader:
        workers = self.config.data.workers
        # Workers are started anew every epoch (no persistent_workers): cheap next to an epoch, and never stale.
        return DataLoader(dataset, batch_size=self.config.data.batch_size, sampler=sampler, num_workers=workers,
                          collate_fn=default_collate, pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                          persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        sampler = EpochSampler(len(self.train_mapped), seed=self.config.train.seed, num_replicas=world, rank=rank)
        return self._loader(EpochDataset(self.train_mapped), sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_mapped is None:
            return []
        world, rank = self._world()
        return self._loader(self.val_mapped, ShardSampler(len(self.val_mapped), world, rank))
