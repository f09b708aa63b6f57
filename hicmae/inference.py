"""Emotion predictions for new videos from a released classifier.

The clips go through the fine-tuning pipeline's test mode (REFERENCE.md 9.4): frames at the model's
stride in ``num_segments`` temporal windows, each with its own aligned audio; per-view scores are
merged per clip as the original does (softmax, then the mean over views). The original's two spatial
crops are identical (frames are resized to a square first), so one crop gives the same result at half
the cost. Unlike the original's test loader, no random gain is applied to the audio: the same video
always gets the same scores.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from hicmae.checkpoint import load_release, read_release
from hicmae.errors import CheckpointError, ConfigError
from hicmae.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One clip's merged scores: probabilities (classification), per-label probabilities (multi-label)
    or values (regression), named by ``names``; ``label`` is the top class for classification."""

    video: str
    audio: str | None
    names: list[str]
    scores: list[float]
    label: str | None

    def as_dict(self) -> dict:
        return {"video": self.video, "audio": self.audio, "label": self.label,
                "scores": dict(zip(self.names, self.scores))}


class Predictor:
    """Load a classifier release once; predict for any number of videos.

    The release's metadata names the task (``task``: classification, multilabel or regression), the
    outputs (``class_names`` or ``target_names``) and the frame stride (``sampling_rate``, default 4),
    as ``finetune.py``'s export writes them.
    """

    def __init__(self, release: str | os.PathLike, device: str = "cpu", num_segments: int = 2):
        _, header = read_release(release, weights=False)
        if header["kind"] != "classifier":
            raise CheckpointError(release, "a pretraining release has no classifier head: fine-tune it first")
        meta = header.get("metadata", {})
        self.model = load_release(release).to(device)
        self.device = device
        self.task = meta.get("task", "classification")
        n = self.model.num_classes
        self.names = list(meta.get("class_names") or meta.get("target_names") or [str(i) for i in range(n)])
        if len(self.names) != n:
            raise CheckpointError(release, f"metadata names {len(self.names)} outputs but the head has {n}")
        self.sampling_rate = int(meta.get("sampling_rate", 4))
        self.num_segments = num_segments

    def _dataset(self, videos: Sequence[str], audios: Sequence[str | None]):
        from hicmae.data.datasets import FinetuneDataset
        from hicmae.data.manifest import Manifest, Row

        # The test pipeline wants a label per row; predictions never read it.
        dummy = ["0"] * len(self.names) if self.task == "regression" else [self.names[0]]
        rows = [Row(video=os.fspath(v), audio=None if a is None else os.fspath(a), labels=list(dummy), line=i + 1)
                for i, (v, a) in enumerate(zip(videos, audios))]
        manifest = Manifest(path="<predict>", rows=rows,
                            label_columns=self.names if self.task == "regression" else ["label"])
        # Deterministic scores: without the original's random test-time gain on the audio.
        return FinetuneDataset(manifest, self.model.config, sampling_rate=self.sampling_rate, task=self.task,
                               mode="test", class_names=None if self.task == "regression" else self.names,
                               eval_gain_augment=False, test_num_segment=self.num_segments, test_num_crop=1,
                               on_bad_sample="raise")

    @torch.no_grad()
    def predict(self, videos: Sequence[str | os.PathLike], audios: Sequence[str | os.PathLike | None] | None = None,
                batch_size: int = 8, num_workers: int = 0, progress: bool | None = False) -> list[Prediction]:
        """Scores for each video (with its wav, or its own audio track where ``audios`` is None).

        ``progress``: a bar counting videos on stderr (None: only when stderr is a terminal).
        """
        videos = [os.fspath(v) for v in videos]
        audios = [None] * len(videos) if audios is None else list(audios)
        if len(audios) != len(videos):
            raise ConfigError(f"{len(videos)} videos but {len(audios)} audio files")
        from hicmae.training.metrics import ViewMerger

        merger = ViewMerger(self.task)
        dataset = self._dataset(videos, audios)
        views_done = 0
        with progress_bar(len(videos), "predict", "video", progress) as bar:
            for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
                out = self.model(video=batch["video"].to(self.device), audio=batch["audio"].to(self.device))
                merger.update(batch["index"], batch["view"], out.float().cpu(), torch.zeros(len(out)))
                # Views come clip by clip (index = clip * num_views + view): count the clips now complete.
                views_done += len(out)
                bar.update(views_done // dataset.num_views - bar.n)
        merged = merger.compute()["scores"]  # one row per clip, in input order
        return [Prediction(video=v, audio=None if a is None else os.fspath(a), names=self.names,
                           scores=[round(float(x), 6) for x in row],
                           label=self.names[int(row.argmax())] if self.task == "classification" else None)
                for v, a, row in zip(videos, audios, merged)]
