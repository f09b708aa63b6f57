"""Stop every process with the same error when a loss or gradient becomes NaN or infinite.

Checking ``torch.isfinite(loss)`` on the host every step would add a GPU synchronisation to every step,
and raising on the one process that saw it leaves the others waiting in their next all-reduce (with NCCL,
until the watchdog timeout). :class:`FiniteGuard` instead remembers, on the device, the first step at
which this process saw a non-finite loss (or gradient norm, when no AMP scaler is there to skip such
steps), and :meth:`FiniteGuard.check` gathers those records from every process (one small collective and
one sync) and raises the same :class:`NonFiniteLossError` everywhere. The modules check every
``log_every_n_steps`` batches (when logging synchronises anyway), at the end of each epoch and before
writing any checkpoint, so a diverged model is never saved.
"""

from __future__ import annotations

import math

import torch

from hicmae.errors import HiCMAEError

_KINDS = ("loss", "gradient norm")


class NonFiniteLossError(HiCMAEError, FloatingPointError):
    """The loss (or gradient norm) became NaN or infinite; the message names the step, process and terms."""


class FiniteGuard:
    """A device-side record ``[first bad step, kind, *values]`` (first step ``inf`` while all is well).

    ``loss_names``: the loss terms reported with a non-finite loss; a gradient norm is reported alone.
    """

    def __init__(self, loss_names: tuple[str, ...] = ("loss",)):
        self.names = {"loss": tuple(loss_names), "gradient norm": ("grad_norm",)}
        self.width = max(len(n) for n in self.names.values())
        self.record: torch.Tensor | None = None

    def observe(self, step: int, values: dict[str, torch.Tensor], kind: str = "loss") -> None:
        """Remember ``values`` (named as ``kind`` needs) if any is non-finite and nothing was remembered
        before. Device operations only: no host sync."""
        found = torch.stack([values[n].detach().reshape(()).double() for n in self.names[kind]])
        device = found.device
        if self.record is None or self.record.device != device:
            self.record = torch.full((2 + self.width,), math.inf, dtype=torch.float64, device=device)
        entry = torch.cat([torch.full((2,), step, dtype=torch.float64, device=device),
                           found, torch.zeros(self.width - found.numel(), dtype=torch.float64, device=device)])
        entry[1] = _KINDS.index(kind)
        first = ~torch.isfinite(found).all() & torch.isinf(self.record[0])
        self.record = torch.where(first, entry, self.record)

    def check(self, strategy) -> None:
        """Raise the same error on every process if any process remembered a non-finite step.

        A collective under DDP: every process must call it at the same point.
        """
        if self.record is None:
            return
        table = strategy.all_gather(self.record).reshape(-1, self.record.numel()).cpu()
        rank = int((2 * table[:, 0] + table[:, 1]).argmin())  # the first step; at that step a loss before a gradient
        step, kind, *values = table[rank].tolist()
        if math.isinf(step):
            return
        kind = _KINDS[int(kind)]
        terms = ", ".join(f"{n}={v:.4g}" for n, v in zip(self.names[kind], values))
        where = f" on process {rank}" if table.shape[0] > 1 else ""
        raise NonFiniteLossError(f"non-finite {kind} at global step {int(step)}{where} ({terms}); "
                                 "lower the learning rate, use bf16-mixed instead of 16-mixed, or enable "
                                 "gradient clipping, then resume from the last checkpoint")
