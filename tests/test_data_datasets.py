"""Samples, alignment, determinism and the bad-sample policy, on real files."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hicmae.data import audio as A
from hicmae.data import sampling as S
from hicmae.data.datasets import FinetuneDataset, PretrainDataset
from hicmae.data.manifest import read_manifest
from hicmae.data.media import load_audio
from hicmae.errors import DataError
from hicmae.models import ModelConfig

from conftest import FPS, decoded_indices, write_csv

SPEC = ModelConfig(img_size=64, num_frames=8, audio_size=(320, 64), patch_size=16)


def manifest(tmp_path, rows, header=("video", "audio", "label")):
    return read_manifest(write_csv(tmp_path / "m.csv", header, rows))


def test_pretrain_sample_shapes_types_ranges(media, tmp_path):
    ds = PretrainDataset(manifest(tmp_path, [(media.video, media.wav, "a")]), SPEC)
    s = ds.get(0, seed=1)
    assert s["video"].shape == (3, 8, 64, 64) and s["video"].dtype == torch.float32
    assert s["audio"].shape == (1, 320, 64) and s["audio"].dtype == torch.float32
    assert s["video_mask"].shape == (SPEC.num_video_tokens,) and s["video_mask"].dtype == torch.bool
    assert s["audio_mask"].sum() == SPEC.num_audio_masked
    assert s["index"] == 0 and s["label"].dtype == torch.int64
    assert -2.2 < s["video"].min() and s["video"].max() < 2.7 and s["audio"].abs().max() < 3


def test_pretrain_frames_on_stride_grid_and_audio_matches_their_span(media, tmp_path):
    ds = PretrainDataset(manifest(tmp_path, [(media.video, media.wav, "a")]), SPEC, gain_augment=False)
    for seed in range(4):
        s = ds.get(0, seed)
        idx = decoded_indices(s["video"])
        assert np.all(np.diff(idx) == 4) and 0 <= idx[0] <= media.n_frames - 32
        # Audio: from the first frame's start to the end of frame (last + stride).
        t0, t1 = idx[0] / FPS, (min(idx[-1] + 4, media.n_frames - 1) + 1) / FPS
        expected = A.waveform_to_input(load_audio(str(media.wav), t0, t1), 320, 64)
        torch.testing.assert_close(s["audio"], expected, atol=1e-4, rtol=1e-4)
        pad = 4.2677393 / (2 * 4.5689974)
        frames_used = int((~torch.isclose(s["audio"][0], torch.tensor(pad))).all(dim=1).sum())
        assert frames_used == 1 + (round((t1 - t0) * 16000) - 400) // 160


def test_short_clip_is_padded_with_last_frame_as_original(media, tmp_path):
    ds = PretrainDataset(manifest(tmp_path, [(media.short_video, media.short_wav, "a")]), SPEC)
    idx = decoded_indices(ds.get(0, 0)["video"])
    np.testing.assert_array_equal(idx, [0, 4, 8, 8, 8, 8, 8, 8])
    assert list(S.finetune_train_indices(10, 8, 4)) == [0, 9, 9, 9, 9, 9, 9, 9]  # linspace(0, n, n // stride), clipped


def test_same_seed_same_sample_and_different_seed_differs(media, tmp_path):
    m = manifest(tmp_path, [(media.video, media.wav, "a")])
    for ds in (PretrainDataset(m, SPEC), FinetuneDataset(m, SPEC, mode="train")):
        a, b, c = ds.get(0, 11), ds.get(0, 11), ds.get(0, 12)
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
        assert not torch.equal(a["video"], c["video"])


def test_finetune_modes(media, tmp_path):
    m = manifest(tmp_path, [(media.video, media.wav, "b"), (media.frames_jpg, media.wav, "a")])
    train = FinetuneDataset(m, SPEC, mode="train")
    s = train.get(1, 3)
    assert s["video"].shape == (3, 8, 64, 64) and s["label"].item() == 0 and s["view"] == 0 and s["index"] == 1
    val = FinetuneDataset(m, SPEC, mode="val")
    idx = decoded_indices(val.get(0, 5)["video"])
    assert np.allclose(np.diff(idx), 32 / 7, atol=1)  # linspace over a 32-frame window
    test = FinetuneDataset(m, SPEC, mode="test", test_num_segment=2, test_num_crop=2)
    assert len(test) == 8
    views = [test.get(i, 0) for i in range(4)]
    assert [v["view"] for v in views] == [0, 1, 2, 3] and all(v["index"] == 0 for v in views)
    assert decoded_indices(views[0]["video"])[0] == 0
    assert decoded_indices(views[2]["video"])[-1] == 96  # last window on the stride grid
    assert torch.equal(views[0]["video"], views[1]["video"])  # the original's identical spatial crops


def test_finetune_audio_uses_relative_timestamps(media, tmp_path):
    m = manifest(tmp_path, [(media.video, media.wav, "a")])
    ds = FinetuneDataset(m, SPEC, mode="val", eval_gain_augment=False)
    wave = load_audio(str(media.wav))
    assert wave.numel() == 64000
    for seed in (4, 5):
        s = ds.get(0, seed)
        first = decoded_indices(s["video"])[0]
        # 100 frames over 64000 samples: frame i sits at i / 99 of the wav; the segment spans 8 x 4 frames.
        lo, hi = int(first / 99 * 64000), int(min(first + 32, 99) / 99 * 64000)
        expected = A.waveform_to_input(wave[lo:hi], 320, 64)
        torch.testing.assert_close(s["audio"], expected, atol=1e-4, rtol=1e-4)


def test_evaluation_applies_the_original_random_gain_unless_turned_off(media, tmp_path):
    m = manifest(tmp_path, [(media.video, media.wav, "a")])
    plain = FinetuneDataset(m, SPEC, mode="test", eval_gain_augment=False).get(0, 0)["audio"]
    gained = FinetuneDataset(m, SPEC, mode="test")
    a, b = gained.get(0, 0)["audio"], gained.get(0, 1)["audio"]
    assert torch.equal(a, gained.get(0, 0)["audio"])  # same key, same gain
    # A gain g multiplies the power spectrum by g^2: every log-mel value of the signal (not of the zero
    # padding) moves by ln(g^2) / (2 * std), with g in [0.5, 1.5].
    signal = ~torch.isclose(plain[0], torch.tensor(4.2677393 / (2 * 4.5689974))).all(dim=1)
    assert 0 < signal.sum() < signal.numel()
    for audio in (a, b):
        shift = (audio - plain)[0, signal]
        assert shift.std() < 1e-3 and 1e-4 < shift.mean().abs() <= np.log(1.5) / 4.5689974 + 1e-4
    assert not torch.allclose(a, b)


def test_multilabel_and_regression_labels(media, tmp_path):
    m = manifest(tmp_path, [(media.video, media.wav, "a;c"), (media.video, media.wav, "b")])
    ds = FinetuneDataset(m, SPEC, task="multilabel", mode="val")
    assert ds.get(0, 0)["label"].tolist() == [1.0, 0.0, 1.0] and ds.get(0, 0)["label"].dtype == torch.float32
    m = read_manifest(write_csv(tmp_path / "r.csv", ["video", "audio", "arousal", "valence"],
                                [(media.video, media.wav, 0.5, -1.25)]))
    ds = FinetuneDataset(m, SPEC, task="regression", mode="val")
    assert ds.target_names == ["arousal", "valence"] and ds.get(0, 0)["label"].tolist() == [0.5, -1.25]


def test_video_track_audio_when_no_wav(media, tmp_path):
    ds = PretrainDataset(manifest(tmp_path, [(media.video, "", "a")]), SPEC)
    assert ds.get(0, 0)["audio"].shape == (1, 320, 64)


@pytest.mark.parametrize("video,audio,reason", [
    ("missing", "wav", "does not exist"), ("zero", "wav", "empty"), ("truncated", "wav", "cannot open"),
    ("not_media", "wav", "cannot open"), ("silent_video", None, "no audio track"),
    ("empty_folder", "wav", "no .jpg or .png"), ("video", "bad_wav", "cannot read audio"),
])
def test_bad_inputs_raise_data_error_with_the_file(media, tmp_path, video, audio, reason):
    v = getattr(media, video)
    a = getattr(media, audio) if audio else ""
    ds = PretrainDataset(manifest(tmp_path, [(v, a, "x")]), SPEC, on_bad_sample="raise")
    with pytest.raises(DataError) as info:
        ds.get(0, 0)
    assert reason in info.value.reason and info.value.path in (str(v), str(a))


@pytest.mark.parametrize("name", ["stereo_44k", "mono_48k"])
def test_fixable_audio_works(media, tmp_path, name):
    ds = FinetuneDataset(manifest(tmp_path, [(media.frames_gray, getattr(media, name), "a")]), SPEC, mode="train")
    s = ds.get(0, 0)
    assert s["video"].shape == (3, 8, 64, 64) and torch.isfinite(s["audio"]).all()


def test_skip_policy_replaces_counts_and_stops(media, tmp_path, caplog):
    rows = [(media.video, media.wav, "a")] * 150 + [(media.missing, media.wav, "a")]
    ds = PretrainDataset(manifest(tmp_path, rows), SPEC, on_bad_sample="skip", max_bad_fraction=0.01)
    s = ds.get(150, 0)
    assert s["index"] != 150 and ds.policy.bad == 1 and ds.policy.draws == 2
    assert "missing.mp4" in caplog.text
    few = PretrainDataset(manifest(tmp_path, rows[-11:]), SPEC, on_bad_sample="skip", max_bad_fraction=0.01)
    with pytest.raises(DataError, match="too many bad samples"):
        few.get(10, 0)  # 1 bad of 11 rows > 1%


@pytest.mark.slow
def test_bad_sample_counts_are_shared_across_workers(media, tmp_path):
    rows = [(media.short_video, media.short_wav, "a")] * 39 + [(media.missing, media.wav, "a")]
    ds = PretrainDataset(manifest(tmp_path, rows), SPEC, on_bad_sample="skip", max_bad_fraction=0.05)
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert sum(len(b["index"]) for b in batches) == 40
    assert ds.policy.bad == 1 and ds.policy.draws == 41  # counted in the main process, from both workers
