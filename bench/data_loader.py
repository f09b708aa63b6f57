"""Training-sample loader throughput per CPU core: mp4 files against shards, on the same clips.

Pretraining samples at the base recipe (16 frames at stride 4, 160 px, 256 x 128 fbank, gain, masks) from
VoxCeleb2-like clips (224 px, 25 fps, AAC in the mp4, VoxCeleb2 crop) generated into a temporary folder:

* ``mp4``: the manifest dataset, decoding the mp4 (decord) and its audio track per sample;
* ``h264-160``: tried as a shard encoding: the cropped 160 px frames as a short-GOP H.264 mp4 and a wav;
* ``shards-jpeg`` / ``shards-png``: the shard dataset decoding frames on the CPU (Pillow);
* ``shards-jpeg deferred``: the CPU-side work when decoding is deferred to the device (draws, audio cut,
  JPEG bytes and collation only); with ``--device cuda`` also the device's rate for the rest (DeviceAugment).

Each rate is samples per second of one process with one torch thread, i.e. per core. Also reported: the
bytes stored per clip and the rate of ``hicmae shard`` itself. The last line is
``shards/mp4 clips per core: R`` (R for CPU decoding of JPEG shards).

    python bench/data_loader.py --clips 8 --samples 48 [--device cuda] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def make_vox_like(out: Path, n: int, seconds: float) -> Path:
    from hicmae.data.demo import make_clip
    from hicmae.data.media_writer import write_mp4

    rows = []
    for i in range(n):
        frames, wave = make_clip(i % 6, seed=i, size=224, seconds=seconds, fps=25)
        write_mp4(out / f"vox_{i:03d}.mp4", frames, fps=25, audio=wave, gop=250)  # long GOP like real uploads
        rows.append(f"vox_{i:03d}.mp4,\n")
    (out / "vox.csv").write_text("video,audio\n" + "".join(rows))
    return out / "vox.csv"


def make_h264_160(manifest: Path, out: Path, gop: int) -> Path:
    """The deterministic steps of a shard (VoxCeleb2 crop to 160 px, 16 kHz wav) as short-GOP mp4 + wav files."""
    from hicmae.data import transforms as T
    from hicmae.data.manifest import read_manifest
    from hicmae.data.media import load_audio, open_video
    from hicmae.data.media_writer import write_mp4, write_wav

    rows = []
    for i, row in enumerate(read_manifest(manifest).rows):
        with open_video(row.video) as clip:
            frames = T.voxceleb2_crop(clip.frames(range(len(clip))), 160)
        write_mp4(out / f"c{i:03d}.mp4", frames, fps=25, gop=gop)
        write_wav(out / f"c{i:03d}.wav", load_audio(row.video).numpy())
        rows.append(f"c{i:03d}.mp4,c{i:03d}.wav\n")
    (out / "h264.csv").write_text("video,audio\n" + "".join(rows))
    return out / "h264.csv"


def rate(fn, samples: int) -> float:
    fn(0)  # warm-up (imports, first open)
    start = time.perf_counter()
    for i in range(samples):
        fn(i + 1)
    return samples / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--seconds", type=float, default=8.0, help="clip length (VoxCeleb2: 7.8 s on average)")
    p.add_argument("--device", default="cpu", help="where DeviceAugment finishes deferred batches")
    p.add_argument("--batch-size", type=int, default=40)
    p.add_argument("--out", default=None, help="also write the results as JSON")
    args = p.parse_args()
    torch.set_num_threads(1)

    from hicmae.data.datasets import PretrainDataset
    from hicmae.data.device_augment import DeviceAugment, collate_deferred, defer_pretrain_sample
    from hicmae.data.manifest import read_manifest
    from hicmae.data.shards.dataset import ShardDataset
    from hicmae.data.shards.format import read_records
    from hicmae.data.shards.writer import ShardSettings, shard_manifest
    from hicmae.models.config import ModelConfig

    config = ModelConfig()
    results = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}",
               "clips": args.clips, "seconds": args.seconds, "rows": []}

    def report(name, clips_per_s, bytes_per_clip=None, note=""):
        size = f"{bytes_per_clip / 1e3:.0f}" if bytes_per_clip else "-"
        print(f"| {name} | {clips_per_s:.1f} | {size} | {note} |", flush=True)
        results["rows"].append({"name": name, "clips_per_s_per_core": clips_per_s, "bytes_per_clip": bytes_per_clip,
                                "note": note})

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vox = make_vox_like(tmp, args.clips, args.seconds)
        n = args.clips
        print("| path | clips/s per core | kB per clip | note |\n| --- | --- | --- | --- |")
        mp4 = PretrainDataset(read_manifest(vox), config, voxceleb2_crop=True, on_bad_sample="raise")
        mp4_rate = rate(lambda i: mp4[i % n], args.samples)
        report("mp4 (decord, AAC track)", mp4_rate, sum(f.stat().st_size for f in tmp.glob("vox_*.mp4")) / n,
               "the manifest dataset")
        h264_dir = tmp / "h264"
        h264_dir.mkdir()
        h264 = make_h264_160(vox, h264_dir, gop=8)
        ds = PretrainDataset(read_manifest(h264), config, on_bad_sample="raise")
        report("h264-160, GOP 8 (tried)", rate(lambda i: ds[i % n], args.samples),
               sum(f.stat().st_size for f in h264_dir.glob("*.*") if f.suffix in (".mp4", ".wav")) / n,
               "cropped 160 px mp4 + wav")
        shard_rates = {}
        for encoding in ("jpeg", "png"):
            out = tmp / encoding
            settings = ShardSettings(encoding=encoding, voxceleb2_crop=True, clips_per_shard=n)
            start = time.perf_counter()
            shard_manifest(str(vox), out, settings, workers=1)
            packing = n / (time.perf_counter() - start)
            size = sum(f.stat().st_size for f in out.glob("*.tar")) / n
            shards = ShardDataset(out, lambda m: PretrainDataset(m, config, on_bad_sample="raise"), batch_size=1,
                                  shuffle_buffer=1)
            with open(out / "shard-000000.tar", "rb") as f:
                records = list(read_records(f, "shard"))
            keys = [shards.position[("shard-000000.tar", r.key)] for r in records]
            make = lambda i: shards.maker.make(keys[i % n], records[i % n].clip(), 0,  # noqa: E731
                                               records[i % n].meta["frames"], records[i % n].audio(), i)
            shard_rates[encoding] = rate(make, args.samples)
            report(f"shards-{encoding}", shard_rates[encoding], size, f"`hicmae shard`: {packing:.1f} clips/s per core")
            if encoding == "jpeg":
                defer = lambda i: defer_pretrain_sample(shards.maker, keys[i % n], records[i % n], i)  # noqa: E731
                cpu_side = rate(lambda i: defer(i), args.samples)
                report("shards-jpeg deferred (CPU side)", cpu_side, size, "draws, audio cut, JPEG bytes")
                batch = collate_deferred([defer(i) for i in range(args.batch_size)])
                augment = DeviceAugment(config.img_size, config.num_frames, config.audio_size)
                device = torch.device(args.device)
                moved = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
                augment(dict(moved))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, reps = time.perf_counter(), 5
                for _ in range(reps):
                    augment(dict(moved))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                device_rate = reps * args.batch_size / (time.perf_counter() - start)
                report(f"DeviceAugment on {args.device} (batch {args.batch_size})", device_rate, None,
                       "decode, crop, resize, fbank of deferred batches" + (" (one core)" if args.device == "cpu"
                                                                            else ""))
    ratio = shard_rates["jpeg"] / mp4_rate
    results["shards_over_mp4"] = ratio
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"shards/mp4 clips per core: {ratio:.1f}")


if __name__ == "__main__":
    main()
