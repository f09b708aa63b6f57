"""Writing one clip's face crops, atomically: an H.264 mp4, or a folder of jpg frames.

Why atomic: ``hicmae preprocess`` is resumable, and it decides what is done by what exists. So every
output is written under a temporary name beside its final one (``.<name>.<pid>.tmp...``) and renamed
into place only when complete; an interrupted run leaves a temporary file, which the next attempt at
that clip removes (:func:`remove_stale`), never a truncated output under the final name.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from hicmae.atomic import temp_path

PRESET = "veryfast"  # x264 preset: bench/RESULTS.md, "Face preprocessing" (encoding a 160 px crop is cheap)


def remove_stale(path: Path) -> int:
    """Remove temporary files or folders that an interrupted run left for ``path``; returns how many."""
    removed = 0
    if path.parent.is_dir():
        for p in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            removed += 1
    return removed


def commit(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` to ``path`` in one step (a folder replaces an older folder of that name)."""
    if tmp.is_dir() and path.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)


class Mp4Writer:
    """H.264 (yuv420p) frames of one size at the constant rate ``fps`` (the source's exact average rate: its
    frames one for one, so a variable-rate source keeps its frame count and length), to ``path`` once
    :meth:`commit` is called."""

    def __init__(self, path: str | os.PathLike, size: int, fps: Fraction, crf: int = 18):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        self._container = av.open(str(self.tmp), "w")
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps))
        self._stream.width = self._stream.height = size
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"preset": PRESET, "crf": str(crf), "threads": "1"}
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def commit(self) -> Path:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        commit(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # closing a container whose encoder failed may fail again; the file goes anyway
            pass
        self.tmp.unlink(missing_ok=True)


class FrameFolderWriter:
    """``000001.jpg``, ``000002.jpg``... (OpenFace's layout, which the training readers accept) in ``path``."""

    def __init__(self, path: str | os.PathLike, quality: int = 95):
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        self.tmp.mkdir(parents=True)
        self.quality = quality
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import cv2

        self.frames += 1
        ok, data = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode frame {self.frames} as JPEG")
        (self.tmp / f"{self.frames:06d}.jpg").write_bytes(data.tobytes())

    def commit(self) -> Path:
        commit(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
