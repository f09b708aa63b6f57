"""Emotions over time in a long video: the model slid over 2.56 s windows, and the report a person reads.

A window is what the model was trained on: ``num_frames`` frames at the model's stride, at the
stream's own frame rate (16 x 4 frames = 2.56 s at 25 fps, 2.13 s at 30 fps), with the audio of the
same time span. Windows start every ``hop`` seconds (rounded to whole frames) while a whole window
fits; a video shorter than one window gets one window, padded as the evaluation pads short clips.

A window where most frames show no face gets no scores: the face crop there is a guess of where the
face would be, and the model's output on it would be a guess too. It is marked ``no face`` instead.
A window past the end of the audio track is marked ``no audio`` the same way.

:func:`write_timeline` writes ``<stem>.csv`` (one row per window), ``<stem>.png`` (the scores over
time, windows without a face shaded) and ``<stem>.html`` (one self-contained page: the plot and a face
thumbnail of the window where each emotion peaks, embedded as base64; nothing loaded from elsewhere).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hicmae.atomic import atomic_path
from hicmae.errors import ConfigError, DataError
from hicmae.inference import BufferClip
from hicmae.progress import progress_bar

log = logging.getLogger(__name__)

NO_FACE, NO_AUDIO = "no face", "no audio"
THUMBNAIL_SIZE = 128


@dataclass
class Peak:
    """The window where one emotion (or dimension) scores highest, with a face thumbnail (JPEG)."""

    name: str
    window: int
    start: float
    end: float
    score: float
    jpeg: bytes = field(repr=False)


@dataclass
class Timeline:
    """Per-window scores of one video. ``scores`` is ``(windows, outputs)`` with NaN rows where
    ``notes`` says why there is no score (``no face``, ``no audio``); ``has_face`` is per window."""

    video: str
    audio: str | None
    task: str
    names: list[str]
    fps: float
    hop: float
    window_seconds: float
    starts: np.ndarray
    ends: np.ndarray
    has_face: np.ndarray
    scores: np.ndarray
    notes: list[str]
    peaks: list[Peak]
    model: str = ""

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def stem(self) -> str:
        return Path(self.video.rstrip("/\\")).stem

    def rows(self) -> list[dict]:
        """One dict per window: start, end, has_face, each output's score (None where not scored), note."""
        out = []
        for k in range(len(self)):
            row = {"start": round(float(self.starts[k]), 3), "end": round(float(self.ends[k]), 3),
                   "has_face": bool(self.has_face[k])}
            scored = not self.notes[k]
            row.update({n: round(float(s), 6) if scored else None for n, s in zip(self.names, self.scores[k])})
            row["note"] = self.notes[k]
            out.append(row)
        return out


# ---------------------------------------------------------------------------------------------- computing
def window_firsts(num_frames: int, span: int, hop_frames: int) -> np.ndarray:
    """First frame of each window: every ``hop_frames`` while a whole ``span`` fits; one window (from
    frame 0) for a video shorter than a span."""
    if hop_frames < 1:
        raise ConfigError(f"the hop must be at least one frame, got {hop_frames}")
    if num_frames <= span:
        return np.zeros(1, dtype=np.int64)
    return np.arange(0, num_frames - span + 1, hop_frames, dtype=np.int64)


def window_has_face(has_face: np.ndarray, firsts: np.ndarray, span: int) -> np.ndarray:
    """True where more than half of the window's frames show a face."""
    return np.array([has_face[f:f + span].mean() > 0.5 for f in firsts], dtype=bool)


def compute_timeline(predictor, video: str | os.PathLike, audio: str | os.PathLike | None = None, *,
                     hop: float = 1.0, batch_size: int = 8, progress: bool | None = False) -> Timeline:
    """Slide ``predictor``'s model over ``video`` in windows every ``hop`` seconds, ``batch_size``
    windows per forward pass. Raises DataError when the file cannot be used at all (see
    :meth:`hicmae.inference.Predictor.open`); single windows without a face or audio are only marked.

    The frames are streamed: memory holds one window of frames and one batch, not the video, so an
    hour-long video takes no more memory than a minute-long one (only its 16 kHz audio is held whole).
    """
    if hop <= 0:
        raise ConfigError(f"--hop must be positive, got {hop}")
    video = os.fspath(video)
    stream = predictor.open(video, audio)
    try:
        return _compute(predictor, stream, video, audio, hop, batch_size, progress)
    finally:
        stream.close()


