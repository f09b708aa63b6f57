"""PretrainDataset and FinetuneDataset: manifest rows -> the sample dicts the models take.

Sizes (frames, resolution, fbank, masks) come from the model's :class:`~hicmae.models.ModelConfig`, so
data and model cannot disagree; the frame stride and the frame rate assumed for frame folders are the
data's own.

Randomness: every random choice of a sample (frames, crops, RandAugment, gain, masks) derives from one
integer seed. The data module's :class:`~hicmae.data.sampler.ClipSampler` passes ``(index, seed)`` keys
that depend on (data seed, epoch, rank, index); given a plain index, the dataset keys the sample on
(data seed, index) alone. ``dataset.get(index, seed)`` gives the same sample for the same seed.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from hicmae.data import audio as A
from hicmae.data import sampling as S
from hicmae.data import transforms as T
from hicmae.data.bad_samples import BadSamplePolicy
from hicmae.data.manifest import Manifest, Row, class_names_of, encode_labels
from hicmae.data.media import SAMPLE_RATE, AudioFile, AudioSource, VideoClip, load_audio, open_video
from hicmae.data.sampler import sample_seed
from hicmae.errors import ConfigError, DataError
from hicmae.models.config import ModelConfig

log = logging.getLogger(__name__)


class _closing_on_error:
    def __init__(self, clip):
        self.clip = clip

    def __enter__(self):
        return self.clip

    def __exit__(self, exc_type, *rest):
        if exc_type is not None:
            self.clip.close()


def open_row(row: Row, folder_fps: float = 25.0) -> tuple[VideoClip, int, int]:
    """The row's clip, and the first frame and frame count of its [start, end) range."""
    clip = open_video(row.video, fps=folder_fps)
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


