"""HiCMAE models, usable on their own: ``from hicmae.models import HiCMAEClassifier``.

Depends only on torch, timm layers and einops: no Lightning, data or I/O.
"""

from hicmae.models.classifier import HiCMAEClassifier
from hicmae.models.config import PRESETS, ModelConfig
from hicmae.models.pretrain import HiCMAEPretrain, PretrainOutput

__all__ = ["HiCMAEClassifier", "HiCMAEPretrain", "ModelConfig", "PRESETS", "PretrainOutput"]
