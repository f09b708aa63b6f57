"""Check every row of a manifest the way training opens it, before a long run finds the bad ones.

Each row is loaded as a sample (frames and audio decoded, fbank computed), then the clip's last frame
and the whole audio are decoded too, so a file truncated anywhere is reported. Rows that the pipeline
fixes (stereo, other sample rates, grayscale frames, clips shorter than needed) count as good.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from dataclasses import replace

from hicmae.data.datasets import FinetuneDataset, PretrainDataset
from hicmae.data.manifest import Manifest, encode_labels, class_names_of, read_manifest
from hicmae.errors import DataError
from hicmae.models.config import ModelConfig
from hicmae.progress import progress_bar

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
                      class_names: list[str] | None = None, target_columns: list[str] | None = None,
                      progress: bool | None = False) -> list[dict]:
    """One ``{"row", "video", "audio", "ok", "error"}`` dict per manifest row (``row`` is 0-based).

    Manifest-level problems (missing file or columns) raise DataError. ``progress``: a bar on stderr
    (None: only when stderr is a terminal; see :mod:`hicmae.progress`).
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
    if workers <= 1:
        _init(dataset)
        results = []
        with progress_bar(len(manifest), "validate", "row", progress) as bar, _one_torch_thread():
            for i in range(len(manifest)):
                results.append(_check(i))
                bar.update(1)
        return results
    return _check_in_pool(dataset, manifest, workers, progress)


@contextmanager
def _one_torch_thread():
    """A row's tensors are small: torch's thread pool gains nothing on them, and on a busy machine its
    spinning threads made checking 40 clips take 5 s instead of 1 s."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Modules that decode media with threads of their own; hicmae imports them only when it decodes.
_DECODER_MODULES = ("decord", "av", "cv2")


def _pool_context():
    """fork where it is safe, else spawn.

    A fork copies only the calling thread: if a decoder thread (decord / FFmpeg) held a lock at that
    moment, the child can hang on it. While no decoder module is loaded, this process has decoded
    nothing and no such lock exists, so fork is safe, and it spares each worker re-importing torch
    (seconds per worker: more than checking a few hundred demo clips takes). macOS: always spawn
    (its system libraries do not survive a fork).
    """
    import multiprocessing

    if sys.platform.startswith("linux") and not any(name in sys.modules for name in _DECODER_MODULES):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _init_worker(dataset) -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker (see _one_torch_thread)
    _init(dataset)


def _check_in_pool(dataset, manifest: Manifest, workers: int, progress: bool | None) -> list[dict]:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    results = []
    with ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_init_worker,
                             initargs=(dataset,)) as pool:
        # One task per row, not chunks: a decoder that crashes its worker loses only the rows in flight.
        # Submitting starts the workers, before the bar starts its monitor thread (a fork copies no thread).
        futures = [pool.submit(_check, i) for i in range(len(manifest))]
        with progress_bar(len(manifest), "validate", "row", progress) as bar:
            for i, future in enumerate(futures):
                try:
                    results.append(future.result())
                except BrokenProcessPool:  # a decoder crashed the process: report instead of hanging
                    row = manifest.rows[i]
                    results.append({"row": i, "video": row.video, "audio": row.audio, "ok": False,
                                    "error": f"{row.video}: the decoder crashed while checking this row "
                                             "(or a row checked beside it); rerun with --workers 1 to pin it down"})
                bar.update(1)
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
