"""MAFW: the release of its authors -> ``mafw.csv`` with the official 5 folds (11 classes; 43 compound optional).

Layout (the MAFW release, after signing its licence)::

    data/clips/00025.mp4                                     the clips, with their sound
    data/frames/00025/                                       the dataset's own frames (only for --video frames)
    Train & Test Set/single/no_caption/set_1/train.txt       "00025.mp4 anger", one clip a line
    Train & Test Set/single/no_caption/set_1/test.txt        ... set_1 .. set_5
    Train & Test Set/compound/no_caption/set_1/train.txt     "00028.mp4 anger_disgust" (for --labels compound)

(``Train_Test_Set`` is accepted for ``Train & Test Set``.)

Labels (``--labels``):

* ``single`` (default): the 11 classes anger, disgust, fear, happiness, neutral, sadness, surprise,
  contempt, anxiety, helplessness, disappointment (this order: REFERENCE.md section 10,
  configs/finetune/mafw.yaml), from ``single/no_caption``.
* ``compound``: the compound split, each of its 43 labels (single emotions and combinations such as
  ``anger_disgust``) one class, the 43-class protocol the paper reports UAR / WAR on; the class list,
  single emotions first, is in ``prepare.json``'s notes (``data.class_names`` and ``model.num_classes`` 43).
* ``multilabel``: the compound split with each combination split into its emotions (``anger;disgust``),
  for a multi-label head over the 11 classes (``model.task: multilabel``).

Folds: one manifest; ``fold`` = k for the clips of ``set_k/test.txt``. Every ``set_k/train.txt`` must be
exactly the other clips (checked; the official files are), so training on fold != k reproduces it.

Video: ``--video clips`` (default) lists ``data/clips/<id>.mp4`` with its own audio track (empty
``audio`` column). ``--video frames`` lists the dataset's frame folders ``data/frames/<id>``, which the
original fed to the model, with the clip's mp4 as the audio.

Left out (``dropped.csv``): clips without a usable audio track. The original extracted audio with FFmpeg,
which failed on 21 of the 10,045 clips, and left those out; 16 of them are in the single-label set, so its
split files hold 9,156 of its 9,172 clips. Which 21 they are is not published: this builder finds them
by reading each clip's container (no audio stream, or one of zero length), which is presumably why
FFmpeg failed on them. The count it finds is in the notes, beside the original's.
"""

from __future__ import annotations

from pathlib import Path

from hicmae.data.prepare.base import (Builder, Clip, Dropped, Option, Prepared, brief, folds_from_lists,
                                     probe_many, require)
from hicmae.errors import DataError

TITLE = "MAFW"
SOURCE = "the MAFW page of its authors, mafw-database.github.io/MAFW, after signing its licence agreement"
CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt", "anxiety",
           "helplessness", "disappointment")
FOLDS = range(1, 6)
SPLIT_DIRS = ("Train & Test Set", "Train_Test_Set")
SINGLE_CLIPS, ORIGINAL_SINGLE_CLIPS = 9172, 9156
NO_AUDIO = "no audio track (FFmpeg cannot extract its audio: the original leaves such clips out)"
EMPTY_AUDIO = "its audio track is empty (FFmpeg cannot extract its audio: the original leaves such clips out)"
BAD_CLIP = "the clip cannot be opened (corrupt or truncated)"
MANIFESTS = {"single": "mafw.csv", "compound": "mafw_compound.csv", "multilabel": "mafw_multilabel.csv"}


def read_set(path: Path) -> dict[str, str]:
    """``set_k/<train|test>.txt`` -> clip id (``00025``) -> label as written (``anger``, ``anger_disgust``)."""
    out = {}
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[0].lower().endswith(".mp4"):
                raise DataError(path, f"line {lineno}: expected '<clip>.mp4 <label>', got {line.strip()!r}")
            clip, label = parts[0][:-4], parts[1].lower()
            unknown = [e for e in label.split("_") if e not in CLASSES]
            if unknown:
                raise DataError(path, f"line {lineno}: unknown emotion {unknown[0]!r} in {label!r}; "
                                      f"known: {', '.join(CLASSES)}")
            if out.get(clip, label) != label:
                raise DataError(path, f"line {lineno}: {clip} is listed twice with different labels")
            out[clip] = label
    if not out:
        raise DataError(path, "has no clips (expected lines like '00025.mp4 anger')")
    return out


