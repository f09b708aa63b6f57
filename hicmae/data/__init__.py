"""Data pipeline: decoding, features, sampling, transforms, manifests, datasets, the DataModule, demo data."""

from hicmae.data.datamodule import HiCMAEDataModule
from hicmae.data.datasets import FinetuneDataset, PretrainDataset
from hicmae.data.demo import make_demo_data
from hicmae.data.manifest import Manifest, Row, read_manifest
from hicmae.data.mixup import VideoMixup

__all__ = ["FinetuneDataset", "HiCMAEDataModule", "Manifest", "PretrainDataset", "Row", "VideoMixup",
           "make_demo_data", "read_manifest"]
