"""Synthetic audio-visual "emotion" data made of real files, for the demo and the tests.

Each class has its own mouth rhythm and amplitude, blink rate, head sway and voice rhythm (the same
rhythm drives the syllables and the mouth, so audio and video agree); with ``static_cues`` also its own
face colour, pitch, pitch contour and timbre. Every clip jitters all of these, moves and scales the
face, and adds pixel and audio noise, so the task is learnable from either modality but not trivial.
By default (:data:`DEMO`) the data are those ``make demo`` trains on: 180 clips, 64 px, 2 s, no static cues.

Files written to ``out_dir``: ``clips/clip_XXXX.mp4`` (H.264 + 16 kHz AAC) and ``clips/clip_XXXX.wav``
(16 kHz mono PCM), and the manifests (CSV, paths relative to ``out_dir``):

* ``pretrain.csv``   ``video,audio,label`` — every clip (labels only for an online probe)
* ``finetune.csv``   ``video,audio,label,fold`` — class names; folds 0..num_folds-1, balanced per class.
  Fold k's test set is ``fold == k``, its training set the rest (``HiCMAEDataModule(fold=k)``).
* ``regression.csv`` ``video,audio,arousal,valence,fold`` — a per-class dimensional target plus noise.
* ``classes.txt``    the class names in label-index order.
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hicmae.data.media_writer import write_mp4, write_wav
from hicmae.progress import progress_bar

log = logging.getLogger(__name__)

CLASS_NAMES = ("anger", "disgust", "fear", "happy", "neutral", "sad")
SAMPLE_RATE = 16000

# Per class: face RGB, mouth/syllable rate (Hz), mouth amplitude, blink rate (Hz), sway rate (Hz),
# f0 (Hz), pitch slope (octaves/s), harmonic decay, arousal, valence.
_CLASSES = np.array([
    # r    g    b    rate amp  blink sway  f0   slope  decay arousal valence
    [210, 90, 80, 6.0, 0.9, 0.3, 1.6, 220, 0.25, 0.80, 0.8, -0.6],   # anger
    [120, 170, 90, 2.0, 0.4, 0.8, 0.4, 150, -0.15, 0.45, 0.3, -0.7],  # disgust
    [200, 200, 230, 8.0, 0.6, 2.0, 2.4, 330, 0.40, 0.55, 0.7, -0.4],  # fear
    [240, 200, 90, 4.0, 1.0, 0.5, 1.0, 280, 0.10, 0.70, 0.6, 0.8],    # happy
    [190, 160, 140, 3.0, 0.3, 0.3, 0.2, 180, 0.00, 0.35, 0.0, 0.0],   # neutral
    [100, 120, 200, 1.5, 0.25, 0.2, 0.3, 140, -0.30, 0.25, -0.5, -0.6],  # sad
], dtype=np.float64)


# Columns of _CLASSES that a single frame or a short audio window already reveals.
_STATIC_CUES = [0, 1, 2, 7, 8, 9]


def class_parameters(label: int, static_cues: bool = True) -> np.ndarray:
    """The row of ``_CLASSES`` for ``label``; without ``static_cues`` face colour, pitch, pitch slope
    and timbre are the same for every class, so only the dynamics (rhythm, mouth amplitude, blinks,
    sway) tell classes apart: a task a random network barely solves and pretraining has to learn."""
    p = _CLASSES[label % len(_CLASSES)].copy()
    if not static_cues:
        p[_STATIC_CUES] = _CLASSES[:, _STATIC_CUES].mean(axis=0)
    return p


def make_clip(label: int, seed: int, size: int = 160, seconds: float = 3.0, fps: int = 25,
              noise: float = 1.0, static_cues: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(T, size, size, 3)`` uint8 and a 16 kHz mono waveform for one clip of class ``label``."""
    rng = np.random.default_rng(seed)
    p = class_parameters(label, static_cues)
    jit = lambda x, rel: x * (1 + rel * rng.uniform(-1, 1))  # noqa: E731
    rate, amp, blink, sway = jit(p[3], 0.15), jit(p[4], 0.2), jit(p[5], 0.3), jit(p[6], 0.3)
    phase = rng.uniform(0, 2 * np.pi)
    n_frames = int(round(seconds * fps))
    t = np.arange(n_frames) / fps

    # Video: a face-like figure drawn for all frames at once on a normalised [-1, 1] grid.
    g = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = g[None, :, None], g[None, None, :]
    scale = rng.uniform(0.8, 1.05)
    cx = rng.uniform(-0.1, 0.1) + 0.08 * np.sin(2 * np.pi * sway * t + phase)[:, None, None]
    cy = rng.uniform(-0.1, 0.1)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rate * t + phase))  # shared with the voice's syllables
    face = ((xx - cx) / (0.6 * scale)) ** 2 + ((yy - cy) / (0.78 * scale)) ** 2 <= 1
    eye_open = np.where(np.sin(2 * np.pi * blink * t + phase) > 0.85, 0.15, 1.0)[:, None, None]
    eyes = np.zeros_like(face)
    for side in (-1, 1):
        eyes |= ((xx - cx - side * 0.25 * scale) / (0.1 * scale)) ** 2 + \
                ((yy - cy + 0.2 * scale) / (0.07 * scale * eye_open)) ** 2 <= 1
    mouth_h = (0.03 + 0.16 * amp * envelope)[:, None, None] * scale
    mouth = ((xx - cx) / (0.25 * scale)) ** 2 + ((yy - cy - 0.38 * scale) / mouth_h) ** 2 <= 1
    colour = np.clip(p[:3] + rng.normal(0, 18, 3), 0, 255)
    background = rng.uniform(10, 90, 3)
    # Paint a per-pixel palette index, then look colours up once (much faster than masked writes).
    region = face.astype(np.uint8)
    region[eyes & face] = 2
    region[mouth & face] = 3
    palette = np.array([background, colour, (30, 30, 40), (90, 20, 30)], dtype=np.float32)
    img = palette[region]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(5 * noise)
    frames = np.clip(img, 0, 255).astype(np.uint8)

    # Audio: a harmonic voice with a class pitch contour, syllable rhythm and timbre, plus noise.
    ts = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    f0 = jit(p[7], 0.1) * 2 ** (jit(p[8], 0.3) * (ts - seconds / 2) + 0.02 * np.sin(2 * np.pi * 5 * ts))
    ph = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    decay = np.clip(jit(p[9], 0.1), 0.05, 0.95)
    voice = sum(decay ** k * np.sin((k + 1) * ph) for k in range(6))
    syllables = (0.5 * (1 + np.sin(2 * np.pi * rate * ts + phase))) ** 2
    wave = voice * syllables
    wave = 0.4 * wave / (np.abs(wave).max() + 1e-9) + 0.02 * noise * rng.standard_normal(ts.shape)
    return frames, wave.astype(np.float32)


