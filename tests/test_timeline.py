"""`hicmae predict --timeline`: 2.56 s windows over a long video, and the CSV, plot and page it writes."""

import csv
import json
import re

import numpy as np
import pytest
import torch

from hicmae.checkpoint import load_release, save_release
from hicmae.cli import main
from hicmae.data.datasets import FinetuneDataset
from hicmae.data.manifest import Manifest, Row
from hicmae.data.media_writer import tone, write_mp4, write_wav
from hicmae.inference import Predictor
from hicmae.models import HiCMAEClassifier
from hicmae.preprocess.synthetic import moving_face
from hicmae.timeline import NO_AUDIO, NO_FACE, window_firsts, window_has_face
from training_helpers import tiny_config

# The paper's window: 16 frames every 4th frame, 2.56 s at 25 fps (a tiny model otherwise).
CONFIG = tiny_config(num_frames=16)
NAMES = ["angry", "happy", "sad"]
SECONDS, FPS = 20, 25


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    torch.manual_seed(0)
    return save_release(HiCMAEClassifier(CONFIG, 3), tmp_path_factory.mktemp("rel") / "clf.safetensors",
                        task="classification", class_names=NAMES, sampling_rate=4)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """20 s of 32 px frames (crops already) whose content drifts, with a 20 s AAC track."""
    root = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    n = SECONDS * FPS
    frames = rng.integers(0, 60, (n, 32, 32, 3)) + np.linspace(0, 190, n)[:, None, None, None]
    return write_mp4(root / "interview.mp4", frames.astype(np.uint8), fps=FPS, audio=tone(SECONDS, seed=1))


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """20 s of raw 320x180 video: the drawn face the detector finds for 12 s, then 8 s without it."""
    root = tmp_path_factory.mktemp("faces")
    truth = moving_face(SECONDS * FPS, 180, 320, side=200, seed=0, absent=(12 * FPS, SECONDS * FPS), noise=2.0)
    return write_mp4(root / "talk.mp4", truth.frames, fps=FPS, audio=tone(SECONDS, seed=3))


def test_windows_start_every_hop_while_a_whole_window_fits():
    np.testing.assert_array_equal(window_firsts(500, 64, 25), np.arange(0, 426, 25))  # 18 windows
    np.testing.assert_array_equal(window_firsts(64, 64, 25), [0])
    np.testing.assert_array_equal(window_firsts(10, 64, 25), [0])  # shorter than a window: one, padded
    np.testing.assert_array_equal(window_firsts(100, 64, 7), [0, 7, 14, 21, 28, 35])
    faces = np.array([True] * 5 + [False] * 5)
    # A window counts as showing a face when more than half of its frames do.
    np.testing.assert_array_equal(window_has_face(faces, np.array([0, 2, 3, 4]), 4), [True, True, False, False])
    np.testing.assert_array_equal(window_has_face(faces, np.array([1, 2]), 8), [False, False])  # 4 of 8, 3 of 8
    np.testing.assert_array_equal(window_has_face(faces, np.array([0]), 9), [True])  # 5 of 9


def test_each_window_is_scored_as_the_evaluation_scores_that_stretch(release, long_clip):
    timeline = Predictor(release, face_crop=False).timeline(long_clip, hop=1.0, batch_size=5)
    assert len(timeline) == 18 and timeline.names == NAMES and timeline.notes == [""] * 18
    np.testing.assert_allclose(timeline.starts, np.arange(18), atol=1e-6)
    np.testing.assert_allclose(timeline.ends - timeline.starts, 2.56, atol=1e-6)
    assert timeline.window_seconds == pytest.approx(2.56) and timeline.hop == pytest.approx(1.0)
    # The same stretches as manifest rows (start, end) through the training code's test dataset.
    model = load_release(release)
    picks = [0, 7, 17]
    rows = [Row(video=str(long_clip), audio=None, labels=[NAMES[0]], line=k + 1, start=float(timeline.starts[k]),
                end=float(timeline.ends[k])) for k in picks]
    dataset = FinetuneDataset(Manifest("<test>", rows, ["label"]), CONFIG, sampling_rate=4, mode="test",
                              class_names=NAMES, eval_gain_augment=False, test_num_segment=1, test_num_crop=1)
    with torch.no_grad():
        samples = [dataset.get(i, seed=0) for i in range(len(picks))]
        expected = model(video=torch.stack([s["video"] for s in samples]),
                         audio=torch.stack([s["audio"] for s in samples])).softmax(-1).numpy()
    np.testing.assert_allclose(timeline.scores[picks], expected, atol=1e-5)
    assert not np.allclose(timeline.scores[0], timeline.scores[17], atol=1e-4)  # the windows differ


