"""Exceptions raised by hicmae. Each message names the file (when there is one) and what is wrong."""

from __future__ import annotations

import os


class HiCMAEError(Exception):
    """Base class of every error hicmae raises on purpose."""


class ConfigError(HiCMAEError, ValueError):
    """A configuration value is invalid or inconsistent."""


class _PathError(HiCMAEError):
    """An error about one file: ``Error(path, reason)``, shown as ``<path>: <reason>``."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def __reduce__(self):
        # Picklable with both arguments, so an error raised in a DataLoader worker keeps its type.
        return type(self), (self.path, self.reason)


class DataError(_PathError):
    """A media file or manifest cannot be used: ``DataError(path, reason)``."""


class CheckpointError(_PathError):
    """A checkpoint file cannot be read safely, or does not fit the model."""
