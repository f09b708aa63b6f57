"""The LightningCLI behind ``pretrain.py`` and ``finetune.py``.

What it adds to plain LightningCLI: the data module's input sizes follow the model's config (one source of
truth), a CSV logger by default, an atomic ``last.ckpt`` in ``<default_root_dir>/checkpoints`` (so
``--ckpt_path last`` resumes), wandb offline unless configured, and, for fine-tuning, a test of the best
checkpoint right after ``fit``.
"""

from __future__ import annotations

import logging
import os

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI

from hicmae.data import HiCMAEDataModule
from hicmae.training.base import model_config
from hicmae.training.callbacks import AtomicCheckpoint, BadSampleMonitor
from hicmae.training.finetune_module import FinetuneModule
from hicmae.training.pretrain_module import PretrainModule
from hicmae.training.resumable import ResumableData

log = logging.getLogger(__name__)

_SIZES = {  # data module argument -> function of the model config
    "img_size": lambda c: c.img_size,
    "num_frames": lambda c: c.num_frames,
    "audio_frames": lambda c: c.audio_size[0],
    "mel_bins": lambda c: c.audio_size[1],
    "patch_size": lambda c: c.patch_size,
    "tubelet_size": lambda c: c.tubelet_size,
    "video_mask_ratio": lambda c: c.video_mask_ratio,
    "audio_mask_ratio": lambda c: c.audio_mask_ratio,
}


def _size_fn(field: str):
    return lambda preset, overrides: _SIZES[field](model_config(preset, overrides))


def _wandb_offline_unless_configured() -> None:
    # wandb must never block a run waiting for a login or the network.
    configured = os.environ.get("WANDB_API_KEY") or os.path.exists(os.path.expanduser("~/.netrc"))
    if not configured:
        os.environ.setdefault("WANDB_MODE", "offline")


class HiCMAECLI(LightningCLI):
    def __init__(self, model_class, args=None, run: bool = True, **kwargs):
        _wandb_offline_unless_configured()
        defaults = {"logger": {"class_path": "pytorch_lightning.loggers.CSVLogger",
                               "init_args": {"save_dir": "runs", "name": "hicmae"}}}
        defaults.update(kwargs.pop("trainer_defaults", {}))
        super().__init__(model_class, HiCMAEDataModule, save_config_kwargs={"overwrite": True},
                         trainer_defaults=defaults, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        for field in _SIZES:
            parser.link_arguments(("model.model_preset", "model.model_overrides"), f"data.{field}",
                                  compute_fn=_size_fn(field))
        parser.add_argument("--resume_from_epoch_start", type=bool, default=False,
                            help="with --ckpt_path: when the checkpoint's place inside its epoch cannot be restored, "
                                 "read that epoch again from its first clip instead of stopping")

    def default_checkpoint(self) -> ModelCheckpoint:
        return AtomicCheckpoint()

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config[self.subcommand] if self.subcommand else self.config
        extra = [BadSampleMonitor(), ResumableData(restart_epoch=bool(config.get("resume_from_epoch_start")))]
        default = [cb for cb in trainer.callbacks if type(cb) is ModelCheckpoint and cb.monitor is None
                   and cb.dirpath is None and cb.filename is None]
        if default and len(trainer.checkpoint_callbacks) == len(default):
            # Lightning's default (non-atomic, in the per-version log folder) becomes ours; a checkpoint
            # callback the user configured, or --trainer.enable_checkpointing false, is left as it is.
            trainer.callbacks = [cb for cb in trainer.callbacks if cb not in default]
            extra.append(self.default_checkpoint())
        trainer.callbacks.extend(extra)
        return trainer


class PretrainCLI(HiCMAECLI):
    def __init__(self, args=None, run: bool = True, **kwargs):
        super().__init__(PretrainModule, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"data.task": "pretrain"})


class FinetuneCLI(HiCMAECLI):
    """Fine-tuning CLI: ``data.task`` follows ``model.task``; ``fit`` is followed by ``test`` on the best
    checkpoint (selected on ``model``'s validation metric) when a test manifest is given."""

    def __init__(self, args=None, run: bool = True, **kwargs):
        super().__init__(FinetuneModule, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("model.task", "data.task")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="after fit, test the best checkpoint (or the final weights) on the test manifest")

    def default_checkpoint(self) -> ModelCheckpoint:
        data = self.config[self.subcommand]["data"] if self.subcommand else self.config["data"]
        if not data.get("val_manifest"):
            return AtomicCheckpoint()
        task = (self.config[self.subcommand] if self.subcommand else self.config)["model"]["task"]
        monitor = {"classification": "val/war", "multilabel": "val/map", "regression": "val/ccc"}[task]
        return AtomicCheckpoint(monitor=monitor, mode="max", filename="best-{epoch}", auto_insert_metric_name=False)

    def after_fit(self) -> None:
        cfg = self.config[self.subcommand]
        if not cfg.get("test_after_fit") or not cfg["data"].get("test_manifest"):
            return
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None and ckpt.monitor else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def pretrain_main(args=None) -> None:
    PretrainCLI(args=args)


def finetune_main(args=None) -> None:
    FinetuneCLI(args=args)
