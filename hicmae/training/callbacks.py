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
    Defaults: ``save_last=True``; ``last.ckpt`` always holds the state training ended with.
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

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # With step- or epoch-interval saving, the final step may fall between two saves: last.ckpt should
        # still hold the state training ended with.
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

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


class Interruption(Callback):
    """Ends an interrupted run with one line: which checkpoint there is and the command that resumes it.

    SIGTERM (a scheduler's pre-emption): Lightning stops at the end of the current batch on every process;
    this callback then writes ``last.ckpt`` there (atomically, through the run's :class:`AtomicCheckpoint`).
    Ctrl-C can arrive in the middle of a step, so nothing is written then: the line names the last
    checkpoint written before it.
    """

    def __init__(self, resume_command: str):
        self.resume_command = resume_command

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        saver = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, AtomicCheckpoint)), None)
        step = trainer.global_step
        if isinstance(exception, SIGTERMException) and saver is not None and saver.dirpath:
            path = os.path.join(saver.dirpath, saver.CHECKPOINT_NAME_LAST + saver.FILE_EXTENSION)
            saver._save_checkpoint(trainer, path)
            what = f"wrote {path} at step {step}"
        else:
            what = _last_checkpoint(saver)
        kind = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
        if trainer.is_global_zero:
            log.warning("interrupted (%s) at step %d: %s. Resume: %s", kind, step, what, self.resume_command)


def _last_checkpoint(saver) -> str:
    path = Path(saver.dirpath) / "last.ckpt" if saver is not None and saver.dirpath else None
    if path is None or not path.exists():
        return "no checkpoint was written yet, so a resume starts over"
    step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    return f"nothing written now; the last checkpoint is {path} (step {step})"


class BadSampleMonitor(Callback):
    """Logs the data module's count of skipped bad clips each epoch (the data module enforces the limit)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        counts = getattr(trainer.datamodule, "bad_sample_counts", lambda: {})() if trainer.datamodule else {}
        if counts:
            pl_module.log("data/bad_samples", float(counts.get("bad", 0)), sync_dist=True, reduce_fx="sum")
            if counts.get("bad"):
                log.warning("skipped %d bad clips of %d draws so far", counts["bad"], counts.get("draws", 0))


class ReconstructionImages(Callback):
    """Every ``every_n_steps`` optimiser steps, saves a PNG of masked input / reconstruction / target for the
    first clip of the batch (video frames and the spectrogram) under ``<run folder>/reconstructions/`` and
    sends it to loggers that take images (wandb's ``log_image``, TensorBoard's ``add_figure``)."""

    def __init__(self, every_n_steps: int = 1000, num_frames: int = 4, out_dir: str | None = None):
        self.every_n_steps = int(every_n_steps)
        self.num_frames = int(num_frames)
        self.out_dir = out_dir
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (not trainer.is_global_zero or self.every_n_steps <= 0 or step % self.every_n_steps
                or step == self._last_step or not hasattr(pl_module, "_masks")):
            return
        self._last_step = step
        path = self.render(trainer, pl_module, batch, step)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="reconstruction", images=[str(path)], step=step)

    def render(self, trainer, pl_module, batch, step: int) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from hicmae.training.recon import reconstruct_audio, reconstruct_video

        one = {k: v[:1] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        video_mask, audio_mask = pl_module._masks(one)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            out = pl_module.model(one["video"], video_mask, one["audio"], audio_mask)
        pl_module.train(was_training)
        config = pl_module.config
        vid = reconstruct_video(one["video"][0].cpu(), video_mask[0].cpu(), out.pred_video[0].cpu(), config)
        aud = reconstruct_audio(one["audio"][0].cpu(), audio_mask[0].cpu(), out.pred_audio[0].cpu(), config)
        frames = torch.linspace(0, vid["target"].shape[0] - 1, self.num_frames).long().tolist()
        rows = ("masked", "reconstruction", "target")
        fig, axes = plt.subplots(3, len(frames) + 1, figsize=(2.2 * (len(frames) + 1), 6.6), squeeze=False)
        for r, name in enumerate(rows):
            for c, f in enumerate(frames):
                axes[r, c].imshow(vid[name][f].numpy())
                axes[r, c].set_title(f"{name} t={f}", fontsize=8)
            axes[r, -1].imshow(aud[name].t().numpy(), origin="lower", aspect="auto", cmap="magma")
            axes[r, -1].set_title(f"{name} fbank", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"step {step}")
        fig.tight_layout()
        out_dir = Path(self.out_dir or Path(trainer.default_root_dir) / "reconstructions")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"step_{step:08d}.png"
        fig.savefig(path, dpi=80)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure"):
                experiment.add_figure("reconstruction", fig, global_step=step)
        plt.close(fig)
        return path
