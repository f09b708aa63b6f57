"""Face crops of a whole video: detect, track, smooth, then cut an aligned square from every frame.

Two passes over the file (see ``video.py`` for why): :func:`track_faces` decodes it, runs the detector on
every ``detect_every``-th frame (and the last), builds and smooths the track; :func:`iter_crops` decodes it
again and yields one crop per frame. :func:`crop_faces` does both and returns a :class:`FaceCrops`, the
form ``hicmae predict`` uses; ``hicmae preprocess`` streams the crops into an mp4 instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from hicmae.errors import DataError
from hicmae.preprocess.align import crop
from hicmae.preprocess.detector import Letterbox
from hicmae.preprocess.detector import detector as load_detector
from hicmae.preprocess.smooth import smooth_track
from hicmae.preprocess.track import build_track
from hicmae.preprocess.video import VideoDecoder, frame_timestamps, full_rgb, small_rgb

log = logging.getLogger(__name__)

DEFAULT_SIZE = 160
DEFAULT_MARGIN = 0.25  # the square is 1.5x the detector's box: forehead to chin, as OpenFace's aligned faces
DEFAULT_MAX_GAP = 0.5
DEFAULT_DETECT_EVERY = 2  # bench/RESULTS.md, "Face preprocessing": the end-to-end speed of 1..5


class NoFaceError(DataError):
    """No face was found on any frame the detector examined."""


@dataclass(frozen=True)
class FaceSettings:
    """How faces are found and followed. Defaults: bench/RESULTS.md, "Face preprocessing"."""

    detector: str = "short"  # "short": MediaPipe short range (faces over ~1/10 of the frame); "full": smaller faces
    min_score: float = 0.7  # at 0.5 a face-free clip gave false faces
    detect_every: int = DEFAULT_DETECT_EVERY  # run the detector on every k-th frame, interpolate between
    max_gap: float = DEFAULT_MAX_GAP  # seconds without a face that are still filled (longer gaps are reported)
    min_iou: float = 0.3  # overlap with the previous box that keeps following the same face
    position_smoothing: float = 0.08  # Gaussian sigma in seconds for the centre
    size_smoothing: float = 0.16  # ... for the side and the roll

    def check(self) -> None:
        from hicmae.errors import ConfigError
        from hicmae.preprocess.detector import MODELS

        if self.detector not in MODELS:
            raise ConfigError(f"face detector must be one of {sorted(MODELS)}, got {self.detector!r}")
        if not 0 < self.min_score < 1:
            raise ConfigError(f"the detector's minimum score must be between 0 and 1, got {self.min_score}")
        if self.detect_every < 1:
            raise ConfigError(f"detect_every must be at least 1 frame, got {self.detect_every}")
        if self.max_gap < 0 or self.position_smoothing < 0 or self.size_smoothing < 0:
            raise ConfigError("max_gap and the smoothing widths must be zero or more seconds")


@dataclass
class FaceTrack:
    """Where the face is on every frame of ``source``, smoothed: what the crops are cut from."""

    source: str
    fps: Fraction
    width: int
    height: int
    timestamps: np.ndarray  # (T, 2) start, end seconds
    params: np.ndarray  # (T, 4) cx, cy, side, roll (smoothed)
    has_face: np.ndarray  # (T,) bool
    found: np.ndarray  # (T,) bool: the detector found the tracked face on the frame itself
    examined: int  # frames the detector ran on
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (start, end) seconds of gaps over max_gap

    def __len__(self) -> int:
        return len(self.params)

    @property
    def lost_seconds(self) -> float:
        return float(sum(end - start for start, end in self.gaps))


@dataclass
class FaceCrops:
    frames: np.ndarray  # (T, size, size, 3) uint8 RGB face crops, one per source frame
    timestamps: np.ndarray  # (T, 2) start/end seconds of each frame in the source
    fps: float  # the stream's exact frame rate
    has_face: np.ndarray  # (T,) bool: a face was detected or interpolated (gap <= limit) for the frame
    source: str


def track_faces(video: str, settings: FaceSettings = FaceSettings(), threads: int = 1) -> FaceTrack:
    """Decode ``video`` once, detect faces on every ``settings.detect_every``-th frame and the last one,
    and build the smoothed track. Raises DataError for undecodable input, NoFaceError when no face is found."""
    settings.check()
    det = load_detector(settings.detector, settings.min_score)
    detections, starts, examined = {}, [], 0
    with VideoDecoder(video, threads) as decoder:
        info = decoder.info
        box = Letterbox(info.width, info.height, det.input_size)
        w, h = box.inner

        def run(frame) -> list:
            return [box.to_frame(f) for f in det.detect(box.pad(small_rgb(frame, w, h)))]

        last = None
        for index, start, frame in decoder.frames():
            starts.append(start)
            if index % settings.detect_every == 0:
                detections[index] = run(frame)
                examined += 1
                last = None
            else:
                last = (index, frame)
        if last is not None:  # the last frame, so a face leaving at the end is seen
            detections[last[0]] = run(last[1])
            examined += 1
    n, fps = len(starts), info.fps
    track = build_track(detections, n, float(fps), settings.max_gap, settings.min_iou)
    if track is None:
        hint = "" if settings.detector == "full" else \
            " (faces narrower than about a tenth of the frame need --detector full)"
        raise NoFaceError(video, f"no face found on any of the {examined} frames examined of {n}{hint}")
    params = smooth_track(track.params, track.has_face, float(fps), settings.position_smoothing,
                          settings.size_smoothing)
    timestamps = frame_timestamps(starts, fps)
    gaps = [(float(timestamps[a, 0]), float(timestamps[b, 1])) for a, b in track.gaps]
    log.debug("%s: %d frames, face on %d (%d found of %d examined), %d gaps over %.2f s", video, n,
              int(track.has_face.sum()), int(track.found.sum()), examined, len(gaps), settings.max_gap)
    return FaceTrack(video, fps, info.width, info.height, timestamps, params, track.has_face, track.found,
                     examined, gaps)


def iter_crops(track: FaceTrack, size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN, shift: float = 0.0,
               threads: int = 1) -> Iterator[np.ndarray]:
    """Decode ``track.source`` again and yield the (size, size, 3) uint8 RGB crop of each frame."""
    n = 0
    with VideoDecoder(track.source, threads) as decoder:
        for index, _, frame in decoder.frames():
            if index >= len(track):
                raise DataError(track.source, f"decoded more frames the second time ({index + 1}) than the first "
                                              f"({len(track)})")
            yield crop(full_rgb(frame), track.params[index], size, margin, shift)
            n += 1
    if n != len(track):
        raise DataError(track.source, f"decoded {n} frames the second time, {len(track)} the first")


def crop_faces(video: str, *, size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN,
               max_gap: float = DEFAULT_MAX_GAP, shift: float = 0.0, detector: str = "short",
               detect_every: int = DEFAULT_DETECT_EVERY, min_score: float = 0.7, threads: int = 0) -> FaceCrops:
    """Face-centred, smoothed, roll-aligned square crops of every frame of ``video``.

    ``margin``: the face's side added on each side of it (0.25: the square is 1.5x the face box);
    ``max_gap``: seconds without a face that are filled by interpolation; frames of longer gaps hold the
    last box and have ``has_face`` False. Raises ``hicmae.errors.DataError(video, reason)`` for undecodable
    input and :class:`NoFaceError` (a DataError) when no face is found at all. The whole clip is held in
    memory; for long videos use :func:`track_faces` and :func:`iter_crops`.
    """
    settings = FaceSettings(detector=detector, min_score=min_score, detect_every=detect_every, max_gap=max_gap)
    track = track_faces(video, settings, threads)
    frames = np.empty((len(track), size, size, 3), np.uint8)
    for i, face in enumerate(iter_crops(track, size, margin, shift, threads)):
        frames[i] = face
    return FaceCrops(frames=frames, timestamps=track.timestamps, fps=float(track.fps), has_face=track.has_face,
                     source=video)
