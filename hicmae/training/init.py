"""Initialise a model from our Lightning checkpoint, a safetensors release, or an original ``.pth``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from hicmae.checkpoint import (LoadReport, load_original_checkpoint, load_state_dict_into, read_safetensors,
                               safe_torch_load)
from hicmae.errors import SAFETENSORS, CheckpointError, describe_content

log = logging.getLogger(__name__)

# Attribute names under which our LightningModules hold the model.
_MODULE_PREFIX = "model."


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model weights in ``path``, with our Lightning wrapper prefix removed."""
    return _read(path)[0]


def _read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The weights and what the file records of the model that wrote them: ``model_preset`` and
    ``model_overrides`` in our Lightning checkpoints, the ``config`` in a release; None otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.suffix == ".safetensors" or describe_content(path) == SAFETENSORS:
        weights, metadata = read_safetensors(path)
        try:  # a release (see hicmae.checkpoint.save_release) records its ModelConfig
            recorded = {"config": json.loads(metadata["hicmae"])["config"]}
        except (KeyError, TypeError, ValueError):
            recorded = None
        return weights, recorded
    if path.suffix == ".ckpt":
        ckpt = read_lightning_checkpoint(path)
        hp = ckpt.get("hyper_parameters") or {}
        recorded = {k: hp[k] for k in ("model_preset", "model_overrides") if k in hp}
        return module_weights(ckpt), recorded or None
    return load_original_checkpoint(path)["model"], None


def read_lightning_checkpoint(path: str | os.PathLike) -> dict:
    """A ``pretrain.py`` / ``finetune.py`` checkpoint, loaded safely (``weights_only=True``)."""
    path = Path(path)
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(path, "no 'state_dict' in this checkpoint: not a Lightning checkpoint "
                                    "(pretrain.py and finetune.py write those)")
    return ckpt


def module_weights(ckpt: dict) -> dict[str, torch.Tensor]:
    """The model's weights in a Lightning checkpoint, without the LightningModule's ``model.`` prefix."""
    return {k[len(_MODULE_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(_MODULE_PREFIX)}


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load what fits; log a one-line summary (every key at debug level) and return the full report.

    A checkpoint of another architecture raises :class:`CheckpointError` naming the sizes to set.
    """
    weights, recorded = _read(path)
    report = load_state_dict_into(model, weights, strict=False, source=path, recorded=recorded)
    if not any(k for k in model.state_dict() if k not in report.missing):
        raise CheckpointError(path, f"no weight of this checkpoint fits {type(model).__name__} "
                                    f"({report.summary()}): is it a HiCMAE checkpoint?")
    log.warning("initialised %s from %s: %s", type(model).__name__, path, report.summary())
    return report
