"""Emotion predictions for new videos from a classifier release or checkpoint.

A raw video first goes through the face preprocessing of ``hicmae preprocess`` (detection, tracking,
smoothing, aligned square crops: :func:`hicmae.preprocess.track_faces` then
:func:`~hicmae.preprocess.iter_crops`), because HiCMAE was trained and evaluated on face crops, never
on whole frames; ``face_crop=False`` takes inputs that are crops already. Only the frames a view needs
are kept, never the whole video.

The crops then go through the fine-tuning pipeline's test mode (REFERENCE.md 9.4, 12): frames at the
model's stride in ``num_segments`` temporal windows, each with its own aligned audio; per-view scores
are merged as the original does (softmax, then the mean over views). The original's two spatial crops
are identical (frames are resized to a square first), so one crop gives the same result at half the
cost. Unlike the original's test loader, no random gain is applied to the audio: the same video always
gets the same scores.

Each file succeeds or fails on its own: :meth:`Predictor.predict` returns a :class:`Prediction` per
file, with ``error`` set (and no scores) where the file could not be used. Sliding the model over a
long video lives in :mod:`hicmae.timeline`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hicmae.data.media import (NO_SAMPLES, SAMPLE_RATE, AudioSource, VideoClip, check_file, check_video_file,
                               load_audio, open_video)
from hicmae.errors import CheckpointError, ConfigError, DataError, HiCMAEError
from hicmae.progress import progress_bar

log = logging.getLogger(__name__)

TASKS = ("classification", "multilabel", "regression")


@dataclass
class Prediction:
    """One file's merged scores: probabilities (classification), per-label probabilities (multi-label)
    or values (regression), named by ``names``; ``label`` is the top class for classification.
    A file that could not be used has ``error`` (the file and the reason) and no scores.
    ``face_fraction``: the share of frames where a face was found (None without face cropping)."""

    video: str
    audio: str | None
    names: list[str]
    scores: list[float] | None
    label: str | None
    error: str | None = None
    face_fraction: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        scores = None if self.scores is None else dict(zip(self.names, self.scores))
        return {"video": self.video, "audio": self.audio, "label": self.label, "scores": scores,
                "face_fraction": self.face_fraction, "error": self.error}


# ---------------------------------------------------------------------------------------------- media
class MemoryAudio(AudioSource):
    """A whole 16 kHz waveform decoded once. Cutting a range here gives the samples :func:`load_audio`
    gives for that range of a 16 kHz file, but a long video's track is decoded once, not once per view
    or window. ``window(start, end)`` is the same waveform seen as the clip ``[start, end)``."""

    def __init__(self, wave: torch.Tensor, path: str, start: float | None = None, end: float | None = None):
        self.wave, self.path, self.start, self.end = wave, path, start or 0.0, end

    @classmethod
    def load(cls, path: str) -> MemoryAudio:
        return cls(load_audio(path), path)

    def window(self, start: float, end: float) -> MemoryAudio:
        return MemoryAudio(self.wave, self.path, start, end)

    def read(self, start: float, end: float | None) -> torch.Tensor:
        from hicmae.data.sampling import MIN_AUDIO_SAMPLES

        n = len(self.wave)
        if n == 0:
            raise DataError(self.path, NO_SAMPLES)
        lo = min(max(round(start * SAMPLE_RATE), 0), n)
        hi = n if end is None else min(max(round(end * SAMPLE_RATE), lo), n)
        if hi - lo <= MIN_AUDIO_SAMPLES:
            # The fbank of a handful of samples is noise; say why rather than guess.
            raise DataError(self.path, f"the audio ends at {n / SAMPLE_RATE:.2f} s: too little of it in "
                                       f"{start:.2f}-{end if end is not None else n / SAMPLE_RATE:.2f} s")
        return self.wave[lo:hi]

    def duration(self) -> float:
        return len(self.wave) / SAMPLE_RATE


class BufferClip(VideoClip):
    """Frames held in a dict (index -> frame) with the whole file's timestamps: the part of a stream
    that is still needed, seen as a clip by the dataset's ``make``."""

    def __init__(self, path: str, buffer: dict[int, np.ndarray], timestamps: np.ndarray):
        self.path, self.buffer, self._timestamps = path, buffer, timestamps

    def __len__(self) -> int:
        return len(self._timestamps)

    def timestamps(self, indices) -> np.ndarray:
        return self._timestamps[np.asarray(list(indices), dtype=np.int64)]

    def frames(self, indices) -> np.ndarray:
        return np.stack([self.buffer[int(i)] for i in indices])


