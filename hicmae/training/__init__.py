"""Training: LightningModules for pretraining and fine-tuning, optimisation, metrics, callbacks."""

from hicmae._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "FinetuneModule": "finetune_module",
    "PretrainModule": "pretrain_module",
})
