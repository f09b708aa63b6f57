"""`hicmae prepare mer_multi`: a miniature MER 2023 release -> train.csv / test.csv (/ val.csv), 6 classes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from hicmae.cli import main
from hicmae.data.manifest import read_manifest
from hicmae.data.media_writer import tone, write_mp4

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "configs" / "finetune" / "mer_multi.yaml").read_text())
EMOTIONS = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
TRAIN = {f"sample_{i:08d}": EMOTIONS[i % 6] for i in range(1, 19)}
TEST = {f"sample_{i:08d}": EMOTIONS[i % 6] for i in range(101, 113)}
NO_VIDEO, NO_LABEL = "sample_00000050", "sample_00000199"  # a train label without video, a test video without label


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("mer_media")
    frames = np.full((6, 32, 32, 3), 30, np.uint8)
    return {ext: write_mp4(root / f"clip{ext}", frames, fps=25, audio=tone(0.24)) for ext in (".mp4", ".avi")}


def write_labels(path: Path, labels: dict[str, str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "discrete", "valence"])
        w.writerows([name, emo, -1.5 if emo == "angry" else 0.5] for name, emo in labels.items())


def make_tree(root: Path, media) -> Path:
    for folder, labels, extra_video in (("train", TRAIN, None), ("test1", TEST, NO_LABEL), ("test2", TEST, None)):
        (root / folder).mkdir(parents=True)
        for k, name in enumerate([*labels, *([extra_video] if extra_video else [])]):
            ext = ".avi" if k % 3 == 0 else ".mp4"  # the release mixes containers
            shutil.copy(media[ext], root / folder / f"{name}{ext}")
        write_labels(root / f"{folder}-label.csv", {**labels, **({NO_VIDEO: "sad"} if folder == "train" else {})})
    return root


def prepare(raw: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "mer_multi", str(raw), str(out), *extra])


def rows_of(path: Path) -> dict[str, tuple[str, Path]]:
    return {Path(r.video).stem: (r.labels[0], Path(r.video)) for r in read_manifest(path).rows}


def test_train_and_test_labels_and_paths(tmp_path, media):
    raw = make_tree(tmp_path / "mer2023", media)
    assert prepare(raw, tmp_path / "out") == 0
    train, test = rows_of(tmp_path / "out" / "train.csv"), rows_of(tmp_path / "out" / "test.csv")
    assert {n: label for n, (label, _) in train.items()} == TRAIN
    assert {n: label for n, (label, _) in test.items()} == TEST
    assert all(video.parent.name == "test1" for _, video in test.values())  # not test2: same names, noisy copies
    for _, video in [*train.values(), *test.values()]:
        assert video.is_file()
    assert not (tmp_path / "out" / "val.csv").exists()
    labels = {label for label, _ in train.values()}
    assert len(labels) == CONFIG["model"]["num_classes"]
    assert labels == set(CONFIG["data"].get("class_names") or labels)
    with open(tmp_path / "out" / "dropped.csv", newline="") as f:
        dropped = {Path(r["video"]).stem: r["reason"] for r in csv.DictReader(f)}
    assert dropped == {NO_VIDEO: "labelled in train-label.csv, but its video is missing",
                       NO_LABEL: "not in test1-label.csv"}


def test_val_fraction_splits_train_the_same_way_every_time(tmp_path, media):
    raw = make_tree(tmp_path / "mer2023", media)
    for out in ("a", "b"):
        assert prepare(raw, tmp_path / out, "--val-fraction", "0.3") == 0
    train, val = rows_of(tmp_path / "a" / "train.csv"), rows_of(tmp_path / "a" / "val.csv")
    assert train and val and not set(train) & set(val)
    assert {n: label for n, (label, _) in {**train, **val}.items()} == TRAIN
    assert (tmp_path / "a" / "val.csv").read_text() == (tmp_path / "b" / "val.csv").read_text()
    assert rows_of(tmp_path / "a" / "test.csv").keys() == TEST.keys()


def test_missing_parts_are_named_and_nothing_is_written(tmp_path, media, capsys):
    raw = make_tree(tmp_path / "mer2023", media)
    (raw / "test1-label.csv").unlink()
    shutil.rmtree(raw / "train")
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "not a complete MER-MULTI (MER 2023) tree" in err
    assert "missing train, test1-label.csv" in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_emotion_is_refused_with_its_line(tmp_path, media, capsys):
    raw = make_tree(tmp_path / "mer2023", media)
    write_labels(raw / "test1-label.csv", {**TEST, "sample_00000120": "bored"})
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "test1-label.csv" in err and f"line {len(TEST) + 2}" in err and "'bored'" in err
    assert not (tmp_path / "out").exists()


def test_a_label_file_without_the_columns_is_refused(tmp_path, media, capsys):
    raw = make_tree(tmp_path / "mer2023", media)
    (raw / "train-label.csv").write_text("utterance_id,emotion\nsample_00000001,happy\n")
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "train-label.csv" in err and "name and discrete" in err
    assert not (tmp_path / "out").exists()
