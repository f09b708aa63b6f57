"""Turn a training checkpoint into a self-describing release (``hicmae export``).

Sources: a ``pretrain.py`` / ``finetune.py`` checkpoint (``.ckpt``) or an original ``checkpoint-*.pth``.
Targets: a release folder in the Hugging Face Hub layout (see :mod:`hicmae.hub`), or the one-file
``.safetensors`` release when the output's name ends in ``.safetensors``. The metrics of the run's test
(``<run>/results/<checkpoint name>/metrics.json``, see :mod:`hicmae.training.results`) go into the
release and its model card when they exist and are about this very checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from hicmae.checkpoint import model_from_original, original_checkpoint_of, safe_torch_load, save_release
from hicmae.errors import SAFETENSORS, CheckpointError, describe_content
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain

log = logging.getLogger(__name__)

# Hyper-parameters worth a line in a model card (what the recipe was); the rest stay in the checkpoint.
_RECIPE_KEYS = ("model_preset", "model_overrides", "task", "linear_probe", "modalities", "init_checkpoint",
                "base_lr", "min_lr", "warmup_epochs", "weight_decay", "layer_decay", "label_smoothing", "mixup",
                "regression_loss", "global_batch_size", "mask_ratio", "contrastive_weight")
_DATA_KEYS = ("train_manifest", "val_manifest", "test_manifest", "fold", "batch_size", "sampling_rate",
              "img_size", "num_frames", "audio_frames", "mel_bins", "rand_augment", "mixup", "cutmix")


def _fold_probe_head(state: dict[str, torch.Tensor], eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """A linear probe's head is BatchNorm1d(affine=False) then Linear; fold the BN's running statistics
    into the Linear so the release is a plain classifier with identical outputs in eval mode."""
    mean, var = state.pop("head.0.running_mean"), state.pop("head.0.running_var")
    state.pop("head.0.num_batches_tracked", None)
    weight, bias = state.pop("head.1.weight"), state.pop("head.1.bias")
    inv_std = (var + eps).rsqrt()
    state["head.weight"] = weight * inv_std
    state["head.bias"] = bias - (weight * inv_std) @ mean
    return state


def _jsonable(mapping: dict, keys: tuple[str, ...]) -> dict:
    """The entries of ``keys`` that JSON can hold as they are (a card must not show Python reprs)."""
    out = {}
    for key in keys:
        value = mapping.get(key)
        if value is None:
            continue
        value = list(value) if isinstance(value, tuple) else value
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


def model_from_lightning(ckpt: dict, path: str | os.PathLike,
                         class_names: list[str] | None = None) -> tuple[nn.Module, dict]:
    """The model of a ``pretrain.py`` / ``finetune.py`` checkpoint (already read safely) and the release
    metadata it records: task, class or target names, frame stride, recipe."""
    from hicmae.training.base import model_config
    from hicmae.training.init import module_weights

    if "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(path, "not a checkpoint written by pretrain.py or finetune.py")
    hp = ckpt["hyper_parameters"]
    data_hp = ckpt.get("datamodule_hyper_parameters", {}) or {}
    state = module_weights(ckpt)
    config = model_config(hp["model_preset"], hp.get("model_overrides"))
    info: dict = {"sampling_rate": int(data_hp.get("sampling_rate", 4)), "source": Path(path).name,
                  "training": {"epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step"),
                               "recipe": _jsonable(hp, _RECIPE_KEYS), "data": _jsonable(data_hp, _DATA_KEYS)}}
    if "video_branch.mask_token" in state:
        model: nn.Module = HiCMAEPretrain(config)
    else:
        if hp.get("linear_probe"):
            state = _fold_probe_head(state)
        model = HiCMAEClassifier(config, int(hp["num_classes"]), tuple(hp["modalities"]),
                                 head_activation=hp.get("head_activation"))
        task = hp.get("task", "classification")
        names = class_names or (ckpt.get("hicmae") or {}).get("class_names") or data_hp.get("class_names")
        info.update(task=task, linear_probe=bool(hp.get("linear_probe")))
        if names:
            info["target_names" if task == "regression" else "class_names"] = list(names)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(path, f"weights do not fit the recorded architecture: {str(exc)[:300]}") from None
    return model.eval(), info


def model_from_checkpoint(path: str | os.PathLike, class_names: list[str] | None = None, preset: str | None = None,
                          overrides: dict | None = None) -> tuple[nn.Module, dict]:
    """The eval-mode model of a training checkpoint (``.ckpt``) or an original ``.pth``, and its release
    metadata. Read with ``weights_only=True``: a file that pickles anything but weights is refused."""
    path = Path(path)
    if path.is_file() and describe_content(path) == SAFETENSORS:
        raise CheckpointError(path, "a safetensors file, not a training checkpoint: `hicmae export` takes the "
                                    ".ckpt that pretrain.py or finetune.py wrote, or an original .pth")
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and "state_dict" in obj:
        return model_from_lightning(obj, path, class_names)
    if path.suffix == ".ckpt":
        raise CheckpointError(path, "not a checkpoint written by pretrain.py or finetune.py (no 'state_dict')")
    model, info = model_from_original(original_checkpoint_of(obj, path), path, preset, overrides)
    if isinstance(model, HiCMAEClassifier):
        info["task"] = "classification"
        if class_names:
            info["class_names"] = list(class_names)
    return model, info


def run_metrics(ckpt_path: str | os.PathLike) -> dict | None:
    """What the run's test measured with this checkpoint, from ``metrics.json``, or None.

    Looks in ``<run>/results/<checkpoint stem>/`` (finetune.py's default), then ``<run>/results/`` (where
    ``hicmae kfold`` points each fold), for a checkpoint at ``<run>/checkpoints/<name>.ckpt``. A file whose
    protocol names another tested checkpoint is not used: its numbers belong to other weights.
    """
    ckpt_path = Path(ckpt_path)
    run = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    for candidate in (run / "results" / ckpt_path.stem / "metrics.json", run / "results" / "metrics.json"):
        if not candidate.is_file():
            continue
        try:
            payload = json.loads(candidate.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", candidate, exc)
            continue
        tested = ((payload.get("protocol") or {}).get("checkpoint") or {}).get("tested")
        if tested and Path(tested).name != ckpt_path.name:
            log.info("ignoring %s: it tested %s, not %s", candidate, tested, ckpt_path.name)
            continue
        return metrics_record(payload, candidate)
    return None


def metrics_record(payload: dict, path: str | os.PathLike) -> dict:
    """The part of a ``metrics.json`` a release carries: the numbers and how they were obtained."""
    from hicmae.training.results import protocol_fields

    protocol = payload.get("protocol")
    record = {"values": {k: float(v) for k, v in (payload.get("metrics") or {}).items()},
              "num_clips": payload.get("num_clips"), "model_selection": payload.get("model_selection"),
              "file": os.fspath(path)}
    if protocol:
        fields = protocol_fields(protocol)
        record["protocol"] = {k: fields[k] for k in ("views", "metrics", "seed", "eval_gain_augment", "model")}
        record["data"] = protocol.get("data")
    return record


def export_checkpoint(ckpt_path: str | os.PathLike, out_path: str | os.PathLike,
                      class_names: list[str] | None = None, *, preset: str | None = None,
                      overrides: dict | None = None, metrics: str | os.PathLike | None = None,
                      **metadata: object) -> Path:
    """Write the model of a ``pretrain.py`` / ``finetune.py`` checkpoint or an original ``.pth`` as a release.

    ``out_path`` ending in ``.safetensors``: the one-file release; anything else: a release folder (weights,
    config.json, model card, checksums). ``metrics``: a ``metrics.json`` to use instead of the run's own;
    ``metadata``: more entries for the release (``license``, ``dataset``, ``name``...).
    """
    from hicmae.hub import save_release_folder

    model, info = model_from_checkpoint(ckpt_path, class_names, preset, overrides)
    if metrics is not None:
        try:
            record = metrics_record(json.loads(Path(metrics).read_text()), metrics)
        except (OSError, ValueError) as exc:
            raise CheckpointError(metrics, f"not a readable metrics.json ({exc})") from None
    else:
        record = run_metrics(ckpt_path)
    if record is not None:
        info["metrics"] = record
    info.update(metadata)
    if Path(out_path).suffix == ".safetensors":
        return save_release(model, out_path, **info)
    return save_release_folder(model, out_path, **info)
