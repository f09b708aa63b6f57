"""Pretraining augmentation split in two: the loader worker draws, the device computes.

On the CPU path a worker decodes 16 frames, crops, resizes, computes the fbank and normalises every clip.
With shards, :func:`defer_pretrain_sample` does only what needs no pixels: it draws the frame indices, the
multi-scale crop box, the gain and the masks (the same draws, in the same order, from the same seeds as
:meth:`PretrainDataset.make <hicmae.data.datasets.PretrainDataset.make>`) and passes on the stored JPEG bytes
and the audio segment. :class:`DeviceAugment` then runs on the whole batch where the model runs: JPEG
decoding (``torchvision.io.decode_jpeg``, batched on CUDA), crop, bilinear resize, normalisation, gain and
Kaldi fbank. The same code runs on the CPU for CPU-only users.

What differs from the CPU path is interpolation only: the resize is torch's bilinear with antialiasing on
float pixels instead of PIL's on uint8 (at most about one grey level, tested), and on CUDA the JPEG decoder is
nvJPEG (on the CPU torchvision decodes exactly Pillow's pixels). The fbank is computed for the whole batch at
once (:func:`hicmae.data.audio.batched_fbank`), equal to the per-clip Kaldi fbank up to float rounding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hicmae.data import audio as A
from hicmae.data import sampling as S
from hicmae.data import transforms as T
from hicmae.errors import DataError


def defer_pretrain_sample(dataset, index: int, record, seed: int) -> dict:
    """The draws of ``dataset.make`` for a shard ``record``, with the pixels and the fbank left undone."""
    from hicmae.masking import pretrain_masks

    meta = record.meta
    if meta["encoding"] != "jpeg":
        raise DataError(meta["video"], "device decoding needs JPEG shards (hicmae shard --encoding jpeg)")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    c, clip, count = dataset.config, record.clip(), meta["frames"]
    idx = S.pretrain_indices(count, c.num_frames, dataset.sampling_rate, rng)
    a, b = S.pretrain_audio_frames(idx, dataset.sampling_rate, count)
    t0, t1 = float(clip.timestamps([a])[0, 0]), float(clip.timestamps([b])[0, 1])
    wave = record.audio().read(t0, t1)
    if wave.numel() <= S.MIN_AUDIO_SAMPLES:
        raise DataError(meta["audio"] or meta["video"], f"the audio of frames {a}-{b} has {wave.numel()} samples; "
                                                        f"more than {S.MIN_AUDIO_SAMPLES} are needed")
    height, width = meta["size"]
    box = T.multi_scale_crop_box(width, height, c.img_size, rng)
    gain = float(A._beta(10.0, gen)) + 0.5 if dataset.gain_augment else 1.0
    video_mask, audio_mask = pretrain_masks(c, generator=gen)
    jpegs = [torch.frombuffer(bytearray(clip.encoded(int(i))), dtype=torch.uint8) for i in idx]
    sample = {"jpegs": jpegs, "crop": tuple(int(v) for v in box), "wave": wave, "gain": torch.tensor(gain),
              "video_mask": video_mask, "audio_mask": audio_mask, "index": index}
    if dataset.labels[index] is not None:
        sample["label"] = torch.tensor(dataset.labels[index], dtype=torch.int64)
    return sample


class EncodedFrames:
    """The batch's JPEG frames (clip-major), crop boxes and audio lengths. Not a tensor or a sequence, so neither
    pinning nor Lightning's transfer moves them: the decoder reads the JPEGs from host memory, and the boxes and
    lengths are known on the host without reading anything back from the device."""

    def __init__(self, tensors: list[torch.Tensor], crops: list[tuple[int, int, int, int]], lengths: list[int]):
        self.tensors, self.crops, self.lengths = tensors, crops, lengths

    def __len__(self) -> int:
        return len(self.tensors)


def collate_deferred(samples: list[dict]) -> dict:
    """Stack what has a fixed shape; JPEG bytes, crop boxes and audio lengths stay on the host; waves are
    zero-padded to the longest."""
    host = ("jpegs", "wave", "index", "crop")
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k not in host}
    batch["index"] = torch.tensor([s["index"] for s in samples])
    lengths = [len(s["wave"]) for s in samples]
    batch["jpegs"] = EncodedFrames([j for s in samples for j in s["jpegs"]], [tuple(s["crop"]) for s in samples],
                                   lengths)
    waves = torch.zeros(len(samples), max(lengths))
    for i, s in enumerate(samples):
        waves[i, :lengths[i]] = s["wave"]
    batch["wave"] = waves
    return batch


class DeviceAugment:
    """Finishes a deferred batch on its device: ``video (B,3,T,H,W)`` and ``audio (B,1,time,mel)``."""

    def __init__(self, img_size: int, num_frames: int, audio_size: tuple[int, int]):
        self.img_size, self.num_frames, self.audio_size = img_size, num_frames, tuple(audio_size)

    def __call__(self, batch: dict) -> dict:
        if "jpegs" not in batch:
            return batch
        batch = dict(batch)
        encoded = batch.pop("jpegs")
        batch["video"] = self.video(encoded, batch["wave"].device)
        batch["audio"] = self.audio(batch.pop("wave"), encoded.lengths, batch.pop("gain"))
        return batch

    def video(self, encoded: EncodedFrames, device: torch.device) -> torch.Tensor:
        from torchvision.io import decode_jpeg

        frames = decode_jpeg(encoded.tensors, device=device)  # one batched call (nvJPEG on CUDA)
        t, size = self.num_frames, self.img_size
        clips = []
        for i, (left, top, w, h) in enumerate(encoded.crops):
            clip = torch.stack(frames[i * t:(i + 1) * t])[:, :, top:top + h, left:left + w].float()
            clips.append(F.interpolate(clip, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
        video = torch.stack(clips).div_(255.0).clamp_(0, 1)  # (B, T, 3, H, W)
        mean = torch.tensor(T.IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
        std = torch.tensor(T.IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
        return ((video - mean) / std).permute(0, 2, 1, 3, 4).contiguous()

    def audio(self, waves: torch.Tensor, lengths: list[int], gains: torch.Tensor) -> torch.Tensor:
        """Mean removal and the original's gain per clip (REFERENCE 9.3), then one batched fbank."""
        n = torch.tensor(lengths, device=waves.device)
        valid = torch.arange(waves.shape[1], device=waves.device)[None, :] < n[:, None]
        means = waves.sum(dim=1, keepdim=True) / n[:, None]  # the padding is zeros
        waves = (waves - means) * gains.reshape(-1, 1).to(waves.dtype) * valid
        feats = A.batched_fbank(waves, lengths, self.audio_size[1])
        frames = self.audio_size[0]
        if feats.shape[1] < frames:
            feats = F.pad(feats, (0, 0, 0, frames - feats.shape[1]))
        return A.normalise(feats[:, :frames]).unsqueeze(1)
