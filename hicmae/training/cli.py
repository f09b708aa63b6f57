"""The LightningCLI behind ``pretrain.py`` and ``finetune.py``.

What it adds to plain LightningCLI: the data module's input sizes follow the model's config (one source of
truth); one folder per run (``--trainer.default_root_dir``, see :mod:`hicmae.training.run_folder`) with the
resolved config, an atomic ``last.ckpt`` (so ``--ckpt_path last`` resumes), the logs (CSV always, wandb
offline unless configured) and results; an interrupted run says how to resume; a mistyped option gets
the nearest valid one; and, for fine-tuning, a test of the best checkpoint right after ``fit``.
HiCMAE's own errors end the command with their one-line message instead of a traceback
(``HICMAE_DEBUG=1`` shows it).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import signal
import sys
from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from hicmae.data import HiCMAEDataModule
from hicmae.errors import HiCMAEError
from hicmae.training import run_folder
from hicmae.training.base import model_config
from hicmae.training.callbacks import AtomicCheckpoint, BadSampleMonitor, Interruption
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


class HiCMAEArgumentParser(LightningArgumentParser):
    """Adds the nearest valid option to "unrecognized arguments" errors."""

    def error(self, message: str, ex: Exception | None = None):
        parser = getattr(ex, "subcommand_parser", None) or self
        hints = []
        for unknown in re.findall(r"(--[\w.]+)", message) if "nrecognized" in message else []:
            options = _option_strings(parser)
            close = difflib.get_close_matches(unknown, options, n=1, cutoff=0.75)
            if close and close[0] != unknown:
                hints.append(f"{unknown}: did you mean {close[0]}?")
        super().error(message + ("" if not hints else " (" + "; ".join(hints) + ")"), ex)


def _option_strings(parser) -> list[str]:
    options = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    for action in parser._actions:  # the subcommands' own options
        for sub in (getattr(action, "choices", None) or {}).values() if hasattr(action, "_name_parser_map") else ():
            options += _option_strings(sub)
    return options


class HiCMAECLI(LightningCLI):
    def __init__(self, model_class, args=None, run: bool = True, **kwargs):
        _wandb_offline_unless_configured()
        run_folder.silence_lightning_noise()
        self._args = list(args) if isinstance(args, (list, tuple)) else None
        # Our modules build their own optimiser and schedule: no --optimizer / --lr_scheduler options.
        from hicmae.training.base import Trainer  # accepts precision: auto (bf16 on Ampere or newer)

        kwargs.setdefault("trainer_class", Trainer)
        super().__init__(model_class, HiCMAEDataModule, save_config_callback=run_folder.RunConfig,
                         parser_class=HiCMAEArgumentParser, auto_configure_optimizers=False, args=args, run=run,
                         **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        for field in _SIZES:
            parser.link_arguments(("model.model_preset", "model.model_overrides"), f"data.{field}",
                                  compute_fn=_size_fn(field))
        parser.add_argument("--resume_from_epoch_start", type=bool, default=False,
                            help="with --ckpt_path: when the checkpoint's place inside its epoch cannot be restored, "
                                 "read that epoch again from its first clip instead of stopping")

    # ------------------------------------------------------------------ the run folder
    def _config(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    @property
    def run_dir(self) -> Path:
        return Path(self._config()["trainer"].get("default_root_dir") or os.getcwd())

    def before_instantiate_classes(self) -> None:
        run_folder.place_loggers(self._config()["trainer"], self.run_dir)

    def before_fit(self) -> None:
        run_folder.refuse_second_run(self.run_dir, resuming=bool(self._config().get("ckpt_path")))

    def _run_subcommand(self, subcommand: str) -> None:
        root = self.run_dir
        existed = {p for p in (root, root / "logs", root / "checkpoints", root / "wandb") if p.is_dir()}
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            run_folder.remove_empty_folders(root, existed)
            raise

    # ------------------------------------------------------------------ callbacks
    def default_checkpoint(self) -> ModelCheckpoint:
        return AtomicCheckpoint()

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        config = self._config()
        argv = None if self._args is None else [sys.argv[0], *self._args]
        extra = [BadSampleMonitor(), ResumableData(restart_epoch=bool(config.get("resume_from_epoch_start"))),
                 Interruption(run_folder.resume_command(argv))]
        default = [cb for cb in trainer.callbacks if type(cb) is ModelCheckpoint and cb.monitor is None
                   and cb.dirpath is None and cb.filename is None]
        if default and len(trainer.checkpoint_callbacks) == len(default):
            # Lightning's default (non-atomic, in the per-version log folder) becomes ours; a checkpoint
            # callback the user configured, or --trainer.enable_checkpointing false, is left as it is.
            trainer.callbacks = [cb for cb in trainer.callbacks if cb not in default]
            extra.append(self.default_checkpoint())
        trainer.callbacks.extend(extra)
        return trainer

    def after_fit(self) -> None:
        ckpt = self.trainer.checkpoint_callback
        if ckpt is not None and ckpt.dirpath and run_folder.is_global_zero():
            log.warning("run folder %s: checkpoints in %s", self.run_dir, ckpt.dirpath)


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
        data = self._config()["data"]
        if not data.get("val_manifest"):
            return AtomicCheckpoint()
        task = self._config()["model"]["task"]
        monitor = {"classification": "val/war", "multilabel": "val/map", "regression": "val/ccc"}[task]
        return AtomicCheckpoint(monitor=monitor, mode="max", filename="best-{epoch}", auto_insert_metric_name=False)

    def after_fit(self) -> None:
        super().after_fit()
        cfg = self._config()
        if not cfg.get("test_after_fit") or not cfg["data"].get("test_manifest"):
            return
        selecting = next((cb for cb in self.trainer.checkpoint_callbacks if cb.monitor), None)
        best = getattr(selecting, "best_model_path", "") if selecting is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        self.after_test()

    def after_test(self) -> None:
        results = getattr(self.model, "last_results_dir", None)
        if results is not None and run_folder.is_global_zero():
            names = ", ".join(p.name for p in sorted(Path(results).iterdir()) if not p.name.startswith("."))
            log.warning("test results in %s: %s", results, names)


def _main(cli_class, args) -> None:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        cli_class(args=args)
    except SIGTERMException:
        sys.exit(128 + signal.SIGTERM)  # stopped, not finished: the shell convention for a SIGTERM
    except HiCMAEError as err:
        if os.environ.get("HICMAE_DEBUG"):
            raise
        if run_folder.is_global_zero():  # every process raises the same error: say it once
            print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def pretrain_main(args=None) -> None:
    _main(PretrainCLI, args)


def finetune_main(args=None) -> None:
    _main(FinetuneCLI, args)
