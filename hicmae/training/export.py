"""Turn a Lightning training checkpoint into a self-describing release (``hicmae export``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from hicmae.checkpoint import save_release
from hicmae.errors import SAFETENSORS, CheckpointError, describe_content
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain
from hicmae.training.base import model_config
from hicmae.training.init import module_weights, read_lightning_checkpoint

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


def export_checkpoint(ckpt_path: str | os.PathLike, out_path: str | os.PathLike,
                      class_names: list[str] | None = None, **metadata: object) -> Path:
    """Write the model of a ``pretrain.py`` or ``finetune.py`` checkpoint as a release file."""
    ckpt_path = Path(ckpt_path)
    if ckpt_path.is_file() and describe_content(ckpt_path) == SAFETENSORS:
        raise CheckpointError(ckpt_path, "a safetensors file, not a training checkpoint: `hicmae export` takes the "
                                         ".ckpt that pretrain.py or finetune.py wrote")
    ckpt = read_lightning_checkpoint(ckpt_path)
    if "hyper_parameters" not in ckpt:
        raise CheckpointError(ckpt_path, "not a checkpoint written by pretrain.py or finetune.py")
    hp = ckpt["hyper_parameters"]
    extra = ckpt.get("hicmae", {})
    data_hp = ckpt.get("datamodule_hyper_parameters", {})
    state = module_weights(ckpt)
    config = model_config(hp["model_preset"], hp.get("model_overrides"))
    if "video_branch.mask_token" in state:
        model: nn.Module = HiCMAEPretrain(config)
        info = {}
    else:
        if hp.get("linear_probe"):
            state = _fold_probe_head(state)
        model = HiCMAEClassifier(config, int(hp["num_classes"]), tuple(hp["modalities"]),
                                 head_activation=hp.get("head_activation"))
        task = hp.get("task", "classification")
        names = class_names or extra.get("class_names") or data_hp.get("class_names")
        info = {"task": task, "sampling_rate": data_hp.get("sampling_rate", 4),
                "linear_probe": bool(hp.get("linear_probe"))}
        if names:
            info["target_names" if task == "regression" else "class_names"] = list(names)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(ckpt_path, f"weights do not fit the recorded architecture: {str(exc)[:300]}") from None
    return save_release(model, out_path, source=ckpt_path.name, **info, **metadata)