@dataclass
class FrameStream:
    """A file made ready for the model, read once, in order: ``frames()`` yields ``(index, frame)`` (face
    crops, or the file's own frames); ``timestamps``, ``has_face``, the frame rate and the audio are known
    before the first frame. ``clip``: random access to the frames, where seeking is cheap (no cropping).
    Close what ``frames()`` returns when leaving it early: it holds the decoder open."""

    path: str
    timestamps: np.ndarray
    has_face: np.ndarray
    fps: float
    audio: MemoryAudio
    frames: Callable[[], Iterator[tuple[int, np.ndarray]]]
    clip: VideoClip | None = None

    def __len__(self) -> int:
        return len(self.timestamps)

    def gather(self, indices) -> VideoClip:
        """A clip holding at least the frames ``indices``: reading stops after the last one, and only
        those are kept, so a file's test views never hold the whole file in memory."""
        if self.clip is not None:
            return self.clip
        wanted, buffer = {int(i) for i in indices}, {}
        with contextlib.closing(self.frames()) as frames:
            for i, frame in frames:
                if i in wanted:
                    buffer[i] = frame
                if len(buffer) == len(wanted):
                    break
        if len(buffer) < len(wanted):
            raise DataError(self.path, f"decoded {len(self)} frames the first time but not frame "
                                       f"{min(wanted - set(buffer))} the second")
        return BufferClip(self.path, buffer, self.timestamps)

    def close(self) -> None:
        if self.clip is not None:
            self.clip.close()


def clip_fps(clip: VideoClip) -> float:
    """Frames per second from the clip's own timestamps (the stream's rate, not an assumed 25)."""
    n = len(clip)
    if getattr(clip, "fps", None):
        return float(clip.fps)
    ts = clip.timestamps([0, n - 1])
    if n > 1 and ts[1, 0] > ts[0, 0]:
        return (n - 1) / float(ts[1, 0] - ts[0, 0])
    return 1.0 / max(float(ts[0, 1] - ts[0, 0]), 1e-6)


def _check_and_load_audio(video: str, audio: str | None) -> MemoryAudio:
    """Sniff the video (a text file or a cut-short download is named as such, not as "cannot decode its
    audio"), then decode the audio whole: it is cheap, and a file without any fails before the costly
    face search."""
    if os.path.isdir(video):
        if audio is None:
            raise DataError(video, "a frame folder has no audio track: give its wav with --audio")
    else:
        check_file(video)
        check_video_file(video)
    return MemoryAudio.load(audio if audio is not None else video)


_SETTINGS = ("detector", "min_score", "detect_every", "max_gap")  # FaceSettings; the rest is for the crop


def open_stream(video: str, audio: str | None = None, *, face_crop: bool = True, crop_options: dict | None = None,
                folder_fps: float = 25.0, chunk: int = 64) -> FrameStream:
    """Decode ``video`` (and ``audio``, else the video's own track) for the model. Raises DataError
    naming the file: no audio track and no wav, undecodable, no face found.

    With ``face_crop``, the face is tracked over the whole file first (:func:`hicmae.preprocess.track_faces`)
    and the crops are cut as frames are consumed (:func:`~hicmae.preprocess.iter_crops`); without, the
    file's frames are decoded ``chunk`` at a time (or picked by index through ``clip``).
    """
    sound = _check_and_load_audio(video, audio)
    if not face_crop:
        clip = open_video(video, fps=folder_fps)
        n = len(clip)

        def frames() -> Iterator[tuple[int, np.ndarray]]:
            for a in range(0, n, chunk):
                yield from enumerate(clip.frames(range(a, min(a + chunk, n))), start=a)

        return FrameStream(video, clip.timestamps(range(n)), np.ones(n, dtype=bool), clip_fps(clip), sound, frames,
                           clip=clip)
    from hicmae.preprocess import FaceSettings, iter_crops, track_faces

    options = dict(crop_options or {})
    threads = options.pop("threads", 0)
    track = track_faces(video, FaceSettings(**{k: options.pop(k) for k in _SETTINGS if k in options}), threads)

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        yield from enumerate(iter_crops(track, threads=threads, **options))  # closing this closes the decoder

    return FrameStream(video, track.timestamps, np.asarray(track.has_face, dtype=bool), float(track.fps), sound, frames)


