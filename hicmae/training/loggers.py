"""The run folder's CSV log: ``<run>/logs/metrics.csv``, one file per run, which a resumed run continues.

Lightning's ``CSVLogger`` starts a new ``version_N`` folder on every start (so one pretraining run's
metrics end up split across several files) and deletes an existing ``metrics.csv`` when pointed at the
same folder. Our CLI refuses a new run in a folder that already holds one, so the only start that finds a
``metrics.csv`` is a resume, and :class:`RunCSVLogger` appends to it.
"""

from __future__ import annotations

import csv
import os

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep the file and its columns: new rows are appended (with a new header if new keys appear).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/<name>/metrics.csv`` (no version folders) and appending to it."""

    def __init__(self, save_dir: str | os.PathLike | None = None, name: str = "logs",
                 flush_logs_every_n_steps: int = 100):
        # save_dir: our CLI sets the run folder (``trainer.default_root_dir``) when a config leaves it out.
        if save_dir is None:
            raise ValueError("RunCSVLogger needs a save_dir (the run folder)")
        super().__init__(save_dir, name=name, version="", flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    def log_dir(self) -> str:
        return self.root_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
