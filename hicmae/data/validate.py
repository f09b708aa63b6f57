"""Check every row of a manifest the way training opens it, before a long run finds the bad ones.

Each row is loaded as a sample (frames and audio decoded, fbank computed), then the clip's last frame
and the whole audio are decoded too, so a file truncated anywhere is reported. Rows that the pipeline
fixes (stereo, other sample rates, grayscale frames, clips shorter than needed) count as good.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import replace

from hicmae.data.datasets import FinetuneDataset, PretrainDataset
from hicmae.data.manifest import Manifest, encode_labels, class_names_of, read_manifest
from hicmae.errors import DataError
from hicmae.models.config import ModelConfig

log = logging.getLogger(__name__)

_DATASET = None  # the dataset a validation worker checks rows of (set by the pool initialiser)


def _init(dataset) -> None:
    global _DATASET
    _DATASET = dataset


def _check(index: int) -> dict:
    row = _DATASET.manifest.rows[index]
    result = {"row": index, "video": row.video, "audio": row.audio, "ok": True, "error": None}
    try:
        label_error = getattr(_DATASET, "label_errors", {}).get(index)
        if label_error:
            raise DataError(row.video, label_error)
        _DATASET.check(index)
    except DataError as err:
        result.update(ok=False, error=str(err))
    except Exception as err:  # anything unexpected still names the row instead of killing the run
        result.update(ok=False, error=f"{row.video}: unexpected {type(err).__name__}: {err}")
    return result


def validate_manifest(manifest_path: str, root: str | None = None, task: str = "pretrain", workers: int = 1,
                      config: ModelConfig | None = None, *, sampling_rate: int = 4,
                      class_names: list[str] | None = None, target_columns: list[str] | None = None) -> list[dict]:
    """One ``{"row", "video", "audio", "ok", "error"}`` dict per manifest row (``row`` is 0-based).

    Manifest-level problems (missing file or columns) raise DataError.
    """
    manifest = read_manifest(manifest_path, root, target_columns)
    label_errors = _label_errors(manifest, task, class_names)
    if task == "pretrain":
        dataset = PretrainDataset(_with_safe_labels(manifest, label_errors), config, sampling_rate=sampling_rate,
                                  on_bad_sample="raise", class_names=class_names)
    else:
        names = None if task == "regression" else (class_names or class_names_of(manifest))
        dataset = FinetuneDataset(_with_safe_labels(manifest, label_errors), config, sampling_rate=sampling_rate,
                                  task=task, mode="val", class_names=names, on_bad_sample="raise")
    dataset.manifest = manifest
    dataset.label_errors = label_errors
    indices = range(len(manifest))
    if workers <= 1:
        _init(dataset)
        return [_check(i) for i in indices]
    # spawn, not fork: a fork of a process that has decoded media (decord / FFmpeg threads) can hang.
    ctx = multiprocessing.get_context("spawn")
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    results = []
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(dataset,)) as pool:
        futures = [pool.submit(_check, i) for i in indices]
        for i, future in zip(indices, futures):
            try:
                results.append(future.result())
            except BrokenProcessPool:  # a decoder crashed the process: report instead of hanging
                row = manifest.rows[i]
                results.append({"row": i, "video": row.video, "audio": row.audio, "ok": False,
                                "error": f"{row.video}: the decoder crashed while checking this row "
                                         "(or a row checked beside it); rerun with --workers 1 to pin it down"})
    return results


def _label_errors(manifest: Manifest, task: str, class_names) -> dict[int, str]:
    """Per-row label problems (unknown class, non-numeric target), so one bad label names its row."""
    if task == "pretrain":
        return {}
    names = None if task == "regression" else (class_names or class_names_of(manifest))
    errors = {}
    for i, row in enumerate(manifest.rows):
        try:
            encode_labels(Manifest(manifest.path, [row], manifest.label_columns), task, names)
        except DataError as err:
            errors[i] = err.reason  # a string: DataError itself does not survive pickling to workers
    return errors


def _with_safe_labels(manifest: Manifest, label_errors: dict) -> Manifest:
    """A copy whose bad-label rows borrow a good row's labels, so the dataset can be built at all."""
    if not label_errors:
        return manifest
    good = next((r for i, r in enumerate(manifest.rows) if i not in label_errors), None)
    if good is None:
        raise DataError(manifest.path, f"no row has a valid label; first problem: {next(iter(label_errors.values()))}")
    rows = [replace(r, labels=good.labels) if i in label_errors else r for i, r in enumerate(manifest.rows)]
    return Manifest(manifest.path, rows, manifest.label_columns)
