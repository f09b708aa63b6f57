"""Optimiser parameter groups (weight-decay exclusions, layer-wise lr decay) and the per-step schedule.

REFERENCE.md 11.1 / 11.2 / quirks 12-13: lr = base_lr x global batch / 256; linear warm-up from 0, then
cosine down to min_lr (also scaled), stepped every optimiser step; every group's lr is multiplied by its
``lr_scale`` (layer decay), min_lr included.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

# Excluded from weight decay in pretraining beyond 1-D params and biases. Only the video mask token: the
# original's skip list names ``mask_token`` and so misses ``mask_token_audio`` (quirk 13).
PRETRAIN_NO_DECAY = ("video_branch.mask_token",)


def _no_decay(name: str, param: torch.Tensor, skip: Iterable[str]) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or name in set(skip)


def scale_lr(base_lr: float, global_batch: int) -> float:
    """The original's linear scaling rule: ``base_lr * global_batch / 256``."""
    return base_lr * global_batch / 256


def pretrain_param_groups(model: nn.Module, weight_decay: float,
                          skip: Iterable[str] = PRETRAIN_NO_DECAY) -> list[dict]:
    """Two groups: decayed weights and the excluded ones (1-D params, biases, ``skip``)."""
    skip = tuple(skip)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if _no_decay(name, param, skip) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0, "name": "no_decay"}]


def layer_id(name: str, depth: int, fusion_depth: int) -> int:
    """Layer id of a classifier parameter (REFERENCE.md 11.2).

    Patch embeddings 0; block k of either encoder k+1; fusion block j depth+1+j; everything else (norms,
    layer weights, fc_norm, head) depth+fusion_depth+1.
    """
    parts = name.split(".")
    if len(parts) > 1 and parts[0] in ("video_encoder", "audio_encoder"):
        if parts[1] == "patch_embed":
            return 0
        if parts[1] == "blocks":
            return int(parts[2]) + 1
    if parts[0] == "fusion" and len(parts) > 2 and parts[1] in ("video_blocks", "audio_blocks"):
        return depth + 1 + int(parts[2])
    return depth + fusion_depth + 1


def finetune_param_groups(model: nn.Module, weight_decay: float, layer_decay: float, depth: int,
                          fusion_depth: int, skip: Iterable[str] = ()) -> list[dict]:
    """Groups by (layer id, decay or not); ``lr_scale = layer_decay ** (max_id - id)``.

    ``max_id`` is depth + fusion_depth + 1 (13 for the paper's models) whether or not the model has a fusion
    encoder, so a unimodal model's encoder blocks get the same scales as in the audio-visual one.
    """
    skip = tuple(skip)
    max_id = depth + fusion_depth + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid, nd = layer_id(name, depth, fusion_depth), _no_decay(name, param, skip)
        group = groups.setdefault((lid, nd), {
            "params": [], "param_names": [], "weight_decay": 0.0 if nd else weight_decay,
            "lr_scale": layer_decay ** (max_id - lid), "name": f"layer_{lid}_{'no_decay' if nd else 'decay'}"})
        group["params"].append(param)
        group["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float) -> float:
    """The original's per-iteration schedule.

    Warm-up is ``linspace(0, peak, warmup_steps)`` (both ends included); then cosine from peak to min_lr
    over the remaining steps. Past the end the lr stays at min_lr.
    """
    if step < warmup_steps:
        return peak_lr * step / (warmup_steps - 1) if warmup_steps > 1 else peak_lr
    remaining = max(total_steps - warmup_steps, 1)
    i = min(step - warmup_steps, remaining)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1 + math.cos(math.pi * i / remaining))


def all_on_cuda(params: list) -> bool:
    """Whether there are parameters and every one is on a CUDA device (where fused AdamW is the default)."""
    return bool(params) and all(p.device.type == "cuda" for p in params)


def build_optimizer(groups: list[dict], lr: float, betas: tuple[float, float], eps: float = 1e-8,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over ``groups`` (each keeps its extra keys: lr_scale, name, param_names, fixed_lr).

    ``fused``: torch's fused AdamW kernel (one kernel for all parameters; with a GradScaler it also
    unscales and skips inf steps on the device, without the scaler's host sync). ``None`` (auto) fuses when
    every parameter is on a CUDA device and otherwise keeps torch's default (foreach on GPU, a loop on
    the CPU). The update rule is AdamW's in every case; only the kernels and rounding order differ.
    """
    clean = [{**g, "lr": g.get("fixed_lr", lr * g["lr_scale"])} for g in groups if g["params"]]
    if fused is None:
        fused = all_on_cuda([p for g in clean for p in g["params"]])
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(clean, lr=lr, betas=tuple(betas), eps=eps, **extra)


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """Sets every group's lr to ``warmup_cosine(step) * lr_scale``; stepped once per optimiser step."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, peak_lr: float,
                 min_lr: float, last_epoch: int = -1):
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.peak_lr, self.min_lr = float(peak_lr), float(min_lr)
        super().__init__(optimizer, last_epoch)

    def load_state_dict(self, state_dict: dict) -> None:
        # Resume the position only: the schedule's shape comes from the current config, so a resumed run
        # with a longer max_epochs follows the longer schedule.
        self.last_epoch = state_dict["last_epoch"]
        self._step_count = state_dict.get("_step_count", self.last_epoch + 1)
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        lr = warmup_cosine(self.last_epoch, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr)
        # A group with ``fixed_lr`` (e.g. the online probe) keeps its own constant lr.
        return [g.get("fixed_lr", lr * g.get("lr_scale", 1.0)) for g in self.optimizer.param_groups]
