"""CREMA-D: the GitHub release -> ``crema_d.csv`` with the original's 5 actor-independent folds.

Layout (``git lfs clone https://github.com/CheyneyComputerScience/CREMA-D``; without git-lfs the media
files are 130-byte pointer stubs, which this builder detects)::

    VideoFlash/1001_DFA_ANG_XX.flv     7,442 audio-visual clips (the original ran OpenFace on these)
    AudioWAV/1001_DFA_ANG_XX.wav       the same clips' 16 kHz mono audio (the original used them as is)

Labels: the third part of the name, ``<actor>_<sentence>_<emotion>_<level>``: ``1001_DFA_ANG_XX`` -> ``ANG``;
classes ANG, DIS, FEA, HAP, NEU, SAD in that order (REFERENCE.md section 10, configs/finetune/crema_d.yaml).
``--classes 4`` keeps ANG, HAP, NEU, SAD, the original's 4-class setting.

Folds: one manifest; ``fold`` is the clip's test fold. Actor ``1001 + i`` is in fold ``min(i // 18, 4) + 1``:
18 actors in each of folds 1-4 (1001-1018, 1019-1036, 1037-1054, 1055-1072) and 19 in fold 5 (1073-1091).
This is the original's rule (``preprocess/creamd_av.py``), and it reproduces its split files exactly:
tests/test_prepare_crema_d.py checks every one of the 7,442 file names against them (label and fold).

Left out (``dropped.csv``): the four clips the CREMA-D README lists as not what their names say
(1076_MTI_NEU_XX and 1076_MTI_SAD_XX: very short, no audio; 1064_TIE_SAD_XX: no duration;
1064_IEO_DIS_MD: one minute holding every display of its sentence), as the original; and, with the
default ``--clip-set original``, 1040_ITH_SAD_XX: until October 2022 the repository named its wav
``1040_ITH_SAD_X.wav``, so the original's script found no audio for it and its split files lack it
(7,437 clips). ``--clip-set current`` keeps it (7,438 clips); an older clone's ``1040_ITH_SAD_X.wav``
is then used as its audio.
"""

from __future__ import annotations

import re
from pathlib import Path

from hicmae.data.prepare.base import Builder, Clip, Dropped, Option, Prepared, brief, require
from hicmae.errors import DataError

TITLE = "CREMA-D"
SOURCE = "the CREMA-D GitHub repository, github.com/CheyneyComputerScience/CREMA-D, cloned with git-lfs"
CLASSES = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CLASSES_4 = ("ANG", "HAP", "NEU", "SAD")
CLIPS = 7442  # in the repository
FIRST_ACTOR, ACTORS_PER_FOLD, FOLDS = 1001, 18, 5
NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
NAMING = "<actor 1001-1091>_<sentence>_<ANG|DIS|FEA|HAP|NEU|SAD>_<level>, e.g. 1001_DFA_ANG_XX"
BROKEN = {  # the CREMA-D README's list of files that do not show what their names say
    "1076_MTI_NEU_XX": "broken in the CREMA-D release (README: very short, no audio); the original drops it",
    "1076_MTI_SAD_XX": "broken in the CREMA-D release (README: error picture, no audio, very short); "
                       "the original drops it",
    "1064_TIE_SAD_XX": "broken in the CREMA-D release (README: file has no duration); the original drops it",
    "1064_IEO_DIS_MD": "broken in the CREMA-D release (README: one minute long, all displays of its sentence); "
                       "the original drops it",
}
RENAMED = "1040_ITH_SAD_XX"
RENAMED_OLD = "1040_ITH_SAD_X"  # its wav's name in the repository until October 2022
RENAMED_REASON = ("not in the original's folds: its wav was named 1040_ITH_SAD_X.wav until October 2022, so the "
                  "original found no audio for it (--clip-set current keeps it)")
LFS_POINTER = b"version https://git-lfs"


def parse(name: str) -> tuple[int, str] | None:
    """``1001_DFA_ANG_XX`` -> (actor 1001, emotion ``ANG``); None for a name CREMA-D does not use."""
    m = NAME.match(name)
    if not m or m.group(3) not in CLASSES or not FIRST_ACTOR <= int(m.group(1)) <= 1091:
        return None
    return int(m.group(1)), m.group(3)


