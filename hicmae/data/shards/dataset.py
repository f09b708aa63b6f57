"""ShardDataset: training samples streamed from tar shards, split across nodes, ranks and workers.

An epoch's plan is a pure function of (seed, epoch, world size, rank, workers), computed from the shard
folder's ``clips.csv`` without opening a shard:

* the shards are put in a seeded random order each epoch and dealt round-robin to the ranks, then each
  rank's shards round-robin to its DataLoader workers, so no two readers share a shard when there are at
  least (ranks x workers) shards;
* every rank yields the same number of batches, ``(clips // world) // batch_size``; the batches of a rank
  are dealt round-robin to its workers as the DataLoader collects them (batch j from worker j % workers).
  A reader whose shards hold more clips than its quota leaves the rest for another epoch; one with fewer
  reads its rank's shards again (those repeats draw new augmentations: the pass is part of their key);
* a shuffle buffer per worker mixes clips of its shards (seeded on seed, epoch, rank, worker).

Each sample's random draws are keyed on (seed, epoch, rank, manifest row), as for a manifest-backed
dataset, so a PNG shard at the source's size gives exactly the samples the manifest gives.

Exact resume: :meth:`start_at` (called by :class:`~hicmae.training.resumable.ResumableData`) makes every
worker skip the batches it had produced before the checkpoint. Skipped clips are read from the tar but
never decoded. The epoch and the start live in shared memory, so persistent workers see them too.

Locations: a local folder; an fsspec URL (``s3://bucket/shards``, anything fsspec opens); or
``pipe:COMMAND`` where COMMAND prints the file ``{name}`` to stdout (``pipe:aws s3 cp s3://b/vox/{name} -``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info
from torch.utils.data import Sampler

from hicmae.data.device_augment import defer_pretrain_sample
from hicmae.data.manifest import Manifest, Row
from hicmae.data.sampler import process_group, sample_seed
from hicmae.data.shards.format import read_records
from hicmae.errors import ConfigError, DataError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- locations
@contextmanager
def open_location(location: str, name: str):
    """A binary stream of the file ``name`` of a shard folder at ``location`` (see the module docstring)."""
    if location.startswith("pipe:"):
        command = location[len("pipe:"):].replace("{name}", name)
        proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            yield proc.stdout
        except BaseException:  # the reader stopped early (an epoch's quota reached) or failed: end the command
            proc.kill()
            proc.wait()
            raise
        else:
            proc.stdout.read()  # a tar's end padding may be left unread: drain it so the command can finish
            if proc.wait() != 0:
                err = proc.stderr.read().decode(errors="replace").strip()
                raise DataError(name, f"`{command}` failed with exit status {proc.returncode}: {err[-300:]}")
        finally:
            proc.stdout.close()
            proc.stderr.close()
    elif "://" in location:
        import fsspec

        with fsspec.open(f"{location.rstrip('/')}/{name}", "rb") as f:
            yield f
    else:
        path = Path(location) / name
        if not path.exists():
            raise DataError(path, "does not exist" + ("; run `hicmae shard` first" if name == "index.json" else ""))
        with open(path, "rb") as f:
            yield f


def read_index(location: str) -> tuple[dict, list[dict]]:
    """``index.json`` and the rows of ``clips.csv`` of a finished shard folder."""
    with open_location(location, "index.json") as f:
        index = json.loads(f.read())
    with open_location(location, "clips.csv") as f:
        clips = list(csv.DictReader(io.StringIO(f.read().decode("utf-8"), newline="")))
    return index, clips


def index_manifest(location: str, index: dict, clips: list[dict]) -> Manifest:
    """The shards' clips as a manifest (labels, folds, source paths), in ``clips.csv`` order."""
    label_columns = index["label_columns"]
    rows = []
    for line, c in enumerate(clips, start=2):
        num = lambda k: float(c[k]) if c.get(k) else None  # noqa: E731
        rows.append(Row(video=c["video"], audio=c["audio"] or None, labels=[c[k] for k in label_columns],
                        start=num("start"), end=num("end"), fold=int(c["fold"]) if c.get("fold") else None,
                        line=line))
    return Manifest(f"{location}/clips.csv", rows, list(label_columns))


# ---------------------------------------------------------------------------------------------- the plan
def reader_shards(shards: list[str], seed: int, epoch: int, world: int, rank: int, workers: int,
                  worker: int) -> tuple[list[str], list[str]]:
    """(this reader's shards, its rank's shards) for the epoch."""
    order = [shards[i] for i in np.random.default_rng([seed, epoch]).permutation(len(shards))]
    rank_shards = order[rank::world] or order[rank % len(order):] + order[:rank % len(order)]
    return rank_shards[worker::workers], rank_shards


def worker_batches(batches: int, workers: int, worker: int) -> int:
    """Batches worker ``worker`` yields of a rank's ``batches`` (the DataLoader takes them round-robin)."""
    return batches // workers + (worker < batches % workers)


