"""`hicmae prepare mafw`: a miniature MAFW tree (official set files, tiny real clips) -> the original's folds and
labels clip by clip, the clips without an audio track left out, and the compound label options."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from hicmae.cli import main
from hicmae.data.manifest import encode_labels, read_manifest
from hicmae.data.media_writer import tone, write_frame_folder, write_mp4
from hicmae.data.prepare import mafw
from prepare_helpers import assert_refused

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "prepare" / "mafw"
CLASSES = yaml.safe_load((REPO / "configs" / "finetune" / "mafw.yaml").read_text())["data"]["class_names"]
SINGLE = "Train & Test Set/single/no_caption"
COMPOUND = "Train & Test Set/compound/no_caption"


def original_clips() -> dict[str, tuple[str, int]]:
    """Clip id -> (class name, test split), from the original's lines alone."""
    clips = {}
    for path in sorted(FIXTURES.glob("split*/test.csv")):
        split = int(path.parent.name[len("split"):])
        for line in path.read_text().splitlines():
            frames, wav, label = line.split()
            assert Path(frames).name == Path(wav).stem
            clips[Path(frames).name] = (CLASSES[int(label)], split)
    return clips


ORIGINAL = original_clips()
# Clips of the official lists that the original lacks: no audio track, so FFmpeg could not extract one.
SILENT = {"00001": ("anger", 2), "00002": ("helplessness", 5)}
# Compound labels for some of the clips (the rest keep their single label in the compound split).
COMPOUNDS = {name: combo for name, combo in zip(sorted(ORIGINAL)[::7], ["anger_disgust", "sadness_helplessness",
                                                                        "fear_surprise", "anger_disgust",
                                                                        "surprise_anxiety", "disgust_contempt",
                                                                        "fear_anxiety", "sadness_helplessness"])}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("mafw_media")
    frames = np.full((6, 32, 32, 3), 60, np.uint8)
    return {"clip": write_mp4(root / "clip.mp4", frames, fps=25, audio=tone(0.24)),
            "silent": write_mp4(root / "silent.mp4", frames, fps=25),
            "frames": write_frame_folder(root / "frames", frames[:3], "png")}


def write_sets(folder: Path, clips: dict[str, tuple[str, int]], broken: str | None = None) -> None:
    for k in range(1, 6):
        (folder / f"set_{k}").mkdir(parents=True, exist_ok=True)
        for part, keep in (("test", lambda f: f == k), ("train", lambda f: f != k)):
            lines = [f"{n}.mp4 {label}\n" for n, (label, fold) in sorted(clips.items()) if keep(fold)]
            (folder / f"set_{k}" / f"{part}.txt").write_text("".join(lines))


def make_tree(root: Path, media) -> Path:
    clips = {**ORIGINAL, **SILENT}
    write_sets(root / SINGLE, clips)
    write_sets(root / COMPOUND, {n: (COMPOUNDS.get(n, label), fold) for n, (label, fold) in clips.items()})
    for name in clips:
        (root / "data" / "clips").mkdir(parents=True, exist_ok=True)
        shutil.copy(media["silent" if name in SILENT else "clip"], root / "data" / "clips" / f"{name}.mp4")
        shutil.copytree(media["frames"], root / "data" / "frames" / name)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory, media):
    return make_tree(tmp_path_factory.mktemp("mafw") / "MAFW", media)


def prepare(raw: Path, out: Path, *options: str) -> int:
    return main(["prepare", "mafw", str(raw), str(out), "--workers", "1", *options])


def rows_of(path: Path) -> dict:
    return {Path(r.video).stem: r for r in read_manifest(path).rows}


def test_config_class_order_is_the_builders():
    assert CLASSES == list(mafw.CLASSES)
    assert {label for label, _ in ORIGINAL.values()} == set(CLASSES)  # the fixture covers every class


