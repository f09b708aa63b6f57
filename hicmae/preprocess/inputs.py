"""What ``hicmae preprocess`` is asked to process: a folder of videos or a manifest, as a list of jobs.

Why jobs and rows apart: a manifest may list one video in several rows (parts of it with ``start``/``end``,
or several labels); each distinct (video, audio) pair is processed once, and every row that uses it is
written to the output manifest. A job's ``key`` is the video's path relative to the input folder (or to
the folder all the manifest's videos share) without its extension: the outputs mirror the input tree, so
names never collide across speakers or sessions, and the same input always gives the same names, which
is what lets a rerun find its finished work and ``--part i/n`` split it on any machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hicmae.data.manifest import Row
from hicmae.data.media import VIDEO_EXTENSIONS
from hicmae.errors import DataError

AUDIO_EXTENSIONS = (".m4a", ".wav", ".aac", ".flac", ".mp3", ".ogg", ".opus")


@dataclass(frozen=True)
class Job:
    key: str  # output name relative to the output folders, without extension
    video: str  # source video (absolute)
    audio: str | None  # separate audio source, or None: the video's own track


@dataclass
class Inputs:
    jobs: list[Job]
    rows: list[tuple[Row, int]]  # every manifest row (or one per video of a folder) and its job's index
    label_columns: list[str]
    source: str  # the folder or manifest, as given


def list_videos(folder: Path) -> list[Path]:
    """Video files under ``folder`` (any depth), sorted by relative path; hidden names are skipped, so the
    temporary files of an interrupted run inside an input tree are not taken for videos."""
    out = []
    for base, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(base) / f for f in files if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith(".")]
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def find_audio(audio_dir: Path, relative: Path) -> str | None:
    """The file beside ``audio_dir / relative`` with the same stem and an audio extension (VoxCeleb2's
    ``dev/aac/<id>/<yt>/00001.m4a`` for ``dev/mp4/<id>/<yt>/00001.mp4``), or None."""
    stem = audio_dir / relative.with_suffix("")
    for ext in AUDIO_EXTENSIONS:
        candidate = stem.with_name(stem.name + ext)
        if candidate.is_file():
            return str(candidate)
    return None


def _key(relative: Path) -> str:
    return relative.with_suffix("").as_posix()


def _add(jobs: list[Job], index: dict, used: set, video: str, audio: str | None, key: str) -> int:
    """The index of the job for (video, audio), added if new; a key taken by another pair gets a suffix."""
    if (video, audio) in index:
        return index[(video, audio)]
    unique, n = key, 1
    while unique in used:
        n += 1
        unique = f"{key}_{n}"
    used.add(unique)
    index[(video, audio)] = len(jobs)
    jobs.append(Job(unique, video, audio))
    return len(jobs) - 1


def collect(source: str | os.PathLike, *, root: str | None = None, audio_dir: str | os.PathLike | None = None,
            target_columns: list[str] | None = None) -> Inputs:
    """The jobs for ``source``: a folder (every video file under it) or a manifest (see
    :mod:`hicmae.data.manifest`; relative paths resolve against ``root``, default the manifest's folder).
    ``audio_dir`` (folders only): separate audio files mirroring the folder's tree, by stem."""
    path = Path(source)
    jobs: list[Job] = []
    index: dict = {}
    used: set = set()
    rows: list[tuple[Row, int]] = []
    if path.is_dir():
        videos = list_videos(path)
        if not videos:
            raise DataError(path, f"has no video files ({', '.join(VIDEO_EXTENSIONS)}) at any depth")
        adir = Path(audio_dir) if audio_dir is not None else None
        if adir is not None and not adir.is_dir():
            raise DataError(adir, "audio folder does not exist")
        for video in videos:
            rel = video.relative_to(path)
            audio = find_audio(adir, rel) if adir is not None else None
            k = _add(jobs, index, used, str(video.resolve()), audio, _key(rel))
            rows.append((Row(video=str(video), audio=audio), k))
        return Inputs(jobs, rows, [], str(source))
    if audio_dir is not None:
        raise DataError(path, "--audio-dir is for a folder of videos; a manifest names its audio in its 'audio' column")
    from hicmae.data.manifest import read_manifest

    manifest = read_manifest(path, root, target_columns)
    videos = [os.path.abspath(r.video) for r in manifest.rows]
    base = os.path.commonpath([os.path.dirname(v) for v in videos])
    for row, video in zip(manifest.rows, videos):
        audio = os.path.abspath(row.audio) if row.audio else None
        k = _add(jobs, index, used, video, audio, _key(Path(os.path.relpath(video, base))))
        rows.append((row, k))
    return Inputs(jobs, rows, list(manifest.label_columns), str(source))
