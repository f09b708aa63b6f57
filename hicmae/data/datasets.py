"""PretrainDataset and FinetuneDataset: manifest rows -> the sample dicts the models take.

Randomness: each ``__getitem__`` draws one integer seed from a per-worker stream (seeded from the
worker's torch seed, which Lightning's ``seed_everything`` controls, and from ``seed``), and every
random choice of the sample — frames, crops, RandAugment, gain, masks — derives from it.
``dataset.get(index, seed)`` gives the same sample for the same seed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from hicmae.data import audio as A
from hicmae.data import sampling as S
from hicmae.data import transforms as T
from hicmae.data.bad_samples import BadSamplePolicy
from hicmae.data.manifest import Manifest, Row, class_names_of, encode_labels
from hicmae.data.media import SAMPLE_RATE, VideoClip, audio_duration, load_audio, open_video
from hicmae.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class ClipSpec:
    """What the data needs to know about the model (sizes come from here, never hard-coded)."""

    img_size: int = 160
    num_frames: int = 16
    audio_frames: int = 256
    mel_bins: int = 128
    patch_size: int = 16
    tubelet_size: int = 2
    video_mask_ratio: float = 0.9
    audio_mask_ratio: float = 0.8
    sampling_rate: int = 4  # frame stride (Werewolf-XL used 3)
    folder_fps: float = 25.0  # frame rate assumed for frame folders (they carry no timestamps)

    def model_config(self):
        from hicmae.models.config import ModelConfig

        return ModelConfig(img_size=self.img_size, num_frames=self.num_frames, patch_size=self.patch_size,
                           tubelet_size=self.tubelet_size, audio_size=(self.audio_frames, self.mel_bins),
                           video_mask_ratio=self.video_mask_ratio, audio_mask_ratio=self.audio_mask_ratio)

    @classmethod
    def from_model_config(cls, config, **kwargs) -> "ClipSpec":
        return cls(img_size=config.img_size, num_frames=config.num_frames, audio_frames=config.audio_size[0],
                   mel_bins=config.audio_size[1], patch_size=config.patch_size, tubelet_size=config.tubelet_size,
                   video_mask_ratio=config.video_mask_ratio, audio_mask_ratio=config.audio_mask_ratio, **kwargs)


class _closing_on_error:
    def __init__(self, clip):
        self.clip = clip

    def __enter__(self):
        return self.clip

    def __exit__(self, exc_type, *rest):
        if exc_type is not None:
            self.clip.close()


class _ClipDataset(Dataset):
    def __init__(self, manifest: Manifest, spec: ClipSpec, *, on_bad_sample: str, max_bad_fraction: float,
                 seed: int):
        self.manifest = manifest
        self.spec = spec
        self.seed = int(seed)
        self.policy = BadSamplePolicy(on_bad_sample, max_bad_fraction, dataset_size=len(self))
        self._stream_key = None
        self._stream = None

    # ------------------------------------------------------------------ randomness and bad samples
    def set_epoch(self, epoch: int) -> None:
        """Start the random stream of ``epoch`` (the training loader calls this before each epoch), so a
        run resumed mid-epoch draws the same augmentations as an uninterrupted one. Workers see it when
        they start: with ``persistent_workers`` they keep their first epoch's value."""
        self.epoch = int(epoch)

    def _draw_seed(self) -> int:
        info = torch.utils.data.get_worker_info()
        epoch = getattr(self, "epoch", 0)
        key = (os.getpid(), info.seed if info is not None else torch.initial_seed(), epoch)
        if key != self._stream_key:  # a new worker, a new epoch's workers, or a new epoch: a new stream
            self._stream = np.random.default_rng([key[1] % 2**63, self.seed % 2**63, epoch])
            self._stream_key = key
        return int(self._stream.integers(2**62))

    def __getitem__(self, index: int) -> dict:
        return self.get(index, self._draw_seed())

    def get(self, index: int, seed: int) -> dict:
        """The sample at ``index`` for ``seed``; under ``skip``, bad samples are replaced by others."""
        rng = np.random.default_rng(seed)
        for _ in range(self.policy.max_retries):
            try:
                sample = self.load(index, int(rng.integers(2**62)))
                self.policy.record_good()
                return sample
            except DataError as err:
                self.policy.record_bad(err)  # raises under "raise" or past the limit
                index = int(rng.integers(len(self)))
        raise DataError(self.manifest.path, f"{self.policy.max_retries} bad samples in a row; run `hicmae validate`")

    def load(self, index: int, seed: int) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared decoding helpers
    def _open(self, row: Row) -> tuple[VideoClip, int, int]:
        """The clip, and the first frame and frame count of the row's [start, end) range."""
        clip = open_video(row.video, fps=self.spec.folder_fps)
        n = len(clip)
        if row.start is None and row.end is None:
            return clip, 0, n
        with _closing_on_error(clip):
            starts = clip.timestamps(range(n))[:, 0]
            lo = int(np.searchsorted(starts, row.start or 0.0, side="left"))
            hi = n if row.end is None else int(np.searchsorted(starts, row.end, side="left"))
            if hi <= lo:
                raise DataError(row.video, f"no frames between start={row.start} and end={row.end} s")
        return clip, lo, hi - lo

    def _audio_path(self, row: Row) -> str:
        return row.audio or row.video

    def check(self, index: int) -> None:
        """Validation: load the sample as training would, and also decode the clip's last frame and
        the whole audio, so truncated files are caught wherever they break."""
        self.load(index, seed=0)
        row = self.manifest.rows[index]
        clip, first, count = self._open(row)
        with clip:
            clip.frames([first + count - 1])
        if os.path.isdir(row.video) and row.audio is None:
            raise DataError(row.video, "a frame folder needs an 'audio' file")
        load_audio(self._audio_path(row), start=row.start or 0.0, end=row.end)


