"""Data pipeline: decoding, features, sampling, transforms, manifests, datasets, the DataModule, demo data."""

import importlib

# Names load on first use (PEP 562), so importing one light part does not import every heavy one
# (the data module pulls in Lightning, the models timm).
_EXPORTS = {
    "HiCMAEDataModule": "datamodule",
    "FinetuneDataset": "datasets",
    "PretrainDataset": "datasets",
    "make_demo_data": "demo",
    "Manifest": "manifest",
    "Row": "manifest",
    "read_manifest": "manifest",
    "VideoMixup": "mixup",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
