"""Exact mid-epoch resume: the training order is a function of (seed, epoch) and a resumed run skips the
batches the interrupted run had already trained on.

Lightning restores the model, optimiser, scheduler and loop counters, but restarts a plain ``DataLoader``
from the beginning of the epoch with a new shuffle. :class:`ResumableData` (a callback, added by our CLI)
wraps the data module's training loader in :class:`ResumableLoader`, whose shuffle and worker seeds are
re-derived from ``(seed, epoch)`` every epoch, and on resume fast-forwards past the batches already done.
Skipped batches are fetched and discarded (not skipped by index) so that per-worker random streams of
the dataset stay where the uninterrupted run had them. Under DDP Lightning replaces the sampler with a
``DistributedSampler``, which is already (seed, epoch)-deterministic.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler

log = logging.getLogger(__name__)


class EpochRandomSampler(RandomSampler):
    """A ``RandomSampler`` whose generator is re-seeded from (seed, epoch); Lightning calls ``set_epoch``."""

    def __init__(self, data_source, seed: int = 0, generator: torch.Generator | None = None):
        self.seed = int(seed)
        super().__init__(data_source, generator=generator or torch.Generator())
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.generator.manual_seed(self.seed * 1_000_003 + self.epoch)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` with (seed, epoch)-deterministic shuffling that can skip already-trained batches."""

    def __init__(self, dataset, *args, seed: int = 0, shuffle: bool | None = None, sampler=None, generator=None,
                 **kwargs):
        # The sampler and the workers' base seed use separate generators, so the order does not depend on
        # when Lightning calls set_epoch relative to iter().
        generator = generator or torch.Generator().manual_seed(seed)
        if shuffle and sampler is None:
            sampler = EpochRandomSampler(dataset, seed=seed)
        super().__init__(dataset, *args, sampler=sampler, generator=generator, **kwargs)
        self.seed = seed
        self.skip = (-1, 0)  # (epoch, batches) to fast-forward past

    @classmethod
    def wrap(cls, loader: DataLoader, seed: int = 0) -> "ResumableLoader":
        if isinstance(loader, ResumableLoader):
            return loader
        shuffle = isinstance(loader.sampler, RandomSampler)
        return cls(loader.dataset, batch_size=loader.batch_size, shuffle=shuffle, drop_last=loader.drop_last,
                   num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                   timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                   prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
                   persistent_workers=loader.persistent_workers, seed=seed)

    # Lightning's "stateful loader" protocol. The position itself comes from the restored loop counters
    # (see ResumableData), which know how many batches were trained rather than prefetched.
    def state_dict(self) -> dict:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            log.warning("resuming with data seed %s, the checkpoint used %s: the order will differ",
                        self.seed, state["seed"])

    def _epoch(self) -> int:
        return getattr(self.sampler, "epoch", 0)

    def __iter__(self):
        # Lightning may call iter() more than once per epoch: re-seed so every call yields the same order.
        if isinstance(self.sampler, EpochRandomSampler):
            self.sampler.set_epoch(self.sampler.epoch)
        self.generator.manual_seed(self.seed * 1_000_003 + self._epoch() + 7_919)
        if hasattr(self.dataset, "set_epoch"):  # per-epoch augmentation streams (hicmae datasets)
            self.dataset.set_epoch(self._epoch())
        iterator = super().__iter__()
        epoch, skip = self.skip
        if skip and epoch == self._epoch():
            log.info("resuming inside epoch %d: skipping %d batches already trained on", epoch, skip)
            for _ in range(skip):
                next(iterator)
        return iterator


class ResumableData(pl.Callback):
    """Makes the data module's training loader a :class:`ResumableLoader` and positions it on resume."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._resume: tuple[int, int] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or dm is None or getattr(dm.train_dataloader, "_hicmae_resumable", False):
            return
        original = dm.train_dataloader

        def train_dataloader():
            loader = ResumableLoader.wrap(original(), self.seed)
            if self._resume is not None:
                epoch, batches = self._resume
                loader.skip = (epoch, batches)
                if hasattr(loader.sampler, "set_epoch"):
                    loader.sampler.set_epoch(epoch)
            return loader

        train_dataloader._hicmae_resumable = True
        dm.train_dataloader = train_dataloader

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        try:
            loop = checkpoint["loops"]["fit_loop"]
            # "processed": batches whose step finished (a checkpoint saved in on_train_batch_end has
            # not yet counted its batch as "completed").
            done = loop["epoch_loop.batch_progress"]["current"]["processed"]
            epoch = loop["epoch_progress"]["current"]
        except KeyError:
            return
        if epoch["processed"] > epoch["completed"]:  # saved at the end of an epoch: the next one starts afresh
            self._resume = (int(epoch["completed"]) + 1, 0)
        else:
            self._resume = (int(epoch["completed"]), int(done))
