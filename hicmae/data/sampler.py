"""Which samples a process reads, in which order, and the random key of each one.

Every random draw of a sample (frame offset, crops, flips, RandAugment, erasing, gain, masks) comes from
one integer seed, :func:`sample_seed`, a pure function of ``(seed, epoch, rank, index)``. So N processes
draw N different augmentations even when they load the same clip, DataLoader workers (persistent or not)
need no random state of their own, and a run resumed inside an epoch draws exactly what the uninterrupted
run would have: nothing depends on which worker loaded a sample or what it loaded before.

:class:`ClipSampler` hands these keys to the datasets as ``(index, seed)`` pairs. It is a
``DistributedSampler`` (Lightning keeps it instead of injecting its own) whose order is the standard
one: a permutation of ``(seed, epoch)``, padded and dealt round-robin to the ranks. A resumed run starts
it part-way through an epoch (:meth:`ClipSampler.start_at`), so the clips already trained on are never
decoded again.

Evaluation loaders (``train=False``) keep the dataset order and key draws on ``(seed, index)`` alone
(epoch 0, rank 0): test scores then depend neither on the number of processes nor on when the test runs.
"""

from __future__ import annotations

import numpy as np
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


def sample_seed(seed: int, *key: int) -> int:
    """A seed that is a pure function of ``(seed, *key)``; samples use ``(seed, epoch, rank, index)``."""
    state = np.random.SeedSequence([seed % 2**64, *key]).generate_state(1, np.uint64)
    return int(state[0]) >> 1  # 63 bits: a valid seed for numpy and torch generators alike


def process_group() -> tuple[int, int]:
    """(world size, global rank) of this process; (1, 0) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ClipSampler(DistributedSampler):
    """Yields ``(index, seed)`` for this process's share of ``dataset``.

    ``train=True``: a new permutation every epoch (``set_epoch``, which Lightning calls), draws keyed on
    ``(seed, epoch, rank, index)``. ``train=False``: dataset order, draws keyed on ``(seed, index)``.
    The world size and rank default to the initialised process group (one process otherwise).
    """

    def __init__(self, dataset: Dataset, *, train: bool, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None):
        world, this = process_group()
        super().__init__(dataset, num_replicas=world if num_replicas is None else num_replicas,
                         rank=this if rank is None else rank, shuffle=train, seed=seed, drop_last=False)
        self.train = train
        self._start: tuple[int, int] = (-1, 0)

    def start_at(self, epoch: int, position: int) -> None:
        """Continue a run at ``epoch``, skipping the first ``position`` samples of this process's share.

        Also sets the epoch: Lightning creates the first iterator before it calls ``set_epoch`` and, with
        DataLoader workers, that iterator already holds the order.
        """
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"cannot start at sample {position} of an epoch of {self.num_samples}")
        self.set_epoch(epoch)
        self._start = (int(epoch), int(position))

    def __iter__(self):
        order = list(super().__iter__())
        epoch, position = self._start
        if epoch == self.epoch:
            order = order[position:]
        key_epoch, key_rank = (self.epoch, self.rank) if self.train else (0, 0)
        # Keys as the loader asks for them (13 us each): a VoxCeleb2 share would otherwise cost seconds upfront.
        return ((index, sample_seed(self.seed, key_epoch, key_rank, index)) for index in order)

    # len() stays the whole share even when starting part-way: Lightning counts an epoch's batches from it
    # and, on resume, continues its own count from the batches already done.
