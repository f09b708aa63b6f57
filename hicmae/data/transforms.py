"""Video transforms of the original pipeline, applied identically to every frame of a clip.

Frames enter as ``(T, H, W, 3)`` uint8 numpy arrays and leave as ``(3, T, H, W)`` float tensors,
ImageNet-normalised. Randomness comes from the caller's numpy / torch generators so a seed fixes a sample.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [0, 1]."""
    # Channels-first in memory before the float ops: elementwise work on the permuted view is strided and slow.
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).contiguous().float().div_(255.0)


def normalise(video: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of a (3, T, H, W) float tensor, in place (the same values as (x - mean) / std)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return video.sub_(mean).div_(std)


def pil_resize(frames: np.ndarray, size: int) -> np.ndarray:
    """PIL bilinear resize of (T, H, W, 3) uint8 frames to ``size`` squares, on uint8 as the original
    does (its result is rounded to uint8, and PIL's filter widens when shrinking)."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])


# ---------------------------------------------------------------------------------------------- pretraining
def voxceleb2_crop(frames: np.ndarray, img_size: int) -> np.ndarray:
    """The original's VoxCeleb2 crop: keep the top rows, centred columns (rows 0-160, cols 32-192 of a
    224 frame when ``img_size`` <= 160; a ``img_size`` square otherwise)."""
    side = max(160, img_size)
    h, w = frames.shape[1:3]
    side = min(side, h, w)
    left = (w - side) // 2
    return frames[:, :side, left:left + side]


def multi_scale_crop_box(width: int, height: int, out_size: int, rng: np.random.Generator,
                         scales=MULTI_SCALES, max_distort: int = 1) -> tuple[int, int, int, int]:
    """GroupMultiScaleCrop (fix_crop, more_fix_crop): (left, top, crop_w, crop_h) for one clip."""
    base = min(width, height)
    sizes = [int(base * s) for s in scales]
    crop_h = [out_size if abs(s - out_size) < 3 else s for s in sizes]
    crop_w = [out_size if abs(s - out_size) < 3 else s for s in sizes]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= max_distort]
    cw, ch = pairs[int(rng.integers(len(pairs)))]
    ws, hs = (width - cw) // 4, (height - ch) // 4
    offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs),
               (0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
               (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    left, top = offsets[int(rng.integers(len(offsets)))]
    return left, top, cw, ch


def pretrain_video(frames: np.ndarray, img_size: int, rng: np.random.Generator, vox_crop: bool = False) -> torch.Tensor:
    """VoxCeleb2 crop (optional), one multi-scale crop for all frames, PIL bilinear resize, normalise."""
    if vox_crop:
        frames = voxceleb2_crop(frames, img_size)
    left, top, cw, ch = multi_scale_crop_box(frames.shape[2], frames.shape[1], img_size, rng)
    return normalise(to_tensor(pil_resize(frames[:, top:top + ch, left:left + cw], img_size)))


# ---------------------------------------------------------------------------------------------- fine-tuning
@contextmanager
def seeded_globals(seed: int):
    """Run code that uses Python's and numpy's global RNGs (timm's RandAugment) under ``seed``, then
    restore both, so the dataset stays reproducible and does not disturb anyone else's stream."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def build_rand_augment(config: str, img_size: int):
    """timm RandAugment as the original builds it: translate 45% of the side, bicubic."""
    from timm.data.auto_augment import rand_augment_transform
    from PIL import Image

    return rand_augment_transform(config, {"translate_const": int(img_size * 0.45), "interpolation": Image.BICUBIC})


def rand_augment_frames(frames: list, augment, seed: int) -> list:
    """Apply the same RandAugment ops, with the same magnitudes, to every PIL frame by replaying the RNG."""
    out = []
    for frame in frames:
        with seeded_globals(seed):
            out.append(augment(frame))
    return out


def random_resized_crop(video: torch.Tensor, size: int, scale, ratio, generator: torch.Generator) -> torch.Tensor:
    """One random-resized-crop box (torchvision's sampling, 10 tries then centre) for all frames."""
    h, w = video.shape[-2:]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio, generator=generator)))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            box = (top, left, ch, cw)
            break
    if box is None:  # fall back to a centre crop at the clamped ratio
        in_ratio = w / h
        cw, ch = (w, int(round(w / min(ratio)))) if in_ratio < min(ratio) else \
            ((int(round(h * max(ratio))), h) if in_ratio > max(ratio) else (w, h))
        box = ((h - ch) // 2, (w - cw) // 2, ch, cw)
    top, left, ch, cw = box
    crop = video[..., top:top + ch, left:left + cw]
    out = F.interpolate(crop.transpose(0, 1), size=(size, size), mode="bilinear", align_corners=False)
    return out.transpose(0, 1)


def cube_erase(video: torch.Tensor, prob: float, generator: torch.Generator,
               min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3) -> torch.Tensor:
    """Random erasing, mode ``pixel``, one box shared by all frames (the original's "cube" mode);
    the box is filled with per-pixel normal noise."""
    if float(torch.rand((), generator=generator)) >= prob:
        return video
    c, t, h, w = video.shape
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for _ in range(10):
        target = h * w * float(torch.empty(1).uniform_(min_area, max_area, generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(*log_aspect, generator=generator)))
        eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if eh < h and ew < w:
            top = int(torch.randint(0, h - eh + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - ew + 1, (1,), generator=generator))
            video = video.clone()
            video[:, :, top:top + eh, left:left + ew] = torch.randn(c, t, eh, ew, generator=generator)
            break
    return video


def finetune_train_video(frames: np.ndarray, img_size: int, generator: torch.Generator, seed: int, *,
                         rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1", scale=(0.08, 1.0),
                         ratio=(0.75, 4 / 3), flip_prob: float = 0.5, erase_prob: float = 0.25) -> torch.Tensor:
    """Resize to a square, RandAugment (same ops on all frames), normalise, random resized crop,
    horizontal flip, cube random erasing — REFERENCE 9.4 train mode."""
    from PIL import Image

    images = [Image.fromarray(f).resize((img_size, img_size), Image.BILINEAR) for f in frames]
    if rand_augment:
        images = rand_augment_frames(images, build_rand_augment(rand_augment, img_size), seed)
    video = normalise(to_tensor(np.stack([np.asarray(i) for i in images])))
    video = random_resized_crop(video, img_size, scale, ratio, generator)
    if float(torch.rand((), generator=generator)) < flip_prob:
        video = video.flip(-1)
    return cube_erase(video, erase_prob, generator)


def finetune_eval_video(frames: np.ndarray, img_size: int) -> torch.Tensor:
    """Validation / test: PIL bilinear resize of every frame to an ``img_size`` square (aspect not kept),
    normalise. (The original's centre crop and its spatial test crops are then the whole frame.)"""
    return normalise(to_tensor(pil_resize(frames, img_size)))
