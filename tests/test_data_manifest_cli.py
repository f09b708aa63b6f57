"""Manifests (ours and the original lists), the validate CLI and demo-data generation."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hicmae.cli import main
from hicmae.data.demo import make_demo_data
from hicmae.data.manifest import class_names_of, encode_labels, read_manifest
from hicmae.data.media import load_audio, open_video
from hicmae.errors import DataError

from conftest import write_csv

# A few lines of the original split files (tests/fixtures/README.md): one clip per class.
SPLITS = Path(__file__).resolve().parent / "fixtures" / "original_splits"
ORIGINAL_LISTS = {"crema-d/audio_visual/split01/train.csv": 6, "ravdess/audio_visual/split01/train.csv": 8,
                  "mafw/audio_visual/single/split01/train.csv": 11}


def test_csv_manifest_relative_paths_folds_and_ranges(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["video", "audio", "label", "start", "end", "fold"],
                     [("a/x.mp4", "", "sad", 0.5, 2.0, 1), ("/abs/y.mp4", "w.wav", "happy", "", "", 0)])
    m = read_manifest(path, root="/data")
    assert m.rows[0].video == "/data/a/x.mp4" and m.rows[0].audio is None
    assert (m.rows[0].start, m.rows[0].end, m.rows[0].fold) == (0.5, 2.0, 1)
    assert m.rows[1].video == "/abs/y.mp4" and m.rows[1].audio == "/data/w.wav"
    assert class_names_of(m) == ["happy", "sad"] and encode_labels(m, "classification") == [1, 0]
    assert [r.fold for r in m.select_folds(exclude=[1]).rows] == [0]
    assert read_manifest(path).rows[0].video == str(tmp_path / "a" / "x.mp4")  # default root: its folder


def test_regression_columns_named_by_user(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["video", "arousal", "valence", "dominance"], [("x.mp4", 0.1, -0.2, 1.5)])
    m = read_manifest(path)
    assert m.label_columns == ["arousal", "valence", "dominance"]
    np.testing.assert_allclose(encode_labels(m, "regression")[0], [0.1, -0.2, 1.5])
    m = read_manifest(path, target_columns=["valence"])
    np.testing.assert_allclose(encode_labels(m, "regression")[0], [-0.2])


def test_manifest_errors_name_file_and_problem(tmp_path):
    with pytest.raises(DataError, match="missing column 'video'"):
        read_manifest(write_csv(tmp_path / "a.csv", ["path", "label"], [("x.mp4", 1)]))
    m = read_manifest(write_csv(tmp_path / "b.csv", ["video", "label"], [("x.mp4", "joy"), ("y.mp4", "rage")]))
    with pytest.raises(DataError, match="line 3: unknown label 'rage'"):
        encode_labels(m, "classification", ["joy", "sad"])
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


@pytest.mark.parametrize("name,num_classes", ORIGINAL_LISTS.items())
def test_original_space_separated_lists(name, num_classes):
    path = SPLITS / name
    assert path.exists(), f"fixture missing: {path} (it is part of the repository; see tests/fixtures/README.md)"
    columns = [line.split() for line in path.read_text().splitlines()]
    m = read_manifest(path, root="/")
    assert [(r.video, r.audio) for r in m.rows] == [(video, audio) for video, audio, _ in columns]
    # Integer labels are class indices as written (not re-ranked as strings: "10" sorts before "2").
    assert encode_labels(m, "classification") == [int(label) for _, _, label in columns]
    assert len(class_names_of(m)) == num_classes


def test_original_pretraining_list(tmp_path):
    (tmp_path / "p.txt").write_text("/vox/id1/a.mp4 0\n/vox/id2/b.mp4 0\n")
    m = read_manifest(tmp_path / "p.txt")
    assert [r.video for r in m.rows] == ["/vox/id1/a.mp4", "/vox/id2/b.mp4"] and m.rows[0].audio is None


def test_validate_cli_reports_bad_rows(media, tmp_path, capsys):
    rows = [(media.video, media.wav, "a"), (media.frames_gray, media.stereo_44k, "a"),
            (media.short_video, media.short_wav, "b"), (media.missing, media.wav, "a"),
            (media.truncated, media.wav, "b"), (media.silent_video, "", "a"), (media.empty_folder, media.wav, "b"),
            (media.video, media.wav, "zzz")]
    path = write_csv(tmp_path / "m.csv", ["video", "audio", "label"], rows)
    assert main(["validate", path, "--task", "classification", "--classes", "a,b", "--workers", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "8 rows checked: 3 good, 5 bad"
    assert out[0].startswith(f"{media.missing}: file does not exist")
    assert any(line.startswith(str(media.silent_video)) and "no audio track" in line for line in out)
    assert any("unknown label 'zzz'" in line for line in out)
    # A progress bar forced on goes to stderr: stdout stays one JSON document.
    assert main(["validate", path, "--json", "--progress", "--task", "classification", "--classes", "a,b"]) == 1
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert "8/8" in captured.err
    assert [r["ok"] for r in results] == [True, True, True, False, False, False, False, False]
    assert set(results[0]) == {"row", "video", "audio", "ok", "error"}
    good = write_csv(tmp_path / "g.csv", ["video", "audio"], [r[:2] for r in rows[:3]])
    assert main(["validate", good]) == 0


def _validate_json(path: str, workers: int) -> list[dict]:
    """`hicmae validate` as a user runs it: a fresh process that has decoded nothing yet."""
    proc = subprocess.run([sys.executable, "-m", "hicmae.cli", "validate", path, "--json", "--task", "classification",
                           "--classes", "a,b", "--workers", str(workers)], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_validate_workers_give_the_verdicts_of_one_process(media, tmp_path):
    rows = [(media.video, media.wav, "a"), (media.missing, media.wav, "a"), (media.truncated, media.wav, "b"),
            (media.short_video, media.short_wav, "b"), (media.silent_video, "", "a"), (media.video, "", "zzz")]
    path = write_csv(tmp_path / "m.csv", ["video", "audio", "label"], rows)
    one = _validate_json(path, 1)
    assert [r["ok"] for r in one] == [True, False, False, True, False, False]
    assert _validate_json(path, 2) == one


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_validate_forks_workers_only_while_nothing_has_been_decoded():
    """Forking a process whose decoder threads may hold a lock can hang the child: once a decoder is
    loaded, workers are spawned instead."""
    code = ("import hicmae.data.validate as v; before = v._pool_context().get_start_method(); import decord; "
            "print(before, v._pool_context().get_start_method())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["fork", "spawn"], proc.stderr[-2000:]


def test_make_demo_data_is_deterministic_and_decodable(tmp_path, capsys):
    a = make_demo_data(tmp_path / "a", num_clips=6, seed=3, num_classes=3, size=32, seconds=1.0, workers=1)
    assert main(["make-demo-data", str(tmp_path / "b"), "--num-clips", "6", "--seed", "3", "--num-classes", "3",
                 "--size", "32", "--seconds", "1.0", "--workers", "1", "--progress"]) == 0
    assert "6/6" in capsys.readouterr().err
    b = tmp_path / "b"
    for name in ("pretrain.csv", "finetune.csv", "regression.csv", "clips/clip_0004.wav"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    m = read_manifest(a / "finetune.csv")
    assert len(m) == 6 and {r.fold for r in m.rows} == {0, 1} and class_names_of(m) == ["anger", "disgust", "fear"]
    clip = open_video(m.rows[0].video)
    assert len(clip) == 25 and clip.frames([0, 24]).shape == (2, 32, 32, 3)
    assert load_audio(m.rows[0].video).numel() >= 16000  # the mp4 carries its AAC track too
    assert np.array_equal(open_video(str(a / "clips/clip_0001.mp4")).frames([3]),
                          open_video(str(b / "clips/clip_0001.mp4")).frames([3]))


@pytest.mark.slow
def test_demo_classes_are_separable_from_each_modality(tmp_path):
    """With static cues, crude per-clip features (mean colour; mean fbank) + nearest centroid beat chance."""
    from hicmae.data.audio import fbank

    root = make_demo_data(tmp_path, num_clips=60, seed=0, size=32, seconds=1.0, static_cues=True)
    m = read_manifest(root / "finetune.csv")
    y = np.array(encode_labels(m, "classification"))
    vis = np.stack([open_video(r.video).frames([0, 12]).reshape(-1, 3).mean(0) for r in m.rows])
    aud = np.stack([fbank(load_audio(r.audio)).mean(0).numpy() for r in m.rows])
    train, test = np.arange(60) < 36, np.arange(60) >= 36
    for x in (vis, aud):
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        centroids = np.stack([x[train & (y == c)].mean(0) for c in range(6)])
        pred = ((x[test, None] - centroids[None]) ** 2).sum(-1).argmin(1)
        assert (pred == y[test]).mean() > 0.5  # chance is 1/6


def test_dynamic_cues_only_keeps_only_the_dynamic_class_differences():
    from hicmae.data.demo import class_parameters, make_clip

    static = np.array([class_parameters(k, static_cues=False) for k in range(6)])
    full = np.array([class_parameters(k) for k in range(6)])
    colour_pitch_timbre = [0, 1, 2, 7, 8, 9]
    rhythm_mouth_blink_sway = [3, 4, 5, 6]
    assert np.ptp(static[:, colour_pitch_timbre], axis=0).max() == 0
    assert np.ptp(full[:, colour_pitch_timbre], axis=0).min() > 0
    assert np.array_equal(static[:, rhythm_mouth_blink_sway], full[:, rhythm_mouth_blink_sway])
    a, _ = make_clip(0, seed=1, size=32, seconds=0.5, static_cues=False)
    b, _ = make_clip(0, seed=1, size=32, seconds=0.5)
    assert a.shape == b.shape and not np.array_equal(a, b)
