"""Werewolf-XL: 3 dimensions (regression), 5 folds by game, one manifest ``werewolf_xl.csv``.

Layout. The authors (github Xinda-Wu/Werewolf-XL-Baseline) distribute ``Werewolf-XL_Speaker_Video``
(the speaking clips of the players of all 30 games) and the emotion labels as separate downloads; the
name and columns of the label table are not documented. Assumed here, from the authors' baseline code::

    Werewolf-XL_Speaker_Video/01_01_128.mp4    clip <game>_<player>_<index> (any video extension; subfolders allowed)
    Werewolf-XL_labels.csv                     header row, one row per clip:
                                               VideoName,Arousal_average,Pleasure_average,Dominance_average,...

``--labels`` names another label table (relative to RAW_DIR, or absolute) and ``--columns`` its name, arousal,
valence (pleasure) and dominance columns; other columns are ignored. Clip names are the original's
(``01_01_128``; a video extension after the name is ignored).

Targets: the columns ``arousal, valence, dominance`` (``configs/finetune/werewolf_xl.yaml``: target_columns),
raw values, not normalised. The original's lists carry three unnamed values per clip (REFERENCE 9.2: ranges
-0.5..2.0, -0.75..1.25, -1.5..1.5); their order is not documented and is taken here to be the paper's
(arousal, valence, dominance). The second column's quarter steps fit a mean over four raters, which the
authors' baseline names for pleasure (``Mean_P_1_2_3_4``): consistent with valence second.

Folds: ``fold`` = (game - 1) // 6 + 1, i.e. games 1-6 are fold 1, ..., 25-30 fold 5, as the original's
``splitNN/test.csv`` (checked on its full lists: 14,457 clips, every split's ``train.csv`` the other four
``test.csv``). Clips with a label and no video, or a video and no label, are listed in ``dropped.csv``.
The manifest points at the raw clips (the original used OpenFace face crops) and their own audio track.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from hicmae.data.prepare.base import Builder, Clip, Dropped, Option, Prepared, require
from hicmae.errors import DataError

TITLE = "Werewolf-XL"
SOURCE = "the authors: https://github.com/Xinda-Wu/Werewolf-XL-Baseline (download links in its README)"
VIDEO_DIR = "Werewolf-XL_Speaker_Video"
LABELS = "Werewolf-XL_labels.csv"
COLUMNS = "VideoName,Arousal_average,Pleasure_average,Dominance_average"
TARGETS = ["arousal", "valence", "dominance"]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm")
NAME = re.compile(r"^(\d+)_(\d+)_(\d+)$")
GAMES, GAMES_PER_FOLD = 30, 6


def fold_of(name: str) -> int:
    """Games 1-6 -> 1, ..., 25-30 -> 5 (the original's splitNN)."""
    return (int(NAME.match(name).group(1)) - 1) // GAMES_PER_FOLD + 1


def clip_name(text: str) -> str:
    text = text.strip()
    return text[: -len(Path(text).suffix)] if Path(text).suffix.lower() in VIDEO_EXTENSIONS else text


def read_labels(path: Path, columns: list[str]) -> dict[str, list[float]]:
    """Clip name -> [arousal, valence, dominance] from the label table."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(path, f"has no column(s) {', '.join(missing)} (its header: {','.join(header)}); name the "
                                  "clip-name, arousal, valence and dominance columns with --columns")
        index = [header.index(c) for c in columns]
        labels = {}
        for lineno, row in enumerate(reader, start=2):
            if not any(v.strip() for v in row):
                continue
            name = clip_name(row[index[0]])
            if not NAME.match(name):
                raise DataError(path, f"line {lineno}: clip name {row[index[0]]!r} is not <game>_<player>_<index>")
            try:
                labels[name] = [float(row[i]) for i in index[1:]]
            except (ValueError, IndexError):
                raise DataError(path, f"line {lineno}: {', '.join(columns[1:])} must be numbers") from None
    if not labels:
        raise DataError(path, "has a header but no clips")
    return labels


def index_videos(folder: Path) -> dict[str, Path]:
    videos: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and NAME.match(path.stem) and not path.name.startswith("._"):
            if path.stem in videos:
                raise DataError(path, f"is a second copy of {videos[path.stem]}; keep one")
            videos[path.stem] = path
    return videos


def build(raw: Path, options: dict) -> Prepared:
    labels_path = Path(options["labels"])
    labels_rel = str(labels_path) if labels_path.is_absolute() else labels_path.as_posix()
    columns = [c.strip() for c in options["columns"].split(",")]
    if len(columns) != 4:
        raise DataError(None, "--columns needs 4 names (clip, arousal, valence, dominance), "
                              f"got {options['columns']!r}")
    require(raw, [VIDEO_DIR, labels_rel], TITLE, SOURCE + "; a label table named otherwise: --labels")
    labels = read_labels(raw / labels_path, columns)
    videos = index_videos(raw / VIDEO_DIR)
    games = {int(NAME.match(n).group(1)) for n in videos}
    absent = [g for g in range(1, GAMES + 1) if g not in games]
    if absent:
        raise DataError(raw / VIDEO_DIR, f"has no clips of game(s) {', '.join(f'{g:02d}' for g in absent)} "
                                         f"(expected {VIDEO_DIR}/<game>_<player>_<index>.mp4 for games 01..{GAMES})")
    clips, dropped = [], []
    for name in sorted(labels):
        if name in videos:
            clips.append(Clip(video=videos[name], label=labels[name], fold=fold_of(name)))
        else:
            dropped.append(Dropped(raw / VIDEO_DIR / f"{name}.mp4",
                                   f"labelled in {labels_path.name}, but its video is missing"))
    dropped += [Dropped(videos[n], f"not in {labels_path.name}") for n in sorted(set(videos) - set(labels))]
    notes = [f"{TITLE}: targets {', '.join(TARGETS)} from columns {', '.join(columns[1:])}; fold k = games 6k-5..6k"]
    return Prepared({"werewolf_xl.csv": clips}, label_columns=list(TARGETS), dropped=dropped, notes=notes)


BUILDER = Builder(
    name="werewolf_xl",
    title=TITLE,
    source=SOURCE,
    config="configs/finetune/werewolf_xl.yaml",
    headline="PCC / CCC (arousal, valence, dominance)",
    build=build,
    options=(Option("labels", "the label table, relative to RAW_DIR or absolute", default=LABELS),
             Option("columns", "its clip-name, arousal, valence and dominance columns, comma-separated",
                    default=COLUMNS)),
    expects=f"RAW_DIR holds {VIDEO_DIR}/<game>_<player>_<index>.mp4 (games 01..30) and {LABELS} "
            f"(header {COLUMNS}).",
)
