"""BlazeFace face detection (MediaPipe's short- and full-range models) run with OpenCV's DNN module.

Why this detector: it ships as two small files inside this package (``models/``, Apache-2.0, see
``models/NOTICE``), needs nothing but ``opencv-python-headless`` at run time (no TensorFlow, no
MediaPipe, no download), and costs about 1.5 ms a frame on one CPU core (short range; 5 ms full
range). bench/RESULTS.md, "Face preprocessing", has the measurements.

The models end in raw SSD outputs; the anchors and the box decoding below are MediaPipe's
(``face_detection_short_range.pbtxt`` / ``..._full_range.pbtxt``): boxes and the six keypoints (the
subject's right eye, left eye, nose tip, mouth centre, right and left ear tragion) are offsets from an
anchor in input pixels, scores are logits clipped to +-100. Overlapping boxes are merged by
score-weighted averaging ("weighted NMS"), as MediaPipe does.

Two OpenCV 5 facts (checked on opencv-python-headless 5.0): the TFLite importer must be told
``engine=cv2.dnn.ENGINE_CLASSIC``, or one of the two outputs is dropped; and the outputs come in no fixed
order, so they are told apart by shape (16 regression values vs 1 score per anchor).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).with_name("models")
RIGHT_EYE, LEFT_EYE = 0, 1  # keypoint rows: the subject's right eye appears on the image's left


@dataclass(frozen=True)
class ModelSpec:
    """What one BlazeFace variant needs: its file, input side and anchor layout (stride, anchors per cell)."""

    file: str
    input_size: int
    layers: tuple[tuple[int, int], ...]


MODELS = {
    # 128x128 input, faces within about 2 m of a selfie camera: 16x16 cells x 2 + 8x8 cells x 6 = 896 anchors.
    "short": ModelSpec("face_detection_short_range.tflite", 128, ((8, 2), (16, 6))),
    # 192x192 input, smaller faces further away: 48x48 cells x 1 = 2304 anchors.
    "full": ModelSpec("face_detection_full_range.tflite", 192, ((4, 1),)),
}


@dataclass(frozen=True)
class Face:
    """One detected face in the coordinates of the image given to the detector (pixels)."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    keypoints: np.ndarray  # (6, 2) x, y
    score: float

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def anchors(spec: ModelSpec) -> np.ndarray:
    """(N, 2) anchor centres as fractions of the input side, in the order of the model's outputs."""
    out = []
    for stride, per_cell in spec.layers:
        cells = spec.input_size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of box ``a`` (4,) with each of ``b`` (N, 4)."""
    b = np.atleast_2d(b)
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, threshold: float) -> list[Face]:
    """Merge boxes overlapping the best remaining one by more than ``threshold`` IoU into their
    score-weighted mean (MediaPipe's WEIGHTED overlap type), best first."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    faces, left = [], np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not left[i]:
            continue
        group = left & (iou(boxes[i], boxes) > threshold)
        group[i] = True
        w = scores[group][:, None]
        faces.append(Face(box=(boxes[group] * w).sum(0) / w.sum(),
                          keypoints=(keypoints[group] * w[:, :, None]).sum(0) / w.sum(),
                          score=float(scores[i])))
        left &= ~group
    return faces


class BlazeFace:
    """``detect(image)`` on a square RGB uint8 image of side ``input_size``: the faces scoring at least
    ``min_score``, best first. Score 0.7 is the default because at 0.5 a face-free clip gave false faces."""

    def __init__(self, model: str = "short", min_score: float = 0.7, nms_threshold: float = 0.3):
        import cv2

        if model not in MODELS:
            raise ValueError(f"unknown face detector {model!r}; choose one of {sorted(MODELS)}")
        self.spec = MODELS[model]
        self.input_size = self.spec.input_size
        self.min_score, self.nms_threshold = min_score, nms_threshold
        self._anchors = anchors(self.spec)
        self._net = cv2.dnn.readNetFromTFLite(str(MODELS_DIR / self.spec.file), engine=cv2.dnn.ENGINE_CLASSIC)
        self._outputs = list(self._net.getUnconnectedOutLayersNames())
        if len(self._outputs) != 2:
            raise RuntimeError(f"{self.spec.file}: OpenCV found {len(self._outputs)} outputs, expected 2 "
                               "(scores and boxes); is this OpenCV 5 without engine=ENGINE_CLASSIC?")

    def detect(self, image: np.ndarray) -> list[Face]:
        s = self.input_size
        if image.shape != (s, s, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a ({s}, {s}, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        blob = (image.astype(np.float32) * (1 / 127.5) - 1.0).transpose(2, 0, 1)[None]
        self._net.setInput(np.ascontiguousarray(blob))
        outs = self._net.forward(self._outputs)
        n = len(self._anchors)
        regress = next(o for o in outs if o.shape[-1] == 16).reshape(n, 16)
        logits = next(o for o in outs if o.shape[-1] == 1).reshape(n)
        keep = logits >= np.log(self.min_score / (1 - self.min_score))  # sigmoid(logit) >= min_score
        if not keep.any():
            return []
        scores = 1 / (1 + np.exp(-np.clip(logits[keep], -100, 100)))
        raw, centre = regress[keep] / s, self._anchors[keep]
        cx, cy = raw[:, 0] + centre[:, 0], raw[:, 1] + centre[:, 1]
        w, h = raw[:, 2], raw[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * s
        keypoints = (raw[:, 4:].reshape(-1, 6, 2) + centre[:, None, :]) * s
        return weighted_nms(boxes, keypoints, scores, self.nms_threshold)


@functools.lru_cache(maxsize=4)
def detector(model: str = "short", min_score: float = 0.7) -> BlazeFace:
    """One loaded detector per (model, score) and process: loading costs about 10 ms, a video has many frames."""
    return BlazeFace(model, min_score)


@dataclass(frozen=True)
class Letterbox:
    """How a ``width`` x ``height`` frame is fitted, aspect kept, into the detector's square of side ``size``
    (scaled to ``inner`` and padded with black), and how detections map back to frame pixels."""

    width: int
    height: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.width, self.height)

    @property
    def inner(self) -> tuple[int, int]:
        """(width, height) of the scaled frame inside the square: even (the colour planes are shrunk at half
        size), at least 2 px."""
        return max(2, 2 * round(self.width * self.scale / 2)), max(2, 2 * round(self.height * self.scale / 2))

    @property
    def offset(self) -> tuple[int, int]:
        w, h = self.inner
        return (self.size - w) // 2, (self.size - h) // 2

    def pad(self, small: np.ndarray) -> np.ndarray:
        """The square detector input holding ``small`` (the frame already scaled to ``inner``)."""
        out = np.zeros((self.size, self.size, 3), np.uint8)
        (x0, y0), (w, h) = self.offset, self.inner
        out[y0:y0 + h, x0:x0 + w] = small
        return out

    def to_frame(self, face: Face) -> Face:
        """``face`` in frame pixels (the inner image is stretched to the exact frame size)."""
        (x0, y0), (w, h) = self.offset, self.inner
        sx, sy = self.width / w, self.height / h
        box = (face.box - np.array([x0, y0, x0, y0])) * np.array([sx, sy, sx, sy])
        keypoints = (face.keypoints - np.array([x0, y0])) * np.array([sx, sy])
        return Face(box=box, keypoints=keypoints, score=face.score)
