"""Tiny configurations and in-memory batches for the training tests (masks from the real masking code)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from hicmae.masking import pretrain_masks
from hicmae.models import ModelConfig

TINY = dict(img_size=32, num_frames=4, audio_size=(32, 32), video_dim=32, video_heads=2, audio_dim=32, audio_heads=2,
            encoder_depth=2, skip_layers=(0, 1), fusion_depth=1, fusion_heads=2, decoder_dim=32, decoder_heads=2,
            decoder_depth=3, video_mask_ratio=0.5, audio_mask_ratio=0.5)


def tiny_config(**changes) -> ModelConfig:
    return ModelConfig.preset("tiny", **{**TINY, **changes})


class SyntheticClips(Dataset):
    """Deterministic clips whose content depends on the class, so a model can learn something."""

    def __init__(self, n: int, config: ModelConfig, num_classes: int = 3, views: int = 1, pretrain: bool = False,
                 seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.config, self.views, self.pretrain = config, views, pretrain
        self.labels = torch.arange(n) % num_classes
        base_v = torch.randn(num_classes, 3, config.num_frames, config.img_size, config.img_size, generator=g)
        base_a = torch.randn(num_classes, 1, *config.audio_size, generator=g)
        self.video = base_v[self.labels] + 0.5 * torch.randn(n, *base_v.shape[1:], generator=g)
        self.audio = base_a[self.labels] + 0.5 * torch.randn(n, *base_a.shape[1:], generator=g)
        self.video_mask, self.audio_mask = pretrain_masks(config, batch=n, generator=g)

    def __len__(self) -> int:
        return len(self.labels) * self.views

    def __getitem__(self, i: int) -> dict:
        clip, view = divmod(i, self.views)
        item = {"video": self.video[clip] + 0.01 * view, "audio": self.audio[clip], "label": self.labels[clip],
                "index": torch.tensor(clip), "view": torch.tensor(view)}
        if self.pretrain:
            item.update(video_mask=self.video_mask[clip], audio_mask=self.audio_mask[clip])
        return item


def loader(dataset: Dataset, batch_size: int = 4, shuffle: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


def make_tiny_demo(out_dir, num_clips: int = 12, num_classes: int = 3):
    """Real demo files (H.264 + AAC mp4 and wav) sized for TINY: 32 px, 1 s."""
    from hicmae.data import make_demo_data

    return make_demo_data(out_dir, num_clips=num_clips, num_classes=num_classes, size=32, seconds=1.0, num_folds=2,
                          workers=1)


def tiny_datamodule(root, task: str = "classification", **kw):
    from hicmae.data import HiCMAEDataModule

    c = tiny_config()
    manifest = str(root / ("pretrain.csv" if task == "pretrain" else "finetune.csv"))
    args = dict(train_manifest=manifest, task=task, batch_size=4, num_workers=0, img_size=c.img_size,
                num_frames=c.num_frames, audio_frames=c.audio_size[0], mel_bins=c.audio_size[1],
                video_mask_ratio=c.video_mask_ratio, audio_mask_ratio=c.audio_mask_ratio, sampling_rate=2,
                rand_augment=None)
    if task != "pretrain":
        args.update(test_manifest=manifest, test_num_segment=2, test_num_crop=1)
    args.update(kw)
    return HiCMAEDataModule(**args)


def cli_config(tmp_path, name: str, model: dict, data: dict, trainer: dict) -> str:
    """A YAML config for pretrain.py / finetune.py with the TINY model on the CPU; returns its path."""
    import yaml

    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}
    cfg = {"seed_everything": 0, "model": {"model_preset": "tiny", "model_overrides": overrides, **model},
           "data": {"batch_size": 4, "num_workers": 0, "sampling_rate": 2, **data},
           "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "log_every_n_steps": 1,
                       "enable_model_summary": False, **trainer}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)
