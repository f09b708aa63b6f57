"""Exceptions raised by hicmae. Each message names the file (when there is one) and what is wrong."""

from __future__ import annotations

import os


class HiCMAEError(Exception):
    """Base class of every error hicmae raises on purpose."""


class ConfigError(HiCMAEError, ValueError):
    """A configuration value is invalid or inconsistent."""


class DataError(HiCMAEError):
    """A media file or manifest cannot be used: ``DataError(path, reason)``."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class CheckpointError(HiCMAEError):
    """A checkpoint file cannot be read safely, or does not fit the model."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)
