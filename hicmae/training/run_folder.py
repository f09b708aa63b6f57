"""One folder per run: ``--trainer.default_root_dir`` holds everything a run writes.

    <run>/config.yaml          the resolved config of the latest start
    <run>/checkpoints/         last.ckpt and the others (``--ckpt_path last`` resumes)
    <run>/logs/metrics.csv     CSV metrics, continued by a resume (hparams.yaml beside it)
    <run>/wandb/               wandb's files (offline unless credentials), one wandb run per folder
    <run>/results/             fine-tuning test results; <run>/reconstructions/ pretraining images

A new run into a folder that already holds one is refused (resume it, or choose another folder), so
``last.ckpt`` and the logs never mix two runs.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import uuid
from pathlib import Path

from jsonargparse import Namespace
from pytorch_lightning.cli import SaveConfigCallback

from hicmae.errors import ConfigError

log = logging.getLogger(__name__)

CSV_LOGGER = "hicmae.training.loggers.RunCSVLogger"
_SAVES_INTO_RUN = ("CSVLogger", "RunCSVLogger", "WandbLogger", "TensorBoardLogger")


def _loggers(trainer_config) -> list:
    logger = trainer_config.get("logger")
    if logger in (None, True):
        return []
    return list(logger) if isinstance(logger, list) else [logger] if logger else []


def place_loggers(trainer_config, root: Path) -> None:
    """Loggers write into the run folder: an unset ``save_dir`` (or wandb's default ".") becomes ``root``; a
    wandb logger without an id gets the folder's own (so a resume continues the same wandb run)."""
    if trainer_config.get("logger") in (None, True):
        trainer_config["logger"] = Namespace(class_path=CSV_LOGGER, init_args=Namespace(save_dir=str(root)))
        return
    for logger in _loggers(trainer_config):
        name = str(logger.get("class_path", "")).rsplit(".", 1)[-1]
        args = logger.get("init_args")
        if name not in _SAVES_INTO_RUN or args is None:
            continue
        if args.get("save_dir") in (None, "", "."):
            args["save_dir"] = str(root)
        if name == "WandbLogger" and not args.get("id") and not args.get("version"):
            args["id"] = wandb_run_id(root)


def wandb_run_id(root: Path) -> str:
    """The wandb run id of this run folder, created on its first start."""
    path = root / "wandb" / "run_id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex[:8] + "\n")
    return path.read_text().strip()


def previous_run(root: Path) -> str | None:
    """What in ``root`` shows that a run already wrote there, or None."""
    checkpoints = sorted((root / "checkpoints").glob("*.ckpt")) if (root / "checkpoints").is_dir() else []
    if checkpoints:
        return f"checkpoints ({', '.join(p.name for p in checkpoints[:3])}{', ...' if len(checkpoints) > 3 else ''})"
    if (root / "logs" / "metrics.csv").exists():
        return "logs/metrics.csv"
    return None


def refuse_second_run(root: Path, resuming: bool) -> None:
    found = previous_run(root)
    if found and not resuming:
        raise ConfigError(f"{root} already holds a run ({found}): resume it with --ckpt_path last, or start a new "
                          "run in another folder with --trainer.default_root_dir DIR (or delete this one)")


def remove_empty_folders(root: Path, existed: set[Path]) -> None:
    """After a failed start: remove the folders this start created and left empty."""
    for folder in (root / "logs", root / "checkpoints", root / "wandb", root):
        if folder not in existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that resumes this run: the same arguments with ``--ckpt_path last``."""
    args = list(sys.argv if argv is None else argv)
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--ckpt_path":
            skip = True
            continue
        if arg.startswith("--ckpt_path="):
            continue
        kept.append(arg)
    launcher = "torchrun ... " if os.environ.get("TORCHELASTIC_RUN_ID") else "python "
    return launcher + shlex.join([*kept, "--ckpt_path", "last"])


class RunConfig(SaveConfigCallback):
    """Saves the resolved config as ``<run>/config.yaml`` (each start overwrites it) and sends it to the
    loggers that keep a run's configuration (wandb)."""

    def __init__(self, *args, **kwargs):
        kwargs.update(save_to_log_dir=False, overwrite=True)
        super().__init__(*args, **kwargs)

    def save_config(self, trainer, pl_module, stage: str) -> None:  # rank zero only
        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, root / self.config_filename, skip_none=False, overwrite=True,
                         multifile=False)
        import yaml

        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.log_hyperparams({"config": config})


def silence_lightning_noise() -> None:
    """Messages Lightning prints about our own usage that a user cannot act on, silenced for our entry points."""
    import warnings

    for pattern in (r".*isinstance\(treespec, LeafSpec\)",  # Lightning's own pytree use under torch 2.11
                    r"Total length of `list` across ranks is zero",  # no validation manifest: we return []
                    r"Checkpoint directory .* exists and is not empty"):  # resuming into the run folder
        warnings.filterwarnings("ignore", message=pattern)

    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _NoLitLoggerTip) for f in rank_zero.filters):
        rank_zero.addFilter(_NoLitLoggerTip())


class _NoLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def is_global_zero() -> bool:
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


