"""``hicmae preprocess`` and ``crop_faces`` on real media.

The videos are generated here: a drawn face (:mod:`hicmae.preprocess.synthetic`) that the BlazeFace model
really accepts (``test_the_drawn_face_is_a_face_to_the_detector`` checks its score, so the other tests
cannot pass on a face the detector does not see), moving, breathing and rolling over a noisy background,
encoded as H.264 with AAC by PyAV. The true face position of every frame is known.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from hicmae.data.media_writer import tone, write_mp4
from hicmae.errors import ConfigError, DataError
from hicmae.preprocess import FaceCrops, NoFaceError, crop_faces, preprocess
from hicmae.preprocess.faces import FaceSettings, track_faces
from hicmae.preprocess.run import PreprocessSettings
from hicmae.preprocess.synthetic import FACE_WIDTH, draw_face, moving_face, paste

H, W = 180, 320


def face_video(path: Path, frames: int = 30, fps=25, *, seed: int = 0, absent=None, audio=True, roll=0.2):
    """A drawn face moving over ``frames`` frames of 320x180; returns the ground truth."""
    truth = moving_face(frames, H, W, side=200, seed=seed, absent=absent, roll=roll, noise=2.0)
    wave = tone(frames / float(fps), seed=seed) if audio else None
    write_mp4(path, truth.frames, fps=fps, audio=wave)
    return truth


def write_m4a(path: Path, wave: np.ndarray, rate: int = 16000) -> None:
    """AAC audio alone in an MP4 container, as VoxCeleb2's ``.m4a`` files."""
    import av

    with av.open(str(path), "w", format="ipod") as c:
        stream = c.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for start in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024].astype(np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)


def decode(path: Path) -> tuple[np.ndarray, Fraction]:
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)]), Fraction(stream.average_rate)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def no_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """in/: two face clips (one in a subfolder), a face-free clip, a clip without audio, a text file."""
    root = tmp_path_factory.mktemp("preprocess_in")
    face_video(root / "a.mp4", seed=1)
    face_video(root / "speaker2" / "b.mp4", seed=2)
    write_mp4(root / "noface.mp4", moving_face(30, H, W, seed=3, absent=(0, 30)).frames, fps=25, audio=tone(1.2))
    face_video(root / "silent.mp4", seed=4, audio=False)
    (root / "notes.mp4").write_text("not a video\n" * 20)
    return root


# ---------------------------------------------------------------------------------------------- the detector
def test_the_drawn_face_is_a_face_to_the_detector():
    from hicmae.preprocess.detector import Letterbox, detector

    face, alpha = draw_face(256)
    for model in ("short", "full"):
        det = detector(model, 0.5)
        box = Letterbox(W, H, det.input_size)
        for roll in (0.0, 0.26, -0.26):
            frame = moving_face(1, H, W, seed=0, absent=(0, 1)).frames[0]
            paste(frame, face, alpha, 150, 95, 200, roll)
            import cv2

            small = cv2.resize(frame, box.inner, interpolation=cv2.INTER_AREA)
            found = [box.to_frame(f) for f in det.detect(box.pad(small))]
            assert len(found) == 1 and found[0].score >= 0.75, (model, roll, [f.score for f in found])
            x0, y0, x1, y1 = found[0].box
            assert abs((x0 + x1) / 2 - 150) < 15 and abs(y1 - y0 - 200 * FACE_WIDTH) < 40
        empty = moving_face(1, H, W, seed=5, absent=(0, 1)).frames[0]
        small = cv2.resize(empty, box.inner, interpolation=cv2.INTER_AREA)
        assert detector(model, 0.7).detect(box.pad(small)) == []