def test_windows_past_the_end_of_the_audio_are_marked_not_scored(release, long_clip, tmp_path):
    wav = write_wav(tmp_path / "half.wav", tone(10.0, seed=2))  # the audio stops at 10 s of 20
    timeline = Predictor(release, face_crop=False).timeline(long_clip, wav, hop=2.0)
    assert len(timeline) == 9
    after = timeline.starts >= 10.0 - 0.01
    assert [n for n, a in zip(timeline.notes, after) if a] == [NO_AUDIO] * int(after.sum())
    assert np.isnan(timeline.scores[after]).all() and not np.isnan(timeline.scores[timeline.starts < 7]).any()


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_self_contained(page: str):
    """Everything the page shows is inside it: no URL, no file beside it, no script or stylesheet link."""
    assert "http" not in page and "<link" not in page and "<script" not in page and "url(" not in page
    sources = re.findall(r"src=['\"]([^'\"]*)['\"]", page)
    assert sources and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in sources)
    assert len(re.findall(r"\bsrc=", page)) == len(sources)  # no unquoted src= slipping past the check


def test_timeline_cli_writes_csv_plot_and_page_per_video(release, long_clip, tmp_path, capsys):
    out = tmp_path / "report"
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    assert main(["predict", str(release), str(long_clip), str(text), "--no-face-crop", "--timeline", "--out",
                 str(out), "--hop", "1.2", "--batch-size", "16"]) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["interview.csv", "interview.html", "interview.png"]
    assert captured.out.startswith(f"{long_clip}\t15 windows, 0 without a face\t{out / 'interview.html'}")
    assert f"error: {text}: cannot open as a video: not a video file (it looks like text)" in captured.err
    rows = _read_csv(out / "interview.csv")
    assert list(rows[0]) == ["start", "end", "has_face", *NAMES, "note"]
    assert len(rows) == 15  # hop 1.2 s = 30 frames: starts 0, 30, ..., 420 (+ 64 frames <= 500)
    assert [r["start"] for r in rows[:3]] == ["0.000", "1.200", "2.400"]
    assert all(abs(sum(float(r[n]) for n in NAMES) - 1) < 1e-4 and r["has_face"] == "1" for r in rows)
    assert (out / "interview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "interview.html").read_text()
    _assert_self_contained(page)
    assert page.count("data:image/jpeg;base64,") == len(NAMES)  # one face thumbnail per emotion's peak

    assert main(["predict", str(release), str(long_clip), "--no-face-crop", "--timeline", "--out", str(out),
                 "--hop", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == [{"video": str(long_clip), "audio": None, "windows": 9, "no_face": 0,
                        "csv": str(out / "interview.csv"), "png": str(out / "interview.png"),
                        "html": str(out / "interview.html"), "error": None}]
    assert len(_read_csv(out / "interview.csv")) == 9  # rewritten for the new hop


def test_timeline_of_a_raw_video_marks_the_windows_without_a_face(release, face_clip, tmp_path, capsys):
    import base64
    import io

    from PIL import Image

    out = tmp_path / "report"
    assert main(["predict", str(release), str(face_clip), "--timeline", "--out", str(out), "--hop", "1"]) == 0
    assert capsys.readouterr().out == f"{face_clip}\t18 windows, 7 without a face\t{out / 'talk.html'}\n"
    assert sorted(p.name for p in out.iterdir()) == ["talk.csv", "talk.html", "talk.png"]
    rows = _read_csv(out / "talk.csv")
    assert len(rows) == 18 and [r["start"] for r in rows] == [f"{k}.000" for k in range(18)]
    assert all(r["end"] == f"{k + 2.56:.3f}" for k, r in enumerate(rows))
    # The face leaves at 12 s: windows from 11 s on (frames 275-338: 25 of 64 with a face) have no scores.
    for k, r in enumerate(rows):
        if k <= 10:
            assert r["has_face"] == "1" and r["note"] == "" and abs(sum(float(r[n]) for n in NAMES) - 1) < 1e-4
        else:
            assert r["has_face"] == "0" and r["note"] == NO_FACE and [r[n] for n in NAMES] == ["", "", ""]
    assert (out / "talk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "talk.html").read_text()
    _assert_self_contained(page)
    assert "7 without a face" in page
    # One thumbnail per emotion, from a window with a face, and it is the face crop: skin at its centre.
    thumbnails = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page)
    assert len(thumbnails) == len(NAMES)
    for data in thumbnails:
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=float)
        h, w, _ = image.shape
        cheek = image[h // 2 - 4:h // 2 + 4, w // 3 - 4:w // 3 + 4].reshape(-1, 3).mean(0)
        assert np.abs(cheek - [224, 172, 140]).max() < 40, cheek
    peaks = re.findall(r"<br>([0-9.]+)-([0-9.]+) s</figcaption>", page)
    assert len(peaks) == len(NAMES) and all(float(start) <= 10 for start, _ in peaks)


def test_timeline_options_that_cannot_work_are_refused(release, long_clip, tmp_path, capsys):
    base = ["predict", str(release), str(long_clip), "--no-face-crop", "--timeline"]
    assert main(base) == 2
    assert "--timeline needs --out" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path), "--csv", str(tmp_path / "x.csv")]) == 2
    assert "--csv" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path), "--hop", "0"]) == 2
    assert "--hop must be positive" in capsys.readouterr().err
    copy = tmp_path / "other" / long_clip.name
    copy.parent.mkdir()
    copy.write_bytes(long_clip.read_bytes())
    assert main(["predict", str(release), str(long_clip), str(copy), "--timeline", "--out", str(tmp_path / "out")]) == 2
    assert "same name (interview)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
