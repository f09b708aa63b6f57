"""Initialise a model from our Lightning checkpoint, a safetensors release, or an original ``.pth``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from hicmae.checkpoint import LoadReport, load_original_checkpoint, load_state_dict_into
from hicmae.errors import CheckpointError

log = logging.getLogger(__name__)

# Attribute names under which our LightningModules hold the model.
_MODULE_PREFIX = "model."


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model weights in ``path``, with our Lightning wrapper prefix removed."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix == ".ckpt":
        return module_weights(read_lightning_checkpoint(path))
    return load_original_checkpoint(path)["model"]


def read_lightning_checkpoint(path: str | os.PathLike) -> dict:
    """A ``pretrain.py`` / ``finetune.py`` checkpoint, loaded safely (``weights_only=True``)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except Exception as exc:
        raise CheckpointError(path, f"not a Lightning checkpoint that can be loaded safely ({exc})"[:300]) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(path, "no 'state_dict' in this Lightning checkpoint")
    return ckpt


def module_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    """The model's weights in a Lightning checkpoint, without the LightningModule's ``model.`` prefix."""
    return {k[len(_MODULE_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(_MODULE_PREFIX)}


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load what fits; log (and return) missing, unexpected and shape-skipped keys."""
    report = load_state_dict_into(model, read_weights(path), strict=False)
    if not any(k for k in model.state_dict() if k not in report.missing):
        raise CheckpointError(path, f"no weight of this checkpoint fits {type(model).__name__}: {report}")
    log.warning("initialised %s from %s: %s", type(model).__name__, path, report)
    return report
