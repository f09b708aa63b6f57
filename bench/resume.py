"""Time to the first training step after resuming inside an epoch, early (10%) and late (90%) in it.

A real run of PretrainModule with the data module over demo clips at the base recipe's input (16 frames at
stride 4, 160 px, 256 x 128 fbank; a narrow model so the CPU step is short) is stopped after 10% or 90% of
an epoch with a mid-epoch checkpoint, then resumed with ``ckpt_path``; the time from ``trainer.fit`` to the
first training batch is measured. For comparison, the cost of the replay the previous loader did (decode
and discard every batch already trained in the epoch) is timed on the same loader.

    python bench/resume.py --clips 20 --repeat 10 --batch-size 4 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from hicmae.data import HiCMAEDataModule, make_demo_data
from hicmae.training import PretrainModule
from hicmae.training.callbacks import AtomicCheckpoint
from hicmae.training.resumable import ResumableData

NARROW = dict(video_dim=64, video_heads=2, audio_dim=64, audio_heads=2, encoder_depth=2, skip_layers=(0, 1),
              fusion_depth=1, fusion_heads=2, decoder_dim=32, decoder_heads=2, decoder_depth=3)


class StopAt(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class FirstBatch(pl.Callback):
    def __init__(self):
        self.at = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.at is None:
            self.at = time.perf_counter()
            trainer.should_stop = True


def datamodule(manifest: Path, args) -> HiCMAEDataModule:
    return HiCMAEDataModule(str(manifest), task="pretrain", batch_size=args.batch_size, num_workers=args.workers,
                            persistent_workers=args.workers > 0)


def fit(root: Path, manifest: Path, args, callbacks, ckpt_path=None, max_steps: int = -1) -> None:
    pl.seed_everything(0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, max_epochs=2, default_root_dir=root, logger=False,
                         callbacks=[AtomicCheckpoint(every_n_train_steps=1), ResumableData(), *callbacks],
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    module = PretrainModule("tiny", NARROW, warmup_steps=1, probe_num_classes=0)
    trainer.fit(module, datamodule=datamodule(manifest, args), ckpt_path=ckpt_path)


def replay_seconds(manifest: Path, args, batches: int) -> float:
    """What the previous loader spent before the first step: decoding the epoch's first ``batches`` batches."""
    dm = datamodule(manifest, args)
    dm.setup("fit")
    start = time.perf_counter()
    iterator = iter(dm.train_dataloader())
    for _ in range(batches):
        next(iterator)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=20, help="demo clips generated")
    p.add_argument("--repeat", type=int, default=10, help="manifest rows per clip (epoch = clips x repeat)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_demo_data(tmp / "demo", num_clips=args.clips, size=160, seconds=3.0)
        rows = (data / "pretrain.csv").read_text().splitlines()
        manifest = data / "epoch.csv"
        manifest.write_text("\n".join([rows[0], *rows[1:] * args.repeat]) + "\n")
        per_epoch = args.clips * args.repeat // args.batch_size
        print(f"epoch: {args.clips * args.repeat} clips, {per_epoch} batches of {args.batch_size}, "
              f"{args.workers} loader workers")
        print("| stopped after | batches done | first step after resume (s) | replay it avoids (s) |")
        print("| --- | --- | --- | --- |")
        for share in (0.1, 0.9):
            done = round(share * per_epoch)
            run = tmp / f"run{done}"
            fit(run, manifest, args, [StopAt(done)], max_steps=done)
            first = FirstBatch()
            start = time.perf_counter()
            fit(run, manifest, args, [first], ckpt_path=str(run / "checkpoints" / "last.ckpt"))
            resumed = first.at - start
            print(f"| {share:.0%} | {done} | {resumed:.2f} | {replay_seconds(manifest, args, done):.1f} |", flush=True)


if __name__ == "__main__":
    main()