# ---------------------------------------------------------------------------------------------- crop_faces
def test_crop_faces_follows_the_face_and_undoes_its_roll(tmp_path):
    truth = face_video(tmp_path / "v.mp4", frames=40, roll=0.25)
    crops = crop_faces(str(tmp_path / "v.mp4"))
    assert isinstance(crops, FaceCrops)
    assert crops.frames.shape == (40, 160, 160, 3) and crops.frames.dtype == np.uint8
    assert crops.fps == 25.0 and crops.source == str(tmp_path / "v.mp4")
    assert crops.has_face.all()
    assert np.allclose(crops.timestamps[:, 0], np.arange(40) / 25) and np.allclose(np.diff(crops.timestamps), 0.04)
    # The face is in the middle of every crop: skin (224, 172, 140) at the centre, the background at a corner.
    centre = crops.frames[:, 70:90, 70:90].reshape(40, -1, 3).mean(1)
    assert np.abs(centre - [224, 172, 140]).max() < 40
    track = track_faces(str(tmp_path / "v.mp4"))
    err = track.params[:, :2] - truth.centres
    err -= err.mean(0)  # the detector's box centre sits a constant bit off the drawing's centre
    assert np.abs(err).max() < 0.1 * 200 * FACE_WIDTH  # within 10% of the face's width on every frame
    assert np.abs(track.params[:, 3] - truth.rolls).max() < 0.12  # roll to within 7 degrees
    # Unrolled: in the crop, the eyes (dark pupils) are level although the head rolls by up to 14 degrees.
    for i in (np.argmax(truth.rolls), np.argmin(truth.rolls)):
        grey = crops.frames[i].mean(-1)
        band = grey[40:110]
        left = np.unravel_index(np.argmin(band[:, 20:80]), (70, 60))
        right = np.unravel_index(np.argmin(band[:, 80:140]), (70, 60))
        assert abs(left[0] - right[0]) <= 4, (i, truth.rolls[i], left, right)


def test_crop_faces_keeps_the_exact_frame_rate(tmp_path):
    rate = Fraction(30000, 1001)
    face_video(tmp_path / "ntsc.mp4", frames=20, fps=rate)
    crops = crop_faces(str(tmp_path / "ntsc.mp4"), size=64)
    assert crops.fps == pytest.approx(float(rate), abs=1e-9) and len(crops.frames) == 20
    assert crops.frames.shape[1:] == (64, 64, 3)
    assert crops.timestamps[1, 0] == pytest.approx(1001 / 30000, abs=1e-4)


def test_no_face_raises_a_data_error_naming_the_file(clips):
    with pytest.raises(NoFaceError) as info:
        crop_faces(str(clips / "noface.mp4"))
    assert isinstance(info.value, DataError) and info.value.path == str(clips / "noface.mp4")
    assert "no face found" in str(info.value)
    with pytest.raises(DataError, match="not a video file"):
        crop_faces(str(clips / "notes.mp4"))


def test_short_gaps_are_bridged_and_long_ones_flagged(tmp_path):
    face_video(tmp_path / "blink.mp4", frames=40, absent=(15, 20))  # 0.2 s without a face
    assert crop_faces(str(tmp_path / "blink.mp4")).has_face.all()
    face_video(tmp_path / "away.mp4", frames=50, absent=(15, 35))  # 0.8 s without a face
    crops = crop_faces(str(tmp_path / "away.mp4"), max_gap=0.5)
    assert len(crops.frames) == 50
    # The gap is flagged (to within the detection stride) and its frames hold the last box.
    assert crops.has_face[:14].all() and crops.has_face[36:].all() and not crops.has_face[16:34].any()
    assert crop_faces(str(tmp_path / "away.mp4"), max_gap=1.0).has_face.all()


