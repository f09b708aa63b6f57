"""Data pipeline: decoding, features, sampling, transforms, manifests, datasets, the DataModule, demo data."""

from hicmae._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "HiCMAEDataModule": "datamodule",
    "FinetuneDataset": "datasets",
    "PretrainDataset": "datasets",
    "make_demo_data": "demo",
    "Manifest": "manifest",
    "Row": "manifest",
    "read_manifest": "manifest",
    "VideoMixup": "mixup",
})
