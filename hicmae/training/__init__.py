"""Training: LightningModules for pretraining and fine-tuning, optimisation, metrics, callbacks."""

from hicmae.training.finetune_module import FinetuneModule
from hicmae.training.pretrain_module import PretrainModule

__all__ = ["FinetuneModule", "PretrainModule"]
