"""The LightningModules with a real Trainer on in-memory clips (masks from the real masking code)."""

import json
import logging

import numpy as np

import pytest
import pytorch_lightning as pl
import torch

from hicmae.training import FinetuneModule, PretrainModule
from hicmae.training.base import NonFiniteLossError
from training_helpers import TINY, SyntheticClips, loader, tiny_config


def _trainer(tmp_path, **kw):
    opts = dict(accelerator="cpu", devices=1, logger=pl.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, deterministic=True)
    opts.update(kw)
    return pl.Trainer(default_root_dir=tmp_path, **opts)


def test_pretraining_learns_and_logs_every_term(tmp_path):
    pl.seed_everything(0)
    data = SyntheticClips(8, tiny_config(), pretrain=True)
    module = PretrainModule("tiny", TINY, base_lr=0.5, warmup_steps=2, probe_num_classes=3)
    trainer = _trainer(tmp_path, max_epochs=6, limit_val_batches=0)
    trainer.fit(module, loader(data))
    m = trainer.callback_metrics
    for key in ("train/loss_video", "train/loss_audio", "train/loss_contrastive", "train/lr", "train/grad_norm",
                "train/clips_per_s", "train/probe_acc"):
        assert key in m, key
    import pandas as pd

    log = pd.read_csv(trainer.logger.log_dir + "/metrics.csv")
    losses = log["train/loss_step"].dropna().tolist()
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3  # it learns on fixed clips
    # lr scaled by global batch 4/256, cosine reaches min_lr x 4/256 at the end
    assert log["train/lr"].dropna().iloc[1] == pytest.approx(0.5 * 4 / 256)


def test_pretraining_stops_with_the_step_on_a_non_finite_loss(tmp_path):
    data = SyntheticClips(8, tiny_config(), pretrain=True)
    data.video[5] = float("nan")  # in the second batch
    module = PretrainModule("tiny", TINY, warmup_steps=0)
    with pytest.raises(NonFiniteLossError, match="global step 1"):
        _trainer(tmp_path, max_epochs=1).fit(module, loader(data))


@pytest.mark.parametrize("modalities", [["video", "audio"], ["audio"]])
def test_finetuning_from_pretraining_checkpoint_writes_results(tmp_path, modalities, caplog):
    pl.seed_everything(0)
    pre = PretrainModule("tiny", TINY, warmup_steps=0)
    pre_trainer = _trainer(tmp_path / "pre", max_steps=1)
    pre_trainer.fit(pre, loader(SyntheticClips(4, tiny_config(), pretrain=True)))
    ckpt = tmp_path / "pre.ckpt"
    pre_trainer.save_checkpoint(ckpt)

    with caplog.at_level(logging.WARNING, logger="hicmae.training.init"):
        module = FinetuneModule("tiny", TINY, num_classes=3, modalities=modalities, init_checkpoint=str(ckpt),
                                base_lr=0.01, warmup_steps=1, results_dir=str(tmp_path / "results"))
    assert "missing" in caplog.text and "head.weight" in caplog.text
    enc = "audio_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(module.model.state_dict()[enc], pre.model.state_dict()[enc])

    trainer = _trainer(tmp_path / "ft", max_epochs=2)
    train, test = SyntheticClips(12, tiny_config(), views=1), SyntheticClips(9, tiny_config(), views=2, seed=1)
    trainer.fit(module, loader(train, shuffle=True), loader(test))
    assert trainer.callback_metrics["val/num_clips"] == 9 and "val/uar" in trainer.callback_metrics
    trainer.test(module, loader(test, batch_size=4))
    assert trainer.callback_metrics["test/num_clips"] == 9
    assert {"test/war", "test/uar", "test/wf1", "test/mf1"} <= set(trainer.callback_metrics)
    out = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert out["num_clips"] == 9 and set(out["metrics"]) == {"war", "uar", "wf1", "mf1"}
    import pandas as pd

    table = pd.read_csv(tmp_path / "results" / "predictions.csv")
    assert list(table.columns[:4]) == ["index", "num_views", "target", "prediction"] and len(table) == 9
    assert (table["num_views"] == 2).all()
    # The reported metrics are those of the written per-clip predictions.
    right = table["target"] == table["prediction"]
    recalls = right.groupby(table["target"]).mean()
    assert out["metrics"]["war"] == pytest.approx(100 * right.mean())
    assert out["metrics"]["uar"] == pytest.approx(100 * recalls.reindex(range(3), fill_value=0).mean())
    assert float(trainer.callback_metrics["test/war"]) == pytest.approx(out["metrics"]["war"], abs=1e-4)
    assert (tmp_path / "results" / "confusion_matrix.png").stat().st_size > 1000


