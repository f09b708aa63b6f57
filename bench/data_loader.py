"""Data-loader throughput: pretraining samples per second per worker (decode, fbank, augment, masks).

Runs on the demo data and on VoxCeleb2-like clips (224x224, 25 fps, 8 s, AAC audio in the mp4)
generated into a temp dir. Also reports frames decoded per sample, to show only used frames are read.

    python bench/data_loader.py --clips 16 --samples 64 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from hicmae.data.datasets import PretrainDataset
from hicmae.data.demo import make_clip, make_demo_data
from hicmae.data.manifest import read_manifest
from hicmae.data.media_writer import write_mp4


def make_vox_like(out: Path, n: int, seconds: float = 8.0) -> Path:
    rows = []
    for i in range(n):
        frames, wave = make_clip(i % 6, seed=i, size=224, seconds=seconds, fps=25)
        write_mp4(out / f"vox_{i:03d}.mp4", frames, fps=25, audio=wave, gop=250)  # long GOP like real uploads
        rows.append(f"vox_{i:03d}.mp4,\n")
    (out / "vox.csv").write_text("video,audio\n" + "".join(rows))
    return out / "vox.csv"


def measure(manifest: Path, workers: int, samples: int, vox_crop: bool) -> tuple[float, float]:
    ds = PretrainDataset(read_manifest(manifest), voxceleb2_crop=vox_crop, on_bad_sample="raise")
    if workers == 0:  # in-process: also count decoded frames
        from hicmae.data import media

        counts = []
        original = media.DecordVideo.frames

        def counting(self, indices):
            out = original(self, indices)
            counts.append(len(set(map(int, indices))))
            return out

        media.DecordVideo.frames = counting
        try:
            start = time.perf_counter()
            for i in range(samples):
                ds[i % len(ds)]
            elapsed = time.perf_counter() - start
        finally:
            media.DecordVideo.frames = original
        return samples / elapsed, float(np.mean(counts))
    loader = DataLoader(ds, batch_size=1, num_workers=workers, sampler=list(range(len(ds))) * (samples // len(ds) + 1))
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(samples - 1):
        next(it)
    return (samples - 1) / (time.perf_counter() - start) / workers, float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=16, help="clips generated per data set")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo = make_demo_data(tmp / "demo", num_clips=args.clips, size=160, seconds=3.0) / "pretrain.csv"
        vox = make_vox_like(tmp, args.clips)
        print("| data | workers | clips/s per worker | frames decoded per sample |")
        print("| --- | --- | --- | --- |")
        for name, manifest, crop in (("demo 160px 3s", demo, False), ("VoxCeleb2-like 224px 8s", vox, True)):
            for w in args.workers:
                rate, frames = measure(manifest, w, args.samples, crop)
                print(f"| {name} | {w} | {rate:.1f} | {'-' if np.isnan(frames) else f'{frames:.0f} of 16 sampled'} |")


if __name__ == "__main__":
    main()
