"""Mixup / CutMix on a fine-tuning batch with timm, as the original: video only by default.

The video ``(B, 3, T, H, W)`` is viewed as ``(B, 3*T, H, W)`` for timm so a CutMix box cuts the
same (H, W) region of every frame. With ``mix_audio=True`` the audio is blended with the same
partner (the batch reversed) and the same coefficient lambda — for CutMix, the box's area-corrected
lambda — because pasting a spectrogram box has no meaning a label could follow.

timm draws lambda and the box from numpy's global generator, which is the same on every DDP process;
the caller passes a ``seed`` (the training module keys it on rank and batch) and the draw runs under it.
"""

from __future__ import annotations

from contextlib import nullcontext

from timm.data.mixup import Mixup, mixup_target

from hicmae.data.transforms import seeded_globals


class VideoMixup:
    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, mode: str = "batch", label_smoothing: float = 0.1,
                 mix_audio: bool = False, multi_label: bool = False):
        self.mix_audio = mix_audio
        self.multi_label = multi_label
        self._timm = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob,
                           mode=mode, label_smoothing=label_smoothing, num_classes=num_classes, multi_label=multi_label)

    def __call__(self, batch: dict, seed: int | None = None) -> dict:
        """Mix ``batch["video"]`` (and ``audio`` if asked) in place; ``label`` becomes soft targets.
        Lambda and the box are drawn under ``seed`` (numpy's global generator when None)."""
        video = batch["video"]
        if video.shape[0] % 2:
            raise ValueError(f"Mixup needs an even batch size, got {video.shape[0]} (use drop_last)")
        b, c, t, h, w = video.shape
        flat = video.reshape(b, c * t, h, w)
        mode = self._timm.mode
        with seeded_globals(seed) if seed is not None else nullcontext():
            if mode == "elem":
                lam = self._timm._mix_elem(flat)
            elif mode == "pair":
                lam = self._timm._mix_pair(flat)
            else:
                lam = self._timm._mix_batch(flat)
        batch["video"] = flat.reshape(b, c, t, h, w)
        if self.mix_audio:
            weight = lam if isinstance(lam, float) else lam.view(-1, 1, 1, 1).to(batch["audio"].dtype)
            batch["audio"] = batch["audio"] * weight + batch["audio"].flip(0) * (1 - weight)
        batch["label"] = mixup_target(batch["label"], self._timm.num_classes, lam, self._timm.label_smoothing,
                                      self.multi_label)
        return batch
