"""VoxCeleb2 (pretraining): the dev set as distributed -> ``voxceleb2.csv``, one row per usable clip, no labels.

Layout (the zips of the VoxCeleb2 page unpack into ``dev/``)::

    dev/mp4/id00012/21Uxsk56VDQ/00001.mp4     vox2_dev_mp4 (25 fps, 224x224 face-centred, 1,092,009 clips)
    dev/aac/id00012/21Uxsk56VDQ/00001.m4a     vox2_dev_aac (the same clips' audio, AAC)

The rule of REFERENCE.md 9.1: a clip is left out when its video cannot be opened (the original found 283
such files with decord: no moov atom, no video stream) or when its audio and video durations differ by
0.1 s or more (145 clips), which leaves 1,091,581 clips. The original measured the video as decord's frame
count / 25 and the audio by decoding the wav it had converted from the m4a. Decoding 1.1 M files takes
days, so this builder reads the containers' metadata instead (PyAV ``av.open``: the frame count and rate
of the mp4's index, the length of the m4a's audio stream): milliseconds a file, spread over ``--workers``
processes, with a progress bar. The two measures should differ by one AAC frame at most (1,024 samples,
64 ms at 16 kHz: a decoder may keep the padding of the last frame, which the container's duration leaves
out), so they decide alike except for clips that close to the threshold. A file cut short inside its media data,
with its index intact, opens, and is kept, here as in the original; the training loop skips and counts
such a clip (``data.on_bad_sample``). Every left-out clip is in ``dropped.csv`` with its reason.

Audio: the ``audio`` column points at the official ``.m4a`` itself. The original converted every m4a to
a 16 kHz wav first because torchaudio could not read m4a; ``hicmae.data.media.load_audio`` reads it
through PyAV and resamples to 16 kHz, so no conversion is needed. A converted copy can still be used
(``--audio-ext wav`` expects ``dev/aac/.../00001.wav``, where the original put them): a wav reads faster
(only the needed range is read), and tar shards (``hicmae shard``) remove the decoding cost altogether.

No folds: pretraining uses every clip. ``--split test`` lists the test set (``test/mp4``, ``test/aac``).
"""

from __future__ import annotations

import os
from pathlib import Path

from hicmae.data.prepare.base import Builder, Clip, Dropped, Option, Prepared, brief, probe_many, require
from hicmae.errors import DataError

TITLE = "VoxCeleb2"
SOURCE = ("the VoxCeleb2 page of the Oxford VGG group, www.robots.ox.ac.uk/~vgg/data/voxceleb/vox2.html, "
          "after requesting access")
DEV_CLIPS = 1_092_009  # the dev set as distributed
ORIGINAL_CLIPS = 1_091_581  # what the original kept (info_clean_av_new.csv)

NO_VIDEO = "video cannot be opened (corrupt or truncated)"
NO_VIDEO_STREAM = "video file has no video stream"
NO_AUDIO_FILE = "audio file is missing"
BAD_AUDIO = "audio file cannot be opened"
NO_AUDIO_STREAM = "audio file has no audio stream"


def mismatch_reason(limit: float) -> str:
    return f"audio and video durations differ by {limit:g} s or more"


def list_videos(video_root: Path) -> list[Path]:
    """``<speaker>/<YouTube id>/<clip>.mp4`` under ``video_root``, sorted; os.scandir, since a glob over a
    million files is several times slower."""
    out = []
    for speaker in sorted(_dirs(video_root)):
        for video in sorted(_dirs(speaker)):
            with os.scandir(video) as entries:
                out += sorted(Path(e.path) for e in entries if e.name.endswith(".mp4") and e.is_file())
    return out


def _dirs(path: Path) -> list[Path]:
    with os.scandir(path) as entries:
        return [Path(e.path) for e in entries if e.is_dir()]


def audio_of(video: Path, video_root: Path, audio_root: Path, ext: str) -> Path:
    """``dev/mp4/id/yt/00001.mp4`` -> ``dev/aac/id/yt/00001.<ext>`` (the official pairing, by name)."""
    return (audio_root / video.relative_to(video_root)).with_suffix(f".{ext}")


