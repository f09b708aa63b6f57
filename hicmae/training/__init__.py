"""Training: LightningModules for pretraining and fine-tuning, optimisation, metrics, callbacks."""

import importlib

# Names load on first use (PEP 562), so importing one light part does not import every heavy one
# (the data module pulls in Lightning, the models timm).
_EXPORTS = {
    "FinetuneModule": "finetune_module",
    "PretrainModule": "pretrain_module",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