class PretrainDataset(_ClipDataset):
    """Pretraining samples: ``video (3,T,H,W)``, ``audio (1,time,mel)``, ``video_mask``, ``audio_mask``,
    ``index`` and, when the manifest has labels, ``label`` (for an online linear probe)."""

    def __init__(self, manifest: Manifest, spec: ClipSpec = ClipSpec(), *, voxceleb2_crop: bool = False,
                 gain_augment: bool = True, class_names: list[str] | None = None,
                 on_bad_sample: str = "skip", max_bad_fraction: float = 0.01, seed: int = 0):
        super().__init__(manifest, spec, on_bad_sample=on_bad_sample, max_bad_fraction=max_bad_fraction, seed=seed)
        self.voxceleb2_crop = voxceleb2_crop
        self.gain_augment = gain_augment
        self.model_config = spec.model_config()
        has_labels = any(r.labels for r in manifest.rows)
        self.class_names = class_names_of(manifest, class_names) if has_labels else None
        self.labels = encode_labels(manifest, "pretrain", self.class_names) if has_labels else [None] * len(manifest)

    def __len__(self) -> int:
        return len(self.manifest)

    def load(self, index: int, seed: int) -> dict:
        row = self.manifest.rows[index]
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed % 2**63)
        clip, first, count = self._open(row)
        with clip:
            return self._load(index, row, clip, first, count, rng, gen)

    def _load(self, index, row, clip, first, count, rng, gen) -> dict:
        from hicmae.masking import pretrain_masks

        spec = self.spec
        idx = first + S.pretrain_indices(count, spec.num_frames, spec.sampling_rate, rng)
        frames = clip.frames(idx)
        a, b = S.pretrain_audio_frames(idx - first, spec.sampling_rate, count)
        t0 = float(clip.timestamps([first + a])[0, 0])
        t1 = float(clip.timestamps([first + b])[0, 1])
        wave = load_audio(self._audio_path(row), t0, t1)
        video = T.pretrain_video(frames, spec.img_size, rng, vox_crop=self.voxceleb2_crop)
        audio = A.waveform_to_input(wave, spec.audio_frames, spec.mel_bins, gain=self.gain_augment, generator=gen)
        video_mask, audio_mask = pretrain_masks(self.model_config, generator=gen)
        sample = {"video": video, "audio": audio, "video_mask": video_mask, "audio_mask": audio_mask, "index": index}
        if self.labels[index] is not None:
            sample["label"] = torch.tensor(self.labels[index], dtype=torch.int64)
        return sample


MODES = ("train", "val", "test")


