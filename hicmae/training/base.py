"""What the pretraining and fine-tuning modules share: model config from a preset, lr scaling and schedule,
per-process random draws, the non-finite loss guard, logging without host synchronisation, and the
``precision: auto`` rule.

No host synchronisation inside a training step: a GPU step only queues kernels, so the host can run
ahead (load the next batch, launch the next step) unless something reads a device value back. What is
logged every step therefore stays on the device (loss terms, gradient norm) or is made on the host
(learning rate, clips/s: :meth:`ScheduledModule.host_scalar`; a Python number given to ``self.log``
would be copied to the device with a blocking copy). Device values reach the host only every
``log_every_n_steps`` batches, where Lightning writes the logs and :class:`FiniteGuard` checks for a
non-finite loss; the progress bar's loss is refreshed then too.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.precision.precision import _PRECISION_INPUT
from pytorch_lightning.trainer.states import TrainerFn, TrainerStatus

from hicmae.data.sampler import sample_seed
from hicmae.errors import ConfigError
from hicmae.models import ModelConfig
from hicmae.training.finite import FiniteGuard, NonFiniteLossError
from hicmae.training.optim import WarmupCosine, build_optimizer, scale_lr

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "ScheduledModule", "Trainer", "drop_path_default", "model_config",
           "resolve_precision"]

_STAGES = ("train", "val", "test", "predict")


def model_config(preset: str, overrides: dict | None) -> ModelConfig:
    try:
        return ModelConfig.preset(preset, **(overrides or {}))
    except TypeError as exc:  # an unknown field name in the overrides
        raise ConfigError(f"model overrides {sorted(overrides or {})} do not fit ModelConfig: {exc}") from None


class ScheduledModule(pl.LightningModule):
    """AdamW with param groups from :meth:`param_groups` and the original's per-step warm-up + cosine.

    Subclasses set hparams ``base_lr, min_lr, warmup_epochs, warmup_steps, weight_decay, betas,
    global_batch_size``, implement ``param_groups()`` and create ``self.finite_guard``.
    """

    finite_guard: FiniteGuard

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

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch: the train loader's batches (per process) / accumulation."""
        batches = self.trainer.num_training_batches
        if not math.isfinite(batches):
            raise ConfigError("warmup_epochs needs a train loader with a length; set model.warmup_steps instead")
        return math.ceil(batches / self.trainer.accumulate_grad_batches)

    def configure_optimizers(self):
        h = self.hparams
        total = int(self.trainer.estimated_stepping_batches)  # loads the train dataloader
        batch = self.global_batch_size()
        peak, floor = scale_lr(h.base_lr, batch), scale_lr(h.min_lr, batch)
        # Warm-up in steps from the epoch length, as the original, however the run's end is given.
        warmup = int(h.warmup_steps) if h.get("warmup_steps") is not None else \
            int(round(h.warmup_epochs * self.steps_per_epoch()))
        fused = h.get("fused_adamw")
        if fused is None and self.trainer.gradient_clip_val and \
                getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            fused = False  # Lightning cannot clip before an optimiser that unscales inside its step
        optimizer = build_optimizer(self.param_groups(), peak, tuple(h.betas), fused=fused)
        scheduler = WarmupCosine(optimizer, total, warmup, peak, floor)
        log.info("optimiser: AdamW%s, global batch %d, peak lr %.3g, min lr %.3g, %d warm-up of %d steps",
                 " (fused)" if optimizer.defaults.get("fused") else "", batch, peak, floor, warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ random draws of the module
    def setup(self, stage: str) -> None:
        # seed_everything sets the same initial seed on every process; the draw keys add the rank.
        self._draw_base_seed = torch.initial_seed()

    def draw_seed(self, stage: str, batch_idx: int) -> int:
        """Seed of this module's random draws for one batch (Mixup, masks a batch does not carry): keyed on
        (seed, stage, epoch, process rank, batch), so processes draw differently and a resumed run draws
        what the uninterrupted one would have (Lightning restores the epoch and batch index)."""
        seed = getattr(self, "_draw_base_seed", 0)
        return sample_seed(seed, _STAGES.index(stage), self.current_epoch, self.global_rank, batch_idx)

    # ------------------------------------------------------------------ non-finite losses, on every process
    def observe_loss(self, terms: dict[str, torch.Tensor]) -> None:
        self.finite_guard.observe(self.global_step, terms)

    def check_finite(self) -> None:
        self.finite_guard.check(self.trainer.strategy)

    def is_log_batch(self) -> bool:
        """Whether this training batch is one where device values may be read back (every
        ``log_every_n_steps`` batches: Lightning writes its logs then, and the loss guard checks)."""
        return (self.trainer.fit_loop.total_batch_idx + 1) % max(self.trainer.log_every_n_steps, 1) == 0

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.is_log_batch():
            self.check_finite()

    def on_train_epoch_end(self) -> None:
        self.check_finite()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = self.trainer.state if self._trainer is not None else None
        if state is not None and state.fn == TrainerFn.FITTING and state.status in (TrainerStatus.RUNNING,
                                                                                    TrainerStatus.INTERRUPTED):
            self.check_finite()  # never write a diverged model over a good checkpoint

    # ------------------------------------------------------------------ shared logging
    @staticmethod
    def host_scalar(value: float) -> torch.Tensor:
        """A CPU tensor for ``self.log``: given a Python number, Lightning makes a tensor on the module's
        device, a blocking host-to-device copy (a GPU sync) every time it is logged."""
        return torch.tensor(float(value), dtype=torch.float32)

    def on_before_optimizer_step(self, optimizer) -> None:
        # The true gradient norm: torch's foreach norm, not Lightning's grad_norm, which converts every
        # parameter's norm to a Python float (a GPU sync per parameter). Under 16-mixed the scaler has unscaled
        # the gradients by now, except for an optimiser that unscales inside its step (fused AdamW): then
        # divide by the scale here, on the device.
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)
            if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
                norm = norm / scaler._get_scale_async().to(norm.dtype)
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
            if scaler is None:  # a scaler skips inf steps itself
                self.finite_guard.observe(self.global_step, {"grad_norm": norm}, kind="gradient norm")
        group = optimizer.param_groups[0]
        self.log("train/lr", self.host_scalar(group["lr"] / group.get("lr_scale", 1.0)), on_step=True,
                 on_epoch=False)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Wall time between consecutive batch starts: data loading, forward, backward and optimiser step.
        # Our own rather than Lightning's ThroughputMonitor, which synchronises the GPU every batch.
        now = time.perf_counter()
        previous, clips = getattr(self, "_batch_started", None), getattr(self, "_batch_clips", 0)
        if previous is not None and clips and now > previous:
            self.log("train/clips_per_s", self.host_scalar(clips * self.trainer.world_size / (now - previous)),
                     on_step=True, on_epoch=False)
        self._batch_started = now

    def on_train_epoch_start(self) -> None:
        self._batch_started = None  # do not count the gap across validation and epoch boundaries

    def log_throughput(self, clips: int) -> None:
        self._batch_clips = clips


