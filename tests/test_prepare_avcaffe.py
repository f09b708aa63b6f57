"""`hicmae prepare avcaffe`: a miniature AVCAffe tree -> arousal or valence classes, the participant split, and
rows that carry the per-video merge key."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from hicmae.cli import main
from hicmae.data.manifest import class_names_of, encode_labels, read_manifest
from hicmae.data.media_writer import tone, write_mp4

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "configs" / "finetune" / "avcaffe.yaml").read_text())
TRAIN, TEST, UNLISTED = ["aiim003", "aiim004"], ["aiim001", "aiim002"], "aiim005"
AROUSAL = {"aiim001_task_1": "Excited", "aiim001_task_2": "Calm", "aiim002_task_1": "Neutral",
           "aiim003_task_1": "Wide-awake", "aiim003_task_2": "Dull", "aiim004_task_1": "Neutral",
           "aiim005_task_1": "Calm"}
VALENCE = {"aiim001_task_1": "Pleasant", "aiim001_task_2": "Unpleasant", "aiim002_task_1": "Pleased",
           "aiim003_task_1": "Unsatisfied", "aiim003_task_2": "Neutral", "aiim004_task_1": "Pleasant",
           "aiim005_task_1": "Neutral"}
ORDER = {"arousal": ["Excited", "Wide-awake", "Neutral", "Dull", "Calm"],
         "valence": ["Pleasant", "Pleased", "Neutral", "Unsatisfied", "Unpleasant"]}
CLIPS_PER_TASK = 3
UNLABELLED_TASK = "aiim004/task_2"  # clips whose task has no self-report


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    frames = np.full((6, 32, 32, 3), 200, np.uint8)
    return write_mp4(tmp_path_factory.mktemp("avcaffe_media") / "clip.avi", frames, fps=25, audio=tone(0.24))


def make_tree(root: Path, clip_file: Path) -> Path:
    for folder in [*(k.replace("_task", "/task") for k in AROUSAL), UNLABELLED_TASK]:
        pid, task = folder.split("/")
        for i in range(1, CLIPS_PER_TASK + 1):
            dst = root / "videos/shorter_segments" / pid / task / f"{pid}_{task}_clip_{i:03d}.avi"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip_file, dst)
    (root / "videos/per_participant_per_task/aiim001").mkdir(parents=True)
    (root / "ground_truths").mkdir()
    for dim, labels in (("arousal", AROUSAL), ("valence", VALENCE)):
        (root / "ground_truths" / f"{dim}.txt").write_text("".join(f"{k}, {v}\n" for k, v in labels.items()))
    (root / "ground_truths" / "mental_demand.txt").write_text("aiim001_task_1, 12\n")
    (root / "info").mkdir()
    (root / "info" / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (root / "info" / "val.txt").write_text("\n".join(TEST) + "\n")
    (root / "info" / "no_audio_files.txt").write_text("aiim001_task_1_clip_002.avi\n")
    return root


def prepare(raw: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "avcaffe", str(raw), str(out), *extra])


def rows_of(path: Path) -> dict[str, tuple[int, Path]]:
    manifest = read_manifest(path)
    labels = encode_labels(manifest, "classification", class_names_of(manifest))
    return {Path(r.video).name: (label, Path(r.video)) for r, label in zip(manifest.rows, labels)}


@pytest.mark.parametrize("dimension, truth", [("arousal", AROUSAL), ("valence", VALENCE)])
def test_classes_split_and_merge_key(tmp_path, clip_file, dimension, truth):
    raw = make_tree(tmp_path / "avcaffe", clip_file)
    extra = [] if dimension == "arousal" else ["--dimension", dimension]
    assert prepare(raw, tmp_path / "out", *extra) == 0
    assert not (tmp_path / "out" / "avcaffe.csv").exists()
    for split, participants in (("train.csv", TRAIN), ("test.csv", TEST)):
        rows = rows_of(tmp_path / "out" / split)
        groups = {Path(r.video).name: r.group for r in read_manifest(tmp_path / "out" / split).rows}
        keys = {k for k in truth if k.split("_")[0] in participants}
        expected = {f"{k}_clip_{i:03d}.avi": ORDER[dimension].index(truth[k])
                    for k in keys for i in range(1, CLIPS_PER_TASK + 1)}
        assert {name: label for name, (label, _) in rows.items()} == expected
        for name, (label, video) in rows.items():
            assert video.is_file()
            # the group column holds the original's merge key ('_'.join(name.split('_')[:3]))
            assert groups[name] == "_".join(name.split("_")[:3]) == f"{video.parent.parent.name}_{video.parent.name}"
            assert 0 <= label < CONFIG["model"]["num_classes"]
    header = (tmp_path / "out" / "test.csv").read_text().splitlines()[0]
    assert header == "video,audio,label,group"


def test_unlisted_participants_and_unlabelled_tasks_are_listed(tmp_path, clip_file):
    raw = make_tree(tmp_path / "avcaffe", clip_file)
    assert prepare(raw, tmp_path / "out") == 0
    with open(tmp_path / "out" / "dropped.csv", newline="") as f:
        dropped = {Path(r["video"]).name: r["reason"] for r in csv.DictReader(f)}
    assert dropped == {
        **{f"{UNLISTED}_task_1_clip_{i:03d}.avi": "participant in neither info/train.txt nor info/val.txt"
           for i in range(1, CLIPS_PER_TASK + 1)},
        **{f"aiim004_task_2_clip_{i:03d}.avi": "no arousal self-report for its task in ground_truths/arousal.txt"
           for i in range(1, CLIPS_PER_TASK + 1)}}


def test_missing_parts_are_named_and_nothing_is_written(tmp_path, clip_file, capsys):
    raw = make_tree(tmp_path / "avcaffe", clip_file)
    (raw / "ground_truths" / "valence.txt").unlink()
    (raw / "info" / "val.txt").unlink()
    assert prepare(raw, tmp_path / "out") == 2  # arousal: needs info/val.txt
    err = capsys.readouterr().err
    assert "not a complete AVCAffe tree" in err and "info/val.txt" in err and "valence" not in err
    assert prepare(raw, tmp_path / "out", "--dimension", "valence") == 2
    err = capsys.readouterr().err
    assert "ground_truths/valence.txt" in err and "info/val.txt" in err
    shutil.rmtree(raw / "videos")
    assert prepare(raw, tmp_path / "out") == 2
    assert "videos/shorter_segments" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unknown_class_is_refused_with_its_line(tmp_path, clip_file, capsys):
    raw = make_tree(tmp_path / "avcaffe", clip_file)
    with open(raw / "ground_truths" / "arousal.txt", "a") as f:
        f.write("aiim002_task_2, Sleepy\n")
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "arousal.txt" in err and f"line {len(AROUSAL) + 1}" in err and "Sleepy" in err
    assert not (tmp_path / "out").exists()


def test_a_split_without_clips_is_refused(tmp_path, clip_file, capsys):
    raw = make_tree(tmp_path / "avcaffe", clip_file)
    (raw / "info" / "val.txt").write_text("aiim099\n")
    assert prepare(raw, tmp_path / "out") == 2
    assert "info/val.txt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
