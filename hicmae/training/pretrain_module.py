"""Self-supervised pretraining of HiCMAE as a LightningModule (REFERENCE.md 11.1)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from pytorch_lightning.accelerators import CUDAAccelerator
from torch import nn

from hicmae.losses import pretrain_losses
from hicmae.masking import pretrain_masks
from hicmae.models import HiCMAEPretrain, PretrainOutput
from hicmae.training.base import ScheduledModule, model_config
from hicmae.training.finite import FiniteGuard
from hicmae.training.optim import PRETRAIN_NO_DECAY, pretrain_param_groups

log = logging.getLogger(__name__)


class PretrainModule(ScheduledModule):
    """Masked audio-visual autoencoding with hierarchical contrast.

    Args:
        model_preset: ``tiny`` | ``small`` | ``base``.
        model_overrides: any :class:`~hicmae.models.ModelConfig` field, e.g. ``{img_size: 64}``.
        base_lr, min_lr: before scaling by global batch / 256 (the original's rule).
        warmup_epochs: linear warm-up from 0; ``warmup_steps`` overrides it.
        weight_decay, betas: AdamW; 1-D params, biases and the video mask token are not decayed.
        global_batch_size: for lr scaling; default per-device batch x devices x nodes x accumulation.
        contrastive_gather: negatives from the global batch (all-gather with gradients) instead of the local one.
        probe_num_classes: classes of the online linear probe; ``None`` takes the data module's
            ``num_classes`` when its batches carry labels, 0 turns the probe off.
        probe_lr: constant lr of the probe (it trains on detached features, so it never affects the backbone).
        fused_attn, grad_checkpointing, visible_patch_embed: passed to the model (``visible_patch_embed``: embed
            only the visible patches, equal to the original's embed-all-then-drop to float rounding).
        fused_adamw: torch's fused AdamW kernel; ``None`` (default) uses it when the model is on a CUDA GPU
            (unless gradient clipping is combined with 16-mixed, which Lightning cannot do with it).
        compile: ``torch.compile`` the forward pass and loss; ``None`` (default) compiles when training on a
            CUDA GPU and not on the CPU. ``compile_mode``: its ``mode`` (e.g. ``max-autotune``; default torch's).
    """

    def __init__(self, model_preset: str = "base", model_overrides: dict | None = None, base_lr: float = 3e-4,
                 min_lr: float = 1e-5, warmup_epochs: float = 5.0, warmup_steps: int | None = None,
                 weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.95),
                 global_batch_size: int | None = None, contrastive_gather: bool = False,
                 probe_num_classes: int | None = None, probe_lr: float = 1e-3, fused_attn: bool = True,
                 grad_checkpointing: bool = False, visible_patch_embed: bool = True,
                 fused_adamw: bool | None = None, compile: bool | None = None, compile_mode: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.config = model_config(model_preset, model_overrides)
        self.model = HiCMAEPretrain(self.config, fused_attn=fused_attn, grad_checkpointing=grad_checkpointing,
                                    visible_patch_embed=visible_patch_embed)
        self._forward_loss = self._forward_loss_eager
        self.probe: nn.Module | None = None
        if probe_num_classes:
            self._build_probe(probe_num_classes)
        self.finite_guard = FiniteGuard(("loss", "loss_video", "loss_audio", "loss_contrastive"))

    def _build_probe(self, num_classes: int) -> None:
        self.probe = nn.Linear(self.config.video_dim + self.config.audio_dim, num_classes)
        self.hparams.probe_num_classes = num_classes

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.set_compile(self.should_compile())
        if self.probe is None and self.hparams.probe_num_classes is None:
            dm = getattr(self.trainer, "datamodule", None)
            num_classes = getattr(dm, "num_classes", None) if dm is not None else None
            if num_classes:
                self._build_probe(int(num_classes))
                log.info("online linear probe over %d classes", num_classes)

    def forward(self, video, video_mask, audio, audio_mask) -> PretrainOutput:
        return self.model(video, video_mask, audio, audio_mask)

    def param_groups(self) -> list[dict]:
        groups = pretrain_param_groups(self.model, self.hparams.weight_decay, PRETRAIN_NO_DECAY)
        if self.probe is not None:
            # Own constant lr, no weight decay (solo-learn's online classifier).
            groups.append({"params": list(self.probe.parameters()), "weight_decay": 0.0, "lr_scale": 1.0,
                           "fixed_lr": self.hparams.probe_lr, "name": "probe"})
        return groups

    def _masks(self, batch: dict, stage: str = "train", batch_idx: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's masks, or masks drawn here (on the device) for a batch that carries none."""
        if "video_mask" in batch and "audio_mask" in batch:
            return batch["video_mask"].bool(), batch["audio_mask"].bool()
        generator = torch.Generator(self.device).manual_seed(self.draw_seed(stage, batch_idx))
        return pretrain_masks(self.config, batch=batch["video"].shape[0], generator=generator)

    # ------------------------------------------------------------------ torch.compile
    def should_compile(self) -> bool:
        """The ``compile`` option, with ``None`` resolved: on when the trainer runs on a CUDA GPU."""
        if self.hparams.get("compile") is not None:
            return bool(self.hparams.compile)
        trainer = self._trainer
        return trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator)

    def set_compile(self, enable: bool) -> None:
        """Run the forward pass and loss through ``torch.compile`` (one graph: the model is compilable with
        ``fullgraph``; masks are drawn outside it). Parameter names and checkpoints do not change."""
        if not enable:
            self._forward_loss = self._forward_loss_eager
        elif self._forward_loss == self._forward_loss_eager:
            mode = self.hparams.get("compile_mode")
            self._forward_loss = torch.compile(self._forward_loss_eager, **({"mode": mode} if mode else {}))
            log.info("torch.compile: forward pass and loss (mode %s)", mode or "default")

    @property
    def compiled(self) -> bool:
        return self._forward_loss != self._forward_loss_eager

    def _forward_loss_eager(self, video: torch.Tensor, video_mask: torch.Tensor, audio: torch.Tensor,
                            audio_mask: torch.Tensor) -> tuple[dict[str, torch.Tensor], PretrainOutput]:
        outputs = self.model(video, video_mask, audio, audio_mask)
        terms = pretrain_losses(outputs, video, audio, video_mask, audio_mask, self.config,
                                contrastive_gather=self.hparams.contrastive_gather)
        return terms, outputs

    def _step(self, batch: dict, stage: str = "train", batch_idx: int = 0
              ) -> tuple[dict[str, torch.Tensor], PretrainOutput, tuple]:
        video, audio = batch["video"], batch["audio"]
        video_mask, audio_mask = self._masks(batch, stage, batch_idx)
        terms, outputs = self._forward_loss(video, video_mask, audio, audio_mask)
        return terms, outputs, (video_mask, audio_mask)

    def _probe_terms(self, batch: dict, outputs: PretrainOutput) -> dict[str, torch.Tensor]:
        if self.probe is None or "label" not in batch or batch["label"].ndim != 1:
            return {}
        features = torch.cat([outputs.video_embeddings[-1], outputs.audio_embeddings[-1]], dim=-1).detach().float()
        logits = self.probe(features)
        labels = batch["label"].long()
        return {"probe_loss": F.cross_entropy(logits, labels),
                "probe_acc": (logits.argmax(-1) == labels).float().mean()}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms, outputs, _ = self._step(batch, "train", batch_idx)
        self.observe_loss(terms)
        self._last_loss = terms["loss"].detach()
        probe = self._probe_terms(batch, outputs)
        batch_size = batch["video"].shape[0]
        # Device tensors, read back by Lightning only when it writes the logs (no host sync in the step).
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=True,
                      prog_bar=False, batch_size=batch_size, sync_dist=False)
        if probe:
            self.log_dict({f"train/{k}": v.detach() for k, v in probe.items()}, on_step=False, on_epoch=True,
                          batch_size=batch_size, sync_dist=True)
        self.log_throughput(batch_size)
        return terms["loss"] + probe.get("probe_loss", 0.0)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        loss = getattr(self, "_last_loss", None)
        if loss is not None and self.is_log_batch():
            # The progress bar's loss, refreshed only on log batches: Lightning converts every progress-bar
            # value to a Python number after every batch, which for a device tensor is a host sync.
            self.log("loss", self.host_scalar(loss), prog_bar=True, on_step=True, on_epoch=False, logger=False)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        terms, outputs, _ = self._step(batch, "val", batch_idx)
        probe = self._probe_terms(batch, outputs)
        self.log_dict({f"val/{k}": v for k, v in {**terms, **probe}.items()}, on_epoch=True,
                      batch_size=batch["video"].shape[0], sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        terms, outputs, _ = self._step(batch, "test", batch_idx)
        probe = self._probe_terms(batch, outputs)
        self.log_dict({f"test/{k}": v for k, v in {**terms, **probe}.items()}, on_epoch=True,
                      batch_size=batch["video"].shape[0], sync_dist=True)