def verdict(video_info, audio_info, limit: float) -> str | None:
    """Why a clip is left out, from the two files' metadata, or None when it is kept."""
    if video_info.error is not None or not video_info.exists:
        return NO_VIDEO
    if video_info.video_seconds is None:
        return NO_VIDEO_STREAM
    if not audio_info.exists:
        return NO_AUDIO_FILE
    if audio_info.error is not None:
        return BAD_AUDIO
    if audio_info.audio_seconds is None:
        return NO_AUDIO_STREAM
    if abs(audio_info.audio_seconds - video_info.video_seconds) >= limit:
        return mismatch_reason(limit)
    return None


def build(raw: Path, options: dict) -> Prepared:
    split, ext, limit = options["split"], options["audio_ext"], options["max_av_diff"]
    if limit <= 0:
        raise DataError(None, f"--max-av-diff must be a positive number of seconds, got {limit}")
    video_root, audio_root = raw / split / "mp4", raw / split / "aac"
    require(raw, [f"{split}/mp4", f"{split}/aac"], TITLE, SOURCE)
    videos = list_videos(video_root)
    if not videos:
        raise DataError(video_root, f"has no clips (expected {split}/mp4/id00012/21Uxsk56VDQ/00001.mp4 ...); "
                                    f"is this the unpacked vox2_{split}_mp4 zip?")
    audios = [audio_of(v, video_root, audio_root, ext) for v in videos]
    if not any(a.is_file() for a in audios[:1000]) and not any(audio_root.rglob(f"*.{ext}")):
        raise DataError(audio_root, f"has no .{ext} files (expected {split}/aac/id00012/21Uxsk56VDQ/00001.{ext}, "
                                    f"the unpacked vox2_{split}_aac zip" +
                                    (", converted to wav by you" if ext == "wav" else "") + ")")
    infos = probe_many([*videos, *audios], options["workers"], desc=f"{TITLE} headers")
    clips, dropped = [], []
    for video, audio, v_info, a_info in zip(videos, audios, infos[:len(videos)], infos[len(videos):]):
        reason = verdict(v_info, a_info, limit)
        if reason is None:
            clips.append(Clip(video=video, audio=audio))
        else:
            dropped.append(Dropped(video, reason))
    if not clips:
        raise DataError(raw, f"none of the {len(videos)} clips is usable; the first: {dropped[0].path}: "
                             f"{dropped[0].reason}")
    notes = [f"{TITLE} {split}: {len(videos):,} clips found, {len(clips):,} kept"]
    if split == "dev" and len(videos) != DEV_CLIPS:
        notes.append(f"the {split} set as distributed has {DEV_CLIPS:,} clips (the original kept "
                     f"{ORIGINAL_CLIPS:,}): this tree is partial")
    missing_audio = [d.path for d in dropped if d.reason == NO_AUDIO_FILE]
    if missing_audio:
        notes.append(f"{len(missing_audio)} clips have no .{ext} beside them under {split}/aac, e.g. "
                     f"{brief([audio_of(p, video_root, audio_root, ext) for p in missing_audio], 3)}")
    return Prepared({"voxceleb2.csv": clips}, label_columns=[], dropped=dropped, notes=notes)


BUILDER = Builder(
    name="voxceleb2",
    title=TITLE,
    source=SOURCE,
    config="configs/pretrain/base.yaml",
    headline="pretraining (no labels)",
    build=build,
    options=(
        Option("workers", "processes that read the files' headers in parallel; 0: one per CPU core", 0, type=int),
        Option("split", "which set to list", "dev", choices=("dev", "test")),
        Option("audio_ext", "m4a: the official audio as is; wav: 16 kHz wavs you converted, beside the m4a files",
               "m4a", choices=("m4a", "wav")),
        Option("max_av_diff", "leave out clips whose audio and video durations differ by this many seconds or more",
               0.1, type=float),
    ),
    expects="RAW_DIR holds dev/mp4/idXXXXX/<YouTube id>/NNNNN.mp4 and dev/aac/idXXXXX/<YouTube id>/NNNNN.m4a "
            "(the unpacked vox2_dev_mp4 and vox2_dev_aac zips).",
)
