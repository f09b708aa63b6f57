"""MER-MULTI (MER 2023): 6 discrete emotions, the challenge's train / test split, ``train.csv`` and ``test.csv``
(and ``val.csv`` with ``--val-fraction``).

Layout (the MER 2023 release, as the organisers' own toolkit reads it; obtained through their EULA)::

    train/sample_00000001.mp4     the labelled training videos (any video extension)
    train-label.csv               header "name,discrete,valence"; discrete in neutral, angry, happy, sad,
                                  worried, surprise
    test1/<name>.mp4              the MER-MULTI test set
    test1-label.csv               its labels, same columns (released after the challenge)

``test2`` (MER-NOISE, the same clips with noise) and ``test3`` (MER-SEMI) are not used. Only the discrete
label is used; ``valence`` (MER-MULTI's second target) is ignored, as in HiCMAE.

Labels: the ``discrete`` names as written. ``configs/finetune/mer_multi.yaml`` names no classes, so the
class order is the sorted names unless the config gives ``data.class_names`` (the organisers' order is
neutral, angry, happy, sad, worried, surprise). Metric: weighted F1 on ``test.csv``.

Validation: the original reads a ``val.csv`` whose content is not shipped. ``--val-fraction F`` moves about a
fraction F of the training clips into ``val.csv``, chosen by a hash of each clip's name (the same clips on
every machine and run); the default 0 writes no ``val.csv`` (validate on test, as the original does for
most datasets). Labelled names without a video, and videos without a label, are listed in ``dropped.csv``.
The manifests point at the raw videos (their own audio track).
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

from hicmae.data.prepare.base import Builder, Clip, Dropped, Option, Prepared, require
from hicmae.errors import DataError

TITLE = "MER-MULTI (MER 2023)"
SOURCE = "the MER 2023 organisers: https://huggingface.co/datasets/MERChallenge/MER2023 (EULA)"
CLASSES = ("neutral", "angry", "happy", "sad", "worried", "surprise")
SPLITS = (("train", "train.csv"), ("test1", "test.csv"))
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm")


def read_labels(path: Path) -> dict[str, str]:
    """Clip name -> discrete label, from ``<split>-label.csv``."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "name" not in columns or "discrete" not in columns:
            raise DataError(path, f"needs the columns name and discrete (its header: {','.join(columns)})")
        labels = {}
        for lineno, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not row.get("name"):
                continue
            if row["discrete"] not in CLASSES:
                raise DataError(path, f"line {lineno}: {row['discrete']!r} is not one of {', '.join(CLASSES)}")
            labels[Path(row["name"]).stem if Path(row["name"]).suffix.lower() in VIDEO_EXTENSIONS
                   else row["name"]] = row["discrete"]
    if not labels:
        raise DataError(path, "has a header but no clips")
    return labels


def index_videos(folder: Path) -> dict[str, Path]:
    videos: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith("._"):
            if path.stem in videos:
                raise DataError(path, f"is a second copy of {videos[path.stem]}; keep one")
            videos[path.stem] = path
    return videos


def in_validation(name: str, fraction: float) -> bool:
    """A stable draw per clip name: the same clips go to val.csv on every machine."""
    return zlib.crc32(name.encode("utf-8")) % 100_000 < fraction * 100_000


def build(raw: Path, options: dict) -> Prepared:
    fraction = float(options["val_fraction"])
    if not 0.0 <= fraction < 1.0:
        raise DataError(None, f"--val-fraction must be in [0, 1), got {fraction}")
    require(raw, [p for folder, _ in SPLITS for p in (folder, f"{folder}-label.csv")], TITLE, SOURCE)
    manifests: dict[str, list[Clip]] = {"train.csv": [], "test.csv": []}
    if fraction:
        manifests["val.csv"] = []
    dropped = []
    for folder, manifest in SPLITS:
        label_file = f"{folder}-label.csv"
        labels, videos = read_labels(raw / label_file), index_videos(raw / folder)
        for name in sorted(labels):
            if name not in videos:
                dropped.append(Dropped(raw / folder / f"{name}.mp4",
                                       f"labelled in {label_file}, but its video is missing"))
                continue
            target = "val.csv" if folder == "train" and fraction and in_validation(name, fraction) else manifest
            manifests[target].append(Clip(video=videos[name], label=labels[name]))
        dropped += [Dropped(videos[n], f"not in {label_file}") for n in sorted(set(videos) - set(labels))]
    for name, clips in manifests.items():
        if not clips:
            raise DataError(raw, f"{name} would be empty: no labelled videos for it")
    notes = [f"{TITLE}: train.csv = train/, test.csv = test1/ (the MER-MULTI test set)"
             + (f", val.csv = about {fraction:.0%} of train/ by name hash" if fraction else "")]
    return Prepared(manifests, dropped=dropped, notes=notes)


BUILDER = Builder(
    name="mer_multi",
    title=TITLE,
    source=SOURCE,
    config="configs/finetune/mer_multi.yaml",
    headline="weighted F1",
    build=build,
    options=(Option("val_fraction", "fraction of train/ written to val.csv, chosen by name hash", default=0.0,
                    type=float),),
    expects="RAW_DIR holds train/ and train-label.csv, test1/ and test1-label.csv (columns name, discrete).",
)
