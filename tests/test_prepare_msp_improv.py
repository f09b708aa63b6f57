"""`hicmae prepare msp_improv`: a miniature MSP-IMPROV tree -> the original's folds and labels, clip by clip."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from hicmae.cli import main
from hicmae.data.manifest import read_manifest
from hicmae.data.media_writer import tone, write_mp4, write_wav

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "prepare" / "msp_improv"
CLASSES = yaml.safe_load((REPO / "configs" / "finetune" / "msp_improv.yaml").read_text())["data"]["class_names"]


def original_clips() -> dict[str, tuple[int, str, Path]]:
    """Clip name -> (test split, class name, folder inside the session tree), from the original's lines alone."""
    clips = {}
    for path in sorted(FIXTURES.glob("split*/test.csv")):
        split = int(path.parent.name[len("split"):])
        for line in path.read_text().splitlines():
            frames, wav, label = line.split()
            name = Path(wav).stem  # .../audio_16k/session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav
            clips[name] = (split, CLASSES[int(label)], Path(*Path(wav).parts[-4:-1]))
    return clips


# Turns the original does not hold: the builder must leave each out, for the reason given.
EXTRA = {
    "MSP-IMPROV-S02H-F01-S-FM01": ("X", "both", "no agreement"),
    "MSP-IMPROV-S02H-M01-S-MF02": ("O", "both", "other"),
    "MSP-IMPROV-S03N-F02-P-FM05": ("H", "wav", "its .avi is missing"),
    "MSP-IMPROV-S04S-M03-R-MF01": (None, "both", "not in Evaluation.txt"),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("msp_media")
    frames = np.full((6, 32, 32, 3), 90, np.uint8)
    return write_mp4(root / "clip.avi", frames, fps=25, audio=tone(0.24)), write_wav(root / "clip.wav", tone(0.24))


def consensus(name: str, letter: str) -> str:
    turn = name[len("MSP-IMPROV-"):]
    return (f"UTD-IMPROV-{turn}.avi; {letter}; A:3.000000; V:3.000000; D:3.000000 ; N:3.500000;\n"
            f"Fr-001; Neutral; (); A:3.000000; V:3.000000; D:3.000000; N:4.000000;\n\n")


def make_tree(root: Path, media, split_layout: bool = False, label_file: str = "Evaluation.txt") -> Path:
    """Videos and wavs named as the release names them, an Evaluation.txt with the original's labels."""
    avi, wav = media
    turns = {n: (label, "both", f) for n, (_, label, f) in original_clips().items()}
    for name, (letter, files, _) in EXTRA.items():
        sentence, speaker, kind = name.split("-")[2:5]
        turns[name] = (letter, files, Path(f"session{int(speaker[1:])}", sentence, kind))
    text = ""
    for name, (letter, files, folder) in turns.items():
        video_dir, audio_dir = ((root / "Video" / folder, root / "Audio" / folder) if split_layout
                                else (root / folder, root / folder))
        for src, dst, kind in ((avi, video_dir / f"{name}.avi", "avi"), (wav, audio_dir / f"{name}.wav", "wav")):
            if files in ("both", kind):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
        text += consensus(name, letter) if letter else ""
    (root / label_file).write_text(text)
    return root


def prepare(raw: Path, out: Path) -> int:
    return main(["prepare", "msp_improv", str(raw), str(out)])


def read_rows(out: Path) -> dict[str, tuple]:
    manifest = read_manifest(out / "msp_improv.csv")
    return {Path(r.video).stem: (r.fold, r.labels[0], Path(r.video), Path(r.audio)) for r in manifest.rows}


@pytest.mark.parametrize("split_layout", [False, True], ids=["avi-beside-wav", "Video-and-Audio-folders"])
def test_folds_and_labels_equal_the_original_splits(tmp_path, media, split_layout):
    raw = make_tree(tmp_path / "MSP-IMPROV", media, split_layout,
                    label_file="Evalution.txt" if split_layout else "Evaluation.txt")
    assert prepare(raw, tmp_path / "out") == 0
    rows = read_rows(tmp_path / "out")
    expected = {name: (split, label) for name, (split, label, _) in original_clips().items()}
    assert {name: (fold, label) for name, (fold, label, _, _) in rows.items()} == expected
    assert sorted({fold for fold, *_ in rows.values()}) == [1, 2, 3, 4, 5, 6]
    for name, (_, _, video, audio) in rows.items():
        assert video.is_file() and video.name == f"{name}.avi"
        assert audio.is_file() and audio.name == f"{name}.wav"
    assert "start" not in (tmp_path / "out" / "msp_improv.csv").read_text().splitlines()[0]


def test_left_out_turns_are_listed_with_their_reason(tmp_path, media, capsys):
    raw = make_tree(tmp_path / "MSP-IMPROV", media)
    assert prepare(raw, tmp_path / "out") == 0
    with open(tmp_path / "out" / "dropped.csv", newline="") as f:
        dropped = {Path(r["video"]).stem: r["reason"] for r in csv.DictReader(f)}
    assert set(dropped) == set(EXTRA)
    for name, (_, _, why) in EXTRA.items():
        assert why in dropped[name]
    printed = capsys.readouterr().out
    assert f"{len(original_clips())} clips" in printed and "dropped.csv" in printed


def remove_evaluation(raw: Path) -> None:
    (raw / "Evaluation.txt").unlink()


def remove_session3_videos(raw: Path) -> None:
    for avi in (raw / "session3").rglob("*.avi"):
        avi.unlink()


def remove_session5(raw: Path) -> None:
    shutil.rmtree(raw / "session5")


@pytest.mark.parametrize("break_tree, names", [
    (remove_evaluation, ["Evaluation.txt"]),
    (remove_session3_videos, ["videos of session3"]),
    (remove_session5, ["videos of session5", "audio of session5"]),
])
def test_missing_parts_are_named_and_nothing_is_written(tmp_path, media, capsys, break_tree, names):
    raw = make_tree(tmp_path / "MSP-IMPROV", media)
    break_tree(raw)
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "not a complete MSP-IMPROV tree" in err
    for name in names:
        assert name in err
    assert not (tmp_path / "out" / "msp_improv.csv").exists()


def test_a_label_file_without_consensus_lines_is_refused(tmp_path, media, capsys):
    raw = make_tree(tmp_path / "MSP-IMPROV", media)
    (raw / "Evaluation.txt").write_text("name,label\nMSP-IMPROV-S01A-F01-P-FM01,N\n")
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "Evaluation.txt" in err and "consensus" in err
    assert not (tmp_path / "out").exists()


def test_two_copies_of_one_turn_are_refused(tmp_path, media, capsys):
    raw = make_tree(tmp_path / "MSP-IMPROV", media)
    name = next(iter(original_clips()))
    shutil.copy(media[0], raw / f"{name}.avi")
    assert prepare(raw, tmp_path / "out") == 2
    assert "second copy" in capsys.readouterr().err