def _write_one(job) -> None:
    out_dir, name, label, seed, size, seconds, fps, static_cues = job
    frames, wave = make_clip(label, seed, size, seconds, fps, static_cues=static_cues)
    write_mp4(out_dir / "clips" / f"{name}.mp4", frames, fps=fps, audio=wave, sample_rate=SAMPLE_RATE)
    write_wav(out_dir / "clips" / f"{name}.wav", wave, SAMPLE_RATE)


@dataclass(frozen=True)
class DemoData:
    """The demo dataset's settings (arguments of :func:`make_demo_data`)."""

    num_clips: int = 180  # 6 classes x 5 folds x 6 clips
    seed: int = 0
    num_classes: int = 6
    size: int = 64  # frame side in pixels: configs/demo's reduced model reads 64 px
    seconds: float = 2.0
    fps: int = 25
    num_folds: int = 5
    static_cues: bool = False  # why: hicmae/demo.py's docstring


# What `make demo` (hicmae/demo.py) trains on: the defaults of make_demo_data and `hicmae make-demo-data`,
# so that command followed by configs/demo reproduces the demo.
DEMO = DemoData()


def make_demo_data(out_dir: str | os.PathLike, num_clips: int = DEMO.num_clips, seed: int = DEMO.seed,
                   num_classes: int = DEMO.num_classes, size: int = DEMO.size, seconds: float = DEMO.seconds,
                   fps: int = DEMO.fps, num_folds: int = DEMO.num_folds, workers: int | None = None,
                   static_cues: bool = DEMO.static_cues, progress: bool | None = False) -> Path:
    """Write the demo dataset (see the module docstring); returns ``out_dir``. Deterministic for ``seed``.

    The defaults are :data:`DEMO`, the data ``make demo`` trains on. ``static_cues=True`` gives every
    class its own face colour and voice as well (see :func:`class_parameters`): easy from one frame.
    ``progress``: a bar on stderr (None: only when stderr is a terminal; see :mod:`hicmae.progress`).
    """
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must lie in [2, {len(CLASS_NAMES)}], got {num_classes}")
    if size % 2:
        raise ValueError(f"size must be even (H.264 yuv420p), got {size}")
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    seeds = np.random.default_rng(seed).integers(2**31, size=num_clips)
    jobs, rows = [], []
    for i in range(num_clips):
        label = i % num_classes
        name = f"clip_{i:04d}"
        jobs.append((out_dir, name, label, int(seeds[i]), size, seconds, fps, static_cues))
        rows.append((f"clips/{name}.mp4", f"clips/{name}.wav", label, (i // num_classes) % num_folds, int(seeds[i])))
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            # map submits every job at once, so the workers start before the bar's monitor thread does.
            written = pool.map(_write_one, jobs, chunksize=4)
            with progress_bar(num_clips, "make-demo-data", "clip", progress) as bar:
                for _ in written:
                    bar.update(1)
    else:
        with progress_bar(num_clips, "make-demo-data", "clip", progress) as bar:
            for job in jobs:
                _write_one(job)
                bar.update(1)
    names = CLASS_NAMES[:num_classes]
    with open(out_dir / "pretrain.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "audio", "label"])
        w.writerows((v, a, names[y]) for v, a, y, _, _ in rows)
    with open(out_dir / "finetune.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "audio", "label", "fold"])
        w.writerows((v, a, names[y], k) for v, a, y, k, _ in rows)
    with open(out_dir / "regression.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "audio", "arousal", "valence", "fold"])
        for v, a, y, k, s in rows:
            noise = np.random.default_rng(s + 1).normal(0, 0.1, 2)
            p = class_parameters(y, static_cues)
            w.writerow((v, a, f"{p[10] + noise[0]:.4f}", f"{p[11] + noise[1]:.4f}", k))
    (out_dir / "classes.txt").write_text("\n".join(names) + "\n")
    log.info("wrote %d demo clips (%d classes, %d px, %.1f s) to %s", num_clips, num_classes, size, seconds, out_dir)
    return out_dir
