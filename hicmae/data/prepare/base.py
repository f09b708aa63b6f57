"""What every dataset builder shares: the layout check, the in-memory result and the one place that writes.

A builder returns a :class:`Prepared`: manifests (file name -> :class:`Clip` rows), the clips it left out
with the reason for each, and notes. :func:`write` puts them under ``OUT_DIR`` atomically:

* ``<manifest>.csv`` with a header (``video,audio,label,fold`` or the regression columns); paths are
  relative to ``OUT_DIR``, so the raw tree and the output folder can move together;
* ``dropped.csv`` (``video,reason``): nothing is left out silently;
* ``prepare.json``: dataset, counts, options, notes and the hicmae version that wrote them.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hicmae.errors import DataError


@dataclass
class Clip:
    """One manifest row. ``label``: a class name, or a list of names (multi-label, joined by ``;``), or a
    list of floats (one per regression column); None for pretraining."""

    video: Path
    audio: Path | None = None
    label: str | list | None = None
    fold: int | None = None
    start: float | None = None
    end: float | None = None
    group: str | None = None  # rows scored together at test time (see hicmae.data.manifest)


@dataclass
class Dropped:
    path: Path
    reason: str


@dataclass
class Prepared:
    manifests: dict[str, list[Clip]]  # e.g. {"crema_d.csv": rows} or {"train.csv": ..., "test.csv": ...}
    label_columns: list[str] = field(default_factory=lambda: ["label"])  # [] for pretraining
    dropped: list[Dropped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Option:
    """A dataset-specific option of ``hicmae prepare DATASET`` (``--name``)."""

    name: str
    help: str
    default: object = None
    choices: Sequence | None = None
    type: Callable = str


@dataclass(frozen=True)
class Builder:
    name: str  # e.g. "crema_d"
    title: str  # e.g. "CREMA-D"
    source: str  # where the data is obtained: the official page, named
    config: str | None  # configs/finetune/<name>.yaml, or the pretraining config
    headline: str  # the paper's headline metric(s), e.g. "UAR / WAR"
    build: Callable[[Path, dict], Prepared]  # (raw_dir, options) -> Prepared
    options: tuple[Option, ...] = ()
    expects: str = ""  # one line: the raw layout, for --help

    def run(self, raw_dir: str | os.PathLike, out_dir: str | os.PathLike, **options) -> "Summary":
        raw = Path(raw_dir)
        if not raw.is_dir():
            raise DataError(raw, f"is not a folder; expected the {self.title} tree as distributed ({self.source})")
        values = {o.name: o.default for o in self.options}
        unknown = set(options) - set(values)
        if unknown:
            raise DataError(None, f"{self.name}: unknown option(s) {sorted(unknown)}; known: {sorted(values)}")
        values.update({k: v for k, v in options.items() if v is not None})
        prepared = self.build(raw, values)
        return write(self, prepared, Path(out_dir), values)


def require(raw_dir: Path, expected: Sequence[str], title: str, source: str) -> None:
    """Raise one :class:`DataError` naming every expected file or folder (relative to ``raw_dir``) that is
    missing, before anything is read."""
    missing = [p for p in expected if not (raw_dir / p).exists()]
    if missing:
        raise DataError(raw_dir, f"is not a complete {title} tree: missing {', '.join(missing)} "
                                 f"(get the dataset from {source})")


def find(raw_dir: Path, pattern: str, title: str, what: str) -> list[Path]:
    """Files under ``raw_dir`` matching ``pattern`` (sorted); a clear error when there are none."""
    found = sorted(raw_dir.glob(pattern))
    if not found:
        raise DataError(raw_dir, f"has no {what} ({pattern}); is this the {title} tree?")
    return found


@dataclass
class Summary:
    out_dir: Path
    counts: dict[str, int]  # manifest file -> rows
    dropped: Counter  # reason -> clips
    notes: list[str]

    def lines(self) -> list[str]:
        out = [f"{self.out_dir / name}: {n} clips" for name, n in self.counts.items()]
        out += [f"left out {n} clips: {reason}" for reason, n in self.dropped.items()]
        if self.dropped:
            out.append(f"the left-out clips are listed in {self.out_dir / 'dropped.csv'}")
        return out + self.notes


def write(builder: Builder, prepared: Prepared, out_dir: Path, options: dict) -> Summary:
    from hicmae import __version__
    from hicmae.atomic import atomic_path

    if not any(prepared.manifests.values()):
        raise DataError(out_dir, f"{builder.title}: no clips to write")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir.resolve()
    rel = lambda p: os.path.relpath(Path(p).resolve(), base)  # noqa: E731
    for name, clips in prepared.manifests.items():
        with atomic_path(out_dir / name) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            _write_rows(csv.writer(f), clips, prepared.label_columns, rel)
    with atomic_path(out_dir / "dropped.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video", "reason"])
        w.writerows([rel(d.path), d.reason] for d in prepared.dropped)
    dropped = Counter(d.reason for d in prepared.dropped)
    counts = {name: len(clips) for name, clips in prepared.manifests.items()}
    record = {"dataset": builder.name, "title": builder.title, "source": builder.source, "config": builder.config,
              "options": options, "manifests": counts, "dropped": dict(dropped), "notes": prepared.notes,
              "hicmae": __version__}
    with atomic_path(out_dir / "prepare.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return Summary(out_dir, counts, dropped, prepared.notes)


def _write_rows(w, clips: list[Clip], label_columns: list[str], rel) -> None:
    has = lambda attr: any(getattr(c, attr) is not None for c in clips)  # noqa: E731
    extra = [a for a in ("start", "end", "fold", "group") if has(a)]
    w.writerow(["video", "audio", *label_columns, *extra])
    for c in clips:
        if not label_columns:
            labels = []
        elif isinstance(c.label, list) and label_columns == ["label"]:
            labels = [";".join(c.label)]  # multi-label
        elif isinstance(c.label, list):
            labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in c.label]
        else:
            labels = [c.label]
        w.writerow([rel(c.video), rel(c.audio) if c.audio else "", *labels,
                    *("" if getattr(c, a) is None else getattr(c, a) for a in extra)])


# ---------------------------------------------------------------------------------------------- listing
def brief(items: Sequence, limit: int = 8) -> str:
    """``a, b, c and 12 more``: a list short enough for a one-line error."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


