"""``hicmae shard``: pack a manifest's clips into tar shards, doing the deterministic work once.

Per clip: decode every frame of its range, apply the VoxCeleb2 crop when asked, resize to the training
resolution (PIL bilinear on uint8, as the original's first step), encode each frame (JPEG or PNG), and
read its audio as 16 kHz mono 16-bit PCM. Random work stays for training time.

The plan (``plan.json``) fixes which rows go into which shard: rows in a seeded random order (so a
streaming shuffle buffer mixes speakers), ``clips_per_shard`` to a shard. Because the plan depends on
nothing but the manifest and the settings, machines can split the work with ``part=(i, n)``: machine i
writes shards i-1, i-1+n, ... Each shard is written to a temporary name and renamed when complete,
with a sidecar ``<shard>.json`` (its clips, its bad clips with reasons, its size and SHA-256): a finished
shard is never rewritten, an interrupted one is redone. When every shard of the plan exists, the run
that sees it writes ``index.json``, ``clips.csv`` and ``bad_clips.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hicmae.data.shards.format import ENCODINGS, FORMAT_VERSION, Record, encode_frames, pcm_from_wave
from hicmae.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CHUNK_FRAMES = 64  # frames decoded at a time, so a long video never sits in memory whole


@dataclass(frozen=True)
class ShardSettings:
    encoding: str = "jpeg"
    quality: int = 90  # JPEG only
    size: int | None = 160  # square side after resizing; None keeps the decoded (or cropped) size
    voxceleb2_crop: bool = False
    clips_per_shard: int = 1000
    shuffle_seed: int | None = 0  # None keeps the manifest's order
    folder_fps: float = 25.0

    def check(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"quality must be in 1..100, got {self.quality}")
        if self.clips_per_shard < 1:
            raise ConfigError(f"clips_per_shard must be at least 1, got {self.clips_per_shard}")


def shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


@dataclass
class ShardRunSummary:
    out_dir: Path
    shards_written: int
    shards_skipped: int  # finished earlier
    shards_total: int
    clips: int  # written by this run
    bad: int  # clips this run could not read
    complete: bool  # every shard of the plan exists: the index is written

    def lines(self) -> list[str]:
        out = [f"{self.shards_written} shards written, {self.shards_skipped} already finished, "
               f"{self.shards_total} in the plan; {self.clips} clips packed, {self.bad} bad"]
        if self.complete:
            out.append(f"index: {self.out_dir / 'index.json'}, clips: {self.out_dir / 'clips.csv'}, bad clips: "
                       f"{self.out_dir / 'bad_clips.csv'}")
        else:
            out.append("other parts are still missing: the index is written by the run that completes the plan")
        return out


# ---------------------------------------------------------------------------------------------- one clip
_SETTINGS: ShardSettings | None = None


def _init(settings: ShardSettings) -> None:
    global _SETTINGS
    _SETTINGS = settings


def _pack(job: tuple[int, object]) -> Record | dict:
    """A clip's record, or ``{"row", "video", "reason"}`` when it cannot be read."""
    row_index, row = job
    try:
        return pack_clip(row_index, row, _SETTINGS)
    except DataError as err:
        return {"row": row_index, "video": row.video, "reason": str(err)}
    except Exception as err:  # an unexpected failure still names the clip instead of ending the run
        return {"row": row_index, "video": row.video, "reason": f"{row.video}: unexpected {type(err).__name__}: {err}"}


