"""IEMOCAP: the standard 4-class setting, 5 session folds, one manifest ``iemocap.csv``.

Layout (``IEMOCAP_full_release`` as USC SAIL distributes it; RAW_DIR is the folder holding ``Session1``..)::

    Session1/dialog/EmoEvaluation/Ses01F_impro01.txt      one block per utterance, headed by
                            "[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]"
    Session1/dialog/avi/DivX/Ses01F_impro01.avi            the whole dialog, both actors
    Session1/dialog/wav/Ses01F_impro01.wav                 the whole dialog's audio

Labels: the consensus category of each utterance's header line in ``EmoEvaluation``; excitement is merged
into happiness, as the paper does: ``neu`` -> neutral, ``hap`` and ``exc`` -> happiness, ``ang`` -> anger,
``sad`` -> sadness (1,708 + 1,636 + 1,103 + 1,084 = 5,531 utterances in the full release). Every other
category (frustration, surprise, fear, disgust, other, ``xxx`` no agreement) is left out and listed in
``dropped.csv``. ``configs/finetune/iemocap.yaml`` names no classes, so the class order is the sorted names
(anger, happiness, neutral, sadness) unless the config gives ``data.class_names``.

Folds: ``fold`` = the session (1..5): session-independent, speaker-independent (each session has its own
two actors). The original ships no IEMOCAP lists, so there is nothing to compare with clip by clip.

Clips: ``video`` is the dialog's ``.avi`` and ``start``/``end`` the utterance's ``[start, end)`` range in it, in
seconds, from ``EmoEvaluation``. ``audio`` is the dialog's wav, in which ``start``/``end`` apply as they do to
the video (a manifest row's range applies to its video and its audio alike, so the per-utterance sentence
wavs, whose time 0 is the utterance start, cannot be used with a range).

Whose face: each dialog video shows both actors side by side (720x480). Third-party preprocessing reports
the actor wearing the motion-capture markers (the letter of the dialog name, ``Ses01F`` -> F) on the left
half and the other on the right; the utterance's speaker is the letter of its last field (``_F000`` -> F).
The manifest points at the whole frame: a face crop (the future ``hicmae preprocess``) must take the
speaker's half, and the speaker of each row can be read from its name. Without cropping, the model sees
both faces, and the listener's face carries no label.
"""

from __future__ import annotations

import re
from pathlib import Path

from hicmae.data.prepare.base import Builder, Clip, Dropped, Prepared, find, require
from hicmae.errors import DataError

TITLE = "IEMOCAP"
SOURCE = "USC SAIL: https://sail.usc.edu/iemocap/ (release form)"
SESSIONS = range(1, 6)
FOUR_CLASSES = {"neu": "neutral", "hap": "happiness", "exc": "happiness", "ang": "anger", "sad": "sadness"}
OTHER = {"fru": "frustration", "sur": "surprise", "fea": "fear", "dis": "disgust", "oth": "other",
         "xxx": "no agreement"}
# The header line of one utterance's evaluation block; the raters' lines below it do not match.
HEADER = re.compile(r"^\[\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*\]\s+(Ses\w+)\s+(\w+)\s+\[")


def expected_folders() -> list[str]:
    return [f"Session{s}/{d}" for s in SESSIONS for d in ("dialog/EmoEvaluation", "dialog/avi/DivX", "dialog/wav")]


def read_evaluation(path: Path) -> list[tuple[str, float, float, str]]:
    """(utterance, start, end, category) of every utterance in one ``EmoEvaluation`` file."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                rows.append((m.group(3), float(m.group(1)), float(m.group(2)), m.group(4).lower()))
    if not rows:
        raise DataError(path, "has no utterance lines like '[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu"
                              "<TAB>[2.5000, 2.5000, 2.5000]' (is this an IEMOCAP EmoEvaluation file?)")
    return rows


def build(raw: Path, options: dict) -> Prepared:
    require(raw, expected_folders(), TITLE, SOURCE)
    clips, dropped = [], []
    for s in SESSIONS:
        session = raw / f"Session{s}"
        for evaluation in find(session / "dialog" / "EmoEvaluation", "Ses*.txt", TITLE, "EmoEvaluation files"):
            dialog = evaluation.stem
            video = session / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
            for utterance, start, end, code in read_evaluation(evaluation):
                wav = session / "dialog" / "wav" / f"{dialog}.wav"
                if code not in FOUR_CLASSES:
                    reason = f"label {code} ({OTHER.get(code, 'unknown')}): not in the 4-class setting"
                elif end <= start:
                    reason = f"empty time range in {evaluation.name}"
                elif not video.is_file():
                    reason = "its dialog video (dialog/avi/DivX/<dialog>.avi) is missing"
                elif not wav.is_file():
                    reason = "its dialog wav (dialog/wav/<dialog>.wav) is missing"
                else:
                    clips.append(Clip(video=video, audio=wav, label=FOUR_CLASSES[code], fold=s, start=start, end=end))
                    continue
                dropped.append(Dropped(video.parent / f"{utterance}.avi", reason))
    notes = [f"{TITLE}: fold k = Session k; labels neutral, happiness (hap + exc), anger, sadness",
             "start/end: the utterance's range in the dialog video and in the dialog wav",
             "each dialog video shows both actors: crop the speaker's half (its letter: _F000 -> F; the dialog's "
             "letter, Ses01F -> F, is the actor wearing markers)"]
    return Prepared({"iemocap.csv": clips}, dropped=dropped, notes=notes)


BUILDER = Builder(
    name="iemocap",
    title=TITLE,
    source=SOURCE,
    config="configs/finetune/iemocap.yaml",
    headline="UAR / WAR",
    build=build,
    expects="RAW_DIR is IEMOCAP_full_release: Session1..5/dialog/EmoEvaluation/*.txt, Session1..5/dialog/avi/DivX/"
            "*.avi and Session1..5/dialog/wav/*.wav.",
)
