"""`hicmae prepare werewolf_xl`: a miniature Werewolf-XL tree -> the original's 5 folds and 3 targets, clip by
clip."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from hicmae.cli import main
from hicmae.data.manifest import encode_labels, read_manifest
from hicmae.data.media_writer import tone, write_mp4

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "prepare" / "werewolf_xl"
TARGETS = yaml.safe_load((REPO / "configs" / "finetune" / "werewolf_xl.yaml").read_text())["data"]["target_columns"]
HEADER = ["VideoName", "Session", "Arousal_average", "Pleasure_average", "Dominance_average", "Category"]


def original_clips() -> dict[str, tuple[int, list[float]]]:
    """Clip name -> (test split, [three values in the original's order]), from the original's lines alone."""
    clips = {}
    for path in sorted(FIXTURES.glob("split*/test.csv")):
        split = int(path.parent.name[len("split"):])
        for line in path.read_text().splitlines():
            frames, wav, *values = line.split()
            clips[Path(wav).stem] = (split, [float(v) for v in values])
    return clips


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    frames = np.full((8, 32, 32, 3), 60, np.uint8)
    return write_mp4(tmp_path_factory.mktemp("werewolf_media") / "clip.mp4", frames, fps=25, audio=tone(0.32))


def make_tree(root: Path, clip_file: Path, labels_name: str = "Werewolf-XL_labels.csv", header=HEADER) -> Path:
    rows = [[name, name.split("_")[0], *values, "neutral"] for name, (_, values) in original_clips().items()]
    rows.append(["03_02_7.mp4", "3", 0.5, 0.25, 1.0, "happy"])  # labelled, no video: left out
    names = [r[0] for r in rows[:-1]] + ["17_04_12"]  # 17_04_12: a video without a label: left out
    for name in names:
        game = name.split("_")[0]
        dst = root / "Werewolf-XL_Speaker_Video" / f"game{game}" / f"{name}.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip_file, dst)
    with open(root / labels_name, "w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return root


def prepare(raw: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "werewolf_xl", str(raw), str(out), *extra])


def read_rows(out: Path) -> dict[str, tuple[int, list[float], Path]]:
    manifest = read_manifest(out / "werewolf_xl.csv", target_columns=TARGETS)
    targets = encode_labels(manifest, "regression")
    return {Path(r.video).stem: (r.fold, t.tolist(), Path(r.video)) for r, t in zip(manifest.rows, targets)}


def test_folds_and_targets_equal_the_original_splits(tmp_path, clip_file):
    raw = make_tree(tmp_path / "Werewolf-XL", clip_file)
    assert prepare(raw, tmp_path / "out") == 0
    rows = read_rows(tmp_path / "out")
    assert {n: (fold, values) for n, (fold, values, _) in rows.items()} == original_clips()
    assert sorted({fold for fold, *_ in rows.values()}) == [1, 2, 3, 4, 5]
    header = (tmp_path / "out" / "werewolf_xl.csv").read_text().splitlines()[0].split(",")
    assert header == ["video", "audio", *TARGETS, "fold"]
    for name, (_, _, video) in rows.items():
        assert video.is_file() and video.name == f"{name}.mp4"


def test_left_out_clips_are_listed(tmp_path, clip_file):
    raw = make_tree(tmp_path / "Werewolf-XL", clip_file)
    assert prepare(raw, tmp_path / "out") == 0
    with open(tmp_path / "out" / "dropped.csv", newline="") as f:
        dropped = {Path(r["video"]).stem: r["reason"] for r in csv.DictReader(f)}
    assert dropped == {"03_02_7": "labelled in Werewolf-XL_labels.csv, but its video is missing",
                       "17_04_12": "not in Werewolf-XL_labels.csv"}


def test_another_label_table_and_column_names(tmp_path, clip_file):
    header = ["speaker_audio", "Session", "A", "P", "D", "Category"]
    raw = make_tree(tmp_path / "Werewolf-XL", clip_file, labels_name="pad_labels.csv", header=header)
    assert prepare(raw, tmp_path / "out") == 2  # the default table is not there
    assert prepare(raw, tmp_path / "out", "--labels", "pad_labels.csv") == 2  # nor the default columns
    table = str(raw / "pad_labels.csv")  # absolute
    assert prepare(raw, tmp_path / "out", "--labels", table, "--columns", "speaker_audio,A,P,D") == 0
    assert {n: (f, v) for n, (f, v, _) in read_rows(tmp_path / "out").items()} == original_clips()


def test_missing_parts_are_named_and_nothing_is_written(tmp_path, clip_file, capsys):
    raw = make_tree(tmp_path / "Werewolf-XL", clip_file)
    (raw / "Werewolf-XL_labels.csv").unlink()
    shutil.rmtree(raw / "Werewolf-XL_Speaker_Video")
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "not a complete Werewolf-XL tree" in err
    assert "Werewolf-XL_Speaker_Video" in err and "Werewolf-XL_labels.csv" in err
    assert not (tmp_path / "out").exists()


def test_games_without_clips_are_named(tmp_path, clip_file, capsys):
    raw = make_tree(tmp_path / "Werewolf-XL", clip_file)
    shutil.rmtree(raw / "Werewolf-XL_Speaker_Video" / "game08")
    shutil.rmtree(raw / "Werewolf-XL_Speaker_Video" / "game30")
    assert prepare(raw, tmp_path / "out") == 2
    assert "game(s) 08, 30" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_bad_label_table_is_refused_with_its_line(tmp_path, clip_file, capsys):
    raw = make_tree(tmp_path / "Werewolf-XL", clip_file)
    with open(raw / "Werewolf-XL_labels.csv", "a", newline="") as f:
        csv.writer(f).writerow(["05_01_9", "5", "high", "0.5", "1.0", "angry"])
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "Werewolf-XL_labels.csv" in err and f"line {len(original_clips()) + 3}" in err
    assert not (tmp_path / "out").exists()
