"""`hicmae prepare dfew`: a miniature DFEW tree (official split files, tiny real clips) -> the official folds and
the 7 classes clip by clip, clips without an audio track left out."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from hicmae.cli import main
from hicmae.data.manifest import read_manifest
from hicmae.data.media_writer import tone, write_frame_folder, write_mp4
from hicmae.data.prepare import dfew
from prepare_helpers import assert_refused

# DFEW's label codes, as its README defines them (the original family uses code - 1 as the class index).
CODES = {1: "happy", 2: "sad", 3: "neutral", 4: "angry", 5: "surprise", 6: "disgust", 7: "fear"}
SPLITS = "EmoLabel_DataSplit"
# clip number -> (label code, test fold); every class and every fold, some clips in a fold together
CLIPS = {n: (1 + (n * 3) % 7, 1 + n % 5) for n in (1, 2, 4, 6, 7, 8, 10, 11, 13, 15, 16, 18, 19, 20, 21, 22)}
SILENT = 16  # no audio track
PADDED = 7  # named 00007.mp4 rather than 7.mp4


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfew_media")
    frames = np.full((6, 32, 32, 3), 50, np.uint8)
    return {"clip": write_mp4(root / "clip.mp4", frames, fps=25, audio=tone(0.24)),
            "silent": write_mp4(root / "silent.mp4", frames, fps=25),
            "frames": write_frame_folder(root / "frames", frames[:3], "jpg")}


def write_splits(root: Path, clips: dict[int, tuple[int, int]]) -> None:
    for k in range(1, 6):
        for kind, keep in (("test", lambda f: f == k), ("train", lambda f: f != k)):
            path = root / SPLITS / f"{kind}(single-labeled)" / f"set_{k}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["video_name", "label"])
                w.writerows([n, code] for n, (code, fold) in sorted(clips.items()) if keep(fold))


def make_tree(root: Path, media) -> Path:
    write_splits(root, CLIPS)
    (root / "Clip" / "original").mkdir(parents=True)
    for n in CLIPS:
        name = f"{n:05d}.mp4" if n == PADDED else f"{n}.mp4"
        shutil.copy(media["silent" if n == SILENT else "clip"], root / "Clip" / "original" / name)
        frames = root / "Clip" / "clip_224x224" / f"{n:05d}"
        frames.mkdir(parents=True)
        for i, src in enumerate(sorted(media["frames"].iterdir()), start=1):
            shutil.copy(src, frames / f"{n:05d}_{i:05d}.jpg")
    (root / "Annotation").mkdir()
    (root / "Annotation" / "annotation.xlsx").write_bytes(b"PK\x03\x04")  # present in the release, not read
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory, media):
    return make_tree(tmp_path_factory.mktemp("dfew") / "DFEW", media)


def prepare(raw: Path, out: Path, *options: str) -> int:
    return main(["prepare", "dfew", str(raw), str(out), "--workers", "1", *options])


def clip_number(path: str) -> int:
    return int(Path(path).stem.split("_")[0])


def test_class_order_is_dfews():
    assert list(dfew.CLASSES) == [CODES[c] for c in range(1, 8)]


def test_official_folds_and_labels_clip_by_clip(tree, tmp_path):
    out = tmp_path / "out"
    assert prepare(tree, out) == 0
    rows = {clip_number(r.video): r for r in read_manifest(out / "dfew.csv").rows}
    assert sorted(rows) == sorted(n for n in CLIPS if n != SILENT)
    assert {r.fold for r in rows.values()} == {1, 2, 3, 4, 5}
    assert {r.labels[0] for r in rows.values()} == set(CODES.values())
    for n, row in rows.items():
        code, fold = CLIPS[n]
        assert (row.labels[0], row.fold) == (CODES[code], fold), n
        assert Path(row.video).is_file() and row.audio is None
        assert Path(row.video).name == (f"{n:05d}.mp4" if n == PADDED else f"{n}.mp4")
    with open(out / "dropped.csv", newline="") as f:
        dropped = [(clip_number(r["video"]), r["reason"]) for r in csv.DictReader(f)]
    assert dropped == [(SILENT, dfew.NO_AUDIO)]


def test_face_frames_with_the_clips_audio(tree, tmp_path):
    assert prepare(tree, tmp_path / "out", "--video", "frames") == 0
    for row in read_manifest(tmp_path / "out" / "dfew.csv").rows:
        n = clip_number(row.video)
        assert Path(row.video) == tree / "Clip" / "clip_224x224" / f"{n:05d}" and Path(row.video).is_dir()
        assert clip_number(row.audio) == n and Path(row.audio).parent == tree / "Clip" / "original"
        assert (row.labels[0], row.fold) == (CODES[CLIPS[n][0]], CLIPS[n][1])


def test_broken_trees_name_what_is_missing(tree, tmp_path, capsys):
    def copy(name):
        return Path(shutil.copytree(tree, tmp_path / name, ignore=shutil.ignore_patterns("clip_224x224")))

    raw = copy("a")
    (raw / SPLITS / "test(single-labeled)" / "set_2.csv").unlink()
    shutil.rmtree(raw / "Clip" / "original")
    assert_refused(capsys, prepare, raw, tmp_path / "oa", "missing Clip/original", "test(single-labeled)/set_2.csv",
           "dfew-dataset.github.io")

    raw = copy("b")
    (raw / "Clip" / "original" / "11.mp4").unlink()
    assert_refused(capsys, prepare, raw, tmp_path / "ob", "missing Clip/original/11.mp4")

    raw = copy("c")
    broken = dict(CLIPS)
    broken[4] = (8, CLIPS[4][1])
    write_splits(raw, broken)
    assert_refused(capsys, prepare, raw, tmp_path / "oc", "label 8 is not one of 1-7")

    raw = copy("d")  # clip 2 in two test sets
    path = raw / SPLITS / "test(single-labeled)" / f"set_{CLIPS[4][1]}.csv"
    path.write_text(path.read_text() + f"2,{CLIPS[2][0]}\n")
    assert_refused(capsys, prepare, raw, tmp_path / "od", "lists clip 2", "must not overlap")

    raw = copy("f")  # a train list that is not the other sets' test clips
    path = raw / SPLITS / "train(single-labeled)" / "set_1.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    assert_refused(capsys, prepare, raw, tmp_path / "of", "train(single-labeled)/set_1.csv", "lacks")

    assert main(["prepare", "dfew", str(copy("e")), str(tmp_path / "oe"), "--video", "frames"]) == 2
    assert "missing Clip/clip_224x224" in capsys.readouterr().err and not (tmp_path / "oe").exists()
