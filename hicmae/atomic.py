"""Files that appear whole or not at all: every writer of results, manifests, shards and crops goes through here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name of ``path`` for this process, beside it: ``.<stem>.<pid>.tmp<suffix>``. It keeps the
    suffix, so writers that pick the format from it (pandas, matplotlib, FFmpeg, numpy) work."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write to; on success it replaces ``path`` in one step.

    An interrupted run or a concurrent reader never sees a half-written file: ``path`` holds the old content or the new.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
