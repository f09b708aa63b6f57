"""HiCMAE models, usable on their own: ``from hicmae.models import HiCMAEClassifier``.

Depends only on torch, timm layers and einops: no Lightning, data or I/O.
"""

from hicmae._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "HiCMAEClassifier": "classifier",
    "ModelConfig": "config",
    "PRESETS": "config",
    "HiCMAEPretrain": "pretrain",
    "PretrainOutput": "pretrain",
})
