"""Decoding: video files (decord), folders of face frames (PIL) and audio (soundfile / PyAV / decord).

Every failure becomes ``DataError(path, reason)``. Readers decode only the frame indices asked for
(``VideoReader.get_batch``), never the whole clip; ``frames_decoded`` counts what was requested so the
benchmark can show it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from hicmae.errors import DataError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".flv", ".mkv", ".mov", ".webm", ".m4v")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
SAMPLE_RATE = 16000
NO_SAMPLES = "has no audio samples (the audio is empty)"


class VideoClip:
    """A video file or a frame folder: ``len()`` frames, ``timestamps()`` in seconds, ``frames(indices)``."""

    path: str
    frames_decoded: int = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def timestamps(self, indices) -> np.ndarray:
        """(k, 2) start and end time of each frame in seconds."""
        raise NotImplementedError

    def frames(self, indices) -> np.ndarray:
        """(k, H, W, 3) uint8 RGB."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder now. A decord reader still alive when a DataLoader forks its workers
        (e.g. kept by a traceback) crashes the worker that frees it, so readers never outlive a sample."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DecordVideo(VideoClip):
    def __init__(self, path: str):
        import decord  # lazy: the GPU image has no decord, and models/ must import without it

        self.path = path
        check_file(path)
        try:
            self._reader = decord.VideoReader(path, num_threads=1)
            n = len(self._reader)
        except Exception as exc:  # decord raises its own DECORDError / RuntimeError types
            raise DataError(path, f"cannot open as a video: truncated, corrupt or not a video file ({_short(exc)})") from None
        if n == 0:
            raise DataError(path, "video has no frames")
        self._n = n

    def __len__(self) -> int:
        return self._n

    def close(self) -> None:
        self._reader = None

    def timestamps(self, indices) -> np.ndarray:
        try:
            return np.asarray(self._reader.get_frame_timestamp(list(map(int, indices))), dtype=np.float64).reshape(-1, 2)
        except Exception as exc:
            raise DataError(self.path, f"cannot read frame timestamps ({_short(exc)})") from None

    def frames(self, indices) -> np.ndarray:
        indices = [int(i) for i in indices]
        try:
            # get_batch decodes only the distinct requested frames (seeking from the nearest keyframe).
            out = self._reader.get_batch(indices).asnumpy()
        except Exception as exc:
            raise DataError(self.path, f"cannot decode frames {indices[0]}..{indices[-1]} ({_short(exc)}); "
                                       "the file may be truncated") from None
        self.frames_decoded += len(set(indices))
        return out


class FrameFolder(VideoClip):
    """A folder of jpg/png face frames, read in sorted name order; grayscale frames are made RGB."""

    def __init__(self, path: str, fps: float = 25.0):
        self.path = path
        if not os.path.isdir(path):
            raise DataError(path, "frame folder does not exist")
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(FRAME_EXTENSIONS))
        if not files:
            raise DataError(path, "frame folder has no .jpg or .png frames")
        self._files = [os.path.join(path, f) for f in files]
        self.fps = fps

    def __len__(self) -> int:
        return len(self._files)

    def timestamps(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.float64)
        return np.stack([idx / self.fps, (idx + 1) / self.fps], axis=1)

    def frames(self, indices) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        cache: dict[int, np.ndarray] = {}
        out = []
        for i in indices:
            i = int(i)
            if i not in cache:
                file = self._files[i]
                try:
                    with Image.open(file) as image:
                        cache[i] = np.asarray(image.convert("RGB"))
                except (UnidentifiedImageError, OSError) as exc:
                    raise DataError(file, f"cannot read frame image ({_short(exc)})") from None
            out.append(cache[i])
        self.frames_decoded += len(cache)
        shapes = {f.shape for f in out}
        if len(shapes) > 1:
            raise DataError(self.path, f"frames differ in size: {sorted(shapes)}")
        return np.stack(out)


def open_video(path: str, fps: float = 25.0) -> VideoClip:
    """A frame folder if ``path`` is a directory, otherwise a video file read with decord."""
    if os.path.isdir(path):
        return FrameFolder(path, fps=fps)
    return DecordVideo(path)


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(path, "file does not exist")
    if os.path.isdir(path):
        raise DataError(path, "expected a file, found a folder")
    if os.path.getsize(path) == 0:
        raise DataError(path, "file is empty (0 bytes)")