# ---------------------------------------------------------------------------------------------- preprocess
def test_preprocess_a_folder_writes_crops_wavs_manifest_and_failures(clips, tmp_path):
    import soundfile as sf

    from hicmae.data.manifest import read_manifest
    from hicmae.data.media import open_video

    out = tmp_path / "out"
    summary = preprocess(clips, out, workers=2)
    assert summary.complete and summary.total == 5 and summary.ok == 2
    assert summary.failed == {"no_face": 1, "no_audio": 1, "undecodable": 1}
    rows = read_csv(out / "manifest.csv")
    assert [r["video"] for r in rows] == ["videos/a.mp4", "videos/speaker2/b.mp4"]
    assert [r["audio"] for r in rows] == ["audio/a.wav", "audio/speaker2/b.wav"]
    manifest = read_manifest(out / "manifest.csv")  # our reader takes it, paths resolve in the out folder
    for row in manifest.rows:
        with open_video(row.video) as clip:  # decord, as training reads it
            assert len(clip) == 30 and clip.frames([0]).shape == (1, 160, 160, 3)
        info = sf.info(row.audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.duration == pytest.approx(1.2, abs=0.03)
    failures = {Path(r["video"]).name: r for r in read_csv(out / "failures.csv")}
    assert set(failures) == {"noface.mp4", "silent.mp4", "notes.mp4"}
    assert failures["noface.mp4"]["kind"] == "no_face" and "no face found" in failures["noface.mp4"]["reason"]
    assert failures["silent.mp4"]["kind"] == "no_audio" and "no audio track" in failures["silent.mp4"]["reason"]
    assert failures["notes.mp4"]["kind"] == "undecodable" and "looks like text" in failures["notes.mp4"]["reason"]
    assert all(r["reason"].startswith(r["video"]) for r in failures.values())  # each names its file
    assert not (out / "videos" / "noface.mp4").exists() and not (out / "audio" / "noface.wav").exists()
    assert no_temp_files(out) == []
    saved = json.loads((out / "summary.json").read_text())
    assert saved["ok"] == 2 and saved["failed_by_kind"] == {"no_face": 1, "no_audio": 1, "undecodable": 1}
    # A second run finds everything done and redoes nothing.
    again = preprocess(clips, out, workers=1)
    assert again.processed == 0 and again.skipped == 5 and again.complete


def test_preprocess_a_manifest_carries_labels_folds_and_times(tmp_path):
    from hicmae.data.manifest import read_manifest

    src = tmp_path / "raw"
    face_video(src / "s1" / "x.mp4", seed=6)
    face_video(src / "s2" / "x.mp4", seed=7)  # same file name, other speaker: no collision
    (src / "list.csv").write_text("video,label,fold,start,end\ns1/x.mp4,happy,1,0.0,1.0\n"
                                  "s2/x.mp4,sad,2,,\ns1/x.mp4,angry,3,0.5,1.2\n")
    out = tmp_path / "out"
    summary = preprocess(src / "list.csv", out, PreprocessSettings(output="frames", size=64), workers=1)
    assert summary.total == 2 and summary.processed == 2  # three rows, two distinct videos
    manifest = read_manifest(out / "manifest.csv")
    assert [(Path(r.video).relative_to(out).as_posix(), r.labels, r.fold, r.start, r.end) for r in manifest.rows] == [
        ("frames/s1/x", ["happy"], 1, 0.0, 1.0), ("frames/s2/x", ["sad"], 2, None, None),
        ("frames/s1/x", ["angry"], 3, 0.5, 1.2)]
    jpgs = sorted((out / "frames" / "s1" / "x").iterdir())
    assert [p.name for p in jpgs[:2]] == ["000001.jpg", "000002.jpg"] and len(jpgs) == 30
    from PIL import Image

    assert Image.open(jpgs[0]).size == (64, 64)


def test_long_face_loss_fails_the_clip_or_is_kept_on_request(tmp_path):
    src = tmp_path / "in"
    face_video(src / "away.mp4", frames=50, absent=(15, 35))
    failed = preprocess(src, tmp_path / "strict", workers=1)
    assert failed.failed == {"face_lost": 1}
    reason = read_csv(tmp_path / "strict" / "failures.csv")[0]["reason"]
    assert "face lost for 0.8" in reason and "limit 0.5 s" in reason
    kept = preprocess(src, tmp_path / "lenient", PreprocessSettings(long_gaps="keep"), workers=1)
    assert kept.ok == 1
    record = next(iter(json.loads(line) for p in (tmp_path / "lenient" / "records").glob("*.jsonl")
                       for line in p.read_text().splitlines()))
    assert len(record["gaps"]) == 1 and record["gaps"][0][1] - record["gaps"][0][0] == pytest.approx(0.8, abs=0.1)
    assert record["face_frames"] < 50 and decode(tmp_path / "lenient" / "videos" / "away.mp4")[0].shape[0] == 50


def test_output_keeps_the_exact_frame_rate_and_frame_count(tmp_path):
    rate = Fraction(30000, 1001)
    face_video(tmp_path / "in" / "ntsc.mp4", frames=24, fps=rate)
    preprocess(tmp_path / "in", tmp_path / "out", workers=1)
    frames, out_rate = decode(tmp_path / "out" / "videos" / "ntsc.mp4")
    assert out_rate == rate and frames.shape == (24, 160, 160, 3)


def test_settings_of_an_output_folder_are_pinned(clips, tmp_path):
    out = tmp_path / "out"
    preprocess(clips / "speaker2", out, workers=1)
    with pytest.raises(ConfigError, match="size"):
        preprocess(clips / "speaker2", out, PreprocessSettings(size=224), workers=1)


def test_parts_split_the_clips_and_the_last_part_writes_the_manifest(clips, tmp_path):
    from hicmae.cli import main

    out = tmp_path / "out"
    assert main(["preprocess", str(clips), str(out), "--part", "2/2", "--workers", "1", "--no-progress"]) == 0
    # Clips in sorted order: a, noface, notes, silent, speaker2/b; part 2 of 2 takes the 2nd and 4th.
    done = {json.loads(line)["key"] for p in (out / "records").glob("*.jsonl") for line in p.read_text().splitlines()}
    assert done == {"noface", "silent"}
    assert not (out / "manifest.csv").exists()
    first = preprocess(clips, out, part=(1, 2), workers=1)
    assert first.processed == 3 and first.complete
    assert [r["video"] for r in read_csv(out / "manifest.csv")] == ["videos/a.mp4", "videos/speaker2/b.mp4"]
    with pytest.raises(ConfigError, match="part"):
        preprocess(clips, out, part=(3, 2))


def test_an_interrupted_run_resumes_without_redoing_or_corrupting(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    n = 6
    for i in range(n):
        face_video(src / f"c{i}.mp4", frames=75, seed=10 + i)
    cmd = [sys.executable, "-m", "hicmae.cli", "preprocess", str(src), str(out), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:  # kill it as soon as the first clip is recorded
            if any(p.read_text().count("\n") for p in (out / "records").glob("*.jsonl")):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    lines = [line for p in (out / "records").glob("*.jsonl") for line in p.read_text().splitlines()]
    finished = {json.loads(line)["key"] for line in lines}
    assert 1 <= len(finished) < n
    kept = {k: os.stat(out / "videos" / f"{k}.mp4") for k in finished}
    # Leave what a kill in the middle of a clip leaves: a half-written temporary video, a cut-off record line.
    todo = sorted(f"c{i}" for i in range(n) if f"c{i}" not in finished)
    (out / "videos" / f".{todo[0]}.99999.tmp.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    with open(next((out / "records").glob("*.jsonl")), "a") as f:
        f.write('{"key": "' + todo[-1] + '", "status": "o')
    summary = preprocess(src, out, workers=1)
    assert summary.skipped == len(finished) and summary.processed == summary.ok == n - len(finished)
    for k, before in kept.items():  # finished outputs were not touched
        after = os.stat(out / "videos" / f"{k}.mp4")
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert no_temp_files(out) == []
    assert summary.complete and len(read_csv(out / "manifest.csv")) == n
    for i in range(n):
        frames, _ = decode(out / "videos" / f"c{i}.mp4")
        assert frames.shape == (75, 160, 160, 3)


def test_voxceleb2_mode_converts_audio_and_drops_duration_mismatches(tmp_path):
    import soundfile as sf

    raw = tmp_path / "vox" / "dev"
    lengths = {"00001": 2.0, "00002": 2.3, "00003": 1.95}  # the video lasts 2.0 s; 0.3 s off is dropped
    for clip, seconds in lengths.items():
        write_mp4(raw / "mp4" / "id00012" / "abc" / f"{clip}.mp4",
                  moving_face(50, 224, 224, side=260, seed=int(clip)).frames, fps=25)
        (raw / "aac" / "id00012" / "abc").mkdir(parents=True, exist_ok=True)
        write_m4a(raw / "aac" / "id00012" / "abc" / f"{clip}.m4a", tone(seconds, seed=int(clip)))
    from hicmae.cli import main

    out = tmp_path / "out"
    assert main(["preprocess", str(raw / "mp4"), str(out), "--voxceleb2", "--audio-dir", str(raw / "aac"),
                 "--workers", "1", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 2 and summary["failed_by_kind"] == {"av_mismatch": 1}
    rows = read_csv(out / "manifest.csv")
    assert [Path(r["video"]).name for r in rows] == ["00001.mp4", "00003.mp4"]
    assert rows[0]["video"] == str((raw / "mp4" / "id00012" / "abc" / "00001.mp4").resolve())  # kept as is
    # to within one AAC frame (64 ms at 16 kHz): the decoder keeps the padding of the last one
    assert sf.info(out / rows[1]["audio"]).duration == pytest.approx(1.95, abs=0.065)
    assert sf.info(out / rows[1]["audio"]).samplerate == 16000
    failure = read_csv(out / "failures.csv")[0]
    assert failure["video"].endswith("00002.mp4") and "differ by 0.1 s or more" in failure["reason"]
    assert not (out / "videos").exists()  # no re-encoding of the 224x224 face videos


def test_face_settings_are_checked():
    with pytest.raises(ConfigError, match="detector"):
        FaceSettings(detector="huge").check()
    with pytest.raises(ConfigError, match="even"):
        PreprocessSettings(size=161).check()