# ---------------------------------------------------------------------------------------------- official folds
def folds_from_lists(lists: dict[int, tuple[dict, dict]], where: Callable[[int, str], Path]) -> tuple[dict, dict]:
    """Clip -> label and clip -> test fold, from official per-fold lists ``{k: (test, train)}`` (each a dict
    clip -> label). One manifest with a ``fold`` column reproduces such lists only when the test lists do
    not overlap, every train list is exactly the other folds' test clips, and a clip has one label
    everywhere: each of these is checked, and a DataError names the file (``where(k, "test" | "train")``)."""
    labels: dict = {}
    folds: dict = {}
    for k, (test, train) in lists.items():
        for part, listed in (("test", test), ("train", train)):
            for clip, label in listed.items():
                if labels.setdefault(clip, label) != label:
                    raise DataError(where(k, part), f"gives clip {clip} the label {label}, another list {labels[clip]}")
        for clip in test:
            if clip in folds:
                raise DataError(where(k, "test"), f"lists clip {clip}, which {where(folds[clip], 'test').name} of fold "
                                                  f"{folds[clip]} lists too: the test lists must not overlap")
            folds[clip] = k
    for k, (_, train) in lists.items():
        expected = {c for c, f in folds.items() if f != k}
        extra, lacking = sorted(set(train) - expected), sorted(expected - set(train))
        if extra or lacking:
            raise DataError(where(k, "train"), "is not the other folds' test clips"
                            + (f"; it lists {brief(extra, 5)}, in no other fold's test list" if extra else "")
                            + (f"; it lacks {brief(lacking, 5)}" if lacking else "")
                            + ": one fold column cannot reproduce it")
    return labels, folds


