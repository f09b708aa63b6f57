"""From per-frame detections to one face track: which face, where, on every frame.

Why a track and not per-frame boxes: a clip shows one speaker, and the crop must follow that person
even when a second face appears, the detector misses a frame, or it is run only on every k-th frame.
So: the face overlapping the previous box is kept (else the largest face, e.g. at the start or after
the speaker left), frames between two found faces are filled by linear interpolation when the gap is
short (at most ``max_gap`` seconds: a blink of the detector), and longer gaps are reported, holding the
last box, so a caller can flag or drop them.

A face becomes four numbers (:func:`geometry`): centre x, centre y, side (pixels) and roll (radians,
from the eye keypoints; positive when the subject's left eye, on the image's right, is lower).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hicmae.preprocess.detector import LEFT_EYE, RIGHT_EYE, Face, iou

CX, CY, SIDE, ROLL = range(4)


def geometry(face: Face) -> np.ndarray:
    """(cx, cy, side, roll) of a face. BlazeFace's box keeps the face's own size when the head rolls (it
    is not the axis-aligned bound of a tilted square: measured on a face drawn at 0 and 15 degrees), so
    its side is used as it is."""
    x0, y0, x1, y1 = face.box
    dx, dy = face.keypoints[LEFT_EYE] - face.keypoints[RIGHT_EYE]
    roll = float(np.arctan2(dy, dx))
    side = max(x1 - x0, y1 - y0)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, side, roll], dtype=np.float64)


def choose(previous: np.ndarray | None, faces: list[Face], min_iou: float = 0.3) -> Face | None:
    """The face overlapping ``previous`` (a box) most, if by at least ``min_iou``; otherwise the largest."""
    if not faces:
        return None
    if previous is not None:
        overlaps = iou(previous, np.stack([f.box for f in faces]))
        best = int(np.argmax(overlaps))
        if overlaps[best] >= min_iou:
            return faces[best]
    return max(faces, key=lambda f: f.area)


@dataclass
class Track:
    """Per-frame face geometry before smoothing."""

    params: np.ndarray  # (T, 4) cx, cy, side, roll
    has_face: np.ndarray  # (T,) bool: found, or filled across a gap of at most max_gap
    found: np.ndarray  # (T,) bool: the detector found the tracked face on this very frame
    gaps: list[tuple[int, int]] = field(default_factory=list)  # [first, last] frames of each gap over max_gap

    def lost_frames(self) -> int:
        return int((~self.has_face).sum())


def build_track(detections: dict[int, list[Face]], num_frames: int, fps: float, max_gap: float,
                min_iou: float = 0.3) -> Track | None:
    """The track over ``num_frames`` frames from ``detections`` (frame index -> faces, only for the frames
    the detector examined), or None when no face was found on any of them.

    A gap is the run of frames between two found faces (or before the first / after the last one). It is
    filled (interpolated between two faces, or holding the one face at the clip's ends) and counts as
    having a face when it lasts at most ``max_gap`` seconds; a longer gap holds the last box and is listed
    in ``gaps``, with ``has_face`` False on its frames.
    """
    chosen: dict[int, np.ndarray] = {}
    previous = None
    for i in sorted(detections):
        face = choose(previous, detections[i], min_iou)
        if face is not None:
            chosen[i] = geometry(face)
            previous = face.box
    if not chosen:
        return None
    limit = int(np.floor(max_gap * fps + 1e-9))  # the most frames a gap may have and still be filled
    params = np.zeros((num_frames, 4))
    has_face = np.zeros(num_frames, bool)
    found = np.zeros(num_frames, bool)
    gaps = []
    keys = sorted(chosen)
    for k in keys:
        params[k], has_face[k], found[k] = chosen[k], True, True
    # Before the first and after the last found face: hold the nearest face.
    first, last = keys[0], keys[-1]
    params[:first], params[last + 1:] = chosen[first], chosen[last]
    for lo, hi in ((0, first - 1), (last + 1, num_frames - 1)):
        if hi >= lo:
            if hi - lo + 1 <= limit:
                has_face[lo:hi + 1] = True
            else:
                gaps.append((lo, hi))
    for a, b in zip(keys, keys[1:]):
        if b - a <= 1:
            continue
        if b - a - 1 <= limit:
            w = (np.arange(a + 1, b) - a) / (b - a)
            params[a + 1:b] = (1 - w)[:, None] * chosen[a] + w[:, None] * chosen[b]
            has_face[a + 1:b] = True
        else:
            params[a + 1:b] = chosen[a]
            gaps.append((a + 1, b - 1))
    return Track(params, has_face, found, sorted(gaps))
