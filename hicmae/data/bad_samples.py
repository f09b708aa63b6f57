"""The bad-sample policy: raise at once, or replace a bad sample with another and keep count.

Counting is honest across DataLoader workers: the two counters live in shared memory
(``multiprocessing.Value``) created in the process that builds the dataset, so every worker forked or
spawned from it adds to the same numbers. Under DDP each rank has its own dataset and counts its own
share. The fraction is ``bad draws / max(draws, len(dataset))``: a draw is one attempt to load a
sample; flooring the denominator at the dataset size keeps one bad file early in an epoch from
stopping a run, while a share of bad files above the limit still stops it within the first epoch.
"""

from __future__ import annotations

import logging
import multiprocessing

from hicmae.errors import ConfigError, DataError

log = logging.getLogger(__name__)

POLICIES = ("raise", "skip")


class BadSamplePolicy:
    def __init__(self, on_bad_sample: str = "raise", max_bad_fraction: float = 0.01, dataset_size: int = 1,
                 max_retries: int = 20):
        if on_bad_sample not in POLICIES:
            raise ConfigError(f"on_bad_sample must be one of {POLICIES}, got {on_bad_sample!r}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ConfigError(f"max_bad_fraction must lie in [0, 1], got {max_bad_fraction}")
        self.on_bad_sample = on_bad_sample
        self.max_bad_fraction = max_bad_fraction
        self.dataset_size = max(int(dataset_size), 1)
        self.max_retries = max_retries
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
        """Count one bad draw and log it; raise if the policy is ``raise`` or the limit is passed."""
        if self.on_bad_sample == "raise":
            raise error
        with self._draws.get_lock():
            self._draws.value += 1
            draws = self._draws.value
        with self._bad.get_lock():
            self._bad.value += 1
            bad = self._bad.value
        log.warning("skipping bad sample (%d so far) %s", bad, error)
        fraction = bad / max(draws, self.dataset_size)
        if fraction > self.max_bad_fraction:
            raise DataError(error.path, f"too many bad samples: {bad} of {max(draws, self.dataset_size)} "
                                        f"({fraction:.2%}) exceeds max_bad_fraction={self.max_bad_fraction:.2%}; "
                                        f"last one: {error.reason}. Run `hicmae validate` on the manifest")
