"""AVCAffe: arousal or valence as 5 classes (``--dimension``), the official participant split, ``train.csv`` and
``test.csv``.

Layout (the release on borealisdata.ca, doi:10.5683/SP3/PSWY62, as its README and data loader describe it)::

    ground_truths/arousal.txt        one line per participant and task: "aiim001_task_1,Excited"
    ground_truths/valence.txt        "aiim001_task_1,Pleasant"
    info/train.txt, info/val.txt     the participants (aiim001, ...) of the training and the validation split
    videos/shorter_segments/aiim001/task_1/<clip>.avi     ~6 s clips of that participant's task video

Labels: the participant's self-report for the task, given to every clip of it, as the class index in the
authors' order (their loader's ``name_list.index``): arousal Excited 0, Wide-awake 1, Neutral 2, Dull 3,
Calm 4; valence Pleasant 0, Pleased 1, Neutral 2, Unsatisfied 3, Unpleasant 4. Integers, so one config
(``configs/finetune/avcaffe.yaml``: 5 classes, no names) serves both dimensions.

Split: AVCAffe has one, by participant: ``train.csv`` holds the clips of ``info/train.txt``, ``test.csv``
those of ``info/val.txt`` (the original reads ``test.csv`` as its validation set too); no ``fold`` column.

Per-video merge: the original scores AVCAffe per task video, averaging the clips' softmax outputs over the
clips of one ``<participant>_task_<n>`` (it cuts a clip's file name after its third ``_``: ``aiim001_task_1_...``
-> ``aiim001_task_1``). Every row carries that key, from its two parent folders (``aiim001/task_1``), in the
manifest's ``group`` column, and testing scores one prediction per group. Clips whose file name does not start
with ``<participant>_<task>_`` are noted in ``prepare.json`` (their folders still group them).

Audio: each clip's own track (the original extracted it to 16 kHz wav). ``info/no_audio_files.txt`` lists
clips in which the participant does not speak; they are kept, as the original keeps them.
"""

from __future__ import annotations

import re
from pathlib import Path

from hicmae.data.prepare.base import Builder, Clip, Dropped, Option, Prepared, find, require
from hicmae.errors import DataError

TITLE = "AVCAffe"
SOURCE = ("Queen's University: https://pritamqu.github.io/AVCAffe/ (files on borealisdata.ca, "
          "doi:10.5683/SP3/PSWY62; licence agreement)")
CLASSES = {"arousal": ("Excited", "Wide-awake", "Neutral", "Dull", "Calm"),
           "valence": ("Pleasant", "Pleased", "Neutral", "Unsatisfied", "Unpleasant")}
CLIPS = "videos/shorter_segments"
TASK = re.compile(r"^task_\d+$")


def video_key(clip: Path) -> str:
    """``<participant>_task_<n>``: the unit whose clips are merged, from the clip's two parent folders."""
    return f"{clip.parent.parent.name}_{clip.parent.name}"


def read_ground_truth(path: Path, dimension: str) -> dict[str, int]:
    """``aiim001_task_1`` -> class index, from ``ground_truths/<dimension>.txt``."""
    names = CLASSES[dimension]
    labels = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if "," not in line:
            continue
        key, value = (part.strip() for part in line.split(",", 1))
        if value not in names:
            raise DataError(path, f"line {lineno}: {value!r} is not a {dimension} class ({', '.join(names)})")
        labels[key] = names.index(value)
    if not labels:
        raise DataError(path, "has no lines like 'aiim001_task_1,<class>'")
    return labels


def read_participants(path: Path) -> set[str]:
    ids = set(re.findall(r"aiim\d+", path.read_text(encoding="utf-8-sig")))
    if not ids:
        raise DataError(path, "names no participants (aiim001, ...)")
    return ids


def build(raw: Path, options: dict) -> Prepared:
    dimension = options["dimension"]
    truth = f"ground_truths/{dimension}.txt"
    require(raw, [truth, "info/train.txt", "info/val.txt", CLIPS], TITLE, SOURCE)
    labels = read_ground_truth(raw / truth, dimension)
    train, test = read_participants(raw / "info/train.txt"), read_participants(raw / "info/val.txt")
    if train & test:
        raise DataError(raw / "info", f"train.txt and val.txt share participants {', '.join(sorted(train & test))}")
    manifests: dict[str, list[Clip]] = {"train.csv": [], "test.csv": []}
    dropped, misnamed = [], 0
    for clip in find(raw / CLIPS, "aiim*/task_*/*.avi", TITLE, "clips (aiim001/task_1/*.avi)"):
        if clip.name.startswith("._") or not TASK.match(clip.parent.name):
            continue
        key, participant = video_key(clip), clip.parent.parent.name
        split = "train.csv" if participant in train else "test.csv" if participant in test else None
        if split is None:
            dropped.append(Dropped(clip, "participant in neither info/train.txt nor info/val.txt"))
        elif key not in labels:
            dropped.append(Dropped(clip, f"no {dimension} self-report for its task in {truth}"))
        else:
            manifests[split].append(Clip(video=clip, label=str(labels[key]), group=key))
            misnamed += not clip.name.startswith(f"{key}_")
    for split, listed in (("train.csv", "info/train.txt"), ("test.csv", "info/val.txt")):
        if not manifests[split]:
            raise DataError(raw / CLIPS, f"has no labelled clips of the participants in {listed}")
    order = ", ".join(f"{i} {n}" for i, n in enumerate(CLASSES[dimension]))
    notes = [f"{TITLE} {dimension}: label = class index: {order}",
             f"{TITLE}: score per task video by averaging the softmax outputs of its clips; the key is the clip's "
             "two parent folders (<participant>/task_<n>)"]
    if misnamed:
        notes.append(f"{misnamed} clips are not named <participant>_task_<n>_...: group them by folder, not by name")
    return Prepared(manifests, dropped=dropped, notes=notes)


BUILDER = Builder(
    name="avcaffe",
    title=TITLE,
    source=SOURCE,
    config="configs/finetune/avcaffe.yaml",
    headline="weighted F1 (arousal, valence; clips merged per task video)",
    build=build,
    options=(Option("dimension", "which self-report is the label", default="arousal", choices=tuple(CLASSES)),),
    expects=f"RAW_DIR holds ground_truths/arousal.txt and valence.txt, info/train.txt and info/val.txt, and "
            f"{CLIPS}/aiim001/task_1/*.avi.",
)
