"""What the pretraining and fine-tuning modules share: model config from a preset, lr scaling and schedule."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch

from hicmae.errors import ConfigError, HiCMAEError
from hicmae.models import ModelConfig
from hicmae.training.optim import WarmupCosine, build_optimizer, scale_lr

log = logging.getLogger(__name__)


class NonFiniteLossError(HiCMAEError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the terms."""


def model_config(preset: str, overrides: dict | None) -> ModelConfig:
    try:
        return ModelConfig.preset(preset, **(overrides or {}))
    except TypeError as exc:  # an unknown field name in the overrides
        raise ConfigError(f"model overrides {sorted(overrides or {})} do not fit ModelConfig: {exc}") from None


def check_finite(step: int, terms: dict[str, torch.Tensor]) -> None:
    if not torch.isfinite(terms["loss"]).all():
        values = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        raise NonFiniteLossError(f"non-finite loss at global step {step} ({values}); lower the learning rate, "
                                 f"use bf16-mixed instead of 16-mixed, or enable gradient clipping")


class ScheduledModule(pl.LightningModule):
    """AdamW with param groups from :meth:`param_groups` and the original's per-step warm-up + cosine.

    Subclasses set hparams ``base_lr, min_lr, warmup_epochs, warmup_steps, weight_decay, betas,
    global_batch_size`` and implement ``param_groups()``.
    """

    def param_groups(self) -> list[dict]:
        raise NotImplementedError

    def global_batch_size(self) -> int:
        """Per-device batch x devices x nodes x accumulation, unless the config fixes it."""
        if self.hparams.get("global_batch_size"):
            return int(self.hparams.global_batch_size)
        trainer = self.trainer
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()
        loader = trainer.train_dataloader
        if hasattr(loader, "flattened"):  # Lightning's CombinedLoader around the user's DataLoader(s)
            loader = loader.flattened[0]
        per_device = getattr(loader, "batch_size", None)
        if per_device is None:
            raise ConfigError("cannot infer the per-device batch size from the train dataloader; "
                              "set model.global_batch_size")
        return per_device * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self):
        h = self.hparams
        total = int(self.trainer.estimated_stepping_batches)  # loads the train dataloader
        batch = self.global_batch_size()
        peak, floor = scale_lr(h.base_lr, batch), scale_lr(h.min_lr, batch)
        if h.get("warmup_steps") is not None:
            warmup = int(h.warmup_steps)
        else:
            epochs = max(self.trainer.max_epochs or 1, 1)
            warmup = int(round(h.warmup_epochs * total / epochs)) if self.trainer.max_epochs and \
                self.trainer.max_epochs > 0 else 0
        optimizer = build_optimizer(self.param_groups(), peak, tuple(h.betas))
        scheduler = WarmupCosine(optimizer, total, warmup, peak, floor)
        log.info("optimiser: global batch %d, peak lr %.3g, min lr %.3g, %d warm-up of %d steps", batch, peak,
                 floor, warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ shared logging
    def on_before_optimizer_step(self, optimizer) -> None:
        # Called after AMP unscaling, so this is the true gradient norm.
        norms = [p.grad.detach().float().norm() for g in optimizer.param_groups for p in g["params"]
                 if p.grad is not None]
        if norms:
            self.log("train/grad_norm", torch.stack(norms).norm(), on_step=True, on_epoch=False)
        self.log("train/lr", optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_scale", 1.0),
                 on_step=True, on_epoch=False)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Wall time between consecutive batch starts: data loading, forward, backward and optimiser step.
        now = time.perf_counter()
        previous, clips = getattr(self, "_batch_started", None), getattr(self, "_batch_clips", 0)
        if previous is not None and clips and now > previous:
            self.log("train/clips_per_s", clips * self.trainer.world_size / (now - previous), on_step=True,
                     on_epoch=False)
        self._batch_started = now

    def on_train_epoch_start(self) -> None:
        self._batch_started = None  # do not count the gap across validation and epoch boundaries

    def log_throughput(self, clips: int) -> None:
        self._batch_clips = clips


def drop_path_default(overrides: dict | None, value: float) -> dict:
    out = dict(overrides or {})
    out.setdefault("drop_path_rate", value)
    return out
