"""RAVDESS (speech, audio-visual): the Zenodo release -> ``ravdess.csv`` with the original's 6 actor folds.

Layout: the zips of the Zenodo record unpacked under RAW_DIR (``Video_Speech_Actor_NN.zip`` and
``Audio_Speech_Actors_01-24.zip`` each hold ``Actor_NN/`` folders; into one folder or separate ones: files are
found by name anywhere under RAW_DIR)::

    Actor_01/02-01-06-01-02-01-01.mp4    video-only speech take (modality 02), from Video_Speech_Actor_01.zip
    Actor_01/01-01-06-01-02-01-01.mp4    the same take, full audio-visual (modality 01), same zip
    Actor_01/03-01-06-01-02-01-01.wav    the same take, audio-only (modality 03, 48 kHz), from the audio zip

Names are ``modality-channel-emotion-intensity-statement-repetition-actor``. Speech only (channel 01): 24
actors x 60 takes = 1,440 clips, as the original (song files, channel 02, are not used).

Labels: the emotion code 01..08 -> neutral, calm, happy, sad, angry, fearful, disgust, surprised (the
RAVDESS names, in code order: the original's label index is the code minus one).

Folds: one manifest; ``fold`` = the clip's test fold, ``(actor - 1) // 4 + 1``: actors 1-4 in fold 1, ...,
21-24 in fold 6, which reproduces the original's 6 split files exactly (1,200 / 240 clips each;
tests/test_prepare_ravdess.py checks all 1,440 clips, pairing included).

Pairing: the original reads the face frames of the video-only take (``02-...``) and the audio-only wav
of the same take (``03-...``, resampled to 16 kHz; ``hicmae.data.media.load_audio`` resamples on load). That
is the default, ``--pairing original``. The full audio-visual files (``01-...``) hold the same recording
with its sound (AAC, 48 kHz); they are not needed, and are ignored, unless ``--pairing full_av``, which
lists them with their own audio track (empty ``audio`` column), for those who lack the audio-only zip:
same takes, labels and folds, but the audio then comes from the AAC track rather than the wav.

Every one of the 1,440 takes must be present: a missing actor or file is an error naming it (folds with
a missing actor would not be the protocol's).
"""

from __future__ import annotations

from pathlib import Path

from hicmae.data.prepare.base import Builder, Clip, Option, Prepared, brief
from hicmae.errors import DataError

TITLE = "RAVDESS"
SOURCE = "the RAVDESS record on Zenodo, zenodo.org/record/1188976"
CLASSES = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")  # codes 01..08
ACTORS, ACTORS_PER_FOLD = range(1, 25), 4
SPEECH = "01"


def takes(actor: int) -> list[str]:
    """The 60 speech takes of an actor, as the name without its modality: ``01-EE-II-SS-RR-AA``.
    Neutral (01) has only the normal intensity; the 7 other emotions have normal and strong; 2 statements,
    2 repetitions each: (1 + 7 x 2) x 2 x 2 = 60."""
    out = []
    for emotion in range(1, 9):
        for intensity in (1,) if emotion == 1 else (1, 2):
            for statement in (1, 2):
                for repetition in (1, 2):
                    out.append(f"{SPEECH}-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}")
    return out


def label_of(take: str) -> str:
    """``01-06-01-02-01-12`` (or a full name ``02-01-06-...``) -> ``fearful``."""
    fields = take.split("-")
    return CLASSES[int(fields[-5]) - 1]


def fold_of(actor: int) -> int:
    return (actor - 1) // ACTORS_PER_FOLD + 1


def index(raw: Path, pattern: str) -> dict[str, Path]:
    """File name -> path, for files matching ``pattern`` anywhere under ``raw`` (a name holds its actor, so
    the folders they sit in do not matter)."""
    found: dict[str, Path] = {}
    for path in sorted(raw.rglob(pattern)):
        if path.name in found:
            raise DataError(path, f"is a second copy of {found[path.name]}; keep one")
        found[path.name] = path
    return found


