"""`hicmae prepare ravdess`: a complete RAVDESS speech tree (tiny real media, the real names) -> the original's
1,440 clips, pairing, labels and folds, clip by clip."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hicmae.cli import main
from hicmae.data.manifest import read_manifest
from hicmae.data.media import load_audio
from hicmae.data.media_writer import tone, write_mp4, write_wav
from hicmae.data.prepare import ravdess
from prepare_helpers import assert_refused

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "prepare" / "ravdess" / "original_folds.txt"


def original() -> dict[str, tuple[str, str, int]]:
    """Video-only take -> (audio-only take's wav, class name, test split), from the original's lines alone."""
    out = {}
    for line in FIXTURE.read_text().splitlines():
        take, wav, label, split = line.split()
        out[take] = (wav, ravdess.CLASSES[int(label)], int(split))
    return out


ORIGINAL = original()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("ravdess_media")
    frames = np.full((6, 32, 32, 3), 70, np.uint8)
    return {"01": write_mp4(root / "av.mp4", frames, fps=25, audio=tone(0.24, 48000), sample_rate=48000),
            "02": write_mp4(root / "v.mp4", frames, fps=25),
            "03": write_wav(root / "a.wav", tone(0.24, 48000), 48000)}


def place(src: Path, dst: Path) -> None:
    """A hard link (4,300 files in a blink), or a copy where the file system has none."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)


def make_tree(root: Path, media) -> Path:
    """Every speech take of every actor as the Zenodo zips unpack, videos and audio in separate folders, with
    the full-AV takes and a few song takes beside them (which the default pairing must ignore)."""
    for actor in ravdess.ACTORS:
        video_dir = root / "Video_Speech" / f"Actor_{actor:02d}"
        audio_dir = root / "Audio_Speech_Actors_01-24" / f"Actor_{actor:02d}"
        video_dir.mkdir(parents=True)
        audio_dir.mkdir(parents=True)
        for take in ravdess.takes(actor):
            place(media["02"], video_dir / f"02-{take}.mp4")
            place(media["01"], video_dir / f"01-{take}.mp4")
            place(media["03"], audio_dir / f"03-{take}.wav")
        place(media["02"], video_dir / f"02-02-01-01-01-01-{actor:02d}.mp4")  # song (vocal channel 02)
    return root


def prepare(raw: Path, out: Path, *options: str) -> int:
    return main(["prepare", "ravdess", str(raw), str(out), *options])


def test_takes_are_the_originals():
    assert len(ORIGINAL) == 1440
    ours = {f"02-{t}": (a, t) for a in ravdess.ACTORS for t in ravdess.takes(a)}
    assert sorted(ours) == sorted(ORIGINAL)


def test_prepare_matches_the_original_clip_by_clip(tmp_path, media):
    raw, out = make_tree(tmp_path / "RAVDESS", media), tmp_path / "out"
    assert prepare(raw, out) == 0
    manifest = read_manifest(out / "ravdess.csv")
    rows = {Path(r.video).stem: r for r in manifest.rows}
    assert len(manifest) == len(rows) == 1440 and sorted(rows) == sorted(ORIGINAL)
    for take, row in rows.items():
        wav, label, split = ORIGINAL[take]
        assert (row.labels[0], row.fold) == (label, split), take
        actor = f"Actor_{take[-2:]}"
        assert Path(row.video) == raw / "Video_Speech" / actor / f"{take}.mp4" and Path(row.video).is_file()
        assert Path(row.audio) == raw / "Audio_Speech_Actors_01-24" / actor / wav and Path(row.audio).is_file()
    for k in range(1, 7):  # 240 test / 1,200 train clips in every fold, as the original's lists
        assert sum(r.fold == k for r in manifest.rows) == 240
    assert (out / "dropped.csv").read_text().splitlines() == ["video,reason"]
    assert load_audio(next(iter(rows.values())).audio).shape[0] == pytest.approx(0.24 * 16000, abs=2)


def test_full_av_pairing_uses_the_01_takes_with_their_own_sound(tmp_path, media):
    raw, out = make_tree(tmp_path / "RAVDESS", media), tmp_path / "out"
    for wav in (raw / "Audio_Speech_Actors_01-24").rglob("*.wav"):
        wav.unlink()  # no audio-only zip
    assert prepare(raw, out, "--pairing", "full_av") == 0
    rows = read_manifest(out / "ravdess.csv").rows
    assert len(rows) == 1440
    for row in rows:
        take = Path(row.video).stem
        assert take.startswith("01-") and row.audio is None
        assert (row.labels[0], row.fold) == ORIGINAL["02" + take[2:]][1:]
    assert load_audio(rows[0].video).shape[0] > 0  # the full-AV file's own track


def test_missing_parts_are_named(tmp_path, media, capsys):
    raw = make_tree(tmp_path / "a", media)
    shutil.rmtree(raw / "Video_Speech" / "Actor_07")
    (raw / "Audio_Speech_Actors_01-24" / "Actor_12" / "03-01-05-02-01-02-12.wav").unlink()
    assert_refused(capsys, prepare, raw, tmp_path / "out_a", "all video files of Actor_07 (Video_Speech_Actor_07.zip)",
           "Actor_12/03-01-05-02-01-02-12.wav", "zenodo.org/record/1188976")

    raw = make_tree(tmp_path / "b", media)
    shutil.rmtree(raw / "Audio_Speech_Actors_01-24")
    assert_refused(capsys, prepare, raw, tmp_path / "out_b", "Audio_Speech_Actors_01-24.zip", "Actor_24")

    raw = make_tree(tmp_path / "c", media)
    twin = raw / "copy" / "Actor_03"
    twin.mkdir(parents=True)
    shutil.copy(media["02"], twin / "02-01-01-01-01-01-03.mp4")
    assert_refused(capsys, prepare, raw, tmp_path / "out_c", "second copy", "02-01-01-01-01-01-03.mp4")