def pack_clip(row_index: int, row, settings: ShardSettings) -> Record:
    from hicmae.data import transforms as T
    from hicmae.data.datasets import open_row
    from hicmae.data.media import SAMPLE_RATE, audio_duration, load_audio

    clip, first, count = open_row(row, settings.folder_fps)
    with clip:
        timestamps = clip.timestamps(range(first, first + count))
        data, offsets = bytearray(), [0]
        for lo in range(first, first + count, CHUNK_FRAMES):
            frames = clip.frames(range(lo, min(lo + CHUNK_FRAMES, first + count)))
            if settings.voxceleb2_crop:
                frames = T.voxceleb2_crop(frames, settings.size or 160)
            if settings.size and frames.shape[1:3] != (settings.size, settings.size):
                frames = T.pil_resize(frames, settings.size)
            size = frames.shape[1:3]
            encoded, chunk_offsets = encode_frames(frames, settings.encoding, settings.quality)
            offsets += [len(data) + o for o in chunk_offsets[1:]]
            data += encoded
    audio_path = row.audio or row.video
    if os.path.isdir(row.video) and row.audio is None:
        raise DataError(row.video, "a frame folder needs an 'audio' file")
    wave = load_audio(audio_path, row.start or 0.0, row.end)
    meta = {"row": row_index, "video": row.video, "audio": row.audio, "labels": list(row.labels), "fold": row.fold,
            "start": row.start, "end": row.end, "frames": count, "timestamps": timestamps.tolist(),
            "frame_offsets": offsets, "encoding": settings.encoding, "size": list(size),
            "audio_offset": max(round((row.start or 0.0) * SAMPLE_RATE), 0),
            "audio_duration": audio_duration(audio_path), "voxceleb2_crop": settings.voxceleb2_crop}
    return Record(f"{row_index:09d}", meta, bytes(data), pcm_from_wave(wave.numpy()))


# ---------------------------------------------------------------------------------------------- the plan
def make_plan(manifest_path: str, num_rows: int, settings: ShardSettings) -> dict:
    order = np.arange(num_rows) if settings.shuffle_seed is None else \
        np.random.default_rng(settings.shuffle_seed).permutation(num_rows)
    cps = settings.clips_per_shard
    return {"version": FORMAT_VERSION, "manifest": str(Path(manifest_path).resolve()),
            "manifest_sha256": _sha256(manifest_path), "rows": num_rows, "settings": asdict(settings),
            "shards": [order[k:k + cps].tolist() for k in range(0, num_rows, cps)]}


def _load_or_write_plan(out_dir: Path, plan: dict) -> dict:
    from hicmae.atomic import atomic_path

    path = out_dir / "plan.json"
    if path.exists():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in ("manifest_sha256", "rows", "settings")} != \
                {k: plan[k] for k in ("manifest_sha256", "rows", "settings")}:
            raise ConfigError(f"{out_dir} holds shards of another manifest or other settings (see its plan.json): "
                              "choose a new output folder, or repeat the first run's options")
        return old
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plan) + "\n")
    return plan


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def finished(out_dir: Path, k: int) -> bool:
    """A shard is finished when it and its sidecar exist and agree on the size."""
    tar, side = out_dir / shard_name(k), (out_dir / shard_name(k)).with_suffix(".json")
    if not (tar.exists() and side.exists()):
        return False
    try:
        return json.loads(side.read_text())["bytes"] == tar.stat().st_size
    except (ValueError, KeyError):
        return False


# ---------------------------------------------------------------------------------------------- the run
def shard_manifest(manifest_path: str, out_dir: str | os.PathLike, settings: ShardSettings = ShardSettings(), *,
                   root: str | None = None, target_columns: list[str] | None = None, workers: int | None = None,
                   part: tuple[int, int] = (1, 1), progress: bool | None = False) -> ShardRunSummary:
    """Write this part's unfinished shards of ``manifest_path`` into ``out_dir`` (see the module docstring)."""
    from hicmae.data.manifest import read_manifest
    from hicmae.progress import progress_bar

    settings.check()
    i, n = part
    if not (n >= 1 and 1 <= i <= n):
        raise ConfigError(f"part must be i/n with 1 <= i <= n, got {i}/{n}")
    manifest = read_manifest(manifest_path, root, target_columns)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = _load_or_write_plan(out, make_plan(manifest_path, len(manifest), settings))
    mine = [k for k in range(len(plan["shards"])) if k % n == i - 1]
    todo = [k for k in mine if not finished(out, k)]
    jobs = [(r, manifest.rows[r]) for k in todo for r in plan["shards"][k]]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    written = clips = bad = 0
    with progress_bar(len(jobs), f"sharding {Path(manifest_path).name}", "clip", progress) as bar:
        results = _results(jobs, settings, workers)
        for k in todo:
            n_clips, n_bad = _write_shard(out, k, (next(results) for _ in plan["shards"][k]), bar)
            written, clips, bad = written + 1, clips + n_clips, bad + n_bad
    complete = all(finished(out, k) for k in range(len(plan["shards"])))
    if complete:
        write_index(out, plan, manifest.label_columns)
    return ShardRunSummary(out, written, len(mine) - len(todo), len(plan["shards"]), clips, bad, complete)


