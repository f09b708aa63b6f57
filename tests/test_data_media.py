"""Decoding and audio features on real files."""

import os
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from hicmae.data import audio as A
from hicmae.data import media as M
from hicmae.data.media import audio_duration, load_audio, open_video
from hicmae.data.media_writer import tone, write_wav
from hicmae.data.validate import validate_manifest
from hicmae.errors import DataError

from conftest import FPS, INDEX_STEP, write_csv


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


def kaldi_fbank_reference(wave, sample_rate=16000, num_mel_bins=128):
    """Kaldi fbank with the original's options, from its definition: 25 ms frames every 10 ms (snip
    edges), DC offset removed per frame, pre-emphasis 0.97, Hanning window, 512-point power spectrum,
    HTK-style triangular mel filters (mel = 1127 ln(1 + f / 700)) from 20 Hz to Nyquist, log floored
    at float32 epsilon; no energy, no dither."""
    x = np.asarray(wave, dtype=np.float64)
    win, shift, nfft = 400, 160, 512
    count = 1 + (len(x) - win) // shift
    frames = np.stack([x[i * shift:i * shift + win] for i in range(count)])
    frames = frames - frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)  # the first sample is its own predecessor
    frames = frames - 0.97 * previous
    frames = frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / (win - 1)))
    power = np.abs(np.fft.rfft(frames, n=nfft)) ** 2  # (count, 257)

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    low, high = mel(20.0), mel(sample_rate / 2)
    delta = (high - low) / (num_mel_bins + 1)
    bin_mel = mel(np.arange(nfft // 2) * sample_rate / nfft)  # Kaldi gives the Nyquist bin no weight
    weights = np.zeros((num_mel_bins, nfft // 2 + 1))
    for m in range(num_mel_bins):
        left, centre, right = low + m * delta, low + (m + 1) * delta, low + (m + 2) * delta
        rising = (bin_mel - left) / (centre - left)
        falling = (right - bin_mel) / (right - centre)
        weights[m, :nfft // 2] = np.maximum(0.0, np.minimum(rising, falling))
    return np.log(np.maximum(power @ weights.T, np.finfo(np.float32).eps))


@pytest.mark.parametrize("seed", [0, 1])
def test_fbank_matches_a_numpy_kaldi_fbank(seed):
    wave = tone(0.3, freq=440, seed=seed)  # 4800 samples -> 1 + (4800 - 400) // 160 = 28 frames
    ours = A.fbank(torch.from_numpy(wave), 128)
    assert ours.shape == (28, 128) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), kaldi_fbank_reference(wave), atol=1e-3, rtol=0)


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


def zero_band(all_zero: torch.Tensor) -> tuple[int, int]:
    """[start, end) of the one contiguous run of True in ``all_zero`` ((0, 0) when there is none)."""
    where = torch.nonzero(all_zero).flatten()
    if len(where) == 0:
        return 0, 0
    start, end = int(where[0]), int(where[-1]) + 1
    assert end - start == len(where), f"masked positions are not contiguous: {where.tolist()}"
    return start, end


def masks_of(out: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (time rows, freq columns) bands of a SpecAugment output of nowhere-zero features."""
    return zero_band((out == 0).all(dim=1)), zero_band((out == 0).all(dim=0))


def test_spec_augment_zeroes_one_band_per_axis_and_nothing_else():
    feats = torch.rand(100, 64) + 1.0  # no zeros of its own
    widths_t, widths_f = [], []
    for seed in range(40):
        out = A.spec_augment(feats, freqm=20, timem=30, generator=torch.Generator().manual_seed(seed))
        (t0, t1), (f0, f1) = masks_of(out)
        expected = feats.clone()
        expected[t0:t1, :] = 0
        expected[:, f0:f1] = 0
        assert torch.equal(out, expected)  # exactly the two bands are zero, the rest is untouched
        widths_t.append(t1 - t0)
        widths_f.append(f1 - f0)
    assert max(widths_t) < 30 and max(widths_f) < 20
    assert max(widths_t) > 10 and max(widths_f) > 5  # the widths really vary up to the parameter


def test_spec_augment_is_seeded_by_the_generator_only():
    feats = torch.rand(100, 64) + 1.0
    state = torch.get_rng_state()
    a = A.spec_augment(feats, 20, 30, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG does not matter
    b = A.spec_augment(feats, 20, 30, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    masks = {masks_of(A.spec_augment(feats, 20, 30, torch.Generator().manual_seed(s))) for s in range(10)}
    assert len(masks) >= 8
    torch.set_rng_state(state)
    A.spec_augment(feats, 20, 30, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global stream is not consumed


def test_spec_augment_without_generator_is_the_originals_torchaudio_masking():
    feats = torch.rand(100, 64) + 1.0
    freq_masking, time_masking = torchaudio.transforms.FrequencyMasking(20), torchaudio.transforms.TimeMasking(30)
    for seed in range(5):
        torch.manual_seed(seed)
        ours = A.spec_augment(feats, 20, 30)
        torch.manual_seed(seed)
        theirs = time_masking(freq_masking(feats.t().unsqueeze(0))).squeeze(0).t()  # (1, freq, time) as the original
        assert torch.equal(ours, theirs)


def test_spec_augment_band_holds_the_normalised_zero_through_waveform_to_input():
    wave = torch.from_numpy(tone(2.0, freq=300, seed=5))  # 198 fbank frames, none near zero
    out = A.waveform_to_input(wave, 198, 128, freqm=40, timem=60, generator=torch.Generator().manual_seed(3))[0]
    plain = A.waveform_to_input(wave, 198, 128)[0]
    zero = 4.2677393 / (2 * 4.5689974)  # (0 - mean) / (2 std)
    masked = torch.isclose(out, torch.tensor(zero)) & ~torch.isclose(plain, torch.tensor(zero))
    (t0, t1), (f0, f1) = zero_band(masked.all(dim=1)), zero_band(masked.all(dim=0))
    assert 0 < t1 - t0 < 60 and 0 < f1 - f0 < 40  # this seed draws non-empty bands on both axes
    keep = torch.ones_like(out, dtype=torch.bool)
    keep[t0:t1, :] = False
    keep[:, f0:f1] = False
    torch.testing.assert_close(out[keep], plain[keep])
    assert torch.all(out[~keep] == torch.tensor(zero))


@pytest.mark.parametrize("name,reason", [("missing", "does not exist"), ("zero", "empty"),
                                         ("not_media", "not a video file"), ("truncated", "truncated")])
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


def test_audio_with_no_samples_raises_data_error(media, tmp_path):
    empty = str(write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32)))  # a header, no data
    for read in (load_audio, audio_duration, lambda p: load_audio(p, 0.5, 1.0)):
        with pytest.raises(DataError) as info:
            read(empty)
        assert info.value.path == empty and "has no audio samples" in info.value.reason
    manifest = write_csv(tmp_path / "m.csv", ["video", "audio", "label"],
                         [(media.video, media.wav, "a"), (media.video, empty, "a")])
    for task in ("pretrain", "classification"):
        results = validate_manifest(manifest, task=task)
        assert [r["ok"] for r in results] == [True, False], task
        assert results[1]["error"].startswith(f"{empty}: has no audio samples")


def test_audio_track_error_names_both_decoders(media):
    path = str(media.not_media)
    with pytest.raises(DataError) as info:
        load_audio(path)  # not a wav: read as a container's audio track, PyAV first, then decord
    reason = info.value.reason
    assert info.value.path == path
    assert "PyAV: " in reason and "decord: " in reason
    assert "Invalid data" in reason.split("decord: ")[0] and "Invalid data" in reason.split("decord: ")[1]


def test_decord_reads_the_track_when_pyav_fails(media, monkeypatch):
    def broken(path):
        raise RuntimeError("simulated PyAV failure")

    monkeypatch.setattr(M, "_read_track_pyav", broken)
    track = load_audio(str(media.video))
    wav = load_audio(str(media.wav))
    assert abs(track.numel() - wav.numel()) <= 2048
    assert abs(track.pow(2).mean().sqrt() - wav.pow(2).mean().sqrt()) < 0.02


@pytest.mark.parametrize("channels", [1, 2])
def test_integer_pcm_track_is_scaled_like_a_wav(tmp_path, channels):
    import av

    rng = np.random.default_rng(channels)
    pcm = rng.integers(-32768, 32768, (channels, 8000)).astype(np.int16)
    path = tmp_path / f"pcm{channels}.mkv"
    with av.open(str(path), "w") as container:  # 16-bit PCM in a container: decoded as integers by PyAV
        stream = container.add_stream("pcm_s16le", rate=16000)
        stream.layout = {1: "mono", 2: "stereo"}[channels]
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), format="s16", layout=stream.layout.name)
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    expected = pcm.astype(np.float64).mean(axis=0) / 32768  # soundfile's and torchaudio's int16 scale
    np.testing.assert_allclose(load_audio(str(path)).numpy(), expected, atol=1e-7, rtol=0)


def _top_level_boxes(data: bytes) -> dict[str, int]:
    """Offsets of an MP4's top-level boxes (32-bit sizes, as PyAV writes them)."""
    boxes, pos = {}, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        boxes[kind.decode()] = pos
        pos += size
    return boxes


def _write_copy(tmp_path, name, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_files_that_are_not_videos_say_so_and_no_decoder_line_reaches_the_console(media, tmp_path, capfd, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="hicmae")
    data = media.video.read_bytes()
    moov = _top_level_boxes(data)["moov"]
    png = tmp_path / "frame.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    cases = {
        str(media.not_media): "cannot open as a video: not a video file (it looks like text)",
        _write_copy(tmp_path, "image.mp4", png.read_bytes()): "cannot open as a video: not a video file (it looks "
                                                               "like a PNG image)",
        _write_copy(tmp_path, "sound.mp4", media.wav.read_bytes()): "cannot open as a video: not a video file (it "
                                                                    "looks like a WAV audio file)",
        str(media.truncated): f"cannot open as a video: the file ends at byte {len(data) // 2} inside its 'mdat' box, "
                              f"which runs to byte {moov}: it is truncated (copy or download it again)",
        _write_copy(tmp_path, "no_index.mp4", data[:moov]): "cannot open as a video: it has no 'moov' box, the index "
                                                            "of its frames: it is truncated or was never finished "
                                                            "(copy or download it again)",
    }
    capfd.readouterr()
    for path, reason in cases.items():
        with pytest.raises(DataError) as info:
            open_video(path)
        assert info.value.path == path and info.value.reason == reason
    # Bytes no sniffing recognises reach decord, whose failure is reported without its console lines.
    noise = _write_copy(tmp_path, "noise.mp4", np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(DataError) as info:
        open_video(noise)
    assert info.value.reason.startswith("cannot open as a video: truncated, corrupt or not a video file (")
    assert "Invalid data found when processing input" in info.value.reason
    with pytest.raises(DataError, match="decord: "):
        load_audio(str(media.not_media))  # decord's audio reader is the fallback: it prints too when it fails
    os.write(2, b"stderr still works\n")
    assert capfd.readouterr().err == "stderr still works\n"
    assert any("Invalid data found" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert len(open_video(str(media.video))) == media.n_frames  # and real videos still open
