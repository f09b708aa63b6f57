"""`hicmae predict` and the Predictor: evaluation views of real files, one result per file, outputs."""

import csv
import json

import numpy as np
import pytest
import torch

from hicmae.checkpoint import load_release, save_release
from hicmae.cli import main
from hicmae.data.datasets import FinetuneDataset
from hicmae.data.manifest import Manifest, Row
from hicmae.data.media_writer import tone, write_frame_folder, write_mp4, write_wav
from hicmae.errors import CheckpointError
from hicmae.inference import Predictor
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain
from hicmae.preprocess.synthetic import moving_face
from training_helpers import tiny_config

CONFIG = tiny_config()
NAMES = ["angry", "calm", "happy"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two short clips of random 32 px frames (crops already) with their own AAC track, and their wavs."""
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    out = []
    for i, seconds in enumerate((1.0, 2.0)):
        frames = rng.integers(0, 255, (int(25 * seconds), 32, 32, 3), dtype=np.uint8)
        wave = tone(seconds, freq=200 + 100 * i, seed=i)
        out.append((write_mp4(root / f"c{i}.mp4", frames, audio=wave), write_wav(root / f"c{i}.wav", wave)))
    return out


def face_video(path, frames: int, *, seed: int = 0, absent=None, audio: bool = True):
    """A raw 320x180 video of the drawn face the detector finds (hicmae.preprocess.synthetic), moving over
    a noisy background; frames ``absent[0]`` to ``absent[1] - 1`` show no face."""
    truth = moving_face(frames, 180, 320, side=200, seed=seed, absent=absent, noise=2.0)
    return write_mp4(path, truth.frames, fps=25, audio=tone(frames / 25, seed=seed) if audio else None)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    return {"face": face_video(root / "face.mp4", 50, seed=1),
            "face2": face_video(root / "face2.mp4", 75, seed=2),
            "noface": face_video(root / "noface.mp4", 40, seed=3, absent=(0, 40)),
            "silent": face_video(root / "silent_face.mp4", 30, seed=4, audio=False),
            "late": face_video(root / "late.mp4", 150, seed=5, absent=(70, 150)),  # a face for 2.8 s, then none
            "early": face_video(root / "early.mp4", 150, seed=6, absent=(0, 100))}  # none for 4 s, then a face


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    torch.manual_seed(0)
    model = HiCMAEClassifier(CONFIG, num_classes=3)
    return save_release(model, tmp_path_factory.mktemp("rel") / "clf.safetensors", task="classification",
                        class_names=NAMES, sampling_rate=2)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, clips):
    """A video without an audio track, a text file named .mp4, and a video cut short."""
    root = tmp_path_factory.mktemp("bad")
    frames = np.random.default_rng(1).integers(0, 255, (25, 32, 32, 3), dtype=np.uint8)
    silent = write_mp4(root / "silent.mp4", frames, audio=None)
    text = root / "notes.mp4"
    text.write_text("not a video\n" * 20)
    data = clips[1][0].read_bytes()
    truncated = root / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    return {"silent": silent, "text": text, "truncated": truncated}


def _by_hand(release, videos, wavs, segments=2):
    """The original's test protocol, through the training code's own test dataset: every view through
    the model, softmax, mean per clip."""
    model = load_release(release)
    rows = [Row(video=str(v), audio=str(a), labels=[NAMES[0]], line=i + 1)
            for i, (v, a) in enumerate(zip(videos, wavs))]
    dataset = FinetuneDataset(Manifest("<test>", rows, ["label"]), CONFIG, sampling_rate=2, mode="test",
                              class_names=NAMES, eval_gain_augment=False, test_num_segment=segments, test_num_crop=1)
    out = []
    with torch.no_grad():
        for clip in range(len(rows)):
            views = [dataset.get(clip * segments + v, seed=0) for v in range(segments)]
            logits = model(video=torch.stack([s["video"] for s in views]),
                           audio=torch.stack([s["audio"] for s in views]))
            out.append(logits.softmax(-1).mean(0).numpy())
    return np.stack(out)


def test_predictions_are_the_evaluation_views_averaged(release, clips):
    videos, wavs = [v for v, _ in clips], [a for _, a in clips]
    # batch_size 3: the second clip's two views are split over two forward passes.
    preds = Predictor(release, face_crop=False).predict(videos, wavs, batch_size=3)
    assert [p.video for p in preds] == [str(v) for v in videos]
    expected = _by_hand(release, videos, wavs)
    for p, row in zip(preds, expected):
        assert p.ok and p.names == NAMES and p.face_fraction is None
        np.testing.assert_allclose(p.scores, row, atol=1e-5)
        assert p.label == NAMES[int(np.argmax(row))]
    # Three segments are three different views, so the scores change.
    three = Predictor(release, num_segments=3, face_crop=False).predict(videos, wavs)
    np.testing.assert_allclose([p.scores for p in three], _by_hand(release, videos, wavs, 3), atol=1e-5)
    assert not np.allclose([p.scores for p in three], expected, atol=1e-6)


def test_video_own_audio_track_is_used_without_wav(release, clips):
    with_track, with_wav = Predictor(release, face_crop=False).predict([clips[1][0]] * 2, [None, clips[0][1]])
    assert with_track.ok and with_track.audio is None and abs(sum(with_track.scores) - 1) < 1e-5
    assert with_wav.audio == str(clips[0][1])
    assert not np.allclose(with_track.scores, with_wav.scores, atol=1e-6)  # the wav of another clip was used


def test_frame_folder_of_crops_with_its_wav(release, clips, tmp_path):
    folder = write_frame_folder(tmp_path / "frames", np.full((30, 32, 32, 3), 90, np.uint8))
    good, no_wav = Predictor(release, face_crop=False).predict([folder, folder], [clips[0][1], None])
    assert good.ok and len(good.scores) == 3
    assert not no_wav.ok and no_wav.error == f"{folder}: a frame folder has no audio track: give its wav with --audio"


def test_raw_videos_are_cropped_to_the_face_before_the_evaluation_views(release, faces):
    from hicmae.data.sampling import test_views
    from hicmae.data.transforms import finetune_eval_video
    from hicmae.preprocess import crop_faces

    predictor = Predictor(release)
    stream = predictor.open(faces["face"])
    video, _ = predictor.views(stream)
    # The same views from crop_faces (the whole clip's crops in memory) and the evaluation transform.
    crops = crop_faces(str(faces["face"]))
    assert crops.has_face.all() and len(crops.frames) == 50
    expected = [finetune_eval_video(crops.frames[rel], CONFIG.img_size) for rel in test_views(50, 4, 2, 2)]
    torch.testing.assert_close(video, torch.stack(expected))
    cropped, squashed = (Predictor(release, face_crop=crop).predict([faces["face"]])[0] for crop in (True, False))
    assert cropped.ok and cropped.face_fraction == 1.0 and squashed.face_fraction is None
    assert not np.allclose(cropped.scores, squashed.scores, atol=1e-4)  # whole frames are not what the model sees


def test_views_without_a_face_are_left_out_and_a_file_with_none_fails(release, faces):
    def scores(video, segments):
        (p,) = Predictor(release, num_segments=segments).predict([video])
        return p

    # The face leaves after 2.8 s: the last view (the clip's last frames) shows none and is left out...
    late = scores(faces["late"], 2)
    assert late.ok and late.face_fraction == pytest.approx(70 / 150, abs=0.02)
    assert late.scores == scores(faces["late"], 1).scores  # ...so only the first view is left
    # With a face throughout, the second view counts.
    assert scores(faces["face2"], 2).scores != scores(faces["face2"], 1).scores
    # The face comes only after 4 s: the one view (the first frames) shows none, so no label is given.
    early = scores(faces["early"], 1)
    assert not early.ok and early.scores is None and early.label is None
    assert early.face_fraction == pytest.approx(50 / 150, abs=0.02)
    assert early.error == (f"{faces['early']}: no face in any of its 1 evaluation windows (a face on "
                           f"{early.face_fraction:.0%} of its frames): see where with --timeline")


def test_a_mix_of_faces_no_face_no_audio_and_junk_gives_each_its_result(release, faces, bad_inputs, tmp_path,
                                                                        capsys):
    inputs = [faces["face"], faces["noface"], faces["silent"], bad_inputs["text"], faces["face2"]]
    out = tmp_path / "mix.csv"
    assert main(["predict", str(release), *map(str, inputs), "--csv", str(out)]) == 1
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(faces["face"]), str(faces["face2"])]
    err = captured.err.splitlines()
    assert err[0].startswith(f"error: {faces['noface']}: no face found on any of the ")
    assert err[1:] == [f"error: {faces['silent']}: has no audio track and no separate audio file was given",
                       f"error: {bad_inputs['text']}: cannot open as a video: not a video file (it looks like text)",
                       "3 of 5 videos failed"]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["video"] for r in rows] == list(map(str, inputs))
    assert [r["face_fraction"] for r in rows] == ["1.0", "", "", "", "1.0"]
    assert [bool(r["error"]) for r in rows] == [False, True, True, True, False]
    assert [r["label"] in NAMES for r in rows] == [True, False, False, False, True]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A finetune.py checkpoint (one real optimiser step of the Lightning module on a tiny model)."""
    import pytorch_lightning as pl

    from hicmae.training import FinetuneModule
    from training_helpers import TINY, SyntheticClips, loader

    root = tmp_path_factory.mktemp("ckpt")
    pl.seed_everything(0)
    module = FinetuneModule("tiny", TINY, num_classes=3, base_lr=0.5, warmup_steps=0)
    module.class_names = NAMES
    trainer = pl.Trainer(default_root_dir=root, accelerator="cpu", devices=1, logger=False, max_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader(SyntheticClips(4, CONFIG)))
    trainer.save_checkpoint(root / "model.ckpt")
    return root / "model.ckpt"


def test_predict_from_a_release_folder_equals_predict_from_its_training_checkpoint(checkpoint, faces, tmp_path,
                                                                                     capsys):
    from hicmae.training.export import export_checkpoint

    folder = export_checkpoint(checkpoint, tmp_path / "release")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    videos = [str(faces["face"]), str(faces["face2"])]  # raw videos: the default face crop runs
    outputs = []
    for model in (checkpoint, folder):
        assert main(["predict", str(model), *videos, "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    from_ckpt, from_folder = outputs
    assert from_folder == from_ckpt
    assert [set(o["scores"]) for o in from_ckpt] == [set(NAMES)] * 2
    # Not a vacuous equality: the trained head gives the clips different, non-uniform scores.
    assert from_ckpt[0]["scores"] != from_ckpt[1]["scores"]
    assert max(from_ckpt[0]["scores"].values()) - min(from_ckpt[0]["scores"].values()) > 1e-4


def test_one_bad_file_never_sinks_the_others(release, clips, bad_inputs, capsys):
    good = str(clips[0][0])
    inputs = [good, str(bad_inputs["silent"]), str(bad_inputs["text"]), str(bad_inputs["truncated"]), good]
    assert main(["predict", str(release), *inputs, "--no-face-crop", "--no-progress"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [good, good]  # both good files, in order
    assert lines[0].split("\t")[1] in NAMES and lines[0].count("=") == 3
    err = captured.err.splitlines()
    assert len(err) == 4, err
    assert err[0] == f"error: {bad_inputs['silent']}: has no audio track and no separate audio file was given"
    assert err[1] == f"error: {bad_inputs['text']}: cannot open as a video: not a video file (it looks like text)"
    assert err[2].startswith(f"error: {bad_inputs['truncated']}: cannot open as a video: the file ends at byte "
                             f"{bad_inputs['truncated'].stat().st_size} inside its 'mdat' box")
    assert err[3] == "3 of 5 videos failed"
    assert main(["predict", str(release), good, "--no-face-crop"]) == 0
    capsys.readouterr()


def test_json_and_csv_hold_scores_or_the_error_per_file(release, clips, bad_inputs, tmp_path, capsys):
    good, silent = str(clips[1][0]), str(bad_inputs["silent"])
    out = tmp_path / "out" / "predictions.csv"
    # '-': the first video's own track; the silent video has a wav here, so both succeed.
    assert main(["predict", str(release), good, silent, "--audio", "-", str(clips[0][1]),
                 "--no-face-crop", "--json", "--csv", str(out), "--progress"]) == 0
    captured = capsys.readouterr()
    assert "2/2" in captured.err  # the progress bar went to stderr, the JSON alone to stdout
    records = json.loads(captured.out)
    assert [r["error"] for r in records] == [None, None]
    assert [r["audio"] for r in records] == [None, str(clips[0][1])]

    assert main(["predict", str(release), good, silent, "--no-face-crop", "--json", "--csv", str(out)]) == 1
    records = json.loads(capsys.readouterr().out)
    assert [set(r) for r in records] == [{"video", "audio", "label", "scores", "face_fraction", "error"}] * 2
    ok, failed = records
    assert ok["video"] == good and ok["error"] is None and ok["label"] == max(ok["scores"], key=ok["scores"].get)
    assert list(ok["scores"]) == NAMES and abs(sum(ok["scores"].values()) - 1) < 1e-5
    assert failed == {"video": silent, "audio": None, "label": None, "scores": None, "face_fraction": None,
                      "error": f"{silent}: has no audio track and no separate audio file was given"}
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["video", "audio", "label", "face_fraction", *NAMES, "error"]
    assert rows[0]["video"] == good and rows[0]["label"] == ok["label"] and rows[0]["error"] == ""
    np.testing.assert_allclose([float(rows[0][n]) for n in NAMES], [ok["scores"][n] for n in NAMES], atol=1e-6)
    assert rows[1] == {"video": silent, "audio": "", "label": "", "face_fraction": "", **{n: "" for n in NAMES},
                       "error": failed["error"]}


def test_a_model_that_cannot_predict_stops_before_any_file(release, clips, tmp_path, capsys):
    good = str(clips[0][0])
    assert main(["predict", str(tmp_path / "absent.safetensors"), good]) == 2
    assert "absent.safetensors" in capsys.readouterr().err
    pre = save_release(HiCMAEPretrain(CONFIG), tmp_path / "pre.safetensors")
    assert main(["predict", str(pre), good]) == 2
    assert "fine-tune it first" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="fine-tune it first"):
        Predictor(pre)
    assert main(["predict", str(release), good, good, "--audio", str(clips[0][1]), "--no-face-crop"]) == 2
    assert "2 videos but 1 audio files" in capsys.readouterr().err


def test_worker_processes_give_the_same_results_and_errors(release, clips, bad_inputs):
    inputs = [clips[0][0], bad_inputs["silent"], clips[1][0], bad_inputs["text"]]
    predictor = Predictor(release, face_crop=False)
    serial = [p.as_dict() for p in predictor.predict(inputs)]
    parallel = [p.as_dict() for p in predictor.predict(inputs, num_workers=2)]
    assert parallel == serial
    assert [p["error"] is None for p in serial] == [True, False, True, False]
