"""Which frames a sample uses and which stretch of audio goes with them (REFERENCE 9.3 and 9.4).

All functions are pure: frame counts in, integer frame indices out, randomness from a numpy Generator.
"""

from __future__ import annotations

import numpy as np

# The original asserts more audio samples than this, and uses no segment this short.
MIN_AUDIO_SAMPLES = 1024


def pretrain_indices(num_frames: int, clip_len: int = 16, stride: int = 4,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """``clip_len`` frames every ``stride``-th frame from a uniformly random start in
    [0, n - clip_len * stride] (0 when the clip is shorter than that): VideoMAE's loader."""
    rng = rng or np.random.default_rng()
    span = clip_len * stride
    start = int(rng.integers(0, num_frames - span + 1)) if num_frames >= span else 0
    return pretrain_indices_from(start, num_frames, clip_len, stride)


def pretrain_indices_from(start: int, num_frames: int, clip_len: int = 16, stride: int = 4) -> np.ndarray:
    """The frames ``pretrain_indices`` takes from ``start``.

    The original steps to the next frame only while (1-based offset) + stride < n, i.e. while the next
    frame is at most n - 2; after that it repeats the last frame reached. So the clip's last frame is
    never reached by a step (9 frames, stride 4: 0, 4, 4, ...), and with stride 1 a clip exactly
    ``clip_len`` long repeats its second-to-last frame.
    """
    steps = max((num_frames - 2 - start) // stride, 0)  # steps the original takes before it stops
    return (start + stride * np.minimum(np.arange(clip_len), steps)).astype(np.int64)


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
                         target_seconds: float = 2.56, sample_rate: int = 16000) -> tuple[int, int]:
    """Sample range of the fine-tuning audio (the original ``load_audio``): from the relative timestamp
    of ``first_frame`` to that of frame min(first + span, n - 1), a timestamp being idx / (n - 1) of
    the waveform (0 for a one-frame clip).

    A segment of at most 1024 samples is replaced by the whole waveform when that is shorter than
    ``target_seconds`` (the fbank's length: 256 frames = 2.56 s). Raises ValueError, with a reason for
    the user, when the waveform has at most 1024 samples or a longer one yields such a short segment.
    """
    if num_samples <= MIN_AUDIO_SAMPLES:
        raise ValueError(f"audio has only {num_samples} samples (more than {MIN_AUDIO_SAMPLES} needed)")

    def relative(idx: int) -> float:
        return 0 if num_frames == 1 else idx / (num_frames - 1.0)

    last = min(first_frame + span_frames, num_frames - 1)
    start, end = int(relative(first_frame) * num_samples), int(relative(last) * num_samples)
    if end - start > MIN_AUDIO_SAMPLES:
        return start, end
    if num_samples < target_seconds * sample_rate:
        return 0, num_samples
    raise ValueError(f"audio segment of frames {first_frame}..{last} (of {num_frames}) has only {end - start} "
                     f"samples (more than {MIN_AUDIO_SAMPLES} needed), and the audio is too long ({num_samples} "
                     f"samples, >= {target_seconds} s) to use whole; do the video and audio belong together?")