def _compute(predictor, stream, video, audio, hop, batch_size, progress) -> Timeline:
    """The windows of an opened ``stream``: which have a face, their scores, and each output's peak."""
    n, span = len(stream), predictor.window_frames
    hop_frames = max(int(round(hop * stream.fps)), 1)
    firsts = window_firsts(n, span, hop_frames)
    lasts = np.minimum(firsts + span, n) - 1
    starts, ends = stream.timestamps[firsts, 0], stream.timestamps[lasts, 1]
    faces = window_has_face(stream.has_face, firsts, span)
    notes = ["" if f else NO_FACE for f in faces]
    scores = np.full((len(firsts), len(predictor.names)), np.nan)
    with progress_bar(len(firsts), f"timeline {Path(video).name}", "window", progress) as bar:
        bar.update(len(firsts) - notes.count(""))  # windows without a face are done already
        scorer = _Scorer(predictor, scores, notes, batch_size, bar)
        _slide(predictor, stream, firsts, lasts, [k for k, note in enumerate(notes) if not note], scorer)
        scorer.flush()
    if notes.count(NO_AUDIO):
        log.warning("%s: %d windows lie past the end of the audio and have no scores", video, notes.count(NO_AUDIO))
    peaks = [Peak(name, k, float(starts[k]), float(ends[k]), float(scores[k, j]), jpeg)
             for j, (name, (k, jpeg)) in enumerate(zip(predictor.names, scorer.best)) if k is not None]
    return Timeline(video=video, audio=None if audio is None else os.fspath(audio), task=predictor.task,
                    names=list(predictor.names), fps=stream.fps, hop=hop_frames / stream.fps,
                    window_seconds=span / stream.fps, starts=starts, ends=ends, has_face=faces, scores=scores,
                    notes=notes, peaks=peaks, model=predictor.source)


