"""DFEW: the release of its authors -> ``dfew.csv`` with the official 5 folds, 7 classes.

Layout (the DFEW release, after signing its licence)::

    Clip/original/1.mp4 ... 16372.mp4                      the movie clips, with their sound
    Clip/clip_224x224/00001/00001_00001.jpg               the dataset's face frames (only for --video frames)
    EmoLabel_DataSplit/train(single-labeled)/set_1.csv    "video_name,label", e.g. "1,2"; set_1 .. set_5
    EmoLabel_DataSplit/test(single-labeled)/set_1.csv

(Clips named with leading zeros, ``00001.mp4``, are found too.)

Labels: the split files' codes 1..7 -> happy, sad, neutral, angry, surprise, disgust, fear (DFEW's own
order; the original family, MAE-DFER and HiCMAE, uses the code minus one as the class index, so
``data.class_names`` must list them in this order). The single-labelled set holds 11,697 clips.

Folds: one manifest; ``fold`` = k for the clips of ``test(single-labeled)/set_k.csv``; every
``train(single-labeled)/set_k.csv`` must be exactly the other clips (checked), so training on fold != k
reproduces it. The original repository ships no DFEW split files (REFERENCE.md section 10); its code
reads ``train.csv``, ``val.csv`` and ``test.csv`` per fold, with ``val.csv`` the test fold, as in MAE-DFER.

Video: ``--video clips`` (default) lists ``Clip/original/<n>.mp4`` with its own audio track (empty
``audio`` column); ``--video frames`` lists the face-frame folders ``Clip/clip_224x224/<nnnnn>`` with the
clip's mp4 as the audio. Clips without a usable audio track (none expected; an audio-visual model needs
one) are listed in ``dropped.csv``, found by reading each clip's container.
"""

from __future__ import annotations

import csv
from pathlib import Path

from hicmae.data.prepare.base import (Builder, Clip, Dropped, Option, Prepared, brief, folds_from_lists,
                                     probe_many, require)
from hicmae.errors import DataError

TITLE = "DFEW"
SOURCE = "the DFEW page of its authors, dfew-dataset.github.io, after signing its licence agreement"
CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")  # codes 1..7
FOLDS = range(1, 6)
SINGLE_CLIPS = 11697
SPLITS = "EmoLabel_DataSplit"
VIDEO_SUFFIXES = (".mp4", ".avi")
NO_AUDIO = "no audio track"
EMPTY_AUDIO = "its audio track is empty"
BAD_CLIP = "the clip cannot be opened (corrupt or truncated)"


def split_file(kind: str, k: int) -> str:
    return f"{SPLITS}/{kind}(single-labeled)/set_{k}.csv"


def read_set(path: Path) -> dict[int, str]:
    """``set_k.csv`` -> clip number -> class name; the header line ``video_name,label`` is optional."""
    out = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not any(row) or (lineno == 1 and not row[0].split(".")[0].isdigit()):
                continue
            try:
                clip, code = int(Path(row[0]).stem), int(row[1])
            except (ValueError, IndexError):
                raise DataError(path, f"line {lineno}: expected '<video number>,<label 1-7>', "
                                      f"got {','.join(row)!r}") from None
            if not 1 <= code <= len(CLASSES):
                raise DataError(path, f"line {lineno}: label {code} is not one of 1-7 "
                                      f"({', '.join(f'{i + 1} {c}' for i, c in enumerate(CLASSES))})")
            if out.get(clip, CLASSES[code - 1]) != CLASSES[code - 1]:
                raise DataError(path, f"line {lineno}: clip {clip} is listed twice with different labels")
            out[clip] = CLASSES[code - 1]
    if not out:
        raise DataError(path, "has no clips (expected lines like '1,2' under the header 'video_name,label')")
    return out


def read_folds(raw: Path) -> tuple[dict[int, str], dict[int, int]]:
    """Clip -> label and clip -> test fold from the 5 official sets (checked: see ``folds_from_lists``)."""
    where = lambda k, part: raw / split_file(part, k)  # noqa: E731
    return folds_from_lists({k: (read_set(where(k, "test")), read_set(where(k, "train"))) for k in FOLDS}, where)


def index_clips(folder: Path) -> dict[int, Path]:
    """Clip number -> file, for ``1.mp4`` or ``00001.mp4`` names."""
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.stem.isdigit():
            continue
        n = int(path.stem)
        if n in found:
            raise DataError(path, f"is a second file for clip {n} beside {found[n].name}; keep one")
        found[n] = path
    return found


def build(raw: Path, options: dict) -> Prepared:
    video_kind = options["video"]
    require(raw, ["Clip/original", *(split_file(kind, k) for k in FOLDS for kind in ("train", "test")),
                  *(["Clip/clip_224x224"] if video_kind == "frames" else [])], TITLE, SOURCE)
    labels, folds = read_folds(raw)
    files = index_clips(raw / "Clip" / "original")
    numbers = sorted(folds)
    frames = {n: raw / "Clip" / "clip_224x224" / f"{n:05d}" for n in numbers}
    missing = [f"Clip/original/{n}.mp4" for n in numbers if n not in files]
    if video_kind == "frames":
        missing += [f"Clip/clip_224x224/{n:05d}" for n in numbers if not frames[n].is_dir()]
    if missing:
        raise DataError(raw, f"is not a complete {TITLE} tree: missing {brief(missing)} (the clips of "
                             f"{SPLITS}; get them from {SOURCE})")
    infos = probe_many([files[n] for n in numbers], options["workers"], desc=f"{TITLE} audio tracks")
    clips, dropped = [], []
    for n, info in zip(numbers, infos):
        reason = (BAD_CLIP if info.error is not None else NO_AUDIO if info.audio_seconds is None
                  else EMPTY_AUDIO if info.audio_seconds <= 0 else None)
        if reason is not None:
            dropped.append(Dropped(files[n], reason))
        elif video_kind == "frames":
            clips.append(Clip(video=frames[n], audio=files[n], label=labels[n], fold=folds[n]))
        else:
            clips.append(Clip(video=files[n], label=labels[n], fold=folds[n]))
    notes = [f"{TITLE}: fold k = the clips of test(single-labeled)/set_k.csv (k = 1..5); labels "
             f"{', '.join(CLASSES)} (codes 1-7; data.class_names must list them in this order)",
             f"{len(numbers):,} clips listed, {len(clips):,} kept"]
    if len(numbers) != SINGLE_CLIPS:
        notes.append(f"the official single-labelled set has {SINGLE_CLIPS:,} clips: these split files are partial")
    return Prepared({"dfew.csv": clips}, dropped=dropped, notes=notes)


BUILDER = Builder(
    name="dfew",
    title=TITLE,
    source=SOURCE,
    config="configs/finetune/dfew.yaml",
    headline="UAR / WAR",
    build=build,
    options=(
        Option("video", "clips: Clip/original/<n>.mp4; frames: the face-frame folders Clip/clip_224x224/<nnnnn>, "
                        "with the clip's audio", "clips", choices=("clips", "frames")),
        Option("workers", "processes that read the clips' headers in parallel; 0: one per CPU core", 0, type=int),
    ),
    expects="RAW_DIR holds Clip/original/<n>.mp4 and EmoLabel_DataSplit/{train,test}(single-labeled)/set_1..5.csv.",
)