def scores_of(task: str, outputs: torch.Tensor) -> torch.Tensor:
    """Per-view scores as the evaluation merges them (hicmae.training.metrics.ViewMerger): softmax for
    classes, sigmoid for labels, raw values for regression."""
    if task == "classification":
        return outputs.float().softmax(dim=-1)
    if task == "multilabel":
        return outputs.float().sigmoid()
    return outputs.float()


# ---------------------------------------------------------------------------------------------- predictor
class Predictor:
    """Load a classifier once; predict for any number of videos.

    ``model``: anything :func:`hicmae.hub.load_classifier` accepts (a one-file ``.safetensors`` release, a
    release folder, a hub repo id, a ``finetune.py`` ``.ckpt``), or a :class:`HiCMAEClassifier` with its
    ``metadata``. The metadata names the task (classification, multilabel or regression), the outputs
    (``class_names`` or ``target_names``), the frame stride (``sampling_rate``, default 4) and the face
    crop (``preprocessing``). ``face_crop``: find and crop the face first (False for inputs that are
    face crops already, e.g. the output of ``hicmae preprocess``); ``crop_options``: arguments of
    :func:`hicmae.preprocess.crop_faces` (``detector="full"`` for small faces, ``size``, ``margin``...)
    over those the release records.
    """

    def __init__(self, model: str | os.PathLike | nn.Module, device: str = "cpu", num_segments: int = 2, *,
                 face_crop: bool = True, metadata: dict | None = None, crop_options: dict | None = None,
                 folder_fps: float = 25.0):
        if num_segments < 1:
            raise ConfigError(f"num_segments must be at least 1, got {num_segments}")
        if isinstance(model, nn.Module):
            self.model, meta, source = model.to(device).eval(), dict(metadata or {}), "<model>"
        else:
            from hicmae.hub import load_classifier

            self.model, meta = load_classifier(model, device=device)
            source = os.fspath(model)
        if not hasattr(self.model, "num_classes"):
            raise CheckpointError(source, "a pretraining model has no classifier head: fine-tune it first")
        self.device, self.metadata, self.source = device, meta, source
        self.task = meta.get("task") or "classification"
        if self.task not in TASKS:
            raise CheckpointError(source, f"unknown task {self.task!r} in the metadata (expected one of {TASKS})")
        n = self.model.num_classes
        self.names = [str(x) for x in (meta.get("class_names") or meta.get("target_names") or range(n))]
        if len(self.names) != n:
            raise CheckpointError(source, f"metadata names {len(self.names)} outputs but the head has {n}")
        prep = meta.get("preprocessing") or {}
        self.sampling_rate = int(meta.get("sampling_rate") or prep.get("sampling_rate") or 4)
        self.num_segments, self.face_crop, self.folder_fps = num_segments, face_crop, folder_fps
        self.crop_options = {**_crop_options(prep), **(crop_options or {})}
        self.model_frames = self.model.config.num_frames
        self._views = self._view_maker(num_segments)
        self._window = self._view_maker(1)

    # ------------------------------------------------------------------ samples
    @property
    def window_frames(self) -> int:
        """Frames one model input spans: ``num_frames`` at the stride (64 = 2.56 s at 25 fps)."""
        return self.model_frames * self.sampling_rate

    def _view_maker(self, num_segments: int):
        """A one-row test-mode FinetuneDataset: its ``make`` cuts the evaluation views from any clip, so
        prediction and evaluation share one implementation of frame choice, resizing and audio alignment."""
        from hicmae.data.datasets import FinetuneDataset
        from hicmae.data.manifest import Manifest, Row

        regression = self.task == "regression"
        dummy = ["0"] * len(self.names) if regression else [self.names[0]]  # make() needs a label; unused
        manifest = Manifest(path="<predict>", rows=[Row(video="<predict>", audio=None, labels=dummy, line=1)],
                            label_columns=self.names if regression else ["label"])
        # Deterministic scores: without the original's random test-time gain on the audio.
        return FinetuneDataset(manifest, self.model.config, sampling_rate=self.sampling_rate, task=self.task,
                               mode="test", class_names=None if regression else self.names, eval_gain_augment=False,
                               test_num_segment=num_segments, test_num_crop=1, on_bad_sample="raise")

    def open(self, video: str | os.PathLike, audio: str | os.PathLike | None = None) -> FrameStream:
        """The file's frames (face crops unless ``face_crop`` is off) and audio; raises DataError."""
        return open_stream(os.fspath(video), None if audio is None else os.fspath(audio), face_crop=self.face_crop,
                           crop_options=self.crop_options, folder_fps=self.folder_fps)

    def views(self, stream: FrameStream) -> tuple[torch.Tensor, torch.Tensor]:
        """The test views of a whole file: video ``(V, 3, T, H, W)`` and audio ``(V, 1, time, mel)``.

        A view where most frames of its window show no face is left out, as the timeline leaves such a
        window unscored: its crop is a guess of where the face would be, not a face. A file where no view
        shows a face fails (DataError) rather than get a label.
        """
        from hicmae.data.sampling import test_views

        n = len(stream)
        views = test_views(n, self.model_frames, self.sampling_rate, self.num_segments)
        keep = [v for v, rel in enumerate(views) if stream.has_face[rel[0]:rel[0] + self.window_frames].mean() > 0.5]
        if not keep:
            raise DataError(stream.path, f"no face in any of its {len(views)} evaluation windows (a face on "
                                         f"{stream.has_face.mean():.0%} of its frames): see where with --timeline")
        clip = stream.gather(np.concatenate([views[v] for v in keep]))
        samples = [self._views.make(v, clip, 0, n, stream.audio, seed=0) for v in keep]
        return torch.stack([s["video"] for s in samples]), torch.stack([s["audio"] for s in samples])

    def window(self, clip: VideoClip, audio: MemoryAudio, first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One model input from frames ``[first, first + count)`` of ``clip`` (``count`` up to
        :attr:`window_frames`) and the audio of their time span, cut as the evaluation cuts a clip."""
        times = clip.timestamps([first, first + count - 1])
        sample = self._window.make(0, clip, first, count, audio.window(float(times[0, 0]), float(times[1, 1])), seed=0)
        return sample["video"], sample["audio"]

    @torch.inference_mode()
    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Per-input scores (see :func:`scores_of`) for a batch of inputs, on the CPU."""
        out = self.model(video=video.to(self.device), audio=audio.to(self.device))
        return scores_of(self.task, out.cpu())

    # ------------------------------------------------------------------ whole files
    def predict(self, videos: Sequence[str | os.PathLike], audios: Sequence[str | os.PathLike | None] | None = None,
                batch_size: int = 8, num_workers: int = 0, progress: bool | None = False) -> list[Prediction]:
        """One :class:`Prediction` per video, in order (with its wav, or its own track where ``audios`` is
        None or has None). A file that cannot be used gets ``error`` and the others go on.

        ``batch_size``: views per forward pass, across files. ``num_workers``: processes that decode and
        crop files while the model runs. ``progress``: a bar counting files on stderr (None: only when
        stderr is a terminal).
        """
        videos = [os.fspath(v) for v in videos]
        audios = [None] * len(videos) if audios is None else [None if a is None else os.fspath(a) for a in audios]
        if len(audios) != len(videos):
            raise ConfigError(f"{len(videos)} videos but {len(audios)} audio files")
        results: list[Prediction | None] = [None] * len(videos)
        batch = _ViewBatch(batch_size)
        loader = DataLoader(_FileViews(self, videos, audios), batch_size=None, num_workers=num_workers)
        with progress_bar(len(videos), "predict", "video", progress) as bar:
            for item in loader:
                i = item["i"]
                if item["error"] is not None:
                    log.debug("%s", item["error"])
                    results[i] = self._result(videos[i], audios[i], None, item)
                    bar.update(1)
                    continue
                batch.add(i, item)
                for j, scores in batch.flush(self.forward, full_only=True):
                    results[j] = self._result(videos[j], audios[j], scores, batch.meta.pop(j))
                    bar.update(1)
            for j, scores in batch.flush(self.forward, full_only=False):
                results[j] = self._result(videos[j], audios[j], scores, batch.meta.pop(j))
                bar.update(1)
        return results

    def _result(self, video: str, audio: str | None, scores: torch.Tensor | None, item: dict) -> Prediction:
        if scores is None:
            return Prediction(video, audio, self.names, None, None, item["error"], item.get("face_fraction"))
        row = scores.mean(0)  # merge the views: mean of per-view probabilities (or values)
        label = self.names[int(row.argmax())] if self.task == "classification" else None
        return Prediction(video, audio, self.names, [round(float(x), 6) for x in row], label,
                          face_fraction=item.get("face_fraction"))

    def timeline(self, video: str | os.PathLike, audio: str | os.PathLike | None = None, hop: float = 1.0,
                 batch_size: int = 8, progress: bool | None = False):
        """Scores of every 2.56 s window of a long video; see :func:`hicmae.timeline.compute_timeline`."""
        from hicmae.timeline import compute_timeline

        return compute_timeline(self, video, audio, hop=hop, batch_size=batch_size, progress=progress)


def write_predictions_csv(predictions: Sequence[Prediction], path: str | os.PathLike) -> None:
    """One row per file: video, audio, label, face_fraction, one column per output (the union of the
    files' names, in order), error; a failed file has empty scores and its error."""
    import csv

    names: list[str] = []
    for p in predictions:
        names += [n for n in p.names if n not in names]
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "audio", "label", "face_fraction", *names, "error"])
        for p in predictions:
            scores = dict(zip(p.names, p.scores or []))
            writer.writerow([p.video, p.audio or "", p.label or "", "" if p.face_fraction is None else p.face_fraction,
                             *(f"{scores[n]:.6f}" if n in scores else "" for n in names), p.error or ""])


