"""A callback the multi-process tests add to real runs of pretrain.py / finetune.py (``--config``), to see
from outside what every process did. It only observes, except for two explicit fault injections
(``stop_at_step``: end the run there, as a pre-empted job; ``nan_at``: a non-finite input on one process).
Each process writes ``<out_dir>/rank<R>.pt`` at the end, or ``rank<R>.error.txt`` if the run raised."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch

KEYS = ("video", "audio", "video_mask", "audio_mask", "label")


class Probe(pl.Callback):
    def __init__(self, out_dir: str, stop_at_step: int | None = None, nan_at: list[int] | None = None):
        self.out_dir = Path(out_dir)
        self.stop_at_step = stop_at_step
        self.nan_at = nan_at  # [rank, global step]
        self.first_batch: dict | None = None
        self.batch_before_step: dict | None = None
        self.indices: dict[int, list[int]] = {}
        self.module_masks: list | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.batch_before_step is None:
            self.batch_before_step = {k: batch[k].detach().cpu().clone() for k in KEYS if k in batch}
        if self.nan_at and [trainer.global_rank, trainer.global_step] == list(self.nan_at):
            batch["video"][0] = float("nan")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # After the step: the batch as the model saw it (fine-tuning mixes it in place).
        self.indices.setdefault(trainer.current_epoch, []).extend(batch["index"].tolist())
        if self.first_batch is None:
            self.first_batch = {k: batch[k].detach().cpu().clone() for k in KEYS if k in batch}
            if hasattr(pl_module, "_masks"):  # the masks the module draws for a batch that carries none
                bare = {k: v for k, v in batch.items() if not k.endswith("_mask")}
                self.module_masks = [m.cpu() for m in pl_module._masks(bare, "train", batch_idx)]
        if self.stop_at_step is not None and trainer.global_step >= self.stop_at_step:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"rank": trainer.global_rank, "world_size": trainer.world_size,
                    "is_global_zero": trainer.is_global_zero, "global_step": trainer.global_step,
                    "first_batch": self.first_batch, "batch_before_step": self.batch_before_step,
                    "module_masks": self.module_masks, "indices": self.indices,
                    "params": {n: p.detach().cpu().clone() for n, p in pl_module.named_parameters()}},
                   self.out_dir / f"rank{trainer.global_rank}.pt")

    def on_exception(self, trainer, pl_module, exception):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        text = f"{type(exception).__name__}: {exception}\n"
        (self.out_dir / f"rank{trainer.global_rank}.error.txt").write_text(text)


def launch_env(**extra) -> dict:
    """The test process's environment without any launcher variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_")) and k not in (
               "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
               "NODE_RANK")}
    env.update({"WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class SignalAt(pl.Callback):
    """Fault injection: the process sends itself ``signal`` after optimiser step ``step`` (a scheduler's SIGTERM,
    a user's Ctrl-C); only in a run that did not resume from a checkpoint."""

    def __init__(self, step: int, signal: str = "SIGTERM"):
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import signal

        if trainer.global_step == self.step and trainer.ckpt_path is None:
            os.kill(os.getpid(), getattr(signal, self.signal))
