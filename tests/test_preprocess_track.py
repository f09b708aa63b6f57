"""Unit tests of the face pipeline's pieces: anchors, NMS, letterbox, track building, smoothing, alignment."""

from __future__ import annotations

import numpy as np
import pytest

from hicmae.preprocess.align import crop, crop_matrix
from hicmae.preprocess.detector import MODELS, Face, Letterbox, anchors, iou, weighted_nms
from hicmae.preprocess.smooth import gaussian_smooth, runs, smooth_track
from hicmae.preprocess.track import CX, CY, ROLL, SIDE, build_track, choose, geometry


def face(x0, y0, x1, y1, score=0.9, roll=0.0) -> Face:
    """A face whose eyes sit a third of the way down the box, tilted by ``roll``."""
    cx, cy, d = (x0 + x1) / 2, y0 + (y1 - y0) / 3, (x1 - x0) / 4
    eyes = [[cx - d * np.cos(roll), cy - d * np.sin(roll)], [cx + d * np.cos(roll), cy + d * np.sin(roll)]]
    keypoints = np.array(eyes + [[cx, cy + 2 * d]] * 4, dtype=np.float64)
    return Face(box=np.array([x0, y0, x1, y1], dtype=np.float64), keypoints=keypoints, score=score)


# ---------------------------------------------------------------------------------------------- detector
def test_anchor_layouts_match_mediapipe():
    short, full = anchors(MODELS["short"]), anchors(MODELS["full"])
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # Short range: 16x16 cells with 2 anchors each first, then 8x8 cells with 6 each.
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16]) and np.allclose(short[1], short[0])
    assert np.allclose(short[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(short[512], [0.5 / 8, 0.5 / 8]) and np.allclose(short[517], short[512])
    assert np.allclose(short[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(full[48], [0.5 / 48, 1.5 / 48])  # row-major: the 49th anchor starts the second row


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=np.float64)
    keypoints = np.zeros((3, 6, 2))
    keypoints[1] += 1.0
    scores = np.array([0.9, 0.6, 0.8])
    faces = weighted_nms(boxes, keypoints, scores, 0.3)
    assert [round(f.score, 2) for f in faces] == [0.9, 0.8]
    assert faces[0].box[0] == pytest.approx(0.6 / 1.5)  # score-weighted mean of 0 and 1
    assert faces[0].keypoints[0, 0] == pytest.approx(0.6 / 1.5)
    assert np.allclose(faces[1].box, [50, 50, 60, 60])


def test_letterbox_maps_detections_back_to_frame_pixels():
    box = Letterbox(640, 360, 128)
    assert box.inner == (128, 72) and box.offset == (0, 28)
    # A face at frame pixels (320, 180) +- 50 sits at (64, 28 + 36) +- 10 in the square.
    found = Face(box=np.array([54.0, 54.0, 74.0, 74.0]), keypoints=np.tile([64.0, 64.0], (6, 1)), score=0.9)
    back = box.to_frame(found)
    assert np.allclose(back.box, [270, 130, 370, 230])
    assert np.allclose(back.keypoints[0], [320, 180])
    padded = box.pad(np.full((72, 128, 3), 7, np.uint8))
    assert padded.shape == (128, 128, 3) and padded[:28].max() == 0 and padded[28:100].min() == 7


def test_iou():
    assert iou(np.array([0, 0, 10, 10.0]), np.array([[0, 0, 10, 10.0], [5, 0, 15, 10.0], [20, 20, 30, 30.0]])) \
        == pytest.approx([1.0, 1 / 3, 0.0])


# ---------------------------------------------------------------------------------------------- tracking
def test_geometry_reads_roll_from_the_eyes():
    g = geometry(face(100, 100, 200, 200, roll=0.3))
    assert g[CX] == 150 and g[CY] == 150 and g[SIDE] == 100
    assert g[ROLL] == pytest.approx(0.3)
    assert geometry(face(100, 100, 200, 200, roll=-0.2))[ROLL] == pytest.approx(-0.2)


def test_choose_follows_overlap_before_size():
    small, big = face(100, 100, 150, 150), face(300, 100, 450, 250)
    assert choose(None, [small, big]) is big  # no previous box: the largest face
    assert choose(np.array([105.0, 100, 155, 150]), [small, big]) is small  # the one we followed
    assert choose(np.array([0.0, 0, 20, 20]), [small, big]) is big  # lost it: the largest again
    assert choose(None, []) is None


def test_short_gaps_are_interpolated_and_long_ones_reported():
    fps = 10.0
    dets = {i: [] for i in range(30)}
    dets[0] = [face(0, 0, 100, 100)]
    dets[4] = [face(40, 0, 140, 100)]  # 3 frames missing: 0.3 s <= 0.5 s, filled
    dets[20] = [face(40, 0, 140, 100)]  # 15 frames missing: 1.5 s > 0.5 s, a gap
    track = build_track(dets, 30, fps, max_gap=0.5)
    assert np.allclose(track.params[1:4, CX], [60, 70, 80])  # linear from 50 to 90
    assert track.has_face[:5].all() and track.found.sum() == 3
    assert track.gaps == [(5, 19), (21, 29)]  # the trailing 9 frames (0.9 s) are a gap too
    assert not track.has_face[5:20].any() and not track.has_face[21:].any()
    assert np.allclose(track.params[5:20, CX], 90)  # the gap holds the last box


def test_gap_limit_is_inclusive_and_edges_within_it_are_filled():
    dets = {0: [], 1: [], 2: [face(0, 0, 10, 10)], 8: [face(0, 0, 10, 10)], 9: []}
    track = build_track(dets, 10, fps=10.0, max_gap=0.5)  # 5 frames = 0.5 s: still filled
    assert track.has_face.all() and track.gaps == []
    assert build_track(dets, 10, fps=10.0, max_gap=0.4).gaps == [(3, 7)]
    assert build_track({0: [], 5: []}, 6, fps=10.0, max_gap=0.5) is None


def test_track_keeps_the_followed_face_when_a_larger_one_appears():
    dets = {0: [face(0, 0, 50, 50)], 1: [face(2, 0, 52, 50), face(200, 0, 400, 200)]}
    track = build_track(dets, 2, fps=25.0, max_gap=0.5)
    assert track.params[1, CX] == pytest.approx(27)


# ---------------------------------------------------------------------------------------------- smoothing
def test_gaussian_smoothing_keeps_constants_and_lines_and_removes_jitter():
    assert np.allclose(gaussian_smooth(np.full(7, 3.0), 5.0), 3.0)  # even when the kernel is longer than the signal
    line = np.arange(50.0)
    assert np.allclose(gaussian_smooth(line, 2.0), line)  # a moving head is followed to the last frame, no lag
    assert np.allclose(gaussian_smooth(line[:2], 4.0), line[:2]) and gaussian_smooth(line[:1], 4.0) == [0.0]
    rng = np.random.default_rng(0)
    noisy = 100 + rng.normal(0, 3, 200)
    assert gaussian_smooth(noisy, 2.0).std() < noisy.std() / 2
    assert np.array_equal(gaussian_smooth(noisy, 0.0), noisy)


def test_smooth_track_does_not_bleed_across_a_gap_and_holds_over_it():
    params = np.zeros((20, 4))
    params[:, SIDE] = 100
    params[:8, CX] = 10.0
    params[12:, CX] = 500.0
    has = np.ones(20, bool)
    has[8:12] = False
    out = smooth_track(params, has, fps=25.0, position_s=0.2, size_s=0.2)
    assert np.allclose(out[:8, CX], 10.0) and np.allclose(out[12:, CX], 500.0)
    assert np.allclose(out[8:12, CX], 10.0)  # held: the last smoothed place before the gap
    assert runs(has) == [(0, 8), (12, 20)]
    lead = has.copy()
    lead[:3] = False
    assert np.allclose(smooth_track(params, lead, 25.0)[:3, CX], 10.0)  # before the first face: the first value


# ---------------------------------------------------------------------------------------------- alignment
def test_crop_centres_scales_and_unrolls():
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[95:105, 145:155] = 255  # a white square at (150, 100)
    out = crop(frame, np.array([150.0, 100.0, 40.0, 0.0]), 40, margin=0.0)
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert abs(xs.mean() - 19.5) < 0.6 and abs(ys.mean() - 19.5) < 0.6  # centred
    assert 8 <= len(set(xs)) <= 12  # side 40 -> 40 px: scale 1
    half = crop(frame, np.array([150.0, 100.0, 40.0, 0.0]), 40, margin=0.5)
    assert 4 <= len(set(np.nonzero(half[..., 0] > 128)[1])) <= 6  # twice the side: half the size
    # Roll: a point on the face's own x axis lands on the crop's horizontal centre line.
    m = crop_matrix(np.array([100.5, 100.5, 50.0, 0.4]), 50, 0.0)  # scale 1; the crop's centre is 24.5
    right = m @ np.array([44.5, 24.5, 1.0])  # 20 px right of the centre, in the crop
    assert np.allclose(right, [100 + 20 * np.cos(0.4), 100 + 20 * np.sin(0.4)])
    down = crop_matrix(np.array([100.5, 100.5, 50.0, 0.0]), 50, 0.0, shift=0.2) @ np.array([24.5, 24.5, 1.0])
    assert np.allclose(down, [100, 110])
