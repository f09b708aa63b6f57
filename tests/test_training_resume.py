"""Resume after a mid-epoch stop reproduces an uninterrupted run; checkpoints are written atomically."""

import os

import pytest
import pytorch_lightning as pl
import torch

from hicmae.training import PretrainModule
from hicmae.training.callbacks import AtomicCheckpoint
from hicmae.training.resumable import ResumableData
from training_helpers import TINY, SyntheticClips, loader, tiny_config


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


class StopAt(pl.Callback):
    """Interrupts the run after ``step`` optimiser steps (like a pre-empted job)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _run(root, max_steps, ckpt_path=None, stop_at=None):
    pl.seed_everything(0)
    recorder = LossRecorder()
    extra = [StopAt(stop_at)] if stop_at else []
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, default_root_dir=root, logger=False,
                         callbacks=[AtomicCheckpoint(every_n_train_steps=1), ResumableData(), recorder, *extra],
                         deterministic=True,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    module = PretrainModule("tiny", TINY, base_lr=0.5, warmup_steps=2)
    data = SyntheticClips(10, tiny_config(), pretrain=True)  # 5 batches per epoch
    dm = pl.LightningDataModule.from_datasets(train_dataset=data, batch_size=2)  # shuffled
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return recorder.losses, trainer


@pytest.mark.slow
def test_resume_mid_epoch_continues_exactly(tmp_path):
    full, _ = _run(tmp_path / "full", 9)
    first, _ = _run(tmp_path / "cut", 9, stop_at=3)  # stops inside epoch 0 (5 batches per epoch)
    assert sorted(first) == [1, 2, 3]
    assert (tmp_path / "cut" / "checkpoints" / "last.ckpt").exists()
    resumed, trainer = _run(tmp_path / "cut", 9, ckpt_path="last")
    assert sorted(resumed) == list(range(4, 10))  # crosses into epoch 1 (new shuffle) as well
    for step, loss in resumed.items():
        assert loss == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    assert trainer.global_step == 9


def _failing_save(trainer, path):
    """Fault injection: the process dies half-way through writing ``path``."""

    def save_checkpoint(filepath, weights_only=False, storage_options=None):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed while saving")

    trainer.save_checkpoint = save_checkpoint


def test_a_crash_while_saving_leaves_the_previous_last_ckpt_intact(tmp_path):
    _, trainer = _run(tmp_path, 2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=True)["global_step"]
    callback = trainer.checkpoint_callback
    _failing_save(trainer, last)
    with pytest.raises(KeyboardInterrupt):
        callback._save_checkpoint(trainer, str(last))
    assert torch.load(last, weights_only=True)["global_step"] == before == 2
    # Lightning's own ModelCheckpoint writes in place: the same crash corrupts its file.
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(last.read_bytes())
    with pytest.raises(KeyboardInterrupt):
        pl.callbacks.ModelCheckpoint._save_checkpoint(callback, trainer, str(plain))
    with pytest.raises(Exception):
        torch.load(plain, weights_only=True)
    assert not [p for p in os.listdir(tmp_path / "checkpoints") if p.endswith(".ckpt") and p != "last.ckpt"
                and not p.startswith("epoch=")]


def _run_real(root, data_root, max_steps, ckpt_path=None, stop_at=None):
    from training_helpers import tiny_datamodule

    pl.seed_everything(0)
    recorder = LossRecorder()
    extra = [StopAt(stop_at)] if stop_at else []
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, default_root_dir=root, logger=False,
                         callbacks=[AtomicCheckpoint(every_n_train_steps=1), ResumableData(), recorder, *extra],
                         deterministic=True, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    module = PretrainModule("tiny", TINY, base_lr=0.5, warmup_steps=2, probe_num_classes=0)
    dm = tiny_datamodule(data_root, task="pretrain", batch_size=4, num_workers=0, persistent_workers=False)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return recorder.losses


@pytest.mark.slow
def test_resume_mid_epoch_with_real_files_repeats_the_same_augmented_batches(tmp_path):
    """Real mp4/wav through the data module: crops, gains and masks after resuming equal the uninterrupted
    run's, so the losses do too (3 batches per epoch; stop inside epoch 1, finish in epoch 2)."""
    from training_helpers import make_tiny_demo

    data = make_tiny_demo(tmp_path / "data", num_clips=12)
    full = _run_real(tmp_path / "full", data, 7)
    first = _run_real(tmp_path / "cut", data, 7, stop_at=4)
    assert sorted(first) == [1, 2, 3, 4]
    resumed = _run_real(tmp_path / "cut", data, 7, ckpt_path="last")
    assert sorted(resumed) == list(range(5, 8))
    for step, loss in resumed.items():
        assert loss == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