def fold_of(actor: int) -> int:
    """The test fold (1-5) of an actor: 18 actors a fold, the last fold takes the 91st."""
    return min((actor - FIRST_ACTOR) // ACTORS_PER_FOLD, FOLDS - 1) + 1


def assign(name: str, clip_set: str = "original", classes: int = 6) -> tuple[str, int] | str:
    """(label, fold) of a clip, or the reason it is left out. The whole protocol, from the file name alone."""
    parsed = parse(name)
    if parsed is None:
        raise DataError(name, f"is not a CREMA-D clip name ({NAMING})")
    actor, emotion = parsed
    if name in BROKEN:
        return BROKEN[name]
    if name == RENAMED and clip_set == "original":
        return RENAMED_REASON
    if classes == 4 and emotion not in CLASSES_4:
        return f"{emotion} is not one of the 4 classes {', '.join(CLASSES_4)} (--classes 4)"
    return emotion, fold_of(actor)


def check_layout(raw: Path) -> dict[str, tuple[Path, Path | None]]:
    """Clip name -> (flv, wav or None), after checking the two folders, the pairing and git-lfs."""
    require(raw, ["VideoFlash", "AudioWAV"], TITLE, SOURCE)
    videos = {p.stem: p for p in sorted((raw / "VideoFlash").glob("*.flv"))}
    wavs = {p.stem: p for p in sorted((raw / "AudioWAV").glob("*.wav"))}
    if not videos:
        raise DataError(raw / "VideoFlash", f"has no .flv clips (expected VideoFlash/1001_DFA_ANG_XX.flv ...); "
                                            f"get them from {SOURCE}")
    old = wavs.pop(RENAMED_OLD, None)
    if old is not None and RENAMED not in wavs:
        wavs[RENAMED] = old
    stubs = [p for p in [*videos.values(), *wavs.values()] if _is_lfs_pointer(p)]
    if stubs:
        raise DataError(raw, f"{len(stubs)} media files are Git LFS pointers, not media (e.g. "
                             f"{brief([s.relative_to(raw) for s in stubs], 3)}): the repository was downloaded "
                             "without git-lfs; run `git lfs install && git lfs pull` inside it")
    odd = [p.relative_to(raw) for n, p in videos.items() if parse(n) is None]
    if odd:
        raise DataError(raw, f"has files that are not CREMA-D clips: {brief(odd, 3)} (names are {NAMING})")
    # Only a clip that will be used needs its wav; which ones are those depends on options, so the check
    # is strict for every clip but the ones every setting leaves out.
    missing = [f"AudioWAV/{n}.wav" for n in videos if n not in wavs and n not in BROKEN and n != RENAMED]
    missing += [f"VideoFlash/{n}.flv" for n in wavs if n not in videos]
    if missing:
        raise DataError(raw, f"is not a complete {TITLE} tree: missing {brief(missing)} "
                             f"(each clip needs VideoFlash/<name>.flv and AudioWAV/<name>.wav; get them from {SOURCE})")
    return {n: (v, wavs.get(n)) for n, v in videos.items()}


def _is_lfs_pointer(path: Path) -> bool:
    if path.stat().st_size > 1024:
        return False
    with open(path, "rb") as f:
        return f.read(len(LFS_POINTER)) == LFS_POINTER


def build(raw: Path, options: dict) -> Prepared:
    clip_set, classes = options["clip_set"], int(options["classes"])
    clips, dropped = [], []
    for name, (video, wav) in check_layout(raw).items():
        verdict = assign(name, clip_set, classes)
        if isinstance(verdict, str):
            dropped.append(Dropped(video, verdict))
        elif wav is None:  # only 1040_ITH_SAD_XX can get here (--clip-set current without any wav of it)
            raise DataError(raw, f"is not a complete {TITLE} tree: missing AudioWAV/{name}.wav")
        else:
            clips.append(Clip(video=video, audio=wav, label=verdict[0], fold=verdict[1]))
    names = CLASSES if classes == 6 else CLASSES_4
    notes = [f"{TITLE}: fold k tests actors {', '.join(_actor_range(k) for k in range(1, FOLDS + 1))} (k = 1..5); "
             f"labels {', '.join(names)}" + ("" if classes == 6 else
                                             " (set data.class_names to these and model.num_classes to 4)")]
    if len(clips) + len(dropped) != CLIPS:
        notes.append(f"{len(clips) + len(dropped)} clips found; the CREMA-D repository has {CLIPS:,}: "
                     "this tree is partial")
    return Prepared({"crema_d.csv": clips}, dropped=dropped, notes=notes)


def _actor_range(fold: int) -> str:
    first = FIRST_ACTOR + (fold - 1) * ACTORS_PER_FOLD
    last = 1091 if fold == FOLDS else first + ACTORS_PER_FOLD - 1
    return f"{first}-{last}"


BUILDER = Builder(
    name="crema_d",
    title=TITLE,
    source=SOURCE,
    config="configs/finetune/crema_d.yaml",
    headline="UAR / WAR",
    build=build,
    options=(
        Option("clip_set", "original: the 7,437 clips of the original's split files; current: also 1040_ITH_SAD_XX, "
                           "whose wav the repository renamed in 2022", "original", choices=("original", "current")),
        Option("classes", "6 classes, or the 4-class setting (ANG, HAP, NEU, SAD)", 6, choices=(6, 4), type=int),
    ),
    expects="RAW_DIR is the cloned repository (git lfs clone): VideoFlash/<name>.flv and AudioWAV/<name>.wav, "
            "e.g. 1001_DFA_ANG_XX.",
)
