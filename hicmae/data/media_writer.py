"""Write real media files (H.264 + AAC mp4 with PyAV, wav with soundfile, jpg/png frame folders).

Shared by the demo-data generator, the tests and the benchmark, so that every one of them exercises
the same decoders on files made the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, audio: np.ndarray | None = None,
              sample_rate: int = 16000, crf: int = 20, gop: int = 25) -> Path:
    """Write ``frames`` (T, H, W, 3) uint8 as H.264 video, with ``audio`` ((N,) or (C, N) float in [-1, 1]) as AAC.

    H and W must be even (yuv420p). ``gop`` is the keyframe interval, which decides how far a seek decodes.
    """
    import av  # imported here: the GPU image lacks PyAV and only the tests and the demo write media

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264", rate=fps)
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        vstream.options = {"preset": "ultrafast", "crf": str(crf), "g": str(gop), "threads": "1"}
        astream = None
        if audio is not None:
            audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
            layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = layout
        for frame in frames:
            for packet in vstream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            chunk = astream.codec_context.frame_size or 1024
            for start in range(0, audio.shape[1], chunk):
                piece = np.ascontiguousarray(audio[:, start:start + chunk])
                aframe = av.AudioFrame.from_ndarray(piece, format="fltp", layout=astream.layout.name)
                aframe.sample_rate = sample_rate
                aframe.pts = start
                for packet in astream.encode(aframe):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    """Write ``audio`` ((N,) mono or (C, N) channels-first, float in [-1, 1]) as 16-bit PCM wav."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32)
    sf.write(str(path), audio.T if audio.ndim == 2 else audio, sample_rate, subtype="PCM_16")
    return path


def write_frame_folder(folder: str | os.PathLike, frames: np.ndarray, ext: str = "jpg",
                       grayscale: bool = False) -> Path:
    """Write frames (T, H, W, 3) uint8 as ``000001.<ext>`` ... (the layout OpenFace produces)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(np.asarray(frames)):
        image = Image.fromarray(frame)
        if grayscale:
            image = image.convert("L")
        image.save(folder / f"{i + 1:06d}.{ext}", quality=95) if ext == "jpg" else image.save(folder / f"{i + 1:06d}.{ext}")
    return folder


def index_frames(num_frames: int, size: int = 64, step: int = 3) -> np.ndarray:
    """Frames whose uniform grey level encodes their index (``value = index * step``), for alignment checks."""
    values = (np.arange(num_frames) * step) % 256
    return np.broadcast_to(values[:, None, None, None], (num_frames, size, size, 3)).astype(np.uint8).copy()


def tone(seconds: float, sample_rate: int = 16000, freq: float = 440.0, amplitude: float = 0.3,
         channels: int = 1, seed: int = 0) -> np.ndarray:
    """A sine with a little seeded noise; (N,) for mono, (channels, N) otherwise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    x = amplitude * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    x = x.astype(np.float32)
    return x if channels == 1 else np.stack([x * (0.5 + 0.5 * c / channels) for c in range(channels)])
