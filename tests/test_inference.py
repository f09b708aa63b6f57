"""Predicting emotions for real video files with a classifier release."""

import json

import numpy as np
import pytest
import torch

from hicmae.checkpoint import save_release
from hicmae.cli import main
from hicmae.data.media_writer import tone, write_mp4, write_wav
from hicmae.errors import CheckpointError
from hicmae.inference import Predictor
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain, ModelConfig

CONFIG = ModelConfig(img_size=32, num_frames=4, video_dim=32, video_heads=2, audio_dim=32, audio_heads=2,
                     audio_size=(32, 32), encoder_depth=2, skip_layers=(0, 1), decoder_depth=3, fusion_heads=2,
                     decoder_dim=32, decoder_heads=2)
NAMES = ["angry", "calm", "happy"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    out = []
    for i, seconds in enumerate((1.0, 2.0)):
        frames = rng.integers(0, 255, (int(25 * seconds), 32, 32, 3), dtype=np.uint8)
        wave = tone(seconds, freq=200 + 100 * i, seed=i)
        out.append((write_mp4(root / f"c{i}.mp4", frames, audio=wave), write_wav(root / f"c{i}.wav", wave)))
    return out


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    torch.manual_seed(0)
    model = HiCMAEClassifier(CONFIG, num_classes=3)
    return save_release(model, tmp_path_factory.mktemp("rel") / "clf.safetensors", task="classification",
                        class_names=NAMES, sampling_rate=2)


def test_predictions_are_view_averaged_probabilities(release, clips):
    predictor = Predictor(release)
    videos = [v for v, _ in clips]
    preds = predictor.predict(videos, [a for _, a in clips], batch_size=3)
    assert [p.video for p in preds] == [str(v) for v in videos]
    for p in preds:
        assert p.names == NAMES and p.label in NAMES
        assert abs(sum(p.scores) - 1) < 1e-5 and p.label == NAMES[int(np.argmax(p.scores))]
    # The same numbers by hand: every test view through the model, softmax, mean per clip.
    dataset = predictor._dataset(videos, [a for _, a in clips])
    assert len(dataset) == 2 * 2  # two temporal segments per clip
    with torch.no_grad():
        for clip in range(2):
            views = [dataset.get(clip * 2 + v, seed=0) for v in range(2)]
            logits = predictor.model(video=torch.stack([s["video"] for s in views]),
                                     audio=torch.stack([s["audio"] for s in views]))
            expected = logits.softmax(-1).mean(0)
            np.testing.assert_allclose(preds[clip].scores, expected.numpy(), atol=1e-5)


def test_video_own_audio_track_is_used_without_wav(release, clips):
    preds = Predictor(release).predict([clips[0][0]])
    assert len(preds) == 1 and preds[0].audio is None and abs(sum(preds[0].scores) - 1) < 1e-5


def test_predict_cli_json_and_errors(release, clips, tmp_path, capsys):
    assert main(["predict", str(release), str(clips[0][0]), str(clips[1][0]), "--json", "--progress"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)  # the progress bar went to stderr
    assert [set(o["scores"]) for o in out] == [set(NAMES)] * 2
    assert "2/2" in captured.err
    assert main(["predict", str(release), str(tmp_path / "absent.mp4")]) == 2
    assert "absent.mp4" in capsys.readouterr().err
    pre = save_release(HiCMAEPretrain(CONFIG), tmp_path / "pre.safetensors")
    with pytest.raises(CheckpointError, match="fine-tune it first"):
        Predictor(pre)
