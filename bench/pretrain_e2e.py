"""End-to-end pretraining throughput: a real Trainer on real shards, against the same Trainer fed from memory.

Generates VoxCeleb2-like clips (224 px, 25 fps, AAC in the mp4), packs them with ``hicmae shard``
(JPEG, VoxCeleb2 crop, 160 px), then runs ``PretrainModule`` + ``HiCMAEDataModule(train_shards=...)``
for ``--steps`` timed steps after ``--warmup`` steps, and the same module and Trainer on one batch held in
memory (the model-only rate, same precision, compile and batch). Prints clips/s of both, their ratio and
the number of loader workers, as JSON with ``--out``.

    python bench/pretrain_e2e.py --preset base --batch-size 40 --workers 12 --steps 30 --precision bf16-mixed
    python bench/pretrain_e2e.py --preset tiny --batch-size 4 --workers 2 --steps 5 --clips 16   # CPU check
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset


def _write_clip(job):
    from hicmae.data.demo import make_clip
    from hicmae.data.media_writer import write_mp4

    i, out, seconds = job
    frames, wave = make_clip(i % 6, seed=i, size=224, seconds=seconds, fps=25)
    write_mp4(Path(out) / f"vox_{i:04d}.mp4", frames, fps=25, audio=wave, gop=250)
    return f"vox_{i:04d}.mp4,\n"


def make_shards(tmp: Path, clips: int, seconds: float, workers: int) -> Path:
    from hicmae.data.shards.writer import ShardSettings, shard_manifest

    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        rows = pool.map(_write_clip, [(i, str(tmp), seconds) for i in range(clips)])
    (tmp / "vox.csv").write_text("video,audio\n" + "".join(rows))
    shards = tmp / "shards"
    per_shard = max(1, clips // max(2 * workers, 1))
    shard_manifest(str(tmp / "vox.csv"), shards, ShardSettings(voxceleb2_crop=True, clips_per_shard=per_shard),
                   workers=workers)
    return shards


class Timer(pl.Callback):
    """Clips/s over the steps after ``warmup``, synchronising the GPU only at the two ends."""

    def __init__(self, warmup: int, batch_size: int):
        self.warmup, self.batch_size, self.start, self.steps, self.elapsed = warmup, batch_size, None, 0, None

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            self._sync()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self._sync()
        self.steps = trainer.global_step - self.warmup
        self.elapsed = time.perf_counter() - self.start

    @property
    def clips_per_s(self) -> float:
        return self.steps * self.batch_size / self.elapsed


class OneBatch(IterableDataset):
    """The same ready batch, endlessly: the data path costs nothing."""

    def __init__(self, batch: dict):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


def run(module_args: dict, trainer_args: dict, steps: int, warmup: int, batch_size: int, datamodule=None,
        loader=None) -> float:
    from hicmae.training import PretrainModule

    pl.seed_everything(0)
    timer = Timer(warmup, batch_size)
    trainer = pl.Trainer(max_steps=warmup + steps, callbacks=[timer], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, **trainer_args)
    module = PretrainModule(**module_args)
    if datamodule is not None:
        trainer.fit(module, datamodule=datamodule)
    else:
        trainer.fit(module, train_dataloaders=loader)
    return timer.clips_per_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base")
    p.add_argument("--batch-size", type=int, default=40)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2), help="loader workers")
    p.add_argument("--clips", type=int, default=256)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation, loader start)")
    p.add_argument("--precision", default=None, help="default: bf16-mixed on a GPU, 32-true on the CPU")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the step (default: on a GPU)")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from hicmae.data import HiCMAEDataModule
    from hicmae.models.config import ModelConfig

    gpu = torch.cuda.is_available()
    precision = args.precision or ("bf16-mixed" if gpu else "32-true")
    config = ModelConfig.preset(args.preset)
    module_args = dict(model_preset=args.preset, probe_num_classes=0, warmup_steps=1, compile=args.compile,
                       global_batch_size=args.batch_size)
    trainer_args = dict(accelerator="gpu" if gpu else "cpu", devices=1, precision=precision)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        shards = make_shards(Path(tmp), args.clips, args.seconds, max(1, min(args.workers, os.cpu_count() or 1)))
        print(f"made {args.clips} clips and their shards in {time.perf_counter() - start:.0f} s", flush=True)
        dm = HiCMAEDataModule(train_shards=str(shards), task="pretrain", batch_size=args.batch_size,
                              num_workers=args.workers, voxceleb2_crop=True, img_size=config.img_size,
                              num_frames=config.num_frames, audio_frames=config.audio_size[0],
                              mel_bins=config.audio_size[1], patch_size=config.patch_size,
                              tubelet_size=config.tubelet_size, shuffle_buffer=8)
        end_to_end = run(module_args, trainer_args, args.steps, args.warmup, args.batch_size, datamodule=dm)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        device = torch.device("cuda" if gpu else "cpu")
        ready = dm.on_after_batch_transfer({k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()},
                                           0)
        ready = {k: v.cpu() for k, v in ready.items() if torch.is_tensor(v)}
        model_only = run(module_args, trainer_args, args.steps, args.warmup, args.batch_size,
                         loader=DataLoader(OneBatch(ready), batch_size=None))
    result = {"device": torch.cuda.get_device_name() if gpu else "cpu", "preset": args.preset,
              "batch_size": args.batch_size, "precision": precision, "loader_workers": args.workers,
              "device_augment": dm.train_dataset.defer_decode, "end_to_end_clips_per_s": end_to_end,
              "model_only_clips_per_s": model_only, "ratio": end_to_end / model_only, "torch": torch.__version__}
    print(json.dumps(result, indent=1))
    print(f"end-to-end {end_to_end:.1f} clips/s with {args.workers} loader workers = "
          f"{100 * end_to_end / model_only:.0f}% of model-only {model_only:.1f} clips/s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