def _slide(predictor, stream, firsts, lasts, todo: list[int], scorer: _Scorer) -> None:
    """Read the stream once; as soon as a window's last frame has arrived, cut its input and hand it to
    ``scorer``; drop frames no later window needs; stop reading after the last window to score."""
    buffer: dict[int, np.ndarray] = {}
    clip = BufferClip(stream.path, buffer, stream.timestamps)
    pos, lowest = 0, 0
    if not todo:
        return
    with contextlib.closing(stream.frames()) as frames:
        for i, frame in frames:
            buffer[i] = frame
            while pos < len(todo) and lasts[todo[pos]] <= i:
                k = todo[pos]
                first, count = int(firsts[k]), int(lasts[k] - firsts[k] + 1)
                try:
                    inputs = predictor.window(clip, stream.audio, first, count)
                except DataError as err:
                    log.debug("window %d: %s", k, err)
                    scorer.skip(k)
                else:
                    scorer.add(k, *inputs, buffer[first + count // 2])
                pos += 1
            if pos == len(todo):
                return
            keep_from = int(firsts[todo[pos]])
            while lowest < keep_from:
                buffer.pop(lowest, None)
                lowest += 1


class _Scorer:
    """Windows batched through the model; keeps, per output, the best window so far and the JPEG of its
    middle frame (encoded only when a window beats the best), so peaks need no second pass."""

    def __init__(self, predictor, scores: np.ndarray, notes: list[str], batch_size: int, bar):
        self.predictor, self.scores, self.notes, self.bar = predictor, scores, notes, bar
        self.size = max(int(batch_size), 1)
        self.batch: list[tuple[int, torch.Tensor, torch.Tensor, np.ndarray]] = []
        self.best: list[tuple[int | None, bytes]] = [(None, b"")] * scores.shape[1]

    def skip(self, k: int) -> None:
        self.notes[k] = NO_AUDIO
        self.bar.update(1)

    def add(self, k: int, video: torch.Tensor, audio: torch.Tensor, middle: np.ndarray) -> None:
        self.batch.append((k, video, audio, middle))
        if len(self.batch) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        out = self.predictor.forward(torch.stack([b[1] for b in self.batch]), torch.stack([b[2] for b in self.batch]))
        for (k, _, _, middle), row in zip(self.batch, out.numpy()):
            self.scores[k] = row
            jpeg = None
            for j, value in enumerate(row):
                best = self.best[j][0]
                if best is None or value > self.scores[best, j]:
                    jpeg = jpeg or _jpeg(middle)
                    self.best[j] = (k, jpeg)
        self.bar.update(len(self.batch))
        self.batch = []


def _jpeg(frame: np.ndarray, size: int = THUMBNAIL_SIZE) -> bytes:
    from PIL import Image

    image = Image.fromarray(frame)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def run_timelines(predictor, videos, audios, out_dir: str | os.PathLike, *, hop: float = 1.0, batch_size: int = 8,
                  progress: bool | None = False) -> list[dict]:
    """The timeline of each video written into ``out_dir``; one summary dict per video (video, audio,
    windows, no_face, csv, png, html, error). A file that cannot be used gets ``error`` and the others
    go on. Raises ConfigError before any work when two videos would write the same files."""
    videos = [os.fspath(v) for v in videos]
    audios = [None] * len(videos) if audios is None else [None if a is None else os.fspath(a) for a in audios]
    if len(audios) != len(videos):
        raise ConfigError(f"{len(videos)} videos but {len(audios)} audio files")
    if hop <= 0:
        raise ConfigError(f"--hop must be positive, got {hop}")
    stems = [Path(v.rstrip("/\\")).stem for v in videos]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ConfigError(f"videos with the same name ({', '.join(clashes)}) would write the same timeline files; "
                          "run them into different --out folders")
    results = []
    for video, audio in zip(videos, audios):
        summary = {"video": video, "audio": audio, "windows": None, "no_face": None, "csv": None, "png": None,
                   "html": None, "error": None}
        try:
            timeline = compute_timeline(predictor, video, audio, hop=hop, batch_size=batch_size, progress=progress)
            paths = write_timeline(timeline, out_dir)
            summary.update(windows=len(timeline), no_face=timeline.notes.count(NO_FACE),
                           **{k: str(p) for k, p in paths.items()})
        except DataError as err:
            summary["error"] = str(err)
        except Exception as exc:  # a decoder or detector failing in a way it was not expected to
            log.debug("%s failed", video, exc_info=True)
            summary["error"] = f"{video}: unexpected {type(exc).__name__} ({str(exc)[:200]})"
        results.append(summary)
    return results


# ---------------------------------------------------------------------------------------------- writing
def write_timeline(timeline: Timeline, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``<stem>.csv``, ``<stem>.png`` and ``<stem>.html`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_png(timeline)
    paths = {"csv": out / f"{timeline.stem}.csv", "png": out / f"{timeline.stem}.png",
             "html": out / f"{timeline.stem}.html"}
    _write_atomic(paths["csv"], csv_text(timeline).encode())
    _write_atomic(paths["png"], png)
    _write_atomic(paths["html"], html_page(timeline, png).encode())
    return paths


def _write_atomic(path: Path, data: bytes) -> None:
    """A reader (or a browser refreshing the page) never sees a half-written file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def csv_text(timeline: Timeline) -> str:
    """Columns start, end (s), has_face, one per output (empty where not scored), note."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["start", "end", "has_face", *timeline.names, "note"])
    for row in timeline.rows():
        values = [row[n] for n in timeline.names]
        writer.writerow([f"{row['start']:.3f}", f"{row['end']:.3f}", int(row["has_face"]),
                         *("" if v is None else f"{v:.6f}" for v in values), row["note"]])
    return buffer.getvalue()


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True in ``mask``."""
    runs, start = [], None
    for k, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = k
        elif not m and start is not None:
            runs.append((start, k - 1))
            start = None
    return runs


def plot_png(timeline: Timeline) -> bytes:
    """The scores over time (each window drawn at its centre), windows without a face shaded grey."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    centres = (timeline.starts + timeline.ends) / 2
    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    ax = fig.subplots()
    marker = "." if len(timeline) <= 300 else None
    for j, name in enumerate(timeline.names):
        ax.plot(centres, timeline.scores[:, j], marker=marker, linewidth=1.5, label=name)
    # Each window owns the stretch around its centre (hop / 2 either side); the first and last reach the
    # ends of the plot.
    lo, hi, half, last = float(timeline.starts.min()), float(timeline.ends.max()), timeline.hop / 2, len(timeline) - 1
    for i, (a, b) in enumerate(_runs(~timeline.has_face)):
        ax.axvspan(lo if a == 0 else centres[a] - half, hi if b == last else centres[b] + half, color="0.85",
                   zorder=0, label=NO_FACE if i == 0 else None)
    ax.set_xlim(lo, hi)
    if timeline.task != "regression":
        ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("value" if timeline.task == "regression" else "probability")
    ax.set_title(f"{Path(timeline.video).name}: {timeline.window_seconds:.2f} s windows every {timeline.hop:.2f} s")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
img.plot{max-width:100%;border:1px solid #ddd}.peaks{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;text-align:center;font-size:.9em}figure img{width:128px;height:128px;object-fit:cover;
border-radius:4px}table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
.note{color:#666;font-size:.9em}"""


def _data_uri(kind: str, data: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def html_page(timeline: Timeline, png: bytes) -> str:
    """One page with everything embedded (plot, thumbnails, styles): it opens offline, from an e-mail,
    and nothing in it reaches the network."""
    e = html.escape
    name = Path(timeline.video).name
    no_face, no_audio = timeline.notes.count(NO_FACE), timeline.notes.count(NO_AUDIO)
    summary = (f"{len(timeline)} window{'' if len(timeline) == 1 else 's'} of {timeline.window_seconds:.2f} s "
               f"every {timeline.hop:.2f} s "
               f"({timeline.fps:.2f} fps), covering {timeline.starts.min():.2f}-{timeline.ends.max():.2f} s; "
               f"{no_face} without a face (shaded in the plot, not scored)")
    if no_audio:
        summary += f", {no_audio} past the end of the audio (not scored)"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(name)}: emotion timeline</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>Emotion timeline: {e(name)}</h1>",
             f"<p>{e(summary)}.</p>", f"<p class='note'>Model: {e(Path(timeline.model).name)} ({e(timeline.task)}: "
             f"{e(', '.join(timeline.names))}).</p>",
             f"<img class='plot' alt='scores over time' src='{_data_uri('image/png', png)}'>",
             "<h2>Where each emotion peaks</h2>", _peaks_html(timeline)]
    if timeline.task == "classification":
        parts += ["<h2>Share of time as the top emotion</h2>", _shares_html(timeline)]
    parts += [f"<p class='note'>Per-window scores: {e(timeline.stem)}.csv. Windows where most frames show no face "
              "are marked, not guessed.</p></body></html>"]
    return "\n".join(parts)


def _peaks_html(timeline: Timeline) -> str:
    if not timeline.peaks:
        return "<p>No window shows a face, so no window was scored.</p>"
    word = "highest " if timeline.task == "regression" else ""
    cards = [f"<figure><img alt='{html.escape(p.name)}' src='{_data_uri('image/jpeg', p.jpeg)}'>"
             f"<figcaption><b>{word}{html.escape(p.name)}</b> {p.score:.3f}<br>{p.start:.2f}-{p.end:.2f} s"
             "</figcaption></figure>" for p in timeline.peaks]
    return "<div class='peaks'>" + "".join(cards) + "</div>"


def _shares_html(timeline: Timeline) -> str:
    scored = np.array([not n for n in timeline.notes])
    if not scored.any():
        return "<p>No window was scored.</p>"
    top = timeline.scores[scored].argmax(axis=1)
    rows = [f"<tr><td>{html.escape(n)}</td><td>{100 * np.mean(top == j):.1f}%</td></tr>"
            for j, n in enumerate(timeline.names)]
    return "<table><tr><th>emotion</th><th>share of scored windows</th></tr>" + "".join(rows) + "</table>"
