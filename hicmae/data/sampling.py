"""Which frames a sample uses and which stretch of audio goes with them (REFERENCE 9.3 and 9.4).

All functions are pure: frame counts in, integer frame indices out, randomness from a numpy Generator.
"""

from __future__ import annotations

import numpy as np


def pretrain_indices(num_frames: int, clip_len: int = 16, stride: int = 4,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """``clip_len`` frames every ``stride``-th frame from a uniformly random start (VideoMAE's loader).

    A clip shorter than ``clip_len * stride`` starts at 0 and repeats the last frame reached on the
    stride grid, as the original does.
    """
    rng = rng or np.random.default_rng()
    span = clip_len * stride
    start = int(rng.integers(0, num_frames - span + 1)) if num_frames >= span else 0
    idx = start + stride * np.arange(clip_len)
    last_on_grid = start + stride * ((num_frames - 1 - start) // stride)
    return np.minimum(idx, last_on_grid).astype(np.int64)


def finetune_train_indices(num_frames: int, clip_len: int = 16, stride: int = 4,
                           rng: np.random.Generator | None = None) -> np.ndarray:
    """Training/validation sampling of the fine-tuning loader.

    Longer clips: a random end in [span, n), then ``clip_len`` linearly spaced frames in [end - span, end).
    Shorter clips: ``n // stride`` frames spread over the clip, padded with the last frame.
    """
    rng = rng or np.random.default_rng()
    span = clip_len * stride
    n = num_frames
    if n <= span:
        spread = np.linspace(0, n, num=n // stride)
        index = np.concatenate([spread, np.full(clip_len - n // stride, n, dtype=np.float64)])
        return np.clip(index, 0, n - 1).astype(np.int64)
    end = int(rng.integers(span, n))
    index = np.linspace(end - span, end, num=clip_len)
    return np.clip(index, end - span, end - 1).astype(np.int64)


def test_views(num_frames: int, clip_len: int = 16, stride: int = 4, num_segments: int = 2) -> list[np.ndarray]:
    """Test-time temporal views: every ``stride``-th frame (padded with the last), ``num_segments``
    windows of ``clip_len`` spread evenly from the first window to the last."""
    grid = list(range(0, num_frames, stride))
    while len(grid) < clip_len:
        grid.append(grid[-1])
    step = max(len(grid) - clip_len, 0) / (num_segments - 1) if num_segments > 1 else 0.0
    return [np.asarray(grid[int(k * step): int(k * step) + clip_len], dtype=np.int64) for k in range(num_segments)]


def pretrain_audio_frames(indices: np.ndarray, stride: int, num_frames: int) -> tuple[int, int]:
    """Frames bounding a pretraining clip's audio: it runs from the start of the first sampled frame
    to the end of frame (last sampled + stride), clamped to the clip's last frame."""
    return int(indices[0]), min(int(indices[-1]) + stride, num_frames - 1)


def relative_audio_range(first_frame: int, num_frames: int, num_samples: int, span_frames: int,
                         sample_rate: int = 16000, clip_seconds: float = 2.56) -> tuple[int, int]:
    """Sample range for fine-tuning: the first frame's relative position in the clip to ``span_frames``
    later, as a fraction of the whole waveform (the original's relative timestamps).

    When that range has at most 1024 samples and the whole waveform is shorter than ``clip_seconds``,
    the whole waveform is used.
    """
    denom = max(num_frames - 1, 1)
    start = int(first_frame / denom * num_samples)
    end = min(int((first_frame + span_frames) / denom * num_samples), num_samples)
    if end - start <= 1024 and num_samples < clip_seconds * sample_rate:
        return 0, num_samples
    return start, end