def check_layout(raw: Path, pairing: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """Video files and wavs by name; one error naming every missing actor folder or file."""
    video_modality = "02" if pairing == "original" else "01"
    videos = index(raw, f"{video_modality}-{SPEECH}-*.mp4")
    wavs = index(raw, f"03-{SPEECH}-*.wav") if pairing == "original" else {}
    wanted = [("video", video_modality, ".mp4", videos, "Video_Speech_Actor_{a:02d}.zip")]
    if pairing == "original":
        wanted.append(("audio", "03", ".wav", wavs, "Audio_Speech_Actors_01-24.zip"))
    missing = []
    for kind, modality, suffix, files, archive in wanted:
        gaps = {a: [f"Actor_{a:02d}/{modality}-{t}{suffix}" for t in takes(a) if f"{modality}-{t}{suffix}" not in files]
                for a in ACTORS}
        whole = [a for a, g in gaps.items() if len(g) == len(takes(a))]
        if whole:
            where = archive.format(a=whole[0]) if len(whole) == 1 or "{a" not in archive else \
                archive.replace("{a:02d}", "NN") + " for each"
            missing.append(f"all {kind} files of {_actor_ranges(whole)} ({where})")
        some = [f for a, g in gaps.items() if a not in whole for f in g]
        if some:
            missing.append(brief(some))
    if missing:
        hint = ("video-only takes 02-01-*.mp4 from Video_Speech_Actor_NN.zip and audio-only takes 03-01-*.wav "
                "from Audio_Speech_Actors_01-24.zip" if pairing == "original" else
                "full audio-visual takes 01-01-*.mp4 from Video_Speech_Actor_NN.zip")
        raise DataError(raw, f"is not a complete {TITLE} speech tree: missing {'; '.join(missing)} "
                             f"(expected Actor_NN folders with the {hint}; get them from {SOURCE})")
    return videos, wavs


def _actor_ranges(actors: list[int]) -> str:
    """[1, 2, 3, 7] -> 'Actor_01 to Actor_03, Actor_07'."""
    runs: list[list[int]] = []
    for a in actors:
        if runs and a == runs[-1][-1] + 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    return ", ".join(f"Actor_{r[0]:02d}" + (f" to Actor_{r[-1]:02d}" if len(r) > 1 else "") for r in runs)


def build(raw: Path, options: dict) -> Prepared:
    pairing = options["pairing"]
    videos, wavs = check_layout(raw, pairing)
    modality = "02" if pairing == "original" else "01"
    clips = []
    for actor in ACTORS:
        for take in takes(actor):
            audio = wavs[f"03-{take}.wav"] if pairing == "original" else None
            clips.append(Clip(video=videos[f"{modality}-{take}.mp4"], audio=audio, label=label_of(take),
                              fold=fold_of(actor)))
    notes = [f"{TITLE}: fold k tests actors 4k-3 to 4k (k = 1..6); labels {', '.join(CLASSES)} "
             "(the label order of the original: data.class_names must list them so)",
             "video: " + ("the video-only takes (02) with the audio-only wav of each take (03), as the original"
                          if pairing == "original" else "the full audio-visual takes (01) with their own audio track")]
    return Prepared({"ravdess.csv": clips}, notes=notes)


BUILDER = Builder(
    name="ravdess",
    title=TITLE,
    source=SOURCE,
    config="configs/finetune/ravdess.yaml",
    headline="UAR / WAR",
    build=build,
    options=(
        Option("pairing", "original: video-only takes (02) + audio-only wavs (03); full_av: the audio-visual "
                          "takes (01) with their own sound", "original", choices=("original", "full_av")),
    ),
    expects="RAW_DIR holds Actor_01..Actor_24 folders (unpacked Video_Speech_Actor_NN.zip and "
            "Audio_Speech_Actors_01-24.zip) with 02-01-*.mp4 and 03-01-*.wav takes.",
)
