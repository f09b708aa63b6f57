"""HiCMAEDataModule through real DataLoaders, and Mixup/CutMix on its batches."""

import pytest
import torch

from hicmae.data import HiCMAEDataModule, make_demo_data
from hicmae.data.mixup import VideoMixup
from hicmae.errors import ConfigError

SIZES = dict(img_size=32, num_frames=4, audio_frames=64, mel_bins=32, patch_size=16, tubelet_size=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("demo"), num_clips=12, seed=0, num_classes=3, size=32,
                          seconds=1.0, num_folds=3, workers=1)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["pretrain", "classification"])
def test_datamodule_batches_through_two_workers(demo, task):
    dm = HiCMAEDataModule(str(demo / "finetune.csv"), val_manifest=str(demo / "finetune.csv"),
                          test_manifest=str(demo / "finetune.csv"), task=task, batch_size=4, num_workers=2,
                          persistent_workers=False, fold=0, **SIZES)
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.class_names == ["anger", "disgust", "fear"]
    assert len(dm.train_dataset) == 6 and len(dm.test_dataset) == 6 * (1 if task == "pretrain" else 4)  # fold 0: 6 rows
    batches = list(dm.train_dataloader())
    assert len(batches) == 1  # drop_last
    b = batches[0]
    assert b["video"].shape == (4, 3, 4, 32, 32) and b["audio"].shape == (4, 1, 64, 32)
    assert b["label"].dtype == torch.int64 and b["index"].shape == (4,)
    if task == "pretrain":
        assert b["video_mask"].shape == (4, 8) and b["audio_mask"].dtype == torch.bool
        assert dm.mixup_fn is None
    else:
        views = torch.cat([t["view"] for t in dm.test_dataloader()])
        assert sorted(views.tolist()) == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6
        mixed = dm.mixup_fn(dict(b))
        assert mixed["label"].shape == (4, 3) and torch.allclose(mixed["label"].sum(1), torch.ones(4))


@pytest.mark.slow
def test_workers_started_by_a_forkserver_load_the_same_batches_and_count_for_the_policy(demo):
    def batches(**kw):
        dm = HiCMAEDataModule(str(demo / "pretrain.csv"), task="pretrain", batch_size=4, persistent_workers=False,
                              **SIZES, **kw)
        dm.setup("fit")
        return list(dm.train_dataloader()), dm.bad_sample_counts()

    forked, _ = batches(num_workers=0)
    served, counts = batches(num_workers=2, worker_start_method="forkserver")
    assert counts["draws"] == 12  # the workers' loads reach the process's shared counters
    for a, b in zip(forked, served):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["video"], b["video"])
    with pytest.raises(ConfigError, match="worker_start_method"):
        HiCMAEDataModule(str(demo / "pretrain.csv"), worker_start_method="thread", **SIZES)


def test_regression_datamodule_exposes_targets(demo):
    dm = HiCMAEDataModule(str(demo / "regression.csv"), task="regression", batch_size=2, num_workers=0, **SIZES)
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.target_names == ["arousal", "valence"] and dm.mixup_fn is None
    b = next(iter(dm.train_dataloader()))
    assert b["label"].shape == (2, 2) and b["label"].dtype == torch.float32


def test_training_and_testing_on_one_manifest_with_folds_needs_a_fold(demo):
    csv = str(demo / "finetune.csv")
    dm = HiCMAEDataModule(csv, test_manifest=csv, task="classification", num_workers=0, **SIZES)
    with pytest.raises(ConfigError, match=r"folds 0, 1, 2.*--data\.fold K"):
        dm.setup("fit")
    dm = HiCMAEDataModule(csv, test_manifest=csv, task="classification", num_workers=0, fold=2, **SIZES)
    dm.setup("fit")
    train = {r.video for r in dm.train_dataset.manifest.rows}
    assert train and train.isdisjoint(r.video for r in dm.test_dataset.manifest.rows)
    # A manifest without folds (e.g. an original split file) and separate test files need none.
    HiCMAEDataModule(csv, test_manifest=str(demo / "pretrain.csv"), task="classification", num_workers=0,
                     **SIZES).setup("fit")


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"video": torch.randn(4, 3, 4, 32, 32, generator=g), "audio": torch.randn(4, 1, 64, 32, generator=g),
            "label": torch.tensor([0, 1, 2, 0])}


def test_mixup_mixes_video_only_by_default():
    b = _batch()
    audio = b["audio"].clone()
    out = VideoMixup(3, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0)(dict(b, video=b["video"].clone()))
    lam = out["label"][1, 1].item()
    torch.testing.assert_close(out["video"], lam * b["video"] + (1 - lam) * b["video"].flip(0))
    assert torch.equal(out["audio"], audio)


def test_mixup_can_mix_audio_with_the_same_lambda():
    b = _batch()
    out = VideoMixup(3, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, mix_audio=True)(
        dict(b, video=b["video"].clone()))
    lam = out["label"][1, 1].item()
    torch.testing.assert_close(out["audio"], lam * b["audio"] + (1 - lam) * b["audio"].flip(0))


def test_cutmix_cuts_the_same_box_in_every_frame():
    b = _batch()
    out = VideoMixup(3, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)(dict(b, video=b["video"].clone()))
    changed = (out["video"] != b["video"])[0, 0]  # (T, H, W) of sample 0, channel 0
    assert changed.any()
    assert all(torch.equal(changed[0], changed[t]) for t in range(1, 4))
    lam = out["label"][1, 1].item()
    assert abs(changed[0].float().mean().item() - (1 - lam)) < 1e-6