def _crop_options(preprocessing: dict) -> dict:
    """The face crop the model was trained on (size, margin), as recorded in its release."""
    options = {}
    size = preprocessing.get("size") or preprocessing.get("face_size") or preprocessing.get("crop_size")
    if size:
        options["size"] = int(size)
    if preprocessing.get("margin") is not None:
        options["margin"] = float(preprocessing["margin"])
    return options


class _FileViews(Dataset):
    """The test views of each file, or the reason it has none: a failure is an item, not an exception,
    so one bad file (possibly in a worker process) never stops the others."""

    def __init__(self, predictor: Predictor, videos: list[str], audios: list[str | None]):
        self.predictor, self.videos, self.audios = predictor, videos, audios

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict:
        item = {"i": i, "error": None, "face_fraction": None}
        try:
            stream = self.predictor.open(self.videos[i], self.audios[i])
            try:
                if self.predictor.face_crop:
                    item["face_fraction"] = round(float(stream.has_face.mean()), 4)
                item["video"], item["audio"] = self.predictor.views(stream)
            finally:
                stream.close()
        except HiCMAEError as err:
            item["error"] = str(err)
        except Exception as exc:  # a decoder or detector failing in a way it was not expected to
            log.debug("%s failed", self.videos[i], exc_info=True)
            item["error"] = f"{self.videos[i]}: unexpected {type(exc).__name__} ({str(exc)[:200]})"
        return item

    def __getstate__(self):
        # Worker processes need the view makers and options, not the model's weights.
        state = dict(self.__dict__)
        state["predictor"] = _without_model(self.predictor)
        return state