def test_single_labels_match_the_original_clip_by_clip(tree, tmp_path):
    out = tmp_path / "out"
    assert main(["prepare", "mafw", str(tree), str(out), "--workers", "2"]) == 0
    rows = rows_of(out / "mafw.csv")
    assert sorted(rows) == sorted(ORIGINAL)
    for name, row in rows.items():
        assert (row.labels[0], row.fold) == ORIGINAL[name], name
        assert Path(row.video) == tree / "data" / "clips" / f"{name}.mp4" and Path(row.video).is_file()
        assert row.audio is None  # the clip's own audio track
    with open(out / "dropped.csv", newline="") as f:
        dropped = {Path(r["video"]).stem: r["reason"] for r in csv.DictReader(f)}
    assert dropped == {n: mafw.NO_AUDIO for n in SILENT}
    assert json.loads((out / "prepare.json").read_text())["options"]["labels"] == "single"


def test_frame_folders_with_the_clips_audio(tree, tmp_path):
    assert prepare(tree, tmp_path / "out", "--video", "frames") == 0
    rows = rows_of(tmp_path / "out" / "mafw.csv")
    assert sorted(rows) == sorted(ORIGINAL)
    for name, row in rows.items():
        assert Path(row.video) == tree / "data" / "frames" / name and Path(row.video).is_dir()
        assert Path(row.audio) == tree / "data" / "clips" / f"{name}.mp4"
        assert (row.labels[0], row.fold) == ORIGINAL[name]


def test_compound_and_multilabel(tree, tmp_path, capsys):
    assert prepare(tree, tmp_path / "c", "--labels", "compound") == 0
    notes = json.loads((tmp_path / "c" / "prepare.json").read_text())["notes"]
    rows = rows_of(tmp_path / "c" / "mafw_compound.csv")
    assert sorted(rows) == sorted(ORIGINAL)
    for name, row in rows.items():
        assert (row.labels[0], row.fold) == (COMPOUNDS.get(name, ORIGINAL[name][0]), ORIGINAL[name][1])
    classes = mafw.compound_classes(r.labels[0] for r in rows.values())
    assert classes[:11] == CLASSES and classes[11:] == ["anger_disgust", "disgust_contempt", "fear_surprise",
                                                        "fear_anxiety", "sadness_helplessness", "surprise_anxiety"]
    assert any(", ".join(classes) in n and f"{len(classes)} compound classes" in n for n in notes)

    assert prepare(tree, tmp_path / "m", "--labels", "multilabel") == 0
    manifest = read_manifest(tmp_path / "m" / "mafw_multilabel.csv")
    hot = dict(zip((Path(r.video).stem for r in manifest.rows), encode_labels(manifest, "multilabel", CLASSES)))
    for name, vector in hot.items():
        expected = COMPOUNDS.get(name, ORIGINAL[name][0]).split("_")
        assert [CLASSES[i] for i in np.flatnonzero(vector)] == sorted(expected, key=CLASSES.index), name


def test_broken_trees_name_what_is_missing(tree, tmp_path, capsys):
    def copy(name):
        return Path(shutil.copytree(tree, tmp_path / name, ignore=shutil.ignore_patterns("frames")))

    raw = copy("a")
    (raw / SINGLE / "set_3" / "test.txt").unlink()
    shutil.rmtree(raw / "data" / "clips")
    assert_refused(capsys, prepare, raw, tmp_path / "oa", "missing data/clips", f"{SINGLE}/set_3/test.txt", "mafw-database.github.io")

    raw = copy("b")
    victim = sorted(ORIGINAL)[3]
    (raw / "data" / "clips" / f"{victim}.mp4").unlink()
    assert_refused(capsys, prepare, raw, tmp_path / "ob", f"missing data/clips/{victim}.mp4")

    raw = copy("c")  # a train list that is not the other sets' test clips
    train = raw / SINGLE / "set_4" / "train.txt"
    train.write_text("".join(train.read_text().splitlines(keepends=True)[1:]))
    assert_refused(capsys, prepare, raw, tmp_path / "oc", "set_4/train.txt", "lacks")

    raw = copy("d")
    test = raw / SINGLE / "set_1" / "test.txt"
    test.write_text(test.read_text() + "09999.mp4 joy\n")
    assert_refused(capsys, prepare, raw, tmp_path / "od", "set_1/test.txt", "unknown emotion 'joy'")

    assert main(["prepare", "mafw", str(copy("e")), str(tmp_path / "oe"), "--video", "frames"]) == 2
    assert "missing data/frames" in capsys.readouterr().err and not (tmp_path / "oe").exists()
