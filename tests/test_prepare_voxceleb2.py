"""`hicmae prepare voxceleb2`: a miniature VoxCeleb2 dev tree (real mp4 and m4a files, the real layout) -> the
pretraining list, with every left-out clip counted under its reason (REFERENCE.md 9.1)."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hicmae.cli import main
from hicmae.data.manifest import read_manifest
from hicmae.data.media import load_audio
from hicmae.data.media_writer import tone, write_mp4, write_wav
from hicmae.data.prepare import voxceleb2 as vox

FPS, RATE = 25, 16000


def write_m4a(path: Path, seconds: float) -> Path:
    """AAC in an MPEG-4 audio container, as the vox2_dev_aac files."""
    import av

    wave = tone(seconds, RATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=RATE)
        stream.layout = "mono"
        for start in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[None, start:start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = RATE, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_clip(path: Path, frames: int) -> Path:
    return write_mp4(path, np.full((frames, 32, 32, 3), 100, np.uint8), fps=FPS, audio=tone(frames / FPS, RATE))


# clip -> (video frames or a fault, audio seconds or a fault, expected reason or None when kept)
MISMATCH = vox.mismatch_reason(0.1)
CLIPS = {
    "id00012/21Uxsk56VDQ/00001": (10, 0.40, None),
    "id00012/21Uxsk56VDQ/00002": (10, 0.46, None),  # 0.06 s apart: kept
    "id00012/2DLq_Kkc1r8/00001": (10, 0.64, MISMATCH),  # 0.24 s apart
    "id00015/0fijmz4vTVU/00001": ("truncated", 0.40, vox.NO_VIDEO),
    "id00015/0fijmz4vTVU/00002": (10, "missing", vox.NO_AUDIO_FILE),
    "id00015/0fijmz4vTVU/00003": ("no video stream", 0.40, vox.NO_VIDEO_STREAM),
    "id00015/0fijmz4vTVU/00004": (10, "text", vox.BAD_AUDIO),
    "id00015/1BhvpbiYtYk/00001": (12, 0.48, None),
}


def make_tree(root: Path) -> Path:
    for clip, (video, audio, _) in CLIPS.items():
        mp4, m4a = root / "dev" / "mp4" / f"{clip}.mp4", root / "dev" / "aac" / f"{clip}.m4a"
        if video == "truncated":
            data = write_clip(mp4, 10).read_bytes()
            mp4.write_bytes(data[: len(data) // 2])
        elif video == "no video stream":
            shutil.copy(write_m4a(root / "tmp.m4a", 0.4), mp4)
        else:
            write_clip(mp4, video)
        if audio == "text":
            m4a.parent.mkdir(parents=True, exist_ok=True)
            m4a.write_text("not audio\n" * 20)
        elif audio != "missing":
            write_m4a(m4a, audio)
    (root / "tmp.m4a").unlink()
    (root / "vox2_meta.csv").write_text("VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \nid00012 ,n000012 ,m ,dev \n")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("vox2") / "VoxCeleb2")


def prepare(raw: Path, out: Path, *options: str) -> int:
    return main(["prepare", "voxceleb2", str(raw), str(out), *options])


def read_dropped(out: Path) -> dict[str, str]:
    with open(out / "dropped.csv", newline="") as f:
        return {str(Path(r["video"]).with_suffix("")).split("mp4/", 1)[1]: r["reason"] for r in csv.DictReader(f)}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_prepare_lists_usable_clips_and_counts_the_rest(tree, tmp_path, workers, capsys):
    out = tmp_path / "out"
    assert prepare(tree, out, "--workers", workers) == 0
    printed = capsys.readouterr().out
    manifest = read_manifest(out / "voxceleb2.csv")
    assert manifest.label_columns == [] and all(r.fold is None and not r.labels for r in manifest.rows)
    kept = [c for c, (_, _, reason) in CLIPS.items() if reason is None]
    assert [str(Path(r.video).relative_to(tree / "dev" / "mp4").with_suffix("")) for r in manifest.rows] == kept
    for row in manifest.rows:
        assert Path(row.video).is_file() and Path(row.audio).is_file() and row.audio.endswith(".m4a")
        clip = Path(row.video).relative_to(tree / "dev" / "mp4")
        assert Path(row.audio) == (tree / "dev" / "aac" / clip).with_suffix(".m4a")
    assert read_dropped(out) == {c: reason for c, (_, _, reason) in CLIPS.items() if reason is not None}
    counts = Counter(reason for _, _, reason in CLIPS.values() if reason is not None)
    assert json.loads((out / "prepare.json").read_text())["dropped"] == dict(counts)
    assert f"left out 1 clips: {MISMATCH}" in printed and "this tree is partial" in printed
    # The manifest's audio is the official m4a, and the loader reads it (16 kHz, the clip's length).
    assert load_audio(manifest.rows[0].audio).shape[0] == pytest.approx(0.40 * RATE, abs=1100)


def test_threshold_and_converted_wavs(tree, tmp_path):
    assert prepare(tree, tmp_path / "loose", "--workers", "1", "--max-av-diff", "0.3") == 0
    kept = {Path(r.video).relative_to(tree / "dev" / "mp4").with_suffix("").as_posix()
            for r in read_manifest(tmp_path / "loose" / "voxceleb2.csv").rows}
    assert "id00012/2DLq_Kkc1r8/00001" in kept  # 0.24 s apart: kept under a 0.3 s limit

    raw = tmp_path / "converted"
    shutil.copytree(tree, raw)
    for m4a in (raw / "dev" / "aac").rglob("*.m4a"):  # the original's layout: 16 kHz wavs beside the m4a files
        write_wav(m4a.with_suffix(".wav"), tone(0.40, RATE))
    assert prepare(raw, tmp_path / "wav", "--workers", "1", "--audio-ext", "wav") == 0
    rows = read_manifest(tmp_path / "wav" / "voxceleb2.csv").rows
    assert rows and all(r.audio.endswith(".wav") and Path(r.audio).is_file() for r in rows)


def _fails(capsys, raw: Path, out: Path, options: list[str], *expected: str) -> None:
    assert prepare(raw, out, "--workers", "1", *options) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert not (out / "voxceleb2.csv").exists() and not (out / "dropped.csv").exists()


def test_broken_trees_name_what_is_missing(tree, tmp_path, capsys):
    raw = tmp_path / "no_audio"
    shutil.copytree(tree / "dev" / "mp4", raw / "dev" / "mp4")
    _fails(capsys, raw, tmp_path / "o1", [], "missing dev/aac", "robots.ox.ac.uk")

    raw = tmp_path / "empty"
    (raw / "dev" / "mp4").mkdir(parents=True)
    (raw / "dev" / "aac").mkdir()
    _fails(capsys, raw, tmp_path / "o2", [], "has no clips", "vox2_dev_mp4")

    _fails(capsys, tree, tmp_path / "o3", ["--audio-ext", "wav"], "has no .wav files")
    _fails(capsys, tree, tmp_path / "o4", ["--split", "test"], "missing test/mp4, test/aac")
