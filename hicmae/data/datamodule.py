"""HiCMAEDataModule: manifests -> DataLoaders for pretraining and fine-tuning.

Sizes: pass the model's input sizes (``img_size``, ``num_frames``, ``audio_frames``, ``mel_bins``) and,
for pretraining masks, ``patch_size``, ``tubelet_size`` and the mask ratios; defaults are the base
recipe (160 px, 16 frames, 256 x 128 fbank, patch 16, tubelet 2, masks 0.9 / 0.8). Every argument is a
plain type so a LightningCLI YAML can set it.

Folds: with a ``fold`` column in the manifest, ``fold=k`` trains on the rows with fold != k and
validates / tests on fold == k (the same manifest may be given for all three, and then a ``fold`` must
be chosen). Manifests without the column (e.g. the original split files, one folder per fold) need none.

Order and randomness: every loader draws its samples through a :class:`~hicmae.data.sampler.ClipSampler`,
so each process reads its own share and every random draw is keyed on (seed, epoch, rank, sample).
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from hicmae.data.datasets import FinetuneDataset, PretrainDataset
from hicmae.data.manifest import read_manifest
from hicmae.data.mixup import VideoMixup
from hicmae.data.sampler import ClipSampler, process_group
from hicmae.errors import ConfigError
from hicmae.models.config import ModelConfig

log = logging.getLogger(__name__)

TASKS = ("pretrain", "classification", "multilabel", "regression")
# How DataLoader workers start: None is PyTorch's default (fork on Linux: fast). A process forked while
# another of its threads starts or ends can hang in CPython's fork handling (seen here 3 times in about
# 100 two-process CPU runs, at the first worker's start); "forkserver" starts workers from a clean process.
START_METHODS = ("fork", "forkserver", "spawn")


class HiCMAEDataModule(pl.LightningDataModule):
    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        root: str | None = None,
        train_shards: str | None = None,
        shuffle_buffer: int = 100,
        device_augment: bool | None = None,
        task: str = "pretrain",
        batch_size: int = 8,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        worker_start_method: str | None = None,
        # sizes (from the model config)
        img_size: int = 160,
        num_frames: int = 16,
        audio_frames: int = 256,
        mel_bins: int = 128,
        patch_size: int = 16,
        tubelet_size: int = 2,
        video_mask_ratio: float = 0.9,
        audio_mask_ratio: float = 0.8,
        # sampling (REFERENCE 9.3 / 9.4)
        sampling_rate: int = 4,
        folder_fps: float = 25.0,
        voxceleb2_crop: bool = False,
        test_num_segment: int = 2,
        test_num_crop: int = 2,
        # augmentation (fine-tuning)
        rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1",
        rrc_scale: tuple[float, float] = (0.08, 1.0),
        rrc_ratio: tuple[float, float] = (0.75, 4 / 3),
        flip_prob: float = 0.5,
        erase_prob: float = 0.25,
        gain_augment: bool = True,
        eval_gain_augment: bool = True,
        freqm: int = 0,
        timem: int = 0,
        # Mixup / CutMix (classification only; 0 for both turns it off)
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: str = "batch",
        label_smoothing: float = 0.1,
        mix_audio: bool = False,
        # labels and folds
        class_names: list[str] | None = None,
        target_columns: list[str] | None = None,
        fold: int | None = None,
        # bad input
        on_bad_sample: str | None = None,
        max_bad_fraction: float = 0.01,
        bad_sample_check_interval: int = 50,
        seed: int = 0,
    ):
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        if worker_start_method not in (None, *START_METHODS):
            raise ConfigError(f"worker_start_method must be one of {START_METHODS} or null, got {worker_start_method!r}")
        self.save_hyperparameters()
        # The input sizes as the model sees them (the CLI links these arguments to the model's config).
        self.model_config = ModelConfig(img_size=img_size, num_frames=num_frames, audio_size=(audio_frames, mel_bins),
                                        patch_size=patch_size, tubelet_size=tubelet_size,
                                        video_mask_ratio=video_mask_ratio, audio_mask_ratio=audio_mask_ratio)
        # Default policy: long unlabeled pretraining runs skip bad clips; labelled fine-tuning raises.
        self.on_bad_sample = on_bad_sample or ("skip" if task == "pretrain" else "raise")
        self.train_dataset = self.val_dataset = self.test_dataset = None
        self.class_names: list[str] | None = list(class_names) if class_names else None
        self.target_names: list[str] | None = None

    # ------------------------------------------------------------------ datasets
    def _manifest(self, path, stage):
        h = self.hparams
        manifest = read_manifest(path, h.root, h.target_columns, option=f"data.{stage}_manifest")
        if h.fold is None:
            return manifest
        return manifest.select_folds(exclude=[h.fold]) if stage == "train" else manifest.select_folds(include=[h.fold])

    def _check_fold_chosen(self) -> None:
        """Training and evaluating on one manifest with folds needs a fold: otherwise the test clips train."""
        h = self.hparams
        if h.fold is not None or h.task == "pretrain" or h.train_manifest not in (h.val_manifest, h.test_manifest):
            return
        folds = sorted({r.fold for r in self.train_dataset.manifest.rows if r.fold is not None})
        if folds:
            raise ConfigError(f"{h.train_manifest} has a 'fold' column (folds {', '.join(map(str, folds))}) and is "
                              "used for training and evaluation: choose the test fold with data.fold (--data.fold K), "
                              "or run every fold with `hicmae kfold`")

    def _dataset(self, path, mode):
        return self._make_dataset(self._manifest(path, mode), mode, voxceleb2_crop=self.hparams.voxceleb2_crop)

    def _make_dataset(self, manifest, mode: str, voxceleb2_crop: bool = False):
        """The PretrainDataset or FinetuneDataset (``mode``) of ``manifest`` under this module's settings."""
        h = self.hparams
        # Under DDP no single process sees every bad draw: check_bad_samples() enforces the limit on the sum.
        common = dict(sampling_rate=h.sampling_rate, folder_fps=h.folder_fps, on_bad_sample=self.on_bad_sample,
                      max_bad_fraction=h.max_bad_fraction, enforce_bad_limit=process_group()[0] == 1, seed=h.seed)
        if h.task == "pretrain":
            return PretrainDataset(manifest, self.model_config, voxceleb2_crop=voxceleb2_crop,
                                   gain_augment=h.gain_augment, class_names=self.class_names, **common)
        return FinetuneDataset(manifest, self.model_config, task=h.task, mode=mode, class_names=self.class_names,
                               rand_augment=h.rand_augment, rrc_scale=h.rrc_scale, rrc_ratio=h.rrc_ratio,
                               flip_prob=h.flip_prob, erase_prob=h.erase_prob, gain_augment=h.gain_augment,
                               eval_gain_augment=h.eval_gain_augment, freqm=h.freqm, timem=h.timem,
                               test_num_segment=h.test_num_segment, test_num_crop=h.test_num_crop, **common)

    def _shard_dataset(self):
        """The training set streamed from ``train_shards`` (see :mod:`hicmae.data.shards`); the shards hold the
        VoxCeleb2 crop already where it was asked for."""
        from hicmae.data.shards.dataset import ShardDataset

        h = self.hparams
        maker = lambda m: self._make_dataset(m, "train")  # noqa: E731
        dataset = ShardDataset(h.train_shards, maker, batch_size=h.batch_size, seed=h.seed,
                               shuffle_buffer=h.shuffle_buffer, exclude_folds=None if h.fold is None else [h.fold])
        made = dataset.settings
        # Device augmentation (pretraining, JPEG shards): on by default where a GPU trains.
        defer = h.device_augment if h.device_augment is not None else torch.cuda.is_available()
        if defer and (h.task != "pretrain" or made["encoding"] != "jpeg"):
            if h.device_augment:
                raise ConfigError("data.device_augment needs pretraining on JPEG shards (hicmae shard --encoding jpeg)")
            defer = False
        dataset.defer_decode = defer
        if h.voxceleb2_crop and not made["voxceleb2_crop"]:
            raise ConfigError(f"data.voxceleb2_crop is true but {h.train_shards} was sharded without it: shard again "
                              "with --voxceleb2-crop (the shards keep the cropped frames only)")
        if made["size"] and made["size"] != h.img_size:
            log.warning("%s holds %d px frames; the model takes %d px: every clip is resized again",
                        h.train_shards, made["size"], h.img_size)
        return dataset

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        if h.train_manifest and h.train_shards:
            raise ConfigError("give data.train_manifest or data.train_shards, not both")
        if h.train_shards and self.train_dataset is None:
            self.train_dataset = self._shard_dataset()
            self.class_names = self.class_names or getattr(self.train_dataset.maker, "class_names", None)
            self.target_names = getattr(self.train_dataset.maker, "target_names", None)
        if h.train_manifest and self.train_dataset is None:
            self.train_dataset = self._dataset(h.train_manifest, "train")
            self.class_names = self.class_names or getattr(self.train_dataset, "class_names", None)
            self.target_names = getattr(self.train_dataset, "target_names", None)
        if stage in ("fit", None) and self.train_dataset is not None:
            self._check_fold_chosen()
        if h.val_manifest and self.val_dataset is None:
            self.val_dataset = self._dataset(h.val_manifest, "val")
            self.class_names = self.class_names or getattr(self.val_dataset, "class_names", None)
        if h.test_manifest and self.test_dataset is None:
            self.test_dataset = self._dataset(h.test_manifest, "test")
            self.class_names = self.class_names or getattr(self.test_dataset, "class_names", None)
            self.target_names = self.target_names or getattr(self.test_dataset, "target_names", None)

    @property
    def num_classes(self) -> int | None:
        """Number of classes (or regression targets) once ``setup`` has run."""
        if self.hparams.task == "regression":
            return len(self.target_names) if self.target_names else None
        return len(self.class_names) if self.class_names else None

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset, train: bool) -> DataLoader:
        h = self.hparams
        workers = h.num_workers
        # drop_last (training) keeps Mixup's even batches and pretraining's equal batch sizes.
        return DataLoader(dataset, batch_size=h.batch_size, sampler=ClipSampler(dataset, train=train, seed=h.seed),
                          drop_last=train, num_workers=workers, pin_memory=h.pin_memory and torch.cuda.is_available(),
                          persistent_workers=h.persistent_workers and workers > 0,
                          multiprocessing_context=h.worker_start_method if workers > 0 else None,
                          prefetch_factor=2 if workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ConfigError("no train_manifest or train_shards given")
        if self.hparams.train_shards:
            return self._shard_loader(self.train_dataset)
        return self._loader(self.train_dataset, train=True)

    def _shard_loader(self, dataset) -> DataLoader:
        from hicmae.data.shards.dataset import EpochSignal

        h = self.hparams
        workers = h.num_workers
        from hicmae.data.device_augment import collate_deferred

        loader = DataLoader(dataset, batch_size=h.batch_size, drop_last=True, num_workers=workers,
                            collate_fn=collate_deferred if dataset.defer_decode else None,
                            pin_memory=h.pin_memory and torch.cuda.is_available(),
                            persistent_workers=h.persistent_workers and workers > 0,
                            multiprocessing_context=h.worker_start_method if workers > 0 else None,
                            prefetch_factor=2 if workers > 0 else None)
        # An IterableDataset's loader has no sampler of ours for Lightning's set_epoch: give it one.
        loader.batch_sampler.sampler = EpochSignal(dataset)
        return loader

    def val_dataloader(self):
        return [] if self.val_dataset is None else self._loader(self.val_dataset, train=False)

    def test_dataloader(self):
        if self.test_dataset is None:
            raise ConfigError("no test_manifest given")
        return self._loader(self.test_dataset, train=False)

    def predict_dataloader(self):
        return self.test_dataloader()

    # ------------------------------------------------------------------ batch-level augmentation
    @property
    def mixup_fn(self) -> VideoMixup | None:
        """Mixup/CutMix for training batches (classification / multi-label), or None when off.

        The training module calls ``batch = dm.mixup_fn(batch)`` and uses soft-target cross-entropy.
        """
        h = self.hparams
        if h.task not in ("classification", "multilabel") or (h.mixup_alpha <= 0 and h.cutmix_alpha <= 0):
            return None
        if not hasattr(self, "_mixup"):
            if self.num_classes is None:
                raise ConfigError("mixup_fn needs the classes: call setup() first")
            self._mixup = VideoMixup(self.num_classes, h.mixup_alpha, h.cutmix_alpha, h.mixup_prob,
                                     h.mixup_switch_prob, h.mixup_mode, h.label_smoothing, h.mix_audio,
                                     multi_label=h.task == "multilabel")
        return self._mixup

    # ------------------------------------------------------------------ bad samples over all processes
    def bad_sample_counts(self) -> dict:
        """Draws and skipped bad draws of this process's training set so far (shared across its workers)."""
        ds = self.train_dataset
        policy = None if ds is None else getattr(ds, "maker", ds).policy
        return {} if policy is None else {"draws": policy.draws, "bad": policy.bad}

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        if trainer is not None and trainer.training and self.train_dataset is not None:
            progress = trainer.fit_loop.epoch_loop.batch_progress  # counts the batches before this one
            if (progress.current.ready + 1) % self.hparams.bad_sample_check_interval == 0 or progress.is_last_batch:
                self.check_bad_samples()
        return batch

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Finish a deferred batch (JPEG bytes, crop boxes, waves) on the device it was moved to."""
        if isinstance(batch, dict) and "jpegs" in batch:
            from hicmae.data.device_augment import DeviceAugment

            c = self.model_config
            batch = DeviceAugment(c.img_size, c.num_frames, c.audio_size)(batch)
        return batch

    def check_bad_samples(self) -> None:
        """Sum the bad-draw counts of every process and stop every process together past the limit.

        A collective: under DDP every process calls it at the same training batch (they run equally many).
        """
        counts = self.bad_sample_counts()
        if not counts or self.on_bad_sample != "skip":
            return
        draws, bad = counts["draws"], counts["bad"]
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            total = torch.tensor([draws, bad], dtype=torch.float64, device=trainer.strategy.root_device)
            draws, bad = (int(v) for v in trainer.strategy.reduce(total, reduce_op="sum").tolist())
        ds = getattr(self.train_dataset, "maker", self.train_dataset)
        ds.policy.check_limit(draws, bad, ds.manifest.path, where=" over all processes")


__all__ = ["HiCMAEDataModule"]
