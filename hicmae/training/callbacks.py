"""Callbacks: atomic checkpoints in a stable folder, data-pipeline health, reconstruction images."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)


class AtomicCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that never leaves a half-written file, in a folder that survives restarts.

    Each checkpoint is written to a hidden temporary file in the same folder, flushed to disk, then renamed
    over the target with ``os.replace`` (atomic on POSIX), so a crash or kill while saving leaves the previous
    ``last.ckpt`` intact. Without an explicit ``dirpath`` the folder is ``<default_root_dir>/checkpoints``
    (not the logger's per-run version folder) so that ``--ckpt_path last`` finds the previous run's file.
    Defaults: ``save_last=True``.
    """

    def __init__(self, *args, save_last: bool | str | None = True, **kwargs):
        super().__init__(*args, save_last=save_last, **kwargs)

    def _default_dir(self, trainer: pl.Trainer) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")

    def setup(self, trainer, pl_module, stage) -> None:
        self._default_dir(trainer)
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer) -> set[str]:
        self._default_dir(trainer)
        return super()._find_last_checkpoints(trainer)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        path = Path(filepath)
        tmp = path.with_name(f".{path.name}.partial")
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            from weakref import proxy

            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


class BadSampleMonitor(Callback):
    """Logs the data module's count of skipped bad clips each epoch (the data module enforces the limit)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        counts = getattr(trainer.datamodule, "bad_sample_counts", lambda: {})() if trainer.datamodule else {}
        if counts:
            pl_module.log("data/bad_samples", float(counts.get("bad", 0)), sync_dist=True, reduce_fx="sum")
            if counts.get("bad"):
                log.warning("skipped %d bad clips of %d draws so far", counts["bad"], counts.get("draws", 0))