# ---------------------------------------------------------------------------------------------- audio
def load_audio(path: str, start: float = 0.0, end: float | None = None, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Mono float32 waveform of ``path`` between ``start`` and ``end`` seconds, at ``sample_rate``.

    wav/flac go through soundfile (reading only the needed range); anything else is taken as a
    container with an audio track (PyAV, then decord as fallback). Several channels are averaged;
    other rates are resampled with ``torchaudio.functional.resample``.
    """
    check_file(path)
    if Path(path).suffix.lower() in (".wav", ".flac", ".ogg"):
        wave, rate = _read_soundfile(path, start, end)
    else:
        wave, rate = _read_track(path)
        wave = _cut(wave, rate, start, end)
    wave = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if rate != sample_rate:
        import torchaudio.functional as AF

        wave = AF.resample(wave, rate, sample_rate)
    return wave


def audio_duration(path: str) -> float:
    """Length of the audio in seconds, without decoding it where the format allows."""
    check_file(path)
    if Path(path).suffix.lower() in (".wav", ".flac", ".ogg"):
        import soundfile as sf

        try:
            info = sf.info(path)
        except Exception as exc:
            raise DataError(path, f"cannot read audio ({_short(exc)})") from None
        if info.frames == 0:
            raise DataError(path, NO_SAMPLES)
        return info.frames / info.samplerate
    wave, rate = _read_track(path)
    return len(wave) / rate


def _cut(wave: np.ndarray, rate: int, start: float, end: float | None) -> np.ndarray:
    lo = max(round(start * rate), 0)
    hi = len(wave) if end is None else max(round(end * rate), lo)
    return wave[lo:hi]


def _read_soundfile(path: str, start: float, end: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            rate, total = f.samplerate, f.frames
            lo = min(max(round(start * rate), 0), f.frames)
            hi = f.frames if end is None else min(max(round(end * rate), lo), f.frames)
            f.seek(lo)
            data = f.read(hi - lo, dtype="float32", always_2d=True)
    except Exception as exc:
        raise DataError(path, f"cannot read audio ({_short(exc)})") from None
    if total == 0:
        raise DataError(path, NO_SAMPLES)
    return data.mean(axis=1), rate


def _read_track(path: str) -> tuple[np.ndarray, int]:
    """The whole audio track of a media container, mono, at its own rate."""
    try:
        wave, rate = _read_track_pyav(path)
    except _NoAudioTrack:
        raise DataError(path, "has no audio track and no separate audio file was given") from None
    except Exception as pyav_error:
        try:
            wave, rate = _read_track_decord(path)
        except Exception as decord_error:
            raise DataError(path, f"cannot decode the audio track (PyAV: {_short(pyav_error)}; "
                                  f"decord: {_short(decord_error)})") from None
    if len(wave) == 0:
        raise DataError(path, NO_SAMPLES)
    return wave, rate


class _NoAudioTrack(Exception):
    pass


def _read_track_pyav(path: str) -> tuple[np.ndarray, int]:
    import av

    with av.open(path) as container:
        if not container.streams.audio:
            raise _NoAudioTrack()
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        chunks = []
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            # Integer PCM to [-1, 1) as soundfile and torchaudio scale it; before mixing, which makes floats.
            if data.dtype.kind == "i":
                data = data / -float(np.iinfo(data.dtype).min)
            elif data.dtype.kind == "u":  # 8-bit PCM is unsigned around 128
                data = (data - 128.0) / 128.0
            if frame.format.is_planar:
                data = data.mean(axis=0)  # (channels, samples) -> mono
            else:
                data = data.reshape(-1, len(frame.layout.channels)).mean(axis=1)
            chunks.append(data.astype(np.float32))
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), int(rate)


def _read_track_decord(path: str) -> tuple[np.ndarray, int]:
    import decord

    # decord resamples and mixes down itself when asked for a rate; used only when PyAV failed.
    reader = decord.AudioReader(path, sample_rate=SAMPLE_RATE, mono=True)
    if reader.shape[1] == 0:
        return np.zeros(0, np.float32), SAMPLE_RATE
    return reader[:].asnumpy().mean(axis=0).astype(np.float32), SAMPLE_RATE


def _short(exc: BaseException) -> str:
    """The last line of a decoder's message (decord prefixes a timestamp and a source location)."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if "ERROR" in text and ":" in text:
        text = text.split("ERROR", 1)[1].lstrip(" :")
    return text[:200]
