"""Fine-tuning and linear probing of HiCMAE as a LightningModule (REFERENCE.md 11.2, 11.3, 12)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

from hicmae.errors import ConfigError
from hicmae.models import HiCMAEClassifier
from hicmae.training.base import ScheduledModule, drop_path_default, model_config
from hicmae.training.finite import FiniteGuard
from hicmae.training.init import init_from_checkpoint
from hicmae.training.metrics import (TASKS, ViewMerger, classification_metrics, merge_groups, multilabel_metrics,
                                     regression_metrics)
from hicmae.training.optim import finetune_param_groups
from hicmae.training.probe import probe_head

log = logging.getLogger(__name__)


def ccc_loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - mean concordance correlation over dimensions (the original's ``ccc`` loss option)."""
    preds, targets = preds.float(), targets.float()
    mp, mt = preds.mean(0), targets.mean(0)
    cov = ((preds - mp) * (targets - mt)).mean(0)
    ccc = 2 * cov / (preds.var(0, unbiased=False) + targets.var(0, unbiased=False) + (mp - mt) ** 2 + 1e-8)
    return 1 - ccc.mean()


class FinetuneModule(ScheduledModule):
    """Full fine-tuning (layer-wise lr decay) or linear probing of a :class:`HiCMAEClassifier`.

    Args:
        model_preset, model_overrides: the architecture (``drop_path_rate`` defaults to 0.1, the recipe).
        task: ``classification`` (cross-entropy), ``multilabel`` (BCE) or ``regression`` (MSE or CCC loss).
        num_classes: outputs; ``None`` takes the data module's ``num_classes``.
        modalities: ``[video, audio]``, ``[video]`` or ``[audio]``.
        init_checkpoint: our pretraining ``.ckpt``, a release (``.safetensors``/``.pt``) or an original ``.pth``.
        linear_probe: freeze the backbone and train ``BatchNorm1d(affine=False) -> Linear`` (MAE's protocol).
        base_lr, min_lr, warmup_epochs, warmup_steps, weight_decay, betas, global_batch_size: the optimiser
            (lr scaled by global batch / 256).
        layer_decay: layer-wise lr decay (0.75); 1.0 turns it off.
        label_smoothing: for cross-entropy when Mixup is off (with Mixup the data module's mixing smooths).
        mixup: apply the data module's ``mixup_fn`` (Mixup/CutMix) to training batches when it has one
            (never when linear probing).
        regression_loss: ``mse`` or ``ccc``.
        results_dir: where test results go (default: the logger's directory).
        target_names: names of the regression dimensions, for metric keys.
    """

    def __init__(self, model_preset: str = "base", model_overrides: dict | None = None, task: str = "classification",
                 num_classes: int | None = None, modalities: list[str] = ("video", "audio"),
                 init_checkpoint: str | None = None, linear_probe: bool = False, base_lr: float = 1e-3,
                 min_lr: float = 1e-6, warmup_epochs: float = 5.0, warmup_steps: int | None = None,
                 weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.999), layer_decay: float = 0.75,
                 global_batch_size: int | None = None, label_smoothing: float = 0.1, mixup: bool = True,
                 regression_loss: str = "mse", head_activation: str | None = None, results_dir: str | None = None,
                 target_names: list[str] | None = None, fused_attn: bool = True, grad_checkpointing: bool = False):
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        if regression_loss not in ("mse", "ccc"):
            raise ConfigError(f"regression_loss must be 'mse' or 'ccc', got {regression_loss!r}")
        self.save_hyperparameters()
        overrides = drop_path_default(model_overrides, 0.0 if linear_probe else 0.1)
        self.config = model_config(model_preset, overrides)
        self.model: HiCMAEClassifier | None = None
        self.val_merger = ViewMerger(task)
        self.test_merger = ViewMerger(task)
        # Names of the classes (or regression dimensions) for the results files.
        self.class_names: list[str] | None = list(target_names) if target_names else None
        self.last_test_results: dict | None = None
        self.last_results_dir: Path | None = None
        # Epoch and step of the checkpoint last loaded (the tested one, for the results' protocol).
        self.loaded_checkpoint: dict | None = None
        self.finite_guard = FiniteGuard(("loss",))
        if num_classes is not None:
            self._build(num_classes)

    # ------------------------------------------------------------------ model
    def _build(self, num_classes: int) -> None:
        h = self.hparams
        self.hparams.num_classes = int(num_classes)
        model = HiCMAEClassifier(self.config, int(num_classes), modalities=tuple(h.modalities),
                                 head_activation=h.head_activation, fused_attn=h.fused_attn,
                                 grad_checkpointing=h.grad_checkpointing)
        if h.init_checkpoint:
            init_from_checkpoint(model, h.init_checkpoint)
        if h.linear_probe:
            for p in model.parameters():
                p.requires_grad_(False)
            model.head = probe_head(model.feature_dim, num_classes)
        self.model = model

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None)
        if self.model is None:
            num_classes = getattr(dm, "num_classes", None)
            if not num_classes:
                raise ConfigError("model.num_classes is not set and the data module does not provide num_classes")
            self._build(int(num_classes))
        regression = self.hparams.task == "regression"
        names = getattr(dm, "target_names" if regression else "class_names", None)
        if names:
            self.class_names = list(names)
            if regression and not self.hparams.target_names:
                self.hparams.target_names = list(names)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # Class (or dimension) names are learnt from the data at setup; keep them for `hicmae export`.
        checkpoint["hicmae"] = {"class_names": self.class_names}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.class_names = self.class_names or checkpoint.get("hicmae", {}).get("class_names")
        self.loaded_checkpoint = {"epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")}

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.hparams.linear_probe:  # frozen backbone: no drop path, no dropout; only the head's BN trains
            self.model.eval()
            self.model.head.train()

    def forward(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> torch.Tensor:
        mods = self.model.modalities
        return self.model(video if "video" in mods else None, audio if "audio" in mods else None)

    def param_groups(self) -> list[dict]:
        h = self.hparams
        decay = 1.0 if h.linear_probe else h.layer_decay
        wd = 0.0 if h.linear_probe else h.weight_decay
        return finetune_param_groups(self.model, wd, decay, self.config.encoder_depth, self.config.fusion_depth)

    # ------------------------------------------------------------------ losses
    def _loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        task = self.hparams.task
        if task == "classification":
            if target.is_floating_point() and target.ndim == 2:  # soft targets from Mixup/CutMix
                return SoftTargetCrossEntropy()(outputs.float(), target)
            return F.cross_entropy(outputs.float(), target.long(), label_smoothing=self.hparams.label_smoothing)
        if task == "multilabel":
            return F.binary_cross_entropy_with_logits(outputs.float(), target.float())
        target = target.float().reshape(outputs.shape)
        if self.hparams.regression_loss == "ccc":
            return ccc_loss(outputs, target)
        return F.mse_loss(outputs.float(), target)

    def _mix(self, batch: dict, batch_idx: int) -> dict:
        dm = getattr(self.trainer, "datamodule", None)
        h = self.hparams
        # MAE's linear-probing protocol has no Mixup/CutMix.
        use = h.mixup and h.task != "regression" and not h.linear_probe
        fn = getattr(dm, "mixup_fn", None) if use else None
        return fn(batch, seed=self.draw_seed("train", batch_idx)) if callable(fn) else batch

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        batch = self._mix(batch, batch_idx)
        outputs = self(batch.get("video"), batch.get("audio"))
        loss = self._loss(outputs, batch["label"])
        self.observe_loss({"loss": loss})
        size = outputs.shape[0]
        self._last_loss = loss.detach()
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=False, batch_size=size)
        self.log_throughput(size)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.is_log_batch():
            # The progress bar's loss, only on log batches: Lightning reads every progress-bar value back to
            # the host after every batch, a GPU sync per step otherwise.
            self.log("loss", self.host_scalar(self._last_loss), prog_bar=True, on_step=True, on_epoch=False,
                     logger=False)

    def _eval_step(self, batch: dict, merger: ViewMerger) -> torch.Tensor:
        outputs = self(batch.get("video"), batch.get("audio"))
        view = batch.get("view", torch.zeros_like(batch["index"]))
        merger.update(batch["index"], view, outputs, batch["label"])
        return self._loss(outputs, batch["label"])

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        loss = self._eval_step(batch, self.val_merger)
        self.log("val/loss", loss, on_epoch=True, batch_size=batch["index"].shape[0], sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        loss = self._eval_step(batch, self.test_merger)
        self.log("test/loss", loss, on_epoch=True, batch_size=batch["index"].shape[0], sync_dist=True)

    def metrics_of(self, merged: dict) -> dict[str, float]:
        task, scores, targets = self.hparams.task, merged["scores"], merged["targets"]
        if task == "classification":
            return classification_metrics(scores, targets, self.hparams.num_classes)
        if task == "multilabel":
            return multilabel_metrics(scores, targets)
        return regression_metrics(scores, targets, self.hparams.target_names)

    def _epoch_end(self, merger: ViewMerger, stage: str) -> dict:
        merged = merger.compute()  # gathered over processes, de-duplicated, merged per clip
        merger.reset()
        dataset = getattr(getattr(self.trainer, "datamodule", None), f"{stage}_dataset", None)
        groups = [r.group for r in dataset.manifest.rows] if dataset is not None else []
        if any(groups):  # clips scored together (AVCAffe: per task video)
            merged = merge_groups(merged, groups)
        metrics = self.metrics_of(merged)
        # Identical on every rank already: no further reduction.
        self.log_dict({f"{stage}/{k}": float(v) for k, v in metrics.items()}, sync_dist=False)
        self.log(f"{stage}/num_clips", float(merged["index"].numel()), sync_dist=False)  # or groups
        return {"merged": merged, "metrics": metrics}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_merger.reset()
            return
        self._epoch_end(self.val_merger, "val")

    def on_test_epoch_end(self) -> None:
        out = self._epoch_end(self.test_merger, "test")
        self.last_test_results = out
        self.last_results_dir = self._results_dir()
        if self.trainer.is_global_zero:
            from hicmae.training.results import run_protocol, write_results

            dataset = getattr(getattr(self.trainer, "datamodule", None), "test_dataset", None)
            clips = [(r.video, r.audio) for r in dataset.manifest.rows] if dataset is not None else None
            write_results(self.last_results_dir, out["merged"], out["metrics"], task=self.hparams.task,
                          class_names=self.class_names, num_classes=self.hparams.num_classes,
                          protocol=run_protocol(self, out["merged"], out["metrics"]), clips=clips,
                          title=self._results_title(out["metrics"]))

    def _results_dir(self) -> Path:
        """``model.results_dir``, or ``<run folder>/results/<checkpoint name>``."""
        if self.hparams.results_dir:
            return Path(self.hparams.results_dir)
        ckpt = getattr(self.trainer, "ckpt_path", None)
        return Path(self.trainer.default_root_dir) / "results" / (Path(ckpt).stem if ckpt else "final")

    def _results_title(self, metrics: dict) -> str:
        """Dataset, split and headline metric, e.g. "crema_d.csv, test fold 1: WAR 84.9%, UAR 84.9%"."""
        h = getattr(getattr(self.trainer, "datamodule", None), "hparams", {})
        dataset = Path(h["test_manifest"]).name if h.get("test_manifest") else "test data"
        split = f"test fold {h['fold']}" if h.get("fold") is not None else "test"
        headline = ", ".join(f"{k.upper()} {metrics[k]:.1f}%" for k in ("war", "uar", "map") if k in metrics)
        return f"{dataset}, {split}: {headline}" if headline else f"{dataset}, {split}"
