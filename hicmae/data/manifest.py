"""Manifests: which clips a dataset holds and their labels.

Two formats are read:

* **CSV with a header** (ours). Columns: ``video`` (a video file or a folder of jpg/png frames,
  required), ``audio`` (a wav; empty or absent = the video's own audio track), ``label`` (a class name
  or index; several labels for multi-label tasks joined by ``;``), or, for regression, one numeric
  column per dimension (named by the user, e.g. ``arousal,valence,dominance``; by default every
  column that is not one of the known ones), and optionally ``start``/``end`` (seconds, to use part
  of a file), ``fold`` (an integer, for k-fold protocols) and ``group`` (rows whose predictions are
  averaged into one and scored once, e.g. the clips of one AVCAffe task video). Relative paths resolve against ``root``
  (default: the manifest's folder).
* **The original HiCMAE lists** (no header, space separated): ``<frames or video> <wav> <label ...>``
  for fine-tuning and ``<video> <label>`` for pretraining (then the video's own audio track is used).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hicmae.errors import DataError

KNOWN_COLUMNS = ("video", "audio", "label", "start", "end", "fold", "group")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".m4a", ".aac", ".mp3")
TASKS = ("pretrain", "classification", "multilabel", "regression")


@dataclass
class Row:
    video: str
    audio: str | None = None
    labels: list[str] = field(default_factory=list)  # raw label text: one value, or one per target column
    start: float | None = None
    end: float | None = None
    fold: int | None = None
    group: str | None = None  # rows scored together at test time (AVCAffe: the clips of one task video)
    line: int = 0  # 1-based line in the manifest file, for error messages


@dataclass
class Manifest:
    path: str
    rows: list[Row]
    label_columns: list[str]  # ["label"], the regression columns, or [] when there are no labels

    def __len__(self) -> int:
        return len(self.rows)

    def select_folds(self, include=None, exclude=None) -> "Manifest":
        """Rows whose ``fold`` is in ``include`` (if given) and not in ``exclude``."""
        if (include is not None or exclude is not None) and any(r.fold is None for r in self.rows):
            raise DataError(self.path, "fold selection asked for, but the manifest has no 'fold' column")
        inc = None if include is None else {int(f) for f in np.atleast_1d(include)}
        exc = set() if exclude is None else {int(f) for f in np.atleast_1d(exclude)}
        rows = [r for r in self.rows if (inc is None or r.fold in inc) and r.fold not in exc]
        if not rows:
            raise DataError(self.path, f"no rows left after fold selection include={include} exclude={exclude}")
        return Manifest(self.path, rows, self.label_columns)


def read_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None,
                  target_columns: list[str] | None = None, option: str | None = None) -> Manifest:
    """Read a manifest (see the module's docstring). ``option`` names the setting ``path`` came from
    (e.g. ``data.val_manifest``), for the error when there is no such file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        if option:  # "data.val_manifest: val.csv does not exist (relative to /home/me)"
            problem = "is a folder, not a manifest file" if os.path.isdir(path) else "does not exist"
            raise DataError(path, problem + where, option=option)
        problem = "expected a manifest file, found a folder" if os.path.isdir(path) else "manifest does not exist"
        raise DataError(path, problem + where)
    root = os.fspath(root) if root is not None else str(Path(path).resolve().parent)
    with open(path, newline="", encoding="utf-8") as f:
        lines = f.read().splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise DataError(path, "manifest is empty")
    header = [c.strip().lower() for c in first.split(",")]
    if "," in first and ("video" in header or "audio" in header or "label" in header):
        manifest = _read_csv(path, lines, target_columns)
    else:
        manifest = _read_list(path, lines)
    for row in manifest.rows:
        row.video = _resolve(root, row.video)
        row.audio = _resolve(root, row.audio) if row.audio else None
    if not manifest.rows:
        raise DataError(path, "manifest has a header but no rows")
    return manifest


def _resolve(root: str, p: str) -> str:
    p = os.path.expanduser(p.strip())
    return p if os.path.isabs(p) else os.path.normpath(os.path.join(root, p))


def _read_csv(path: str, lines: list[str], target_columns: list[str] | None) -> Manifest:
    reader = csv.reader(lines)
    header = [c.strip() for c in next(reader)]
    lower = [c.lower() for c in header]
    if "video" not in lower:
        raise DataError(path, f"missing column 'video' (header is {','.join(header)})")
    col = {name: i for i, name in enumerate(lower)}
    if target_columns:
        missing = [c for c in target_columns if c.lower() not in col]
        if missing:
            raise DataError(path, f"missing target column(s) {missing} (header is {','.join(header)})")
        label_columns = list(target_columns)
    elif "label" in col:
        label_columns = ["label"]
    else:
        label_columns = [h for h in header if h.lower() not in KNOWN_COLUMNS]
    label_idx = [col[c.lower()] for c in label_columns]
    rows = []
    for lineno, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise DataError(path, f"line {lineno} has {len(values)} fields, the header has {len(header)}")
        get = lambda name: values[col[name]].strip() if name in col else ""  # noqa: E731
        if not get("video"):
            raise DataError(path, f"line {lineno}: empty 'video' field")
        rows.append(Row(video=get("video"), audio=get("audio") or None,
                        labels=[values[i].strip() for i in label_idx],
                        start=_number(path, lineno, "start", get("start")),
                        end=_number(path, lineno, "end", get("end")),
                        fold=_fold(path, lineno, get("fold")), group=get("group") or None, line=lineno))
    return Manifest(path, rows, label_columns)


def _read_list(path: str, lines: list[str]) -> Manifest:
    rows, width = [], None
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if width is None:
            width = len(parts)
        elif len(parts) != width:
            raise DataError(path, f"line {lineno} has {len(parts)} fields, line 1 has {width}")
        if len(parts) == 1:
            rows.append(Row(video=parts[0], line=lineno))
        elif len(parts) == 2 and not parts[1].lower().endswith(AUDIO_EXTENSIONS):
            rows.append(Row(video=parts[0], labels=[parts[1]], line=lineno))  # pretraining: <video> 0
        else:
            rows.append(Row(video=parts[0], audio=parts[1], labels=parts[2:], line=lineno))
    n_labels = len(rows[0].labels) if rows else 0
    columns = ["label"] if n_labels == 1 else [f"target{i}" for i in range(n_labels)]
    return Manifest(path, rows, columns)


def _number(path, lineno, name, text):
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise DataError(path, f"line {lineno}: '{name}' must be a number of seconds, got {text!r}") from None


def _fold(path, lineno, text):
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise DataError(path, f"line {lineno}: 'fold' must be an integer, got {text!r}") from None


# ---------------------------------------------------------------------------------------------- labels
def class_names_of(manifest: Manifest, class_names: list[str] | None = None) -> list[str]:
    """The class list: ``class_names`` if given; integer labels 0..max; otherwise the sorted label names."""
    if class_names:
        return [str(c) for c in class_names]
    values = {v for r in manifest.rows for lab in r.labels for v in lab.split(";") if v}
    if not values:
        raise DataError(manifest.path, "no labels found (need a 'label' column)")
    if all(_is_int(v) for v in values):
        return [str(i) for i in range(max(int(v) for v in values) + 1)]
    return sorted(values)


def encode_labels(manifest: Manifest, task: str, class_names: list[str] | None = None) -> list:
    """Labels of every row for ``task``: int class index, multi-hot float32, or float32 vector.

    Raises DataError naming the manifest line for unknown classes or non-numeric targets.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if task == "regression":
        out = []
        for r in manifest.rows:
            try:
                out.append(np.asarray([float(v) for v in r.labels], dtype=np.float32))
            except ValueError:
                raise DataError(manifest.path, f"line {r.line}: regression targets must be numbers, got {r.labels}") from None
            if len(r.labels) == 0:
                raise DataError(manifest.path, "no target columns: add one numeric column per dimension")
        return out
    if task == "pretrain" and not any(r.labels for r in manifest.rows):
        return [None] * len(manifest)
    names = class_names or class_names_of(manifest)
    lookup = {n: i for i, n in enumerate(names)}

    def index(r: Row, value: str) -> int:
        if value in lookup:
            return lookup[value]
        if _is_int(value) and 0 <= int(value) < len(names):
            return int(value)
        raise DataError(manifest.path, f"line {r.line}: unknown label {value!r}; known: {', '.join(names)}")

    out = []
    for r in manifest.rows:
        if not r.labels or not r.labels[0]:
            raise DataError(manifest.path, f"line {r.line}: missing label")
        if task == "multilabel":
            hot = np.zeros(len(names), dtype=np.float32)
            for v in r.labels[0].split(";"):
                if v.strip():
                    hot[index(r, v.strip())] = 1.0
            out.append(hot)
        else:
            out.append(index(r, r.labels[0]))
    return out


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False
