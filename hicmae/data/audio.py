"""Waveform -> normalised log-mel fbank, exactly as the original (REFERENCE 9.3), plus its augmentations."""

from __future__ import annotations

import torch

# AudioSet fbank statistics from AudioMAE, used by the original for every dataset.
FBANK_MEAN = -4.2677393
FBANK_STD = 4.5689974
# kaldi fbank needs at least one 25 ms window; shorter segments are zero-padded to this many samples.
MIN_SAMPLES = 400


def fbank(wave: torch.Tensor, num_mel_bins: int = 128, sample_rate: int = 16000) -> torch.Tensor:
    """Kaldi fbank of a mono waveform ``(N,)``: ``(frames, num_mel_bins)``, 10 ms shift, 25 ms window."""
    import torchaudio.compliance.kaldi as kaldi

    wave = wave.reshape(1, -1).float()
    if wave.shape[1] < MIN_SAMPLES:
        wave = torch.nn.functional.pad(wave, (0, MIN_SAMPLES - wave.shape[1]))
    return kaldi.fbank(wave, htk_compat=True, sample_frequency=sample_rate, use_energy=False,
                       window_type="hanning", num_mel_bins=num_mel_bins, dither=0.0, frame_shift=10)


def batched_fbank(waves: torch.Tensor, lengths: torch.Tensor | list[int], num_mel_bins: int = 128,
                  sample_rate: int = 16000) -> torch.Tensor:
    """:func:`fbank` of a batch of waveforms at once, on their device: ``waves`` (B, N) zero-padded, ``lengths``
    the true sample counts. Returns (B, frames of the longest, num_mel_bins), each row's frames beyond its own
    count set to 0 (as :func:`pad_or_cut` pads). The same steps as Kaldi's (torchaudio's ``kaldi.fbank`` with the
    options :func:`fbank` uses), framed for the whole batch: equal to per-clip :func:`fbank` up to float
    rounding (tested), in a handful of kernels instead of a dozen per clip."""
    import torchaudio.compliance.kaldi as kaldi

    lengths = lengths.tolist() if torch.is_tensor(lengths) else list(lengths)
    size, shift, padded = 400, 160, 512  # 25 ms windows every 10 ms at 16 kHz; FFT size the next power of two
    longest = max(max(lengths), MIN_SAMPLES)
    if waves.shape[1] < longest:
        waves = torch.nn.functional.pad(waves, (0, longest - waves.shape[1]))
    frames = waves[:, :longest].float().unfold(1, size, shift)  # (B, m, 400), snip_edges
    frames = frames - frames.mean(dim=2, keepdim=True)  # remove_dc_offset
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)  # replicate-padded shift, per frame
    frames = frames - 0.97 * previous  # preemphasis
    frames = frames * torch.hann_window(size, periodic=False, device=frames.device, dtype=frames.dtype)
    frames = torch.nn.functional.pad(frames, (0, padded - size))
    eps = torch.tensor(torch.finfo(torch.float).eps, device=frames.device, dtype=frames.dtype)
    power = torch.max(torch.fft.rfft(frames).abs(), eps).pow(2.0)
    banks, _ = kaldi.get_mel_banks(num_mel_bins, padded, float(sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0)
    banks = torch.nn.functional.pad(banks.to(frames.device, frames.dtype), (0, 1))
    feats = torch.max(power @ banks.T, eps).log()
    counts = torch.tensor([1 + (max(n, MIN_SAMPLES) - size) // shift for n in lengths], device=feats.device)
    valid = torch.arange(feats.shape[1], device=feats.device)[None, :] < counts[:, None]
    return feats * valid[..., None]


def pad_or_cut(feats: torch.Tensor, target_frames: int) -> torch.Tensor:
    """Zero-pad at the end, or cut, to ``target_frames`` rows (padding happens before normalisation)."""
    n = feats.shape[0]
    if n < target_frames:
        return torch.nn.functional.pad(feats, (0, 0, 0, target_frames - n))
    return feats[:target_frames]


def normalise(feats: torch.Tensor) -> torch.Tensor:
    return (feats - FBANK_MEAN) / (2 * FBANK_STD)


def random_gain(wave: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The original ``roll_mag_aug``: a gain drawn from Beta(10, 10) + 0.5 (its roll is a no-op on mono)."""
    gain = torch.distributions.Beta(10.0, 10.0).sample() if generator is None else _beta(10.0, generator)
    return wave * (gain + 0.5)


def _beta(concentration: float, generator: torch.Generator) -> torch.Tensor:
    # Beta(a, a) from two Gamma draws, seeded by our generator (torch.distributions takes no generator).
    x = torch._standard_gamma(torch.full((2,), concentration), generator=generator)
    return x[0] / x.sum()


def spec_augment(feats: torch.Tensor, freqm: int, timem: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The original's ``FrequencyMasking(freqm)`` then ``TimeMasking(timem)`` on the (1, freq, time)
    fbank: one band per axis, width uniform in [0, param), set to 0. ``feats`` is (time, freq)."""
    import torchaudio.functional as AF

    def mask(spec: torch.Tensor) -> torch.Tensor:
        if freqm:
            spec = AF.mask_along_axis(spec, freqm, 0.0, axis=1)
        if timem:
            spec = AF.mask_along_axis(spec, timem, 0.0, axis=2)
        return spec

    spec = feats.t().unsqueeze(0)  # (1, freq, time), the layout the original masks
    if generator is None:
        spec = mask(spec)
    else:
        # torchaudio draws from the global RNG: seed a private fork of it from our generator for reproducibility.
        seed = int(torch.randint(2**62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            spec = mask(spec)
    return spec.squeeze(0).t().contiguous()


def waveform_to_input(wave: torch.Tensor, target_frames: int, num_mel_bins: int, *, gain: bool = False,
                      freqm: int = 0, timem: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The original's ``_wav2fbank`` then normalisation: mean removal, gain, fbank, pad/cut, SpecAugment,
    normalise. Returns ``(1, target_frames, num_mel_bins)``."""
    wave = wave.reshape(-1).float()
    wave = wave - wave.mean() if wave.numel() else wave
    if gain:
        wave = random_gain(wave, generator)
    feats = pad_or_cut(fbank(wave, num_mel_bins), target_frames)
    if freqm or timem:
        feats = spec_augment(feats, freqm, timem, generator)
    return normalise(feats).unsqueeze(0)
