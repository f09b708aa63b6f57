"""MSP-IMPROV: 4 classes (A, H, N, S), 6 leave-one-session-out folds, one manifest ``msp_improv.csv``.

Layout (the release of the MSP lab, UT Dallas; the names the original's lists are built from)::

    Evaluation.txt      one consensus line per speaking turn, then one line per rater:
                        "UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.000000; V:3.500000; D:3.000000 ; N:3.000000;"
    session1/S01A/S/MSP-IMPROV-S01A-F01-S-FM01.avi     (the turn's video)
    session1/S01A/S/MSP-IMPROV-S01A-F01-S-FM01.wav     (its audio, 48 kHz)

Copies that keep the videos and the audio apart (``Video/session1/...avi`` and ``Audio/session1/...wav``)
work too: files are found by name anywhere under RAW_DIR, and ``Evalution.txt`` (a misspelling some copies
carry) is accepted for ``Evaluation.txt``.

Name fields: ``S01A`` sentence 01 written for a target emotion A (the scenario, not the label), ``F01`` the
speaker (F/M) and the session (01..06), ``S`` the recording condition (T the target sentence improvised,
R read, S another turn of the improvisation, P the natural interaction between scenes; the per-letter counts
of the original's lists match the corpus paper's per-condition counts), ``FM01`` the turn. The label is the
consensus letter of ``Evaluation.txt``; the 4-class setting keeps A, H, N, S and leaves out O (other) and
X (no agreement), listed in ``dropped.csv``.

Folds: ``fold`` = the session (1..6), as in the original's ``splitNN``, whose ``test.csv`` is session NN
(its ``val.csv`` is the same file) and whose ``train.csv`` is the other five sessions; its label index
i is ``[A, H, N, S][i]``, the class order of ``configs/finetune/msp_improv.yaml``. The original's lists
hold 7,787 clips against the corpus's 7,798 four-class turns: it lacks 3 S and 8 P turns (by the paper's
per-condition counts), presumably without a usable video; which ones cannot be told from the lists. Here a
turn without its ``.avi`` or ``.wav`` is listed in ``dropped.csv``; a turn whose files exist is kept.

The manifest points at the raw ``.avi`` (the original used OpenFace face crops of it) and the ``.wav``.
"""

from __future__ import annotations

import re
from pathlib import Path

from hicmae.data.prepare.base import Builder, Clip, Dropped, Prepared
from hicmae.errors import DataError

TITLE = "MSP-IMPROV"
SOURCE = ("the MSP lab, UT Dallas: https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Improv.html "
          "(licence agreement)")
CLASSES = ("A", "H", "N", "S")
SESSIONS = range(1, 7)
LABEL_FILES = ("Evaluation.txt", "Evalution.txt")
# The consensus line of one turn; rater lines ("Fr-001; Neutral; ...") do not match.
CONSENSUS = re.compile(r"^\s*(?:UTD|MSP)-IMPROV-(S\d\d[A-Z]-[FM]\d\d-[A-Z]-[A-Z]+\d+)\.\w+\s*;\s*([A-Z])\s*;")
NAME = re.compile(r"^MSP-IMPROV-S\d\d[A-Z]-[FM](\d\d)-[A-Z]-[A-Z]+\d+$")
LEFT_OUT = {"O": "consensus label O (other): not one of A, H, N, S",
            "X": "consensus label X (no agreement): not one of A, H, N, S"}


def session_of(name: str) -> int | None:
    """The session (1..6) of a turn named ``MSP-IMPROV-S01A-F01-S-FM01``: the digits of the speaker field."""
    m = NAME.match(name)
    return int(m.group(1)) if m else None


def read_labels(path: Path) -> dict[str, str]:
    """Turn name (``MSP-IMPROV-...``) -> consensus letter, from ``Evaluation.txt``."""
    labels = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = CONSENSUS.match(line)
            if m:
                labels[f"MSP-IMPROV-{m.group(1)}"] = m.group(2)
    if not labels:
        raise DataError(path, "has no consensus lines like 'UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:...; V:...;' "
                              "(is this the MSP-IMPROV Evaluation.txt?)")
    return labels


def index_files(raw: Path, suffix: str) -> dict[str, Path]:
    """Turn name -> file, for every ``MSP-IMPROV-*<suffix>`` under ``raw``; two copies of one name are an error
    (which one the original used cannot be told)."""
    found: dict[str, Path] = {}
    for path in sorted(raw.rglob(f"MSP-IMPROV-*{suffix}")):
        if path.name.startswith("._") or session_of(path.stem) is None:
            continue
        if path.stem in found:
            raise DataError(path, f"is a second copy of {found[path.stem]}; keep one")
        found[path.stem] = path
    return found


def check_layout(raw: Path) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    """The label file, the videos and the wavs; one error naming everything that is missing."""
    label_file = next((raw / n for n in LABEL_FILES if (raw / n).is_file()), None)
    videos, wavs = index_files(raw, ".avi"), index_files(raw, ".wav")
    missing = [] if label_file else ["Evaluation.txt"]
    for kind, files, suffix in (("videos", videos, "avi"), ("audio", wavs, "wav")):
        have = {session_of(n) for n in files}
        missing += [f"the {kind} of session{s} (session{s}/S01A/S/MSP-IMPROV-S01A-F0{s}-S-FM01.{suffix}, ...)"
                    for s in SESSIONS if s not in have]
    if missing:
        raise DataError(raw, f"is not a complete {TITLE} tree: missing {'; '.join(missing)} (get the dataset from "
                             f"{SOURCE}; expected: Evaluation.txt and sessionN/<sentence>/<type>/MSP-IMPROV-*.avi "
                             f"with the .wav of each turn beside it, or under Video/ and Audio/)")
    return label_file, videos, wavs


def build(raw: Path, options: dict) -> Prepared:
    label_file, videos, wavs = check_layout(raw)
    labels = read_labels(label_file)
    clips, dropped = [], []
    for name in sorted(labels):
        letter, session = labels[name], session_of(name)
        video, wav = videos.get(name), wavs.get(name)
        if letter not in CLASSES:
            reason = LEFT_OUT.get(letter, f"consensus label {letter}: not one of A, H, N, S")
        elif video is None:
            reason = f"labelled in {label_file.name}, but its .avi is missing"
        elif wav is None:
            reason = f"labelled in {label_file.name}, but its .wav is missing"
        else:
            clips.append(Clip(video=video, audio=wav, label=letter, fold=session))
            continue
        dropped.append(Dropped(video or (wav.with_suffix(".avi") if wav else raw / f"{name}.avi"), reason))
    dropped += [Dropped(videos[n], f"not in {label_file.name}") for n in sorted(set(videos) - set(labels))]
    notes = [f"{TITLE}: fold k = session k (leave-one-session-out), as the original's splitNN; "
             f"labels {', '.join(CLASSES)} (configs/finetune/msp_improv.yaml)"]
    return Prepared({"msp_improv.csv": clips}, dropped=dropped, notes=notes)


BUILDER = Builder(
    name="msp_improv",
    title=TITLE,
    source=SOURCE,
    config="configs/finetune/msp_improv.yaml",
    headline="UAR / WAR",
    build=build,
    expects="RAW_DIR holds Evaluation.txt and sessionN/S01A/S/MSP-IMPROV-S01A-F0N-S-FM01.avi with the .wav of "
            "each turn beside it (or under Video/ and Audio/).",
)
