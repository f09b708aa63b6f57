"""The shard format: WebDataset-style tar files of clips that are decoded, cropped and resized already.

One clip is three tar members sharing a key (the clip's manifest row, zero-padded):

* ``<key>.json``: where it came from (video, audio, labels, fold, start, end), its frame count, every
  frame's (start, end) time in the source, the encoding and the audio's position in the source file;
* ``<key>.frames``: every frame of the clip, each one image (JPEG or PNG), concatenated; the offsets are
  in the JSON. Every frame the training sampler can choose is kept: what the original draws at random
  (temporal offset, crops, flips, gain, masks) is still drawn at training time;
* ``<key>.pcm``: the audio of the clip's range, 16 kHz mono 16-bit little-endian PCM.

A folder of shards also holds ``index.json`` (settings, and per shard its clips, frames, seconds, bytes and
SHA-256) and ``clips.csv`` (one line per clip: shard, key, frames, seconds and the manifest's columns), which
the streaming dataset reads to plan an epoch without opening a shard.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator

import numpy as np
import torch

from hicmae.data.media import SAMPLE_RATE, PCMAudio, VideoClip
from hicmae.errors import DataError

ENCODINGS = ("jpeg", "png")  # JPEG: small, decodable on the GPU; PNG: lossless (exact round trip)
FORMAT_VERSION = 1


def encode_frames(frames: np.ndarray, encoding: str, quality: int = 90) -> tuple[bytes, list[int]]:
    """(T, H, W, 3) uint8 frames -> the concatenated images and the T + 1 offsets that delimit them."""
    from PIL import Image

    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    out, offsets = io.BytesIO(), [0]
    for frame in frames:
        if encoding == "jpeg":
            Image.fromarray(frame).save(out, "JPEG", quality=quality)
        else:
            Image.fromarray(frame).save(out, "PNG", compress_level=1)  # level 1: 3x faster, ~10% larger
        offsets.append(out.tell())
    return out.getvalue(), offsets


def decode_image(data: bytes | memoryview) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def pcm_from_wave(wave) -> bytes:
    """A float waveform in [-1, 1] as 16-bit PCM: exact for audio that was 16-bit (x = i / 32768)."""
    samples = np.clip(np.round(np.asarray(wave, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
    return samples.tobytes()


class ShardClip(VideoClip):
    """The frames of one clip record, decoded on demand (only the frames asked for)."""

    def __init__(self, path: str, data: bytes, offsets: list[int], timestamps: np.ndarray):
        self.path, self._data, self._offsets = path, memoryview(data), offsets
        self._timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def timestamps(self, indices) -> np.ndarray:
        return self._timestamps[np.asarray(indices, dtype=np.int64)]

    def encoded(self, index: int) -> memoryview:
        return self._data[self._offsets[index]:self._offsets[index + 1]]

    def frames(self, indices) -> np.ndarray:
        indices = [int(i) for i in indices]
        distinct = list(dict.fromkeys(indices))
        data = [self.encoded(i) for i in distinct]
        if all(bytes(d[:3]) == b"\xff\xd8\xff" for d in data):
            # JPEG: one batched libjpeg-turbo call (torchvision), pixel for pixel what Pillow decodes (tested).
            from torchvision.io import ImageReadMode, decode_jpeg

            decoded = decode_jpeg([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data],
                                  mode=ImageReadMode.RGB)
            images = {i: t.permute(1, 2, 0).numpy() for i, t in zip(distinct, decoded)}
        else:
            images = {i: decode_image(d) for i, d in zip(distinct, data)}
        self.frames_decoded += len(images)
        return np.stack([images[i] for i in indices])


class Record:
    """One clip as stored: its metadata and the raw bytes of its frames and audio (nothing decoded)."""

    def __init__(self, key: str, meta: dict, frames: bytes, pcm: bytes):
        self.key, self.meta, self.frames, self.pcm = key, meta, frames, pcm

    @property
    def row(self) -> int:
        return int(self.meta["row"])

    def clip(self) -> ShardClip:
        m = self.meta
        return ShardClip(m["video"], self.frames, m["frame_offsets"], m["timestamps"])

    def audio(self) -> PCMAudio:
        m = self.meta
        return PCMAudio(np.frombuffer(self.pcm, dtype="<i2"), offset=m["audio_offset"],
                        file_duration=m["audio_duration"], path=m["audio"] or m["video"],
                        start=m["start"], end=m["end"])

    def write(self, tar: tarfile.TarFile) -> None:
        for suffix, data in (("json", json.dumps(self.meta).encode()), ("frames", self.frames), ("pcm", self.pcm)):
            info = tarfile.TarInfo(f"{self.key}.{suffix}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def read_records(fileobj, name: str) -> Iterator[Record]:
    """The records of one shard, in order, from a stream (a file, a pipe, an fsspec file)."""
    parts: dict[str, bytes] = {}
    key = None
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, _, suffix = member.name.rpartition(".")
                if stem != key:
                    if key is not None:
                        yield _record(key, parts, name)
                    key, parts = stem, {}
                parts[suffix] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(name, f"cannot read the shard: truncated or not a tar file ({exc})") from None
    if key is not None:
        yield _record(key, parts, name)


def _record(key: str, parts: dict, name: str) -> Record:
    missing = {"json", "frames", "pcm"} - set(parts)
    if missing:
        raise DataError(name, f"clip {key} lacks its {', '.join(sorted(missing))} member(s): the shard is damaged")
    return Record(key, json.loads(parts["json"]), parts["frames"], parts["pcm"])


def audio_seconds(pcm_bytes: int) -> float:
    return pcm_bytes / 2 / SAMPLE_RATE
