"""Cutting the aligned face square out of a frame: one affine warp per frame.

Why one warp: centring, scaling to the output size and undoing the head's roll are a single affine
map, so each output pixel is interpolated once from the source frame (no intermediate crop, no double
resampling). The square's side is the face's side times ``1 + 2 * margin`` (``margin`` of the face's
side added on each side), and its centre sits ``shift`` face sides below the detector's box centre
(negative: above). Outside the frame the crop is black, as OpenFace's aligned faces are.
"""

from __future__ import annotations

import numpy as np


def crop_matrix(params: np.ndarray, size: int, margin: float, shift: float = 0.0) -> np.ndarray:
    """The 2x3 map from output pixel (u, v) to frame pixel (x, y) (OpenCV's inverse-map convention, pixel
    centres at integers) for face geometry ``params`` = (cx, cy, side, roll) in frame coordinates where
    pixel i spans [i, i + 1)."""
    cx, cy, side, roll = (float(v) for v in params)
    scale = side * (1 + 2 * margin) / size
    c, s = np.cos(roll) * scale, np.sin(roll) * scale
    # The square's centre: the box centre moved by `shift` sides along the face's own down axis.
    mx = cx - 0.5 - np.sin(roll) * shift * side
    my = cy - 0.5 + np.cos(roll) * shift * side
    half = (size - 1) / 2
    return np.array([[c, -s, mx - c * half + s * half],
                     [s, c, my - s * half - c * half]], dtype=np.float64)


def crop(frame: np.ndarray, params: np.ndarray, size: int, margin: float, shift: float = 0.0) -> np.ndarray:
    """The (size, size, 3) uint8 face square of ``frame`` (H, W, 3) for ``params`` (see :func:`crop_matrix`)."""
    import cv2

    matrix = crop_matrix(params, size, margin, shift)
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