def batches_done_by(worker: int, workers: int, batches_done: int) -> int:
    """Of the first ``batches_done`` batches of an epoch, how many came from ``worker``."""
    return max(0, -(-(batches_done - worker) // workers))


class ShardDataset(IterableDataset):
    """Training samples from the shard folder at ``location``, made by ``maker``.

    ``maker(manifest)`` builds the :class:`~hicmae.data.datasets.PretrainDataset` or
    :class:`~hicmae.data.datasets.FinetuneDataset` (train mode) that turns a clip into a sample, over the
    shards' clips as a manifest. ``exclude_folds``: clips of these folds are skipped (the test fold).
    """

    def __init__(self, location: str, maker, *, batch_size: int, seed: int = 0, shuffle_buffer: int = 100,
                 exclude_folds: list[int] | None = None, world_size: int | None = None, rank: int | None = None,
                 defer_decode: bool = False):
        self.location = str(location)
        self.defer_decode = defer_decode  # samples for DeviceAugment (hicmae.data.device_augment)
        self.index, clips = read_index(self.location)
        exclude = set(exclude_folds or [])
        clips = [c for c in clips if not (c.get("fold") and int(c["fold"]) in exclude)]
        if not clips:
            raise DataError(self.location, f"no clips left after leaving out folds {sorted(exclude)}")
        self.maker = maker(index_manifest(self.location, self.index, clips))
        self.position = {(c["shard"], c["key"]): i for i, c in enumerate(clips)}  # -> maker index
        self.shards = sorted({c["shard"] for c in clips})
        self.batch_size, self.seed, self.shuffle_buffer = int(batch_size), int(seed), int(shuffle_buffer)
        world, this = process_group()
        self.world = world if world_size is None else world_size
        self.rank = this if rank is None else rank
        self.batches = (len(clips) // self.world) // self.batch_size
        if self.batches == 0:
            raise ConfigError(f"{self.location}: {len(clips)} clips make no full batch of {self.batch_size} on each "
                              f"of {self.world} processes")
        ctx = multiprocessing.get_context("spawn")  # shared with workers, persistent ones included
        self._epoch, self._start_epoch, self._start_batches = ctx.Value("q", 0), ctx.Value("q", -1), ctx.Value("q", 0)

    def __len__(self) -> int:
        return self.batches * self.batch_size  # samples of this rank per epoch

    @property
    def settings(self) -> dict:
        return self.index["settings"]

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    def start_at(self, epoch: int, batches_done: int) -> None:
        """Continue ``epoch`` after the first ``batches_done`` batches of this rank (and set the epoch)."""
        if not 0 <= batches_done <= self.batches:
            raise ValueError(f"cannot start at batch {batches_done} of an epoch of {self.batches}")
        self.set_epoch(epoch)
        self._start_epoch.value, self._start_batches.value = int(epoch), int(batches_done)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self._epoch.value
        mine, rank_shards = reader_shards(self.shards, self.seed, epoch, self.world, self.rank, workers, worker)
        if not mine:
            log.warning("%s: %d shards for %d readers (%d processes x %d workers): some clips are read twice per "
                        "epoch; write smaller shards", self.location, len(self.shards), self.world * workers,
                        self.world, workers)
        quota = worker_batches(self.batches, workers, worker) * self.batch_size
        skip = 0
        if self._start_epoch.value == epoch:
            skip = batches_done_by(worker, workers, self._start_batches.value) * self.batch_size
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker])
        records = self._shuffled(self._stream(mine, rank_shards), rng)
        made = bad_in_a_row = 0
        for record, source in records:
            if made >= quota:
                break
            if made < skip:  # trained on before the checkpoint: read, not decoded
                made += 1
                continue
            sample = self._make(record, epoch, source)
            if sample is None:  # a bad clip, counted by the policy: the next record takes its place
                bad_in_a_row += 1
                if bad_in_a_row >= self.maker.policy.max_retries:
                    raise DataError(self.location, f"{bad_in_a_row} bad clips in a row in the shards; see the "
                                                   "warnings above")
                continue
            made, bad_in_a_row = made + 1, 0
            yield sample
        if made < quota:
            raise DataError(self.location, f"worker {worker} of process {self.rank} ran out of clips after {made} of "
                                           f"{quota}; are the shards complete?")

    def _stream(self, mine: list[str], rank_shards: list[str]):
        """(record, pass) of this reader's shards, then its rank's shards over and over."""
        order, repeat = list(mine), 0
        while True:
            for name in order:
                with open_location(self.location, name) as f:
                    for record in read_records(f, name):
                        if (name, record.key) in self.position:
                            yield record, name, repeat
            order, repeat = rank_shards, repeat + 1

    def _shuffled(self, stream, rng: np.random.Generator):
        """A shuffle buffer over (record, (shard, pass)); each pass is drained before the next one enters,
        so a reader sees all of its own clips before any repeat."""
        buffer, current = [], 0

        def pop():
            j = int(rng.integers(len(buffer)))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            return buffer.pop()

        for record, name, repeat in stream:
            if repeat != current:
                while buffer:
                    yield pop()
                current = repeat
            buffer.append((record, (name, repeat)))
            if len(buffer) >= max(self.shuffle_buffer, 1):
                yield pop()

    def _make(self, record, epoch: int, source) -> dict | None:
        name, repeat = source
        index = self.position[(name, record.key)]
        key = (epoch, self.rank, record.row) if repeat == 0 else (epoch, self.rank, record.row, repeat)
        # As _ClipDataset.get derives its first attempt's seed: a clip's sample equals the manifest dataset's.
        seed = int(np.random.default_rng(sample_seed(self.seed, *key)).integers(2**62))
        try:
            if self.defer_decode:
                sample = defer_pretrain_sample(self.maker, index, record, seed)
            else:
                sample = self.maker.make(index, record.clip(), 0, record.meta["frames"], record.audio(), seed)
        except DataError as err:
            self.maker.policy.record_bad(err)  # raises under "raise" or past the limit
            return None
        self.maker.policy.record_good()
        return sample


class EpochSignal(Sampler):
    """What a DataLoader drives an IterableDataset with (None, endlessly), plus ``set_epoch``: Lightning
    calls it on the loader's sampler at every epoch start, and it passes the epoch on to the dataset."""

    def __init__(self, dataset: ShardDataset):
        self.dataset = dataset

    def __iter__(self):
        while True:
            yield None

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
