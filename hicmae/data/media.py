"""Decoding: video files (decord), folders of face frames (PIL) and audio (soundfile / PyAV / decord).

Every failure becomes ``DataError(path, reason)``. Readers decode only the frame indices asked for
(``VideoReader.get_batch``), never the whole clip; ``frames_decoded`` counts what was requested so the
benchmark can show it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from hicmae.errors import MP4, VIDEO_KINDS, DataError, describe_content

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
        check_video_file(path)
        try:
            with native_stderr_to_log(path) as printed:
                self._reader = decord.VideoReader(path, num_threads=1)
                n = len(self._reader)
        except Exception as exc:  # decord raises its own DECORDError / RuntimeError types
            detail = _decoder_detail(printed, path) or _short(exc)  # its own text only says "Error reading <path>"
            reason = f"cannot open as a video: truncated, corrupt or not a video file ({detail})"
            raise DataError(path, reason) from None
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


def check_video_file(path: str) -> None:
    """Refuse, before FFmpeg sees it, a file whose first bytes show it is no video (text, an image,
    audio, an archive...) or an MP4/MOV cut short; formats not recognised are left to the decoder."""
    kind = describe_content(path)
    if kind is not None and kind not in VIDEO_KINDS:
        raise DataError(path, f"cannot open as a video: not a video file (it looks like {kind})")
    if kind == MP4 and (problem := _mp4_problem(path)):
        raise DataError(path, f"cannot open as a video: {problem}")


def _mp4_problem(path: str) -> str | None:
    """Why an MP4/MOV file is incomplete, read from its top-level boxes, or None. An interrupted copy or
    download ends inside a box, or lacks the 'moov' box (the frame index) that most writers put last."""
    size = os.path.getsize(path)
    seen, pos = set(), 0
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            header = f.read(16)
            length, kind = struct.unpack(">I4s", header[:8])
            if length == 1 and len(header) == 16:  # a 64-bit size follows the type
                length = struct.unpack(">Q", header[8:16])[0]
            elif length == 0:  # the last box, running to the end of the file
                length = size - pos
            if length < 8 or not all(32 <= c < 127 for c in kind):
                return None  # not a box layout we follow: let the decoder judge
            name = kind.decode("ascii")
            if pos + length > size:
                return (f"the file ends at byte {size} inside its '{name}' box, which runs to byte {pos + length}: "
                        "it is truncated (copy or download it again)")
            seen.add(name)
            pos += length
    if "moov" not in seen:
        return ("it has no 'moov' box, the index of its frames: it is truncated or was never finished "
                "(copy or download it again)")
    return None


_swap_lock = threading.Lock()


def _fresh_swap_lock() -> None:
    global _swap_lock
    _swap_lock = threading.Lock()  # a child forked while another thread held it would never get it


os.register_at_fork(after_in_child=_fresh_swap_lock)
_sink: tuple[int, object] | None = None  # (pid, file): one per process, since forked workers must not share it


def _stderr_sink():
    global _sink
    if _sink is None or _sink[0] != os.getpid():
        _sink = (os.getpid(), tempfile.TemporaryFile())
    return _sink[1]


@contextlib.contextmanager
def native_stderr_to_log(path: str):
    """Collect what C code (FFmpeg, decord) prints to the process's stderr during the block into the
    yielded list and the debug log, rather than onto the console: decord prints a line of its own for
    every file it cannot open, and no log level silences it. The file descriptor is swapped for the
    whole process, so a line another thread prints meanwhile lands in the debug log too."""
    printed: list[str] = []
    # One swap at a time: two interleaved swaps could restore each other's sink and hide stderr for good.
    # A thread that finds another one swapping goes without (its decoder lines may reach the console).
    if not _swap_lock.acquire(blocking=False):
        yield printed
        return
    try:
        sink = _stderr_sink()
        saved = os.dup(2)
    except OSError:  # no stderr to protect, or nowhere to put it
        _swap_lock.release()
        yield printed
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    sink.seek(0)
    sink.truncate()
    os.dup2(sink.fileno(), 2)
    try:
        yield printed
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace").strip()
        _swap_lock.release()
        if text:
            printed.extend(text.splitlines())
            log.debug("%s: the decoder printed: %s", path, text)


def _decoder_detail(printed: list[str], path: str) -> str:
    """The gist of what FFmpeg/decord printed: '[mov,mp4,... @ 0x55] moov atom not found' and
    '[12:00:00] video_reader.cc:83: ERROR opening: <path>, Invalid data' become their last parts."""
    details = []
    for line in printed:
        line = re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*", "", line.strip())
        if "ERROR" in line:
            line = line.split("ERROR", 1)[1].lstrip(" :")
        line = line.removeprefix(f"opening: {path},").strip()
        if line and line not in details:
            details.append(line)
    return "; ".join(details)[:200]


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


class AudioSource:
    """The audio of one clip: ``read(start, end)`` in the file's seconds, ``duration()`` of the whole file,
    and the clip's range ``[start, end)`` in it (``end`` None: to the file's end)."""

    path: str
    start: float = 0.0
    end: float | None = None

    def read(self, start: float, end: float | None) -> torch.Tensor:
        raise NotImplementedError

    def duration(self) -> float:
        raise NotImplementedError


class AudioFile(AudioSource):
    """A wav, or a container's audio track, read on demand (only the asked range where the format allows)."""

    def __init__(self, path: str, start: float | None = None, end: float | None = None):
        self.path, self.start, self.end = path, start or 0.0, end

    def read(self, start: float, end: float | None) -> torch.Tensor:
        return load_audio(self.path, start, end)

    def duration(self) -> float:
        return audio_duration(self.path)


class PCMAudio(AudioSource):
    """16 kHz mono 16-bit samples held in memory (a shard's copy of a clip's audio), from sample ``offset``
    of the file on. ``read`` cuts as :func:`load_audio` cuts a 16 kHz file, so both give the same samples."""

    def __init__(self, samples: np.ndarray, *, offset: int, file_duration: float, path: str,
                 start: float | None = None, end: float | None = None):
        self.samples, self.offset, self.file_duration = samples, int(offset), float(file_duration)
        self.path, self.start, self.end = path, start or 0.0, end

    def read(self, start: float, end: float | None) -> torch.Tensor:
        total = self.offset + len(self.samples)
        lo = min(max(round(start * SAMPLE_RATE), 0), total)
        hi = total if end is None else min(max(round(end * SAMPLE_RATE), lo), total)
        if lo < self.offset:
            raise DataError(self.path, f"audio from {start:.3f} s was not stored (the stored part starts at "
                                       f"{self.offset / SAMPLE_RATE:.3f} s)")
        if hi <= lo and len(self.samples) == 0:
            raise DataError(self.path, NO_SAMPLES)
        part = self.samples[lo - self.offset:hi - self.offset]
        return torch.from_numpy(part.astype(np.float32) / 32768.0)

    def duration(self) -> float:
        return self.file_duration


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
    with native_stderr_to_log(path):
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