def _without_model(predictor: Predictor) -> Predictor:
    copy = object.__new__(Predictor)
    copy.__dict__.update({k: v for k, v in predictor.__dict__.items() if k != "model"})
    copy.model = None
    return copy


class _ViewBatch:
    """Views of several files gathered into forward passes of ``size`` inputs; yields each file's
    per-view scores once all of its views have been through the model."""

    def __init__(self, size: int):
        self.size = max(int(size), 1)
        self.queue: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (file, video view, audio view)
        self.pending: dict[int, list[torch.Tensor]] = {}
        self.expected: dict[int, int] = {}
        self.meta: dict[int, dict] = {}

    def add(self, i: int, item: dict) -> None:
        video, audio = item.pop("video"), item.pop("audio")
        self.meta[i], self.expected[i], self.pending[i] = item, len(video), []
        self.queue.extend((i, v, a) for v, a in zip(video, audio))

    def flush(self, forward, full_only: bool):
        while self.queue and (len(self.queue) >= self.size or not full_only):
            part, self.queue = self.queue[:self.size], self.queue[self.size:]
            scores = forward(torch.stack([v for _, v, _ in part]), torch.stack([a for _, _, a in part]))
            for (i, _, _), s in zip(part, scores):
                self.pending[i].append(s)
                if len(self.pending[i]) == self.expected[i]:
                    del self.expected[i]
                    yield i, torch.stack(self.pending.pop(i))
