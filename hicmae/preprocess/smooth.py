"""Temporal smoothing of the face track, so the crop does not jitter with the detector's noise.

Why Gaussian and centred: the whole track is known before any frame is cropped, so a zero-phase
filter can be used: it removes the detector's frame-to-frame jitter (a few pixels of centre, a few
percent of size) without the lag a causal filter adds to a moving head. Each run of frames that has a
face is smoothed on its own, as a Gaussian-weighted local line (no pull towards zero or towards a box
on the other side of a gap, and no lag at the run's ends); frames of a long gap then hold the smoothed
box of the frame before (or after, at the clip's start).

Widths are in seconds, so a 50 fps clip is smoothed over the same time as a 25 fps one. Size and roll
change slower than position and get a wider kernel.
"""

from __future__ import annotations

import numpy as np

from hicmae.preprocess.track import ROLL


def gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """``values`` (T, ...) smoothed along time with a Gaussian of ``sigma`` frames (0: unchanged).

    A Gaussian-weighted local linear fit rather than a plain weighted mean: inside the run both are the
    same, but near the run's ends a mean only sees one side and lags behind a moving head (by a fifth of
    a face width at a clip's first frame in the tests), while a local line follows the motion to the end.
    """
    values = np.asarray(values, dtype=np.float64)
    if sigma <= 0 or len(values) < 2:
        return values.copy()
    radius = int(np.ceil(3 * sigma))
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (d / sigma) ** 2)
    flat = values.reshape(len(values), -1)

    def corr(x: np.ndarray, k: np.ndarray) -> np.ndarray:  # sum over j of x[t + j] * k[j], zeros outside
        return np.correlate(np.pad(x, radius), k, mode="valid")

    inside = np.ones(len(values))
    s0, s1, s2 = corr(inside, w), corr(inside, w * d), corr(inside, w * d * d)
    det = s0 * s2 - s1 * s1
    line = det > 1e-9 * s0 * s0  # at least two samples under the kernel
    out = np.empty_like(flat)
    for c in range(flat.shape[1]):
        t0, t1 = corr(flat[:, c], w), corr(flat[:, c], w * d)
        out[:, c] = np.where(line, (s2 * t0 - s1 * t1) / np.where(line, det, 1.0), t0 / s0)
    return out.reshape(values.shape)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in ``mask``."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def smooth_track(params: np.ndarray, has_face: np.ndarray, fps: float, position_s: float = 0.08,
                 size_s: float = 0.16) -> np.ndarray:
    """(T, 4) cx, cy, side, roll smoothed within each run of ``has_face`` frames (Gaussian sigma
    ``position_s`` seconds for the centre, ``size_s`` for side and roll); other frames hold the nearest
    earlier smoothed value (or the first one, before the first run)."""
    params = np.asarray(params, dtype=np.float64)
    out = params.copy()
    segments = runs(has_face)
    for lo, hi in segments:
        part = params[lo:hi].copy()
        part[:, ROLL] = np.unwrap(part[:, ROLL])
        out[lo:hi, :2] = gaussian_smooth(part[:, :2], position_s * fps)
        out[lo:hi, 2:] = gaussian_smooth(part[:, 2:], size_s * fps)
    if segments:
        # Hold: a gap shows the last place the face was seen (the first place, before it was seen).
        filled = np.maximum.accumulate(np.where(has_face, np.arange(len(out)), -1))
        filled[filled < 0] = segments[0][0]
        out = out[filled]
    return out
