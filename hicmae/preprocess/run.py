"""``hicmae preprocess``: raw videos to face-crop videos, 16 kHz wavs, a manifest and a failure log.

Per clip (:func:`process_clip`, in a worker process): optionally check the VoxCeleb2 rule (audio and
video durations within ``max_av_diff``), convert the audio to a 16 kHz mono 16-bit wav, find and track
the face, and write the aligned crops as an H.264 mp4 at the source's exact frame rate (or as a jpg
folder). Outputs appear under their final names only when complete (``writer.py``); a clip that fails
leaves no output, only its record with the kind of failure and the reason.

The run follows ``hicmae shard``'s pattern: ``settings.json`` pins the settings of an output folder (a
rerun with others is refused rather than mixing two kinds of crops), finished clips (a record, outputs
present) are skipped, ``part=(i, n)`` takes every n-th clip from the i-th so machines can share the
work, and the run that finds every clip recorded writes the manifest (``report.py``).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from hicmae.errors import ConfigError, DataError
from hicmae.preprocess.audio import NoAudioError, extract_wav
from hicmae.preprocess.faces import DEFAULT_MARGIN, DEFAULT_SIZE, FaceSettings, NoFaceError
from hicmae.preprocess.inputs import Inputs, Job, collect
from hicmae.preprocess.report import RecordLog, outputs_exist, read_records, write_outputs
from hicmae.atomic import atomic_path, temp_path

log = logging.getLogger(__name__)

OUTPUTS = ("mp4", "frames")
LONG_GAPS = ("fail", "keep")


class FaceLostError(DataError):
    """The face was out of sight for longer than the limit."""


class DurationMismatch(DataError):
    """The audio and the video last differently (the VoxCeleb2 rule)."""


@dataclass(frozen=True)
class PreprocessSettings:
    size: int = DEFAULT_SIZE  # output square side (160; 224 for VoxCeleb2-style pretraining data)
    margin: float = DEFAULT_MARGIN  # face side added on each side of the face box
    shift: float = 0.0  # square centre below the box centre, in face sides
    faces: FaceSettings = field(default_factory=FaceSettings)
    long_gaps: str = "fail"  # a face lost for longer than faces.max_gap: "fail" the clip, or "keep" it (recorded)
    output: str = "mp4"  # "mp4" (H.264) or "frames" (a folder of jpg per clip)
    crf: int = 18  # x264 quality of the mp4 (lower: better, larger)
    crop: bool = True  # False: keep the videos as they are (VoxCeleb2 clips are face crops already); audio only
    max_av_diff: float | None = None  # seconds: leave out clips whose audio and video durations differ this much

    def check(self) -> None:
        self.faces.check()
        if self.size < 16 or self.size % 2:
            raise ConfigError(f"size must be an even number of pixels >= 16 (H.264 needs even sides), got {self.size}")
        if self.margin < -0.4:
            raise ConfigError(f"margin must be above -0.4 (the square would be smaller than a fifth of the face), "
                              f"got {self.margin}")
        if self.long_gaps not in LONG_GAPS:
            raise ConfigError(f"long_gaps must be one of {LONG_GAPS}, got {self.long_gaps!r}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be in 0..51, got {self.crf}")
        if self.max_av_diff is not None and self.max_av_diff <= 0:
            raise ConfigError(f"max_av_diff must be a positive number of seconds, got {self.max_av_diff}")


VOXCELEB2 = PreprocessSettings(size=224, crop=False, max_av_diff=0.1)  # REFERENCE.md 9.1


@dataclass
class PreprocessSummary:
    out_dir: Path
    processed: int  # clips this run worked on
    skipped: int  # this part's clips finished by an earlier run
    ok: int  # of the processed, written
    failed: dict[str, int]  # of the processed, left out, by kind
    total: int  # clips in the whole input (all parts)
    complete: bool  # every clip has a record: manifest.csv, failures.csv and summary.json are written
    summary: dict | None = None  # summary.json when complete

    def lines(self) -> list[str]:
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "none"
        out = [f"{self.processed} clips processed ({self.ok} written, {sum(self.failed.values())} failed: {fails}); "
               f"{self.skipped} already done; {self.total} clips in the input"]
        if self.complete and self.summary is not None:
            s = self.summary
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["failed_by_kind"].items())) or "none"
            out.append(f"all clips: {s['ok']} written, {s['failed']} failed ({kinds})")
            out.append(f"manifest: {self.out_dir / 'manifest.csv'}, failures: {self.out_dir / 'failures.csv'}")
        else:
            out.append("other parts are still missing: the manifest is written by the run that completes the input")
        return out


# ---------------------------------------------------------------------------------------------- one clip
def video_out(out_dir: Path, job: Job, settings: PreprocessSettings) -> Path:
    return out_dir / "videos" / f"{job.key}.mp4" if settings.output == "mp4" else out_dir / "frames" / job.key


def audio_out(out_dir: Path, job: Job) -> Path:
    return out_dir / "audio" / f"{job.key}.wav"


def check_durations(job: Job, limit: float) -> None:
    """The VoxCeleb2 rule (``hicmae prepare voxceleb2``'s :func:`verdict`, on the containers' metadata)."""
    from hicmae.data.prepare import voxceleb2
    from hicmae.data.prepare.base import probe

    v_info, a_info = probe(job.video), probe(job.audio or job.video)
    reason = voxceleb2.verdict(v_info, a_info, limit)
    if reason is None:
        return
    if reason == voxceleb2.mismatch_reason(limit):
        raise DurationMismatch(job.video, f"{reason} (video {v_info.video_seconds:.3f} s, audio "
                                          f"{a_info.audio_seconds:.3f} s)")
    if reason in (voxceleb2.NO_VIDEO, voxceleb2.NO_VIDEO_STREAM):
        raise DataError(job.video, reason + (f" ({v_info.error})" if v_info.error else ""))
    raise NoAudioError(job.audio or job.video, reason)


def kind_of(err: BaseException) -> str:
    for cls, kind in ((NoFaceError, "no_face"), (FaceLostError, "face_lost"), (NoAudioError, "no_audio"),
                      (DurationMismatch, "av_mismatch"), (DataError, "undecodable")):
        if isinstance(err, cls):
            return kind
    return "error"


def process_clip(job: Job, out_dir: Path, settings: PreprocessSettings, threads: int = 1) -> dict:
    """Do one clip; returns its record (never raises for a bad clip: the failure is in the record)."""
    from hicmae.data.media import check_file, check_video_file
    from hicmae.preprocess import writer as W
    from hicmae.preprocess.faces import iter_crops, track_faces

    started = time.perf_counter()
    record = {"key": job.key, "video": job.video, "audio": job.audio}
    wav, wav_tmp, video_writer = audio_out(out_dir, job), None, None
    try:
        check_file(job.video)
        check_video_file(job.video)  # a clear reason for a non-video or a cut-off mp4, before any decoder runs
        if settings.max_av_diff is not None:
            check_durations(job, settings.max_av_diff)
        W.remove_stale(wav)
        wav.parent.mkdir(parents=True, exist_ok=True)
        wav_tmp = temp_path(wav)
        seconds = extract_wav(job.audio or job.video, wav_tmp)
        record.update(audio_seconds=round(seconds, 4))
        if settings.crop:
            track = track_faces(job.video, settings.faces, threads)
            if track.gaps and settings.long_gaps == "fail":
                worst = max(track.gaps, key=lambda g: g[1] - g[0])
                raise FaceLostError(job.video, f"face lost for {worst[1] - worst[0]:.2f} s from {worst[0]:.2f} s "
                                               f"(limit {settings.faces.max_gap:g} s; --long-gaps keep keeps "
                                               "such clips)")
            target = video_out(out_dir, job, settings)
            W.remove_stale(target)
            video_writer = W.Mp4Writer(target, settings.size, track.fps, settings.crf) if settings.output == "mp4" \
                else W.FrameFolderWriter(target)
            for face in iter_crops(track, settings.size, settings.margin, settings.shift, threads):
                video_writer.write(face)
            video_writer.commit()
            video_writer = None
            record.update(frames=len(track), fps=f"{track.fps.numerator}/{track.fps.denominator}",
                          face_frames=int(track.has_face.sum()), found_frames=int(track.found.sum()),
                          examined=track.examined, gaps=[[round(a, 3), round(b, 3)] for a, b in track.gaps],
                          video_out=str(target.relative_to(out_dir)))
        else:
            record.update(video_out=job.video)
        W.commit(wav_tmp, wav)
        wav_tmp = None
        record.update(status="ok", audio_out=str(wav.relative_to(out_dir)),
                      outputs={"audio": str(wav.relative_to(out_dir)),
                               **({"video": record["video_out"]} if settings.crop else {})})
    except Exception as err:  # a bad clip never ends the run: it goes to the failure log with its reason
        if not isinstance(err, DataError):
            log.exception("%s: unexpected failure", job.video)
        reason = str(err) if isinstance(err, DataError) else f"{job.video}: unexpected {type(err).__name__}: {err}"
        record.update(status="failed", kind=kind_of(err), reason=reason)
    finally:
        if video_writer is not None:
            video_writer.abort()
        if wav_tmp is not None:
            wav_tmp.unlink(missing_ok=True)
    record["seconds_taken"] = round(time.perf_counter() - started, 3)
    return record


# ---------------------------------------------------------------------------------------------- the run
_WORKER: tuple[Path, PreprocessSettings] | None = None


def _init(out_dir: Path, settings: PreprocessSettings) -> None:
    import cv2

    global _WORKER
    cv2.setNumThreads(1)  # one process per core: OpenCV's own threads would only compete with the others
    _WORKER = (out_dir, settings)


def _work(job: Job) -> dict:
    return process_clip(job, *_WORKER)


def _results(jobs: list[Job], out_dir: Path, settings: PreprocessSettings, workers: int):
    if workers == 1:
        _init(out_dir, settings)
        yield from map(_work, jobs)
        return
    # forkserver: workers start clean (no decoder state or threads inherited from the parent). The server
    # imports the pipeline once (1.5 s with torch, which hicmae.data.media imports), so each worker forked
    # from it starts at once instead of importing it again (when this process starts the server).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["hicmae.preprocess.run"])
    with ctx.Pool(workers, _init, (out_dir, settings)) as pool:
        yield from pool.imap_unordered(_work, jobs, chunksize=1)


def _pin_settings(out_dir: Path, settings: PreprocessSettings) -> dict:
    path, current = out_dir / "settings.json", asdict(settings)
    if path.exists():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(current)):
            changed = sorted(k for k in set(old) | set(current) if old.get(k) != json.loads(json.dumps(current)).get(k))
            raise ConfigError(f"{out_dir} holds clips preprocessed with other settings (differing: "
                              f"{', '.join(changed)}; see its settings.json): choose a new output folder, or "
                              "repeat the first run's options")
        return old
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(current, indent=1) + "\n")
    return current


def finished(out_dir: Path, record: dict | None, retry_failed: bool) -> bool:
    if record is None:
        return False
    if record["status"] == "ok":
        return outputs_exist(out_dir, record)
    return not retry_failed


def preprocess(source: str | os.PathLike, out_dir: str | os.PathLike, settings: PreprocessSettings | None = None, *,
               root: str | None = None, audio_dir: str | os.PathLike | None = None,
               target_columns: list[str] | None = None, workers: int | None = None, part: tuple[int, int] = (1, 1),
               retry_failed: bool = False, progress: bool | None = False) -> PreprocessSummary:
    """Preprocess this part's unfinished clips of ``source`` (a folder of videos or a manifest) into ``out_dir``.

    ``audio_dir``: for a folder, separate audio files in a tree mirroring it (matched by stem: VoxCeleb2's
    ``aac`` beside ``mp4``); ``workers``: processes (default one per CPU core); ``retry_failed``: redo clips
    that failed before (e.g. after installing a missing codec) instead of keeping their failure.
    """
    from hicmae.progress import progress_bar

    settings = settings or PreprocessSettings()
    settings.check()
    i, n = part
    if not (n >= 1 and 1 <= i <= n):
        raise ConfigError(f"part must be i/n with 1 <= i <= n, got {i}/{n}")
    inputs: Inputs = collect(source, root=root, audio_dir=audio_dir, target_columns=target_columns)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pinned = _pin_settings(out, settings)
    records = read_records(out)
    mine = [job for k, job in enumerate(inputs.jobs) if k % n == i - 1]
    todo = [job for job in mine if not finished(out, records.get(job.key), retry_failed)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    ok, failed = 0, {}
    if todo:
        with RecordLog(out, part) as record_log, \
                progress_bar(len(todo), f"preprocessing {Path(source).name}", "clip", progress) as bar:
            for record in _results(todo, out, settings, workers):
                record_log.append(record)
                bar.update(1)
                if record["status"] == "ok":
                    ok += 1
                else:
                    failed[record["kind"]] = failed.get(record["kind"], 0) + 1
                    log.warning("%s", record["reason"])
    records = read_records(out)  # with what other parts wrote meanwhile
    complete = all(finished(out, records.get(job.key), False) for job in inputs.jobs)
    summary = write_outputs(out, inputs, records, pinned) if complete else None
    return PreprocessSummary(out, len(todo), len(mine) - len(todo), ok, failed, len(inputs.jobs), complete, summary)


def voxceleb2_settings(**changes) -> PreprocessSettings:
    """VoxCeleb2 as distributed (REFERENCE.md 9.1): videos kept (they are 224x224 face crops already), audio
    to 16 kHz wav, clips whose audio and video durations differ by 0.1 s or more left out."""
    return replace(VOXCELEB2, **changes)