def test_linear_probe_trains_only_the_head(tmp_path):
    pl.seed_everything(0)
    module = FinetuneModule("tiny", TINY, num_classes=3, linear_probe=True, base_lr=0.5, warmup_steps=0)
    assert isinstance(module.model.head[0], torch.nn.BatchNorm1d) and not module.model.head[0].affine
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = _trainer(tmp_path, max_epochs=3)
    trainer.fit(module, loader(SyntheticClips(12, tiny_config()), shuffle=True))
    after = module.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed)
    assert {"head.1.weight", "head.0.running_mean"} <= changed


def test_regression_with_ccc_loss_reports_per_dimension_metrics(tmp_path):
    pl.seed_everything(0)

    class Regression(SyntheticClips):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["label"] = torch.tensor([float(item["label"]), -float(item["label"])])
            return item

    module = FinetuneModule("tiny", TINY, task="regression", num_classes=2, regression_loss="ccc",
                            target_names=["arousal", "valence"], warmup_steps=0,
                            results_dir=str(tmp_path / "r"))
    trainer = _trainer(tmp_path, max_epochs=1)
    data = Regression(8, tiny_config(), views=2)
    trainer.fit(module, loader(data))
    trainer.test(module, loader(data))
    assert trainer.callback_metrics["test/num_clips"] == 8
    import pandas as pd

    table = pd.read_csv(tmp_path / "r" / "predictions.csv")
    assert len(table) == 8
    # Each reported number is the metric of the written per-clip predictions (numpy definitions).
    for name in ("arousal", "valence"):
        pred, target = table[f"pred_{name}"].to_numpy(), table[f"target_{name}"].to_numpy()
        cov = np.cov(pred, target)
        ccc = 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (pred.mean() - target.mean()) ** 2)
        m = trainer.callback_metrics
        assert float(m[f"test/ccc_{name}"]) == pytest.approx(ccc, rel=1e-3, abs=1e-5)
        assert float(m[f"test/pcc_{name}"]) == pytest.approx(np.corrcoef(pred, target)[0, 1], rel=1e-3, abs=1e-5)
        assert float(m[f"test/mae_{name}"]) == pytest.approx(np.abs(pred - target).mean(), rel=1e-4)


def test_bf16_mixed_with_accumulation_scales_lr_by_the_global_batch(tmp_path):
    pl.seed_everything(0)
    module = PretrainModule("tiny", TINY, base_lr=0.256, warmup_steps=0, min_lr=0.0)
    trainer = _trainer(tmp_path, max_steps=2, precision="bf16-mixed", accumulate_grad_batches=2,
                       gradient_clip_val=1.0)
    trainer.fit(module, loader(SyntheticClips(8, tiny_config(), pretrain=True), batch_size=2))
    import pandas as pd

    log = pd.read_csv(trainer.logger.log_dir + "/metrics.csv")
    # global batch = 2 per device x 1 device x 2 accumulated = 4 -> peak 0.256 x 4 / 256
    assert log["train/lr"].dropna().iloc[0] == pytest.approx(0.004)
    assert trainer.global_step == 2
    assert torch.isfinite(torch.tensor(log["train/loss_step"].dropna().to_numpy())).all()


@pytest.mark.parametrize("stop, accumulate", [({"max_steps": 6}, 1), ({"max_epochs": 2}, 1), ({"max_steps": 4}, 2)])
def test_warmup_epochs_count_optimiser_steps_of_an_epoch_however_the_run_ends(tmp_path, stop, accumulate):
    """8 clips in batches of 2: 4 batches, i.e. 4 / accumulation optimiser steps per epoch; one warm-up epoch
    ramps the lr from 0 to its peak over exactly those steps (the original's per-step schedule)."""
    pl.seed_everything(0)
    module = PretrainModule("tiny", TINY, base_lr=0.256, min_lr=0.0, warmup_epochs=1)
    trainer = _trainer(tmp_path, accumulate_grad_batches=accumulate, **stop)
    trainer.fit(module, loader(SyntheticClips(8, tiny_config(), pretrain=True), batch_size=2))
    import pandas as pd

    lrs = pd.read_csv(trainer.logger.log_dir + "/metrics.csv")["train/lr"].dropna().tolist()
    warmup = 4 // accumulate
    peak = 0.256 * 2 * accumulate / 256
    assert lrs[:warmup + 1] == pytest.approx([peak * i / (warmup - 1) for i in range(warmup)] + [peak])
    assert lrs[-1] < peak  # then the cosine