class FinetuneDataset(_ClipDataset):
    """Fine-tuning samples: ``video``, ``audio``, ``label``, ``index`` (manifest row) and ``view``.

    ``mode`` "train": random frames + full augmentation; "val": random frames, no augmentation (as the
    original); "test": ``test_num_segment x test_num_crop`` views per clip, each its own item with
    view id ``segment * test_num_crop + crop``.
    """

    def __init__(self, manifest: Manifest, spec: ClipSpec = ClipSpec(), *, task: str = "classification",
                 mode: str = "train", class_names: list[str] | None = None,
                 rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1", rrc_scale=(0.08, 1.0),
                 rrc_ratio=(0.75, 4 / 3), flip_prob: float = 0.5, erase_prob: float = 0.25,
                 gain_augment: bool = True, freqm: int = 0, timem: int = 0,
                 test_num_segment: int = 2, test_num_crop: int = 2,
                 on_bad_sample: str = "raise", max_bad_fraction: float = 0.01, seed: int = 0):
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if task not in ("classification", "multilabel", "regression"):
            raise ConfigError(f"task must be classification, multilabel or regression, got {task!r}")
        self.mode, self.task = mode, task
        self.num_views = test_num_segment * test_num_crop if mode == "test" else 1
        self.test_num_segment, self.test_num_crop = test_num_segment, test_num_crop
        super().__init__(manifest, spec, on_bad_sample=on_bad_sample, max_bad_fraction=max_bad_fraction, seed=seed)
        self.class_names = None if task == "regression" else class_names_of(manifest, class_names)
        self.target_names = list(manifest.label_columns) if task == "regression" else None
        self.labels = encode_labels(manifest, task, self.class_names)
        self.rand_augment, self.rrc_scale, self.rrc_ratio = rand_augment, tuple(rrc_scale), tuple(rrc_ratio)
        self.flip_prob, self.erase_prob = flip_prob, erase_prob
        self.gain_augment, self.freqm, self.timem = gain_augment, freqm, timem

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names is not None else len(self.target_names)

    def __len__(self) -> int:
        return len(self.manifest) * self.num_views

    def load(self, index: int, seed: int) -> dict:
        spec = self.spec
        row_index, view = divmod(index, self.num_views)
        row = self.manifest.rows[row_index]
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed % 2**63)
        clip, first, count = self._open(row)
        with clip:
            return self._load(row_index, view, row, clip, first, count, rng, gen)

    def _load(self, row_index, view, row, clip, first, count, rng, gen) -> dict:
        spec = self.spec
        if self.mode == "test":
            segment = view // self.test_num_crop
            rel = S.test_views(count, spec.num_frames, spec.sampling_rate, self.test_num_segment)[segment]
        else:
            rel = S.finetune_train_indices(count, spec.num_frames, spec.sampling_rate, rng)
        frames = clip.frames(first + rel)
        if self.mode == "train":
            video = T.finetune_train_video(frames, spec.img_size, gen, int(rng.integers(2**31)),
                                           rand_augment=self.rand_augment, scale=self.rrc_scale,
                                           ratio=self.rrc_ratio, flip_prob=self.flip_prob, erase_prob=self.erase_prob)
        else:
            video = T.finetune_eval_video(frames, spec.img_size)
        audio = self._audio(row, clip, first, count, int(rel[0]), gen)
        label = self.labels[row_index]
        label = torch.tensor(label, dtype=torch.int64) if isinstance(label, int) else torch.from_numpy(label)
        return {"video": video, "audio": audio, "label": label, "index": row_index, "view": view}

    def _audio(self, row: Row, clip: VideoClip, first: int, count: int, rel_first: int, gen) -> torch.Tensor:
        """Relative-timestamp alignment (REFERENCE 9.4): the frame's position as a fraction of the clip
        maps onto the waveform's length."""
        spec = self.spec
        path = self._audio_path(row)
        if os.path.isdir(row.video) and row.audio is None:
            raise DataError(row.video, "a frame folder needs an 'audio' file")
        t0 = row.start or 0.0
        duration = (row.end - t0) if row.end is not None else audio_duration(path) - t0
        num_samples = max(int(round(duration * SAMPLE_RATE)), 0)
        span = spec.num_frames * spec.sampling_rate
        lo, hi = S.relative_audio_range(rel_first, count, num_samples, span, SAMPLE_RATE, clip_seconds=span / 25.0)
        wave = load_audio(path, t0 + lo / SAMPLE_RATE, t0 + hi / SAMPLE_RATE)
        train = self.mode == "train"
        return A.waveform_to_input(wave, spec.audio_frames, spec.mel_bins, gain=train and self.gain_augment,
                                   freqm=self.freqm if train else 0, timem=self.timem if train else 0, generator=gen)
