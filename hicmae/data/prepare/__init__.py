"""``hicmae prepare``: a benchmark as its authors distribute it -> manifests with folds.

One small module per dataset (``crema_d.py``, ...). Each defines a :class:`~hicmae.data.prepare.base.Builder`
named ``BUILDER``: where the data is obtained, which raw files it expects, and ``build(raw_dir, options)``,
which checks the layout, reads labels and folds, and returns the manifests in memory. Nothing is written
until a builder has succeeded, so a broken tree never leaves a partial manifest (see :func:`base.write`).
"""

from __future__ import annotations

import importlib

# Dataset name -> module. Names follow configs/finetune/<name>.yaml (voxceleb2 is the pretraining set).
DATASETS = ("voxceleb2", "crema_d", "ravdess", "mafw", "dfew", "msp_improv", "iemocap", "werewolf_xl",
            "avcaffe", "mer_multi")


def builder(name: str):
    """The :class:`~hicmae.data.prepare.base.Builder` of ``name`` (``crema-d`` and ``CREMA_D`` work too)."""
    from hicmae.errors import ConfigError

    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return importlib.import_module(f"{__name__}.{key}").BUILDER
