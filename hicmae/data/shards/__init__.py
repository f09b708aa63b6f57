"""Tar shards of decoded, cropped, resized clips (``hicmae shard``) and the streaming dataset over them."""

from hicmae._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ShardDataset": "dataset",
    "ShardSettings": "writer",
    "shard_manifest": "writer",
})
