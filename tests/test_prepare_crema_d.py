"""`hicmae prepare crema_d`: the file-name rule against every clip of the original's folds, then a miniature
CREMA-D tree through the command line."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from hicmae.cli import main
from hicmae.data.manifest import read_manifest
from hicmae.data.media_writer import tone, write_mp4, write_wav
from hicmae.data.prepare import crema_d
from hicmae.errors import DataError
from prepare_helpers import assert_refused

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "prepare" / "crema_d"
CLASSES = yaml.safe_load((REPO / "configs" / "finetune" / "crema_d.yaml").read_text())["data"]["class_names"]


def original_folds() -> dict[str, tuple[str, int]]:
    """Clip name -> (class name, test split) of the original's split files (the fixture's README says how)."""
    out = {}
    with gzip.open(FIXTURES / "original_folds.txt.gz", "rt") as f:
        for line in f:
            name, label, split = line.split()
            out[name] = (CLASSES[int(label)], int(split))
    return out


def not_in_original() -> list[str]:
    return (FIXTURES / "not_in_original.txt").read_text().split()


ORIGINAL = original_folds()
EXTRA = not_in_original()


def test_fixture_names_every_clip_of_the_repository_once():
    assert len(ORIGINAL) == 7437 and len(EXTRA) == 5 and not set(ORIGINAL) & set(EXTRA)
    assert len(ORIGINAL) + len(EXTRA) == crema_d.CLIPS


def test_config_class_order_is_the_builders():
    assert CLASSES == list(crema_d.CLASSES)


def test_rule_reproduces_every_clip_of_the_original_folds():
    ours = {name: crema_d.assign(name) for name in [*ORIGINAL, *EXTRA]}
    kept = {name: v for name, v in ours.items() if not isinstance(v, str)}
    assert kept == ORIGINAL  # the same 7,437 clips, each with the same label and the same test fold
    assert sorted(n for n, v in ours.items() if isinstance(v, str)) == sorted(EXTRA)
    per_fold = {k: sum(1 for _, f in ORIGINAL.values() if f == k) for k in range(1, 6)}
    assert per_fold == {1: 1463, 2: 1470, 3: 1475, 4: 1474, 5: 1555}  # the original's test.csv line counts


def test_rule_options():
    assert crema_d.assign("1040_ITH_SAD_XX", clip_set="current") == ("SAD", 3)
    assert "1040_ITH_SAD_X.wav" in crema_d.assign("1040_ITH_SAD_XX")
    assert "README" in crema_d.assign("1064_TIE_SAD_XX", clip_set="current")  # broken whatever the clip set
    assert crema_d.assign("1091_WSI_HAP_XX", classes=4) == ("HAP", 5)
    assert "4 classes" in crema_d.assign("1001_DFA_DIS_XX", classes=4)
    assert [crema_d.fold_of(a) for a in (1001, 1018, 1019, 1072, 1073, 1091)] == [1, 1, 2, 4, 5, 5]
    with pytest.raises(DataError, match="not a CREMA-D clip name"):
        crema_d.assign("1001_DFA_XYZ_XX")


# ---------------------------------------------------------------------------------------------- the tree
# Two actors of every fold (its first and its last), all their clips, plus the five clips the original lacks.
ACTORS = (1001, 1018, 1019, 1036, 1037, 1054, 1055, 1072, 1073, 1091)
TREE = sorted([n for n in ORIGINAL if int(n[:4]) in ACTORS][::9] + EXTRA)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("crema_media")
    frames = np.full((5, 32, 32, 3), 120, np.uint8)
    return write_mp4(root / "clip.flv", frames, fps=25, audio=tone(0.2)), write_wav(root / "clip.wav", tone(0.2))


def make_tree(root: Path, media, names=TREE) -> Path:
    flv, wav = media
    (root / "VideoFlash").mkdir(parents=True)
    (root / "AudioWAV").mkdir()
    for name in names:
        shutil.copy(flv, root / "VideoFlash" / f"{name}.flv")
        shutil.copy(wav, root / "AudioWAV" / f"{name}.wav")
    (root / "README.md").write_text("CREMA-D\n")
    return root


def prepare(raw: Path, out: Path, *options: str) -> int:
    return main(["prepare", "crema_d", str(raw), str(out), *options])


def test_prepare_matches_the_original_clip_by_clip(tmp_path, media):
    raw, out = make_tree(tmp_path / "CREMA-D", media), tmp_path / "out"
    assert prepare(raw, out) == 0
    manifest = read_manifest(out / "crema_d.csv")
    assert manifest.label_columns == ["label"]
    rows = {Path(r.video).stem: r for r in manifest.rows}
    assert sorted(rows) == sorted(n for n in TREE if n in ORIGINAL)
    assert {5} <= {r.fold for r in rows.values()} and {r.fold for r in rows.values()} == {1, 2, 3, 4, 5}
    for name, row in rows.items():
        assert (row.labels[0], row.fold) == ORIGINAL[name], name
        assert Path(row.video) == raw / "VideoFlash" / f"{name}.flv" and Path(row.video).is_file()
        assert Path(row.audio) == raw / "AudioWAV" / f"{name}.wav" and Path(row.audio).is_file()
    with open(out / "dropped.csv", newline="") as f:
        dropped = {Path(r["video"]).stem: r["reason"] for r in csv.DictReader(f)}
    assert sorted(dropped) == sorted(EXTRA)
    assert "1040_ITH_SAD_X.wav" in dropped["1040_ITH_SAD_XX"] and "no audio" in dropped["1076_MTI_NEU_XX"]
    record = json.loads((out / "prepare.json").read_text())
    assert record["manifests"] == {"crema_d.csv": len(rows)} and sum(record["dropped"].values()) == 5


def test_prepare_options(tmp_path, media):
    raw = make_tree(tmp_path / "CREMA-D", media)
    # An older clone: the wav of 1040_ITH_SAD_XX under its pre-2022 name.
    (raw / "AudioWAV" / "1040_ITH_SAD_XX.wav").rename(raw / "AudioWAV" / "1040_ITH_SAD_X.wav")
    assert prepare(raw, tmp_path / "current", "--clip-set", "current") == 0
    rows = {Path(r.video).stem: r for r in read_manifest(tmp_path / "current" / "crema_d.csv").rows}
    assert (rows["1040_ITH_SAD_XX"].labels[0], rows["1040_ITH_SAD_XX"].fold) == ("SAD", 3)
    assert Path(rows["1040_ITH_SAD_XX"].audio).name == "1040_ITH_SAD_X.wav"
    assert prepare(raw, tmp_path / "four", "--classes", "4") == 0
    rows = read_manifest(tmp_path / "four" / "crema_d.csv").rows
    assert {r.labels[0] for r in rows} == {"ANG", "HAP", "NEU", "SAD"}
    assert all(ORIGINAL[Path(r.video).stem] == (r.labels[0], r.fold) for r in rows)


def test_broken_trees_name_what_is_missing(tmp_path, media, capsys):
    names = TREE[:6]
    raw = make_tree(tmp_path / "a", media, names)
    shutil.rmtree(raw / "AudioWAV")
    assert_refused(capsys, prepare, raw, tmp_path / "out_a", "missing AudioWAV", "github.com/CheyneyComputerScience/CREMA-D")

    raw = make_tree(tmp_path / "b", media, names)
    (raw / "AudioWAV" / f"{names[2]}.wav").unlink()
    (raw / "VideoFlash" / f"{names[4]}.flv").unlink()
    assert_refused(capsys, prepare, raw, tmp_path / "out_b", f"AudioWAV/{names[2]}.wav", f"VideoFlash/{names[4]}.flv")

    raw = make_tree(tmp_path / "c", media, names)  # downloaded as a zip, without git-lfs
    for f in [*(raw / "VideoFlash").iterdir(), *(raw / "AudioWAV").iterdir()]:
        f.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:5152cf0f\nsize 35166\n")
    assert_refused(capsys, prepare, raw, tmp_path / "out_c", "Git LFS pointers", "git lfs pull")

    raw = make_tree(tmp_path / "d", media, names)
    shutil.copy(media[0], raw / "VideoFlash" / "interview.flv")
    assert_refused(capsys, prepare, raw, tmp_path / "out_d", "VideoFlash/interview.flv", "not CREMA-D clips")

    raw = make_tree(tmp_path / "e", media, [])
    assert_refused(capsys, prepare, raw, tmp_path / "out_e", "has no .flv clips")
