"""Decoding and audio features on real files."""

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from hicmae.data import audio as A
from hicmae.data.media import load_audio, open_video
from hicmae.errors import DataError

from conftest import FPS, INDEX_STEP


def test_video_frames_match_requested_indices_and_timestamps(media):
    clip = open_video(str(media.video))
    assert len(clip) == media.n_frames
    idx = [3, 17, 50, 99]
    frames = clip.frames(idx)
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
    grey = frames.reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(grey, np.array(idx) * INDEX_STEP, atol=1.0)
    ts = clip.timestamps(idx)
    np.testing.assert_allclose(ts[:, 0], np.array(idx) / FPS, atol=1e-3)
    np.testing.assert_allclose(ts[:, 1], (np.array(idx) + 1) / FPS, atol=1e-3)
    assert clip.frames_decoded == 4  # only the requested frames are asked of the decoder


@pytest.mark.parametrize("folder", ["frames_jpg", "frames_png", "frames_gray"])
def test_frame_folders_read_sorted_and_rgb(media, folder):
    clip = open_video(str(getattr(media, folder)))
    assert len(clip) == 40
    frames = clip.frames([0, 9, 39])
    assert frames.shape == (3, 64, 64, 3)  # grayscale frames come back as 3 channels
    np.testing.assert_allclose(frames.reshape(3, -1).mean(axis=1), [0, 18, 78], atol=2.0)


def test_wav_segment_is_exact_slice(media):
    wave = load_audio(str(media.wav), 1.0, 2.5)
    ref, sr = sf.read(str(media.wav), dtype="float32")
    assert sr == 16000
    torch.testing.assert_close(wave, torch.from_numpy(ref[16000:40000]))


def test_audio_from_video_track_matches_wav(media):
    track = load_audio(str(media.video))
    wav = load_audio(str(media.wav))
    assert abs(track.numel() - wav.numel()) <= 2048  # AAC adds up to one frame of priming
    # Lossy AAC: the tone's energy survives.
    assert abs(track.pow(2).mean().sqrt() - wav.pow(2).mean().sqrt()) < 0.02


def test_stereo_44k_and_48k_are_mixed_to_mono_and_resampled(media):
    stereo = load_audio(str(media.stereo_44k))
    data, sr = sf.read(str(media.stereo_44k), dtype="float32", always_2d=True)
    assert sr == 44100 and data.shape[1] == 2
    expected = AF.resample(torch.from_numpy(data.mean(axis=1)), 44100, 16000)
    torch.testing.assert_close(stereo, expected)
    assert stereo.ndim == 1 and abs(stereo.numel() - 4 * 16000) <= 1
    mono48 = load_audio(str(media.mono_48k))
    assert abs(mono48.numel() - 4 * 16000) <= 1


def test_fbank_equals_torchaudio_kaldi(media):
    wave = load_audio(str(media.wav), 0.0, 2.0)
    ours = A.fbank(wave, 128)
    ref = kaldi.fbank(wave.unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
                      window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    assert torch.equal(ours, ref)
    assert ours.shape == (198, 128)


def test_waveform_to_input_pads_and_normalises_like_the_original():
    wave = torch.sin(torch.arange(16000) * 0.05)  # 1 s -> 98 fbank frames
    out = A.waveform_to_input(wave, 256, 128)
    assert out.shape == (1, 256, 128) and out.dtype == torch.float32
    raw = kaldi.fbank((wave - wave.mean()).unsqueeze(0), htk_compat=True, sample_frequency=16000, use_energy=False,
                      window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    torch.testing.assert_close(out[0, :98], (raw + 4.2677393) / (2 * 4.5689974))
    # Padding is zeros in fbank space, i.e. the normalised value of 0.
    assert torch.allclose(out[0, 98:], torch.full((158, 128), 4.2677393 / (2 * 4.5689974)))
    assert A.waveform_to_input(torch.randn(16000 * 4), 256, 128).shape == (1, 256, 128)  # cut


def test_gain_is_beta_plus_half_and_seeded():
    g1 = A.random_gain(torch.ones(4), torch.Generator().manual_seed(3))
    g2 = A.random_gain(torch.ones(4), torch.Generator().manual_seed(3))
    assert torch.equal(g1, g2)
    gains = torch.stack([A.random_gain(torch.ones(1), torch.Generator().manual_seed(s)) for s in range(300)])
    assert 0.5 < gains.min() and gains.max() < 1.5 and abs(gains.mean() - 1.0) < 0.03


def test_spec_augment_masks_bands_within_limits():
    feats = torch.ones(100, 64)
    out = A.spec_augment(feats, freqm=20, timem=30, generator=torch.Generator().manual_seed(0))
    zero_cols = (out == 0).all(dim=0).sum()
    zero_rows = (out == 0).all(dim=1).sum()
    assert 0 <= zero_cols < 20 and 0 <= zero_rows < 30 and (out == 0).any()


@pytest.mark.parametrize("name,reason", [("missing", "does not exist"), ("zero", "empty"),
                                         ("not_media", "cannot open"), ("truncated", "cannot open")])
def test_broken_video_files_raise_data_error_naming_the_file(media, name, reason):
    path = str(getattr(media, name))
    with pytest.raises(DataError) as info:
        open_video(path)
    assert info.value.path == path and reason in info.value.reason


def test_bad_audio_files_raise_data_error(media):
    with pytest.raises(DataError, match="no audio track"):
        load_audio(str(media.silent_video))
    with pytest.raises(DataError, match="cannot read audio"):
        load_audio(str(media.bad_wav))
    with pytest.raises(DataError, match="no .jpg or .png"):
        open_video(str(media.empty_folder))
