"""`hicmae prepare iemocap`: a miniature IEMOCAP_full_release -> 4 classes (exc merged into hap), 5 session folds,
utterance ranges of the dialog videos."""

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
CONFIG = yaml.safe_load((REPO / "configs" / "finetune" / "iemocap.yaml").read_text())

# Per session: one improvisation and one script, utterances (name suffix, category, start, end).
UTTERANCES = [("F000", "neu", 0.0, 0.12), ("M000", "hap", 0.12, 0.2), ("F001", "exc", 0.2, 0.28),
              ("M001", "ang", 0.28, 0.36), ("F002", "sad", 0.36, 0.44), ("M002", "fru", 0.44, 0.5),
              ("F003", "xxx", 0.5, 0.56)]
FOUR = {"neu": "neutral", "hap": "happiness", "exc": "happiness", "ang": "anger", "sad": "sadness"}


def dialogs(session: int) -> list[str]:
    mocap = "F" if session % 2 else "M"  # which actor wears the markers: part of every name of the dialog
    return [f"Ses0{session}{mocap}_impro0{session}", f"Ses0{session}{mocap}_script01_{session}"]


def evaluation_text(dialog: str) -> str:
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for suffix, code, start, end in UTTERANCES:
        lines += [f"[{start:.4f} - {end:.4f}]\t{dialog}_{suffix}\t{code}\t[2.5000, 3.0000, 2.5000]",
                  "C-E2:\tNeutral;\t()", "C-E3:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("iemocap_media")
    frames = np.full((15, 32, 32, 3), 120, np.uint8)  # 0.6 s at 25 fps: every utterance range falls inside
    return (write_mp4(root / "dialog.avi", frames, fps=25, audio=tone(0.6)),
            write_wav(root / "dialog.wav", tone(0.6)), write_wav(root / "utterance.wav", tone(0.08)))


def make_tree(root: Path, media) -> Path:
    avi, dialog_wav, utterance_wav = media
    for s in range(1, 6):
        session = root / f"Session{s}"
        for d in dialogs(s):
            for src, dst in ((avi, session / "dialog/avi/DivX" / f"{d}.avi"),
                             (dialog_wav, session / "dialog/wav" / f"{d}.wav")):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
            (session / "dialog/EmoEvaluation/Categorical").mkdir(parents=True, exist_ok=True)
            (session / "dialog/EmoEvaluation" / f"{d}.txt").write_text(evaluation_text(d))
            categorical = session / "dialog/EmoEvaluation/Categorical" / f"{d}_e1_cat.txt"
            categorical.write_text(f"{d}_F000 :Neutral state; ()\n")  # a rater's file: not read
            for suffix, *_ in UTTERANCES:
                wav = session / "sentences/wav" / d / f"{d}_{suffix}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(utterance_wav, wav)
    return root


def expected(root: Path) -> dict[str, tuple]:
    out = {}
    for s in range(1, 6):
        for d in dialogs(s):
            for suffix, code, start, end in UTTERANCES:
                if code in FOUR:
                    wav = root / f"Session{s}/dialog/wav/{d}.wav"
                    out[f"{d}_{suffix}"] = (s, FOUR[code], start, end,
                                            (root / f"Session{s}/dialog/avi/DivX/{d}.avi").resolve(), wav.resolve())
    return out


def prepare(raw: Path, out: Path, *extra: str) -> int:
    return main(["prepare", "iemocap", str(raw), str(out), *extra])


def read_rows(out: Path) -> dict[str, tuple]:
    """Utterance (from the audio name, or the video name and start) -> (fold, label, start, end, video, audio)."""
    rows = {}
    for r in read_manifest(out / "iemocap.csv").rows:
        rows[(Path(r.video).stem, r.start)] = (r.fold, r.labels[0], r.start, r.end, Path(r.video), Path(r.audio))
    return rows


def by_range(exp: dict) -> dict:
    return {(Path(v[4]).stem, v[2]): v for v in exp.values()}


def test_labels_folds_ranges_and_paths(tmp_path, media):
    raw = make_tree(tmp_path / "IEMOCAP_full_release", media)
    assert prepare(raw, tmp_path / "out") == 0
    rows = read_rows(tmp_path / "out")
    assert rows == by_range(expected(raw))
    assert len(rows) == 5 * 2 * 5
    labels = {label for _, label, *_ in rows.values()}
    assert labels == {"neutral", "happiness", "anger", "sadness"}
    assert len(labels) == CONFIG["model"]["num_classes"]
    assert set(CONFIG["data"].get("class_names") or labels) == labels
    for *_, video, wav in rows.values():
        assert video.is_file() and wav.is_file()


def test_excited_is_merged_into_happiness_and_other_categories_are_listed(tmp_path, media):
    raw = make_tree(tmp_path / "IEMOCAP_full_release", media)
    assert prepare(raw, tmp_path / "out") == 0
    rows = {(v.name, start): label for (_, start), (_, label, _, _, v, _) in read_rows(tmp_path / "out").items()}
    assert rows[("Ses01F_impro01.avi", 0.12)] == rows[("Ses01F_impro01.avi", 0.2)] == "happiness"  # hap, exc
    with open(tmp_path / "out" / "dropped.csv", newline="") as f:
        dropped = {Path(r["video"]).stem: r["reason"] for r in csv.DictReader(f)}
    assert set(dropped) == {f"{d}_{s}" for n in range(1, 6) for d in dialogs(n) for s in ("M002", "F003")}
    assert "label fru (frustration)" in dropped["Ses01F_impro01_M002"]
    assert "label xxx (no agreement)" in dropped["Ses01F_impro01_F003"]


def test_an_utterance_without_its_wav_or_video_is_listed(tmp_path, media):
    raw = make_tree(tmp_path / "IEMOCAP_full_release", media)
    (raw / "Session2/dialog/wav/Ses02M_impro02.wav").unlink()
    (raw / "Session3/dialog/avi/DivX/Ses03F_script01_3.avi").unlink()
    assert prepare(raw, tmp_path / "out") == 0
    assert len(read_rows(tmp_path / "out")) == 5 * 2 * 5 - 5 - 5
    with open(tmp_path / "out" / "dropped.csv", newline="") as f:
        dropped = {Path(r["video"]).stem: r["reason"] for r in csv.DictReader(f)}
    assert dropped["Ses02M_impro02_F000"] == "its dialog wav (dialog/wav/<dialog>.wav) is missing"
    assert "dialog video" in dropped["Ses03F_script01_3_M001"]


def test_missing_folders_are_all_named_and_nothing_is_written(tmp_path, media, capsys):
    raw = make_tree(tmp_path / "IEMOCAP_full_release", media)
    shutil.rmtree(raw / "Session4/dialog/avi")
    shutil.rmtree(raw / "Session2/dialog/wav")
    shutil.rmtree(raw / "Session5/dialog/EmoEvaluation")
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "not a complete IEMOCAP tree" in err
    for part in ("Session4/dialog/avi/DivX", "Session2/dialog/wav", "Session5/dialog/EmoEvaluation"):
        assert part in err
    assert "Session1" not in err.split("missing", 1)[1]
    assert not (tmp_path / "out").exists()


def test_an_evaluation_file_without_utterances_is_refused(tmp_path, media, capsys):
    raw = make_tree(tmp_path / "IEMOCAP_full_release", media)
    (raw / "Session3/dialog/EmoEvaluation/Ses03F_impro03.txt").write_text("Ses03F_impro03_F000 neu\n")
    assert prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "Ses03F_impro03.txt" in err and "no utterance lines" in err
    assert not (tmp_path / "out").exists()
