"""A drawn face that the BlazeFace detector accepts, and videos of it moving, for tests and benchmarks.

Why drawn: the tests must run on real media with a face the detector really finds, without shipping a
photograph. This cartoon (skin-coloured oval, hair, eyes with pupils and brows, nose, mouth, ears) scores
about 0.87 with the short-range model and 0.9 with the full-range one, upright or rolled by 15 degrees,
from 60 px wide up; the tests assert the score, so a change to the drawing that loses the detector fails
there first. Ground truth comes with every frame (centre, side, roll), so tracking can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACE_WIDTH = 124 / 256  # the face oval's width as a fraction of the drawing's square (ears left out)


def draw_face(side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(side, side, 3) uint8 RGB face on black and its (side, side) float alpha mask; the face oval spans
    about half the width, centred."""
    import cv2

    s = side / 256
    img = np.zeros((side, side, 3), np.uint8)
    mask = np.zeros((side, side), np.uint8)
    pt = lambda x, y: (int(round(x * s)), int(round(y * s)))  # noqa: E731
    ln = lambda v: max(1, int(round(v * s)))  # noqa: E731
    for m in (img, mask):
        colour = (224, 172, 140) if m is img else 255
        cv2.ellipse(m, pt(128, 130), pt(62, 80), 0, 0, 360, colour, -1)  # face
        cv2.ellipse(m, pt(128, 62), pt(66, 36), 0, 180, 360, (60, 40, 30) if m is img else 255, -1)  # hair
        for x in (64, 192):  # ears
            cv2.ellipse(m, pt(x, 135), pt(8, 18), 0, 0, 360, (210, 160, 130) if m is img else 255, -1)
    for x in (102, 154):  # eyes, pupils, brows
        cv2.ellipse(img, pt(x, 115), pt(13, 7), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(img, pt(x, 115), ln(6), (50, 30, 20), -1)
        cv2.line(img, pt(x - 16, 98), pt(x + 14, 96), (70, 50, 40), ln(4))
    cv2.line(img, pt(128, 120), pt(122, 152), (180, 120, 100), ln(3))  # nose
    cv2.line(img, pt(122, 152), pt(134, 155), (180, 120, 100), ln(3))
    cv2.ellipse(img, pt(128, 178), pt(22, 9), 0, 0, 180, (150, 60, 60), -1)  # mouth
    k = ln(5) | 1
    img = cv2.GaussianBlur(img, (k, k), 0)
    alpha = cv2.GaussianBlur(mask, (k, k), 0).astype(np.float32) / 255
    return img, alpha


def paste(frame: np.ndarray, face: np.ndarray, alpha: np.ndarray, cx: float, cy: float, side: float,
          roll: float = 0.0) -> None:
    """Draw ``face`` (from :func:`draw_face`) into ``frame`` in place: its centre at (cx, cy), scaled so the
    drawing's square is ``side`` px, rotated by ``roll`` radians (positive: clockwise on screen, i.e. the
    subject's left eye, on the image's right, lower)."""
    import cv2

    n = face.shape[0]
    scale = side / n
    c, s = np.cos(roll) * scale, np.sin(roll) * scale
    h = (n - 1) / 2
    m = np.array([[c, -s, cx - c * h + s * h], [s, c, cy - s * h - c * h]])
    size = (frame.shape[1], frame.shape[0])
    warped = cv2.warpAffine(face, m, size, flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(alpha, m, size, flags=cv2.INTER_LINEAR)[..., None]
    frame[:] = (frame * (1 - a) + warped * a).astype(np.uint8)


@dataclass
class MovingFace:
    """Frames of a face moving over a background, and where the face is on each (the drawing's square)."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    centres: np.ndarray  # (T, 2) x, y; nan where no face is drawn
    sides: np.ndarray  # (T,)
    rolls: np.ndarray  # (T,)


def background(num_frames: int, height: int, width: int, seed: int = 0, noise: float = 3.0) -> np.ndarray:
    """A textured, slowly panning background with sensor noise, so the video codec has real work."""
    import cv2

    rng = np.random.default_rng(seed)
    big = rng.integers(0, 256, (height // 8 + 8, width // 8 + 16, 3), dtype=np.uint8)
    big = cv2.resize(cv2.GaussianBlur(big, (5, 5), 0), ((width // 8 + 16) * 8, (height // 8 + 8) * 8),
                     interpolation=cv2.INTER_CUBIC)
    big = (big.astype(np.float32) * 0.5 + 60).astype(np.uint8)
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        x = int(t * 0.5) % 64
        frame = big[:height, x:x + width].astype(np.float32)
        if noise:
            frame += rng.normal(0, noise, frame.shape).astype(np.float32)
        out[t] = np.clip(frame, 0, 255)
    return out


def moving_face(num_frames: int = 50, height: int = 180, width: int = 320, side: float = 200, *, seed: int = 0,
                sway: float = 0.25, roll: float = 0.2, absent: tuple[int, int] | None = None,
                noise: float = 3.0) -> MovingFace:
    """A face of about ``side`` px (the drawing's square; the face oval is about half of it) swaying
    ``sway`` of the width left and right, bobbing, breathing in size by 10% and rolling up to ``roll``
    radians; frames ``absent[0]`` to ``absent[1] - 1`` show no face."""
    face, alpha = draw_face(256)
    frames = background(num_frames, height, width, seed, noise)
    t = np.arange(num_frames)
    phase = 2 * np.pi * t / max(num_frames, 2)
    cx = width / 2 + sway * width * np.sin(phase)
    cy = height / 2 + 0.05 * height * np.sin(2 * phase)
    sides = side * (1 + 0.1 * np.sin(3 * phase))
    rolls = roll * np.sin(phase + 1.0)
    centres = np.stack([cx, cy], axis=1)
    for i in range(num_frames):
        if absent is not None and absent[0] <= i < absent[1]:
            centres[i] = np.nan
            continue
        paste(frames[i], face, alpha, cx[i], cy[i], sides[i], rolls[i])
    return MovingFace(frames, centres, sides, rolls)
