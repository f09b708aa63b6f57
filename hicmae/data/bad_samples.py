"""The bad-sample policy: raise at once, or replace a bad sample with another and keep count.

Counting is honest across DataLoader workers: the two counters live in shared memory
(``multiprocessing.Value``) created in the process that builds the dataset, so every worker forked or
spawned from it adds to the same numbers. The limit is on ``bad draws / max(draws, len(dataset))``: a
draw is one attempt to load a sample; flooring the denominator at the dataset size keeps one bad file
early in an epoch from stopping a run, while a share of bad files above the limit still stops it within
the first epoch.

Under DDP each process counts its own draws, so no process alone can judge the whole run: the data
module then builds its datasets with ``enforce_limit=False`` and checks the counts summed over all
processes every few batches (:meth:`HiCMAEDataModule.check_bad_samples`), so every process stops at the
same batch with the same error.
"""

from __future__ import annotations

import logging
import multiprocessing

from hicmae.errors import ConfigError, DataError

log = logging.getLogger(__name__)

POLICIES = ("raise", "skip")


class BadSamplePolicy:
    def __init__(self, on_bad_sample: str = "raise", max_bad_fraction: float = 0.01, dataset_size: int = 1,
                 max_retries: int = 20, enforce_limit: bool = True):
        if on_bad_sample not in POLICIES:
            raise ConfigError(f"on_bad_sample must be one of {POLICIES}, got {on_bad_sample!r}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ConfigError(f"max_bad_fraction must lie in [0, 1], got {max_bad_fraction}")
        self.on_bad_sample = on_bad_sample
        self.max_bad_fraction = max_bad_fraction
        self.dataset_size = max(int(dataset_size), 1)
        self.max_retries = max_retries
        self.enforce_limit = enforce_limit
        # Created in the spawn context: such counters are inherited by forked workers and can also be
        # sent to spawned ones (fork-context locks refuse the latter).
        ctx = multiprocessing.get_context("spawn")
        self._draws = ctx.Value("q", 0)
        self._bad = ctx.Value("q", 0)

    @property
    def draws(self) -> int:
        return self._draws.value

    @property
    def bad(self) -> int:
        return self._bad.value

    def record_good(self) -> None:
        with self._draws.get_lock():
            self._draws.value += 1

    def record_bad(self, error: DataError) -> None:
        """Count one bad draw and log it; raise if the policy is ``raise`` or (when enforced here) the
        limit is passed."""
        if self.on_bad_sample == "raise":
            raise error
        with self._draws.get_lock():
            self._draws.value += 1
            draws = self._draws.value
        with self._bad.get_lock():
            self._bad.value += 1
            bad = self._bad.value
        log.warning("skipping bad sample (%d so far) %s", bad, error)
        if self.enforce_limit:
            self.check_limit(draws, bad, error.path, last=error)

    def check_limit(self, draws: int, bad: int, path: str | None, last: DataError | None = None,
                    where: str = "") -> None:
        """Raise ``DataError(path, ...)`` when ``bad / max(draws, len(dataset))`` passes ``max_bad_fraction``."""
        if self.on_bad_sample == "raise" or not bad:
            return
        total = max(draws, self.dataset_size)
        fraction = bad / total
        if fraction > self.max_bad_fraction:
            last_reason = f"; last one: {last.reason}" if last is not None else ""
            raise DataError(path, f"too many bad samples{where}: {bad} of {total} ({fraction:.2%}) exceeds "
                                  f"max_bad_fraction={self.max_bad_fraction:.2%}{last_reason}. Run `hicmae "
                                  "validate` on the manifest")