# ---------------------------------------------------------------------------------------------- probing
# Some builders must look inside media files (is there an audio track; do the audio and video last as long
# as each other?). Decoding a million clips would take days, so they read the containers' own metadata
# with PyAV (milliseconds a file), in parallel processes for large sets.

@dataclass(frozen=True)
class MediaInfo:
    """What a media file's container says about it, read without decoding a frame."""

    exists: bool = True
    error: str | None = None  # why the container could not be opened (then the durations are None)
    video_seconds: float | None = None  # frames / frame rate of the first video stream; None: no video stream
    audio_seconds: float | None = None  # length of the first audio stream; None: no audio stream


def probe(path: str | os.PathLike) -> MediaInfo:
    """The :class:`MediaInfo` of ``path`` (``av.open`` reads only the headers and the index)."""
    import av

    path = os.fspath(path)
    if not os.path.isfile(path):
        return MediaInfo(exists=False)
    try:
        with av.open(path) as container:
            return MediaInfo(video_seconds=_video_seconds(container), audio_seconds=_audio_seconds(container))
    except Exception as exc:  # PyAV's errors (FFmpegError: ValueError / OSError subclasses) and anything odd
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return MediaInfo(error=text.replace(f": '{path}'", "")[:200])


def _video_seconds(container) -> float | None:
    if not container.streams.video:
        return None
    s = container.streams.video[0]
    rate = s.average_rate or s.guessed_rate
    if s.frames and rate:  # the frame count of the index, as decord's len() (what the original measured)
        return float(s.frames / rate)
    if s.duration and s.time_base:
        return float(s.duration * s.time_base)
    return container.duration / 1e6 if container.duration else 0.0


def _audio_seconds(container) -> float | None:
    if not container.streams.audio:
        return None
    s = container.streams.audio[0]
    if s.duration and s.time_base:
        return float(s.duration * s.time_base)
    return container.duration / 1e6 if container.duration else 0.0


def probe_many(paths: Sequence, workers: int = 1, desc: str = "probe", progress: bool | None = None) -> list[MediaInfo]:
    """:func:`probe` every path, in ``workers`` processes (0: one per CPU core), with a progress bar on stderr
    (``progress`` None: only when stderr is a terminal). Results come in the order of ``paths``."""
    from hicmae.progress import progress_bar

    paths = [os.fspath(p) for p in paths]
    workers = (os.cpu_count() or 1) if workers == 0 else workers
    if workers < 0:
        raise DataError(None, f"--workers must be 0 (one per CPU core) or more, got {workers}")
    if workers == 1 or len(paths) < 2:
        out = []
        with progress_bar(len(paths), desc, "file", progress) as bar:
            for p in paths:
                out.append(probe(p))
                bar.update(1)
        return out
    return _probe_in_pool(paths, min(workers, len(paths)), desc, progress)


def _probe_in_pool(paths: list[str], workers: int, desc: str, progress: bool | None) -> list[MediaInfo]:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from hicmae.progress import progress_bar

    chunk = max(1, min(512, len(paths) // (workers * 8)))
    out = []
    try:
        with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
            results = pool.map(probe, paths, chunksize=chunk)  # submits every chunk now, before the bar's thread
            with progress_bar(len(paths), desc, "file", progress) as bar:
                for info in results:
                    out.append(info)
                    bar.update(1)
    except BrokenProcessPool:
        raise DataError(None, f"a worker process died while reading media headers (after {len(out)} of "
                              f"{len(paths)} files, near {paths[len(out)]}); rerun with --workers 1 to find the "
                              "file that crashes the decoder library") from None
    return out


def _pool_context():
    """fork while no decoder library is loaded here (cheap, and no decoder thread can hold a lock that the
    child would inherit), else spawn; macOS always spawns (its system libraries do not survive a fork)."""
    import multiprocessing
    import sys

    if sys.platform.startswith("linux") and not any(m in sys.modules for m in ("av", "decord", "cv2")):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")