class _ClipDataset(Dataset):
    def __init__(self, manifest: Manifest, config: ModelConfig, *, sampling_rate: int, folder_fps: float,
                 on_bad_sample: str, max_bad_fraction: float, enforce_bad_limit: bool, seed: int):
        self.manifest = manifest
        self.config = config
        self.sampling_rate = int(sampling_rate)  # frame stride (Werewolf-XL used 3)
        self.folder_fps = float(folder_fps)  # frame folders carry no timestamps
        self.seed = int(seed)
        self.policy = BadSamplePolicy(on_bad_sample, max_bad_fraction, dataset_size=len(self),
                                      enforce_limit=enforce_bad_limit)

    # ------------------------------------------------------------------ randomness and bad samples
    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        # A plain index gets the draws an evaluation ClipSampler would give it: keyed on (seed, index).
        index, seed = key if isinstance(key, tuple) else (key, sample_seed(self.seed, 0, 0, key))
        return self.get(int(index), int(seed))

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
        """Decode the media of ``index`` and make its sample (see :meth:`make`)."""
        row = self.manifest.rows[self.row_of(index)]
        clip, first, count = self._open(row)
        with clip:
            return self.make(index, clip, first, count, AudioFile(self._audio_path(row), row.start, row.end), seed)

    def row_of(self, index: int) -> int:
        return index

    def make(self, index: int, clip: VideoClip, first: int, count: int, audio: AudioSource, seed: int) -> dict:
        """The sample of ``index`` from frames ``[first, first + count)`` of ``clip`` and its ``audio``: the
        manifest's files here, a shard's copy in :class:`~hicmae.data.shards.ShardDataset`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared decoding helpers
    def _open(self, row: Row) -> tuple[VideoClip, int, int]:
        return open_row(row, self.folder_fps)

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

    def __init__(self, manifest: Manifest, config: ModelConfig | None = None, *, sampling_rate: int = 4,
                 folder_fps: float = 25.0, voxceleb2_crop: bool = False, gain_augment: bool = True,
                 class_names: list[str] | None = None, on_bad_sample: str = "skip", max_bad_fraction: float = 0.01,
                 enforce_bad_limit: bool = True, seed: int = 0):
        super().__init__(manifest, config or ModelConfig(), sampling_rate=sampling_rate, folder_fps=folder_fps,
                         on_bad_sample=on_bad_sample, max_bad_fraction=max_bad_fraction,
                         enforce_bad_limit=enforce_bad_limit, seed=seed)
        self.voxceleb2_crop = voxceleb2_crop
        self.gain_augment = gain_augment
        has_labels = any(r.labels for r in manifest.rows)
        self.class_names = class_names_of(manifest, class_names) if has_labels else None
        self.labels = encode_labels(manifest, "pretrain", self.class_names) if has_labels else [None] * len(manifest)

    def __len__(self) -> int:
        return len(self.manifest)

    def make(self, index: int, clip: VideoClip, first: int, count: int, audio: AudioSource, seed: int) -> dict:
        from hicmae.masking import pretrain_masks

        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        c = self.config
        idx = first + S.pretrain_indices(count, c.num_frames, self.sampling_rate, rng)
        frames = clip.frames(idx)
        a, b = S.pretrain_audio_frames(idx - first, self.sampling_rate, count)
        t0 = float(clip.timestamps([first + a])[0, 0])
        t1 = float(clip.timestamps([first + b])[0, 1])
        wave = audio.read(t0, t1)
        if wave.numel() <= S.MIN_AUDIO_SAMPLES:  # the original rejects such a clip too (and draws another)
            raise DataError(audio.path, f"the audio of frames {first + a}-{first + b} ({t0:.2f}-{t1:.2f} s) has "
                                  f"{wave.numel()} samples; more than {S.MIN_AUDIO_SAMPLES} are needed")
        video = T.pretrain_video(frames, c.img_size, rng, vox_crop=self.voxceleb2_crop)
        audio = A.waveform_to_input(wave, *c.audio_size, gain=self.gain_augment, generator=gen)
        video_mask, audio_mask = pretrain_masks(c, generator=gen)
        sample = {"video": video, "audio": audio, "video_mask": video_mask, "audio_mask": audio_mask, "index": index}
        if self.labels[index] is not None:
            sample["label"] = torch.tensor(self.labels[index], dtype=torch.int64)
        return sample


MODES = ("train", "val", "test")


class FinetuneDataset(_ClipDataset):
    """Fine-tuning samples: ``video``, ``audio``, ``label``, ``index`` (manifest row) and ``view``.

    ``mode`` "train": random frames + full augmentation; "val": random frames, no augmentation (as the
    original); "test": ``test_num_segment x test_num_crop`` views per clip, each its own item with
    view id ``segment * test_num_crop + crop``. The original applies its random audio gain in every
    mode; ``eval_gain_augment=False`` turns it off at val/test for deterministic scores.
    """

    def __init__(self, manifest: Manifest, config: ModelConfig | None = None, *, sampling_rate: int = 4,
                 folder_fps: float = 25.0, task: str = "classification", mode: str = "train",
                 class_names: list[str] | None = None, rand_augment: str | None = "rand-m7-n4-mstd0.5-inc1",
                 rrc_scale=(0.08, 1.0), rrc_ratio=(0.75, 4 / 3), flip_prob: float = 0.5, erase_prob: float = 0.25,
                 gain_augment: bool = True, eval_gain_augment: bool = True, freqm: int = 0, timem: int = 0,
                 test_num_segment: int = 2, test_num_crop: int = 2, on_bad_sample: str = "raise",
                 max_bad_fraction: float = 0.01, enforce_bad_limit: bool = True, seed: int = 0):
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if task not in ("classification", "multilabel", "regression"):
            raise ConfigError(f"task must be classification, multilabel or regression, got {task!r}")
        self.mode, self.task = mode, task
        self.num_views = test_num_segment * test_num_crop if mode == "test" else 1
        self.test_num_segment, self.test_num_crop = test_num_segment, test_num_crop
        super().__init__(manifest, config or ModelConfig(), sampling_rate=sampling_rate, folder_fps=folder_fps,
                         on_bad_sample=on_bad_sample, max_bad_fraction=max_bad_fraction,
                         enforce_bad_limit=enforce_bad_limit, seed=seed)
        self.class_names = None if task == "regression" else class_names_of(manifest, class_names)
        self.target_names = list(manifest.label_columns) if task == "regression" else None
        self.labels = encode_labels(manifest, task, self.class_names)
        self.rand_augment, self.rrc_scale, self.rrc_ratio = rand_augment, tuple(rrc_scale), tuple(rrc_ratio)
        self.flip_prob, self.erase_prob = flip_prob, erase_prob
        self.gain = gain_augment if mode == "train" else eval_gain_augment
        self.freqm, self.timem = (freqm, timem) if mode == "train" else (0, 0)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names is not None else len(self.target_names)

    def __len__(self) -> int:
        return len(self.manifest) * self.num_views

    def row_of(self, index: int) -> int:
        return index // self.num_views

    def load(self, index: int, seed: int) -> dict:
        row = self.manifest.rows[self.row_of(index)]
        if os.path.isdir(row.video) and row.audio is None:
            raise DataError(row.video, "a frame folder needs an 'audio' file")
        return super().load(index, seed)

    def make(self, index: int, clip: VideoClip, first: int, count: int, audio: AudioSource, seed: int) -> dict:
        row_index, view = divmod(index, self.num_views)
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        c = self.config
        if self.mode == "test":
            segment = view // self.test_num_crop
            rel = S.test_views(count, c.num_frames, self.sampling_rate, self.test_num_segment)[segment]
        else:
            rel = S.finetune_train_indices(count, c.num_frames, self.sampling_rate, rng)
        frames = clip.frames(first + rel)
        if self.mode == "train":
            video = T.finetune_train_video(frames, c.img_size, gen, int(rng.integers(2**31)),
                                           rand_augment=self.rand_augment, scale=self.rrc_scale,
                                           ratio=self.rrc_ratio, flip_prob=self.flip_prob, erase_prob=self.erase_prob)
        else:
            video = T.finetune_eval_video(frames, c.img_size)
        audio = self._audio(audio, count, int(rel[0]), gen)
        label = self.labels[row_index]
        label = torch.tensor(label, dtype=torch.int64) if isinstance(label, int) else torch.from_numpy(label)
        return {"video": video, "audio": audio, "label": label, "index": row_index, "view": view}

    def _audio(self, audio: AudioSource, count: int, rel_first: int, gen) -> torch.Tensor:
        """Relative-timestamp alignment (REFERENCE 9.4): the frame's position as a fraction of the clip
        maps onto the waveform's length."""
        c = self.config
        t0 = audio.start
        duration = (audio.end - t0) if audio.end is not None else audio.duration() - t0
        num_samples = max(int(round(duration * SAMPLE_RATE)), 0)
        try:
            lo, hi = S.relative_audio_range(rel_first, count, num_samples, c.num_frames * self.sampling_rate,
                                            target_seconds=c.audio_size[0] / 100, sample_rate=SAMPLE_RATE)
        except ValueError as err:
            raise DataError(audio.path, str(err)) from None
        wave = audio.read(t0 + lo / SAMPLE_RATE, t0 + hi / SAMPLE_RATE)
        return A.waveform_to_input(wave, *c.audio_size, gain=self.gain, freqm=self.freqm, timem=self.timem,
                                   generator=gen)