def _results(jobs, settings, workers):
    if workers == 1:
        _init(settings)
        yield from map(_pack, jobs)
        return
    # forkserver: workers start from a clean process (no decoder state or threads inherited).
    with multiprocessing.get_context("forkserver").Pool(workers, _init, (settings,)) as pool:
        yield from pool.imap(_pack, jobs, chunksize=1)


def _write_shard(out: Path, k: int, results, bar) -> tuple[int, int]:
    from hicmae.atomic import atomic_path

    tar_path = out / shard_name(k)
    clips, bad = [], []
    with atomic_path(tar_path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for result in results:
                bar.update(1)
                if isinstance(result, Record):
                    result.write(tar)
                    m = result.meta
                    clips.append({"key": result.key, "row": m["row"], "frames": m["frames"],
                                  "seconds": len(result.pcm) / 2 / 16000, "video": m["video"], "audio": m["audio"],
                                  "labels": m["labels"], "fold": m["fold"], "start": m["start"], "end": m["end"]})
                else:
                    log.warning("%s", result["reason"])
                    bad.append(result)
        digest, size = _sha256(tmp), tmp.stat().st_size
        side = {"name": tar_path.name, "bytes": size, "sha256": digest, "clips": clips, "bad": bad}
        # The sidecar is renamed before the tar: a shard lacking either is unfinished and is written again.
        with atomic_path(tar_path.with_suffix(".json")) as side_tmp:
            side_tmp.write_text(json.dumps(side) + "\n")
    return len(clips), len(bad)


def write_index(out: Path, plan: dict, label_columns: list[str]) -> None:
    from hicmae.atomic import atomic_path

    sides = [json.loads((out / shard_name(k)).with_suffix(".json").read_text()) for k in range(len(plan["shards"]))]
    shards = [{"name": s["name"], "clips": len(s["clips"]), "frames": sum(c["frames"] for c in s["clips"]),
               "seconds": sum(c["seconds"] for c in s["clips"]), "bytes": s["bytes"], "sha256": s["sha256"]}
              for s in sides]
    index = {"version": FORMAT_VERSION, "settings": plan["settings"], "manifest": plan["manifest"],
             "label_columns": label_columns, "clips": sum(s["clips"] for s in shards),
             "bad": sum(len(s["bad"]) for s in sides), "shards": shards}
    extra = [c for c in ("start", "end", "fold") if any(clip[c] is not None for s in sides for clip in s["clips"])]
    with atomic_path(out / "clips.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["shard", "key", "frames", "seconds", "video", "audio", *label_columns, *extra])
        for s in sides:
            for c in s["clips"]:
                labels = c["labels"] if label_columns else []
                w.writerow([s["name"], c["key"], c["frames"], f"{c['seconds']:.6f}", c["video"], c["audio"] or "",
                            *labels, *("" if c[e] is None else c[e] for e in extra)])
    with atomic_path(out / "bad_clips.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["shard", "row", "video", "reason"])
        w.writerows([s["name"], b["row"], b["video"], b["reason"]] for s in sides for b in s["bad"])
    with atomic_path(out / "SHA256SUMS") as tmp:  # `sha256sum -c SHA256SUMS` checks a copy
        tmp.write_text("".join(f"{s['sha256']}  {s['name']}\n" for s in shards))
    with atomic_path(out / "index.json") as tmp:  # last: its presence means the folder is complete
        tmp.write_text(json.dumps(index, indent=1) + "\n")
