"""The record of what ``hicmae preprocess`` did to each clip, and the files made from it.

Why an append-only log: a run over a million clips must know, when restarted, which clips are done, and
several machines (``--part i/n``) may share one output folder. Each run appends one JSON line per clip
to its own file under ``records/`` (flushed at once) after the clip's outputs were renamed into place;
a line cut off by a kill is ignored when read, so that clip is simply done again. When every clip of the
input has a record, the run that sees it writes ``manifest.csv`` (our CSV format, labels and folds carried
over), ``failures.csv`` (every clip left out, with the kind and the reason) and ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
from collections import Counter
from pathlib import Path

from hicmae.preprocess.inputs import Inputs
from hicmae.atomic import atomic_path

log = logging.getLogger(__name__)

RECORDS = "records"
KINDS = ("no_face", "face_lost", "no_audio", "undecodable", "av_mismatch", "error")


class RecordLog:
    """This run's own records file (``records/part-<i>-of-<n>.<host>.<pid>.jsonl``), one line per clip."""

    def __init__(self, out_dir: Path, part: tuple[int, int]):
        folder = out_dir / RECORDS
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{part[0]}-of-{part[1]}.{socket.gethostname()}.{os.getpid()}.jsonl"
        self.path = folder / name
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(out_dir: Path) -> dict[str, dict]:
    """Every clip's latest record by key, from all records files (a cut-off last line is skipped)."""
    records: dict[str, dict] = {}
    folder = out_dir / RECORDS
    if not folder.is_dir():
        return records
    files = sorted(folder.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name))
    for path in files:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                try:
                    record = json.loads(line)
                    records[record["key"]] = record
                except (ValueError, KeyError, TypeError):
                    log.warning("%s: line %d is incomplete (a run was interrupted while writing it); that clip "
                                "is done again", path, number)
    return records


def outputs_exist(out_dir: Path, record: dict) -> bool:
    """A finished clip's outputs are all still there (someone may have deleted some)."""
    return all((out_dir / p).exists() for p in record.get("outputs", {}).values())


def _relative(out_dir: Path, path: str) -> str:
    """Paths under the output folder are written relative to it (the folder can be moved); others absolute."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        return str(p)


def write_outputs(out_dir: Path, inputs: Inputs, records: dict[str, dict], settings: dict) -> dict:
    """``manifest.csv``, ``failures.csv`` and ``summary.json`` from the records of every job; returns the summary."""
    rows = [(row, inputs.jobs[k]) for row, k in inputs.rows]
    extra = [c for c in ("start", "end", "fold") if any(getattr(r, c) is not None for r, _ in rows)]
    kept = 0
    with atomic_path(out_dir / "manifest.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video", "audio", *inputs.label_columns, *extra])
        for row, job in rows:
            record = records[job.key]
            if record["status"] != "ok":
                continue
            kept += 1
            labels = row.labels if inputs.label_columns else []
            w.writerow([_relative(out_dir, record["video_out"]), _relative(out_dir, record["audio_out"]), *labels,
                        *("" if getattr(row, c) is None else getattr(row, c) for c in extra)])
    failed = [records[j.key] for j in inputs.jobs if records[j.key]["status"] != "ok"]
    with atomic_path(out_dir / "failures.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video", "audio", "kind", "reason"])
        w.writerows([r["video"], r["audio"] or "", r["kind"], r["reason"]] for r in failed)
    ok = [records[j.key] for j in inputs.jobs if records[j.key]["status"] == "ok"]
    summary = {
        "input": inputs.source, "clips": len(inputs.jobs), "ok": len(ok), "failed": len(failed),
        "failed_by_kind": dict(Counter(r["kind"] for r in failed)), "manifest_rows": kept,
        "frames": sum(r.get("frames", 0) for r in ok),
        "clips_with_long_gaps": sum(1 for r in ok if r.get("gaps")),
        "settings": settings,
    }
    with atomic_path(out_dir / "summary.json") as tmp:  # last: it says the folder is complete
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return summary