def drop_path_default(overrides: dict | None, value: float) -> dict:
    out = dict(overrides or {})
    out.setdefault("drop_path_rate", value)
    return out


# ---------------------------------------------------------------------- precision "auto"
def resolve_precision(precision, accelerator="auto"):
    """``"auto"``: ``bf16-mixed`` on an NVIDIA GPU of compute capability 8.0 or newer (Ampere, Hopper,
    Blackwell), ``16-mixed`` (fp16 autocast + GradScaler, the original's) on an older GPU, ``32-true``
    on the CPU. Any other value is returned unchanged.

    bf16 has fp32's exponent range, so it needs no loss scaling (no scaler, no skipped steps, no host sync
    in the scaler's step) and its matmuls run at the same tensor-core rate as fp16's.
    """
    if precision != "auto":
        return precision
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    on_gpu = torch.cuda.is_available() and any(k in name for k in ("auto", "gpu", "cuda"))
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.get_device_capability() >= (8, 0) else "16-mixed"


class Trainer(pl.Trainer):
    """``pl.Trainer`` that also accepts ``precision="auto"`` (see :func:`resolve_precision`).

    For the CLIs: ``LightningCLI(..., trainer_class=Trainer)`` lets a config say ``precision: auto``.
    """

    def __init__(self, *args, precision: _PRECISION_INPUT | Literal["auto"] | None = None, **kwargs):
        resolved = resolve_precision(precision, kwargs.get("accelerator", "auto"))
        if precision == "auto":
            log.info("precision auto -> %s", resolved)
        super().__init__(*args, precision=resolved, **kwargs)
