"""Resume inside an epoch without replaying it: the training loader starts where the checkpoint stopped.

The data module's training loader reads through a :class:`~hicmae.data.sampler.ClipSampler`: the order
of an epoch is a function of (seed, epoch) and every random draw of a sample a function of (seed, epoch,
rank, index), so a resumed run only has to skip, in the sampler, the samples each process had already
trained on in the interrupted epoch. They are never decoded again: resuming late in a VoxCeleb2 epoch
costs what resuming early does. Lightning restores the model, optimiser, scheduler and loop counters; the
loop counters also say how many batches of the epoch were done, which :class:`ResumableData` turns into
the sampler's start.

Why not torchdata's ``StatefulDataLoader``: it records how far the loader got and, for a sampler without
state, fast-forwards it by drawing and discarding indices: the same skip, plus per-worker snapshots that
our keyed draws do not need, one more pinned dependency, and the loader's notion of "how far" rather than
Lightning's count of batches actually trained. The checkpoint also records the number of processes, the
per-process batch size and the seed: a mid-epoch position means nothing under another layout, so a
resume that changes them stops with an error instead of silently reading another part of the epoch.
"""

from __future__ import annotations

import logging
import warnings

import pytorch_lightning as pl

from hicmae.data.sampler import ClipSampler
from hicmae.errors import CheckpointError

log = logging.getLogger(__name__)

_RESTART_HINT = ("To read this epoch again from its first clip instead (Lightning still counts the batches "
                 "done, so the epoch ends that many batches early), add --resume_from_epoch_start true; or "
                 "resume from a checkpoint written at the end of an epoch.")


class ResumableData(pl.Callback):
    """Positions the data module's training loader at the checkpoint's place inside its epoch.

    ``restart_epoch=True``: when that place cannot be restored (an unreadable loop state, or a different
    number of processes, batch size or seed), start the epoch's data order from the beginning with a
    warning instead of stopping.
    """

    def __init__(self, restart_epoch: bool = False):
        self.restart_epoch = restart_epoch
        self._resuming = False
        self._resume: tuple[int, int] | None = None  # (epoch, batches done in it), when it could be read
        self._saved_layout: dict | None = None  # of the checkpoint's run
        self._layout: dict | None = None  # of this run
        self._ckpt_path = "the checkpoint"

    # ------------------------------------------------------------------ saving: the run's data layout
    def state_dict(self) -> dict:
        return dict(self._layout or {})

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved_layout = dict(state_dict) or None

    # ------------------------------------------------------------------ loading: where the epoch stopped
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._resuming = True
        self._ckpt_path = str(getattr(trainer, "ckpt_path", None) or "the checkpoint")
        try:
            loop = checkpoint["loops"]["fit_loop"]
            # "processed": batches whose step finished (a checkpoint saved in on_train_batch_end has not yet
            # counted its batch as "completed").
            done = int(loop["epoch_loop.batch_progress"]["current"]["processed"])
            epoch = loop["epoch_progress"]["current"]
            processed, completed = int(epoch["processed"]), int(epoch["completed"])
        except (KeyError, TypeError) as exc:
            self._cannot_restore(f"its training-loop state has no {exc} entry (another Lightning version?)")
            return
        # Saved at the end of an epoch: the next one starts afresh.
        self._resume = (completed + 1, 0) if processed > completed else (completed, done)

    def _cannot_restore(self, why: str) -> None:
        if not self.restart_epoch:
            raise CheckpointError(self._ckpt_path, f"cannot resume inside the epoch: {why}. {_RESTART_HINT}")
        log.warning("%s: %s; the epoch's data order restarts from its first clip", self._ckpt_path, why)
        if self._resume:
            self._resume = (self._resume[0], 0)

    # ------------------------------------------------------------------ the data module's training loader
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or dm is None or getattr(dm.train_dataloader, "_hicmae_resumable", False):
            return
        original = dm.train_dataloader

        def train_dataloader():
            loader = original()
            self._position(loader, trainer)
            return loader

        train_dataloader._hicmae_resumable = True
        dm.train_dataloader = train_dataloader

    def _position(self, loader, trainer: pl.Trainer) -> None:
        from hicmae.data.shards.dataset import ShardDataset

        sampler, dataset = getattr(loader, "sampler", None), getattr(loader, "dataset", None)
        if isinstance(sampler, ClipSampler):
            self._layout = {"world_size": sampler.num_replicas, "batch_size": loader.batch_size, "seed": sampler.seed}
            start = lambda epoch, batches: sampler.start_at(epoch, batches * loader.batch_size)  # noqa: E731
        elif isinstance(dataset, ShardDataset):
            # A shard reader's share depends on the number of loader workers too.
            self._layout = {"world_size": dataset.world, "batch_size": loader.batch_size, "seed": dataset.seed,
                            "workers": loader.num_workers}
            start = dataset.start_at
        else:
            if self._resume and self._resume[1]:
                self._cannot_restore("the training loader reads through neither a hicmae ClipSampler nor shards")
            return
        if not self._resuming:
            return
        # Lightning restored its loops before it asks for the loader: its epoch stands in for an unread one.
        epoch, batches = self._resume or (trainer.current_epoch, 0)
        if batches and self._saved_layout is not None and self._saved_layout != self._layout:
            self._cannot_restore(f"it was written by a run with {_describe(self._saved_layout)}, this run has "
                                 f"{_describe(self._layout)}")
            batches = 0
        start(epoch, batches)
        if batches:
            log.info("resuming inside epoch %d: this process starts after its batch %d", epoch, batches)
            # Lightning warns that a mid-epoch resume without a stateful loader is unreliable; ours is exact.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")


def _describe(layout: dict) -> str:
    workers = f", {layout['workers']} loader workers" if "workers" in layout else ""
    return (f"{layout.get('world_size')} processes x batch {layout.get('batch_size')} "
            f"(data seed {layout.get('seed')}{workers})")
