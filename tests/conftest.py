"""Shared fixtures: real media files written once per session with PyAV and soundfile."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hicmae.data.media_writer import index_frames, tone, write_frame_folder, write_mp4, write_wav

FPS = 25
INDEX_STEP = 2  # frame i is uniform grey 2*i, so decoded frames reveal which index they are


class Media:
    """Paths of the session's media files (see ``media`` below)."""


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Media:
    root = tmp_path_factory.mktemp("media")
    m = Media()
    m.root = root
    m.n_frames = 100  # 4 s at 25 fps
    frames = index_frames(m.n_frames, size=64, step=INDEX_STEP)
    wave = tone(4.0, freq=300, seed=1)
    m.wave = wave
    m.video = write_mp4(root / "index.mp4", frames, fps=FPS, audio=wave, crf=0)
    m.wav = write_wav(root / "index.wav", wave)
    m.short_video = write_mp4(root / "short.mp4", frames[:10], fps=FPS, audio=tone(0.4, seed=2), crf=0)
    m.short_wav = write_wav(root / "short.wav", tone(0.4, seed=2))
    m.silent_video = write_mp4(root / "silent.mp4", frames[:30], fps=FPS, audio=None)
    m.stereo_44k = write_wav(root / "stereo44k.wav", tone(4.0, 44100, channels=2, seed=3), 44100)
    m.mono_48k = write_wav(root / "mono48k.wav", tone(4.0, 48000, seed=4), 48000)
    m.frames_jpg = write_frame_folder(root / "frames_jpg", frames[:40], "jpg")
    m.frames_png = write_frame_folder(root / "frames_png", frames[:40], "png")
    m.frames_gray = write_frame_folder(root / "frames_gray", frames[:40], "jpg", grayscale=True)
    m.empty_folder = root / "empty_frames"
    m.empty_folder.mkdir()
    m.missing = root / "missing.mp4"
    m.zero = root / "zero.mp4"
    m.zero.write_bytes(b"")
    m.not_media = root / "not_media.mp4"
    m.not_media.write_text("this is a text file, not a video\n" * 50)
    data = Path(m.video).read_bytes()
    m.truncated = root / "truncated.mp4"
    m.truncated.write_bytes(data[: len(data) // 2])
    m.bad_wav = root / "bad.wav"
    m.bad_wav.write_text("not a wav")
    return m


def decoded_indices(video) -> np.ndarray:
    """Frame indices encoded in a (3, T, H, W) ImageNet-normalised clip of uniform grey frames."""
    mean = np.array([0.485, 0.456, 0.406])[:, None]
    std = np.array([0.229, 0.224, 0.225])[:, None]
    pixels = video.reshape(3, video.shape[1], -1).median(dim=-1).values.numpy()
    grey = (pixels * std + mean).mean(axis=0) * 255
    # H.264's RGB -> YUV round trip loses at most one grey level downwards.
    return np.floor((grey + 1.5) / INDEX_STEP).astype(int)


def write_csv(path, header, rows) -> str:
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")
    return os.fspath(path)