def read_folds(split_dir: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Clip -> label and clip -> test fold from the 5 official sets (checked: see ``folds_from_lists``)."""
    where = lambda k, part: split_dir / f"set_{k}" / f"{part}.txt"  # noqa: E731
    return folds_from_lists({k: (read_set(where(k, "test")), read_set(where(k, "train"))) for k in FOLDS}, where)


def compound_classes(labels) -> list[str]:
    """The compound labels found, single emotions first, in the order of ``CLASSES``, then combinations by
    their emotions' order (``anger_disgust`` before ``anger_fear`` before ``disgust_contempt``)."""
    key = lambda label: (label.count("_"), [CLASSES.index(e) for e in label.split("_")])  # noqa: E731
    return sorted(set(labels), key=key)


def find_split_dir(raw: Path, kind: str, video_kind: str) -> Path:
    """The official sets of ``kind`` (single or compound); one error naming everything missing."""
    base = next((raw / d for d in SPLIT_DIRS if (raw / d).is_dir()), raw / SPLIT_DIRS[0])
    split_dir = base / kind / "no_caption"
    rel = split_dir.relative_to(raw)
    require(raw, ["data/clips", *(["data/frames"] if video_kind == "frames" else []),
                  *(f"{rel}/set_{k}/{f}.txt" for k in FOLDS for f in ("train", "test"))], TITLE, SOURCE)
    return split_dir


def build(raw: Path, options: dict) -> Prepared:
    mode, video_kind = options["labels"], options["video"]
    split_dir = find_split_dir(raw, "single" if mode == "single" else "compound", video_kind)
    labels, folds = read_folds(split_dir)
    names = sorted(folds)
    clip_files = [raw / "data" / "clips" / f"{n}.mp4" for n in names]
    missing = [f"data/clips/{n}.mp4" for n, p in zip(names, clip_files) if not p.is_file()]
    if video_kind == "frames":
        missing += [f"data/frames/{n}" for n in names if not (raw / "data" / "frames" / n).is_dir()]
    if missing:
        raise DataError(raw, f"is not a complete {TITLE} tree: missing {brief(missing)} (the clips of "
                             f"{split_dir.relative_to(raw)}; get them from {SOURCE})")
    infos = probe_many(clip_files, options["workers"], desc=f"{TITLE} audio tracks")
    clips, dropped = [], []
    for name, clip_file, info in zip(names, clip_files, infos):
        reason = (BAD_CLIP if info.error is not None else NO_AUDIO if info.audio_seconds is None
                  else EMPTY_AUDIO if info.audio_seconds <= 0 else None)
        if reason is not None:
            dropped.append(Dropped(clip_file, reason))
            continue
        label = labels[name].split("_") if mode == "multilabel" else labels[name]
        if video_kind == "frames":
            clips.append(Clip(video=raw / "data" / "frames" / name, audio=clip_file, label=label, fold=folds[name]))
        else:
            clips.append(Clip(video=clip_file, label=label, fold=folds[name]))
    return Prepared({MANIFESTS[mode]: clips}, dropped=dropped, notes=_notes(mode, labels, len(names), len(clips)))


def _notes(mode: str, labels: dict[str, str], found: int, kept: int) -> list[str]:
    notes = [f"{TITLE}: fold k = the clips of set_k/test.txt (k = 1..5); {found:,} clips listed, {kept:,} kept"]
    if mode == "single":
        notes.append(f"labels {', '.join(CLASSES)} (configs/finetune/mafw.yaml)")
        if found == SINGLE_CLIPS and kept != ORIGINAL_SINGLE_CLIPS:
            notes.append(f"the original's split files hold {ORIGINAL_SINGLE_CLIPS:,} of the {SINGLE_CLIPS:,} "
                         f"single-label clips; {kept:,} are kept here: compare dropped.csv with its lists")
    elif mode == "compound":
        classes = compound_classes(labels.values())
        notes.append(f"{len(classes)} compound classes (set data.class_names to this list and model.num_classes "
                     f"to {len(classes)}): {', '.join(classes)}")
    else:
        notes.append(f"multi-label over {', '.join(CLASSES)} (model.task: multilabel, data.class_names as "
                     "configs/finetune/mafw.yaml)")
    return notes


BUILDER = Builder(
    name="mafw",
    title=TITLE,
    source=SOURCE,
    config="configs/finetune/mafw.yaml",
    headline="UAR / WAR",
    build=build,
    options=(
        Option("labels", "single: the 11 classes; compound: the 43 compound labels as 43 classes; multilabel: "
                         "the compound labels as sets of the 11 emotions", "single",
               choices=("single", "compound", "multilabel")),
        Option("video", "clips: data/clips/<id>.mp4; frames: the dataset's frame folders data/frames/<id> "
                        "(what the original used), with the clip's audio", "clips", choices=("clips", "frames")),
        Option("workers", "processes that read the clips' headers in parallel; 0: one per CPU core", 0, type=int),
    ),
    expects="RAW_DIR holds data/clips/<id>.mp4 and 'Train & Test Set/single/no_caption/set_1..5/{train,test}.txt' "
            "(compound/no_caption for --labels compound or multilabel).",
)
