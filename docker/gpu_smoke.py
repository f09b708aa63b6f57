"""GPU smoke check for a cluster image: a few pretraining and fine-tuning steps of the tiny model in
bf16-mixed and 16-mixed with a real Lightning Trainer on synthetic clips; prints losses and clips/s.

    python docker/gpu_smoke.py            # needs only torch, lightning, timm, einops, torchmetrics
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from hicmae.masking import pretrain_masks
from hicmae.models import ModelConfig
from hicmae.training import FinetuneModule, PretrainModule


class Clips(Dataset):
    def __init__(self, n: int, config: ModelConfig, pretrain: bool):
        self.n, self.c, self.pretrain = n, config, pretrain

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        c = self.c
        item = {"video": torch.randn(3, c.num_frames, c.img_size, c.img_size, generator=g),
                "audio": torch.randn(1, *c.audio_size, generator=g), "label": torch.tensor(i % 6),
                "index": torch.tensor(i), "view": torch.tensor(0)}
        if self.pretrain:
            vm, am = pretrain_masks(c, generator=g)
            item.update(video_mask=vm, audio_mask=am)
        return item


class Timer(pl.Callback):
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == 5:
            torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0


def run(kind: str, precision: str, batch: int = 16, steps: int = 25) -> None:
    config = ModelConfig.preset("tiny")
    module = PretrainModule("tiny", warmup_steps=2) if kind == "pretrain" else FinetuneModule(
        "tiny", num_classes=6, warmup_steps=2)
    timer = Timer()
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision=precision, max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer])
    loader = DataLoader(Clips(batch * steps, config, kind == "pretrain"), batch_size=batch, num_workers=4)
    trainer.fit(module, loader)
    loss = float(trainer.callback_metrics.get("train/loss_step", trainer.callback_metrics.get("train/loss")))
    mem = torch.cuda.max_memory_allocated() / 2**30
    print(f"{kind:9s} {precision:11s} batch {batch}: loss {loss:.4f} finite={torch.isfinite(torch.tensor(loss)).item()}"
          f"  {(steps - 5) * batch / timer.seconds:7.1f} clips/s  peak {mem:.2f} GiB", flush=True)
    torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    print(torch.cuda.get_device_name(0), torch.__version__, pl.__version__)
    for kind in ("pretrain", "finetune"):
        for precision in ("bf16-mixed", "16-mixed"):
            run(kind, precision)
