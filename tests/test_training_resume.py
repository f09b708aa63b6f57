"""Resume after a mid-epoch stop reproduces an uninterrupted run without reloading what was trained; a resume
that cannot be placed stops with the way out; checkpoints are written atomically."""

import os

import pytest
import pytorch_lightning as pl
import torch

from hicmae.errors import CheckpointError
from hicmae.training import PretrainModule
from hicmae.training.callbacks import AtomicCheckpoint
from hicmae.training.resumable import ResumableData
from training_helpers import TINY, SyntheticClips, make_tiny_demo, tiny_datamodule, tiny_config


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


def _run_real(root, data_root, max_steps, ckpt_path=None, stop_at=None, restart_epoch=False, **data):
    pl.seed_everything(0)
    recorder = LossRecorder()
    extra = [StopAt(stop_at)] if stop_at else []
    trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, default_root_dir=root, logger=False,
                         callbacks=[AtomicCheckpoint(every_n_train_steps=1), ResumableData(restart_epoch), recorder,
                                    *extra],
                         deterministic=True, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    module = PretrainModule("tiny", TINY, base_lr=0.5, warmup_steps=2, probe_num_classes=0)
    dm = tiny_datamodule(data_root, task="pretrain", **{"batch_size": 4, "num_workers": 0, **data})
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return recorder.losses, dm


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_demo(tmp_path_factory.mktemp("data"), num_clips=12)


@pytest.mark.slow
def test_resume_mid_epoch_with_persistent_workers_repeats_the_same_augmented_batches(data, tmp_path):
    """Real mp4/wav through the data module and two persistent workers: crops, gains and masks after resuming
    equal the uninterrupted run's, so the losses do too (3 batches per epoch; stop inside epoch 1, finish in
    epoch 2)."""
    workers = dict(num_workers=2, persistent_workers=True)
    full, _ = _run_real(tmp_path / "full", data, 7, **workers)
    first, _ = _run_real(tmp_path / "cut", data, 7, stop_at=4, **workers)
    assert sorted(first) == [1, 2, 3, 4]
    resumed, _ = _run_real(tmp_path / "cut", data, 7, ckpt_path="last", **workers)
    assert sorted(resumed) == list(range(5, 8))
    for step, loss in resumed.items():
        assert loss == pytest.approx(full[step], rel=1e-5, abs=1e-6), step


@pytest.mark.slow
def test_resume_loads_only_the_clips_not_yet_trained_on(data, tmp_path):
    """Stopped after 2 of 3 batches of epoch 1, the resumed run decodes the last batch of epoch 1 and the
    3 of epoch 2: 4 batches of 4 clips, not the 2 already trained (the skip happens in the sampler)."""
    _run_real(tmp_path, data, 5, stop_at=5)
    _, dm = _run_real(tmp_path, data, 9, ckpt_path="last")
    assert dm.bad_sample_counts()["draws"] == 16


@pytest.mark.slow
def test_a_mid_epoch_resume_that_cannot_be_placed_stops_and_says_how_to_restart_the_epoch(data, tmp_path):
    _run_real(tmp_path, data, 7, stop_at=4)  # 1 of 3 batches of epoch 1 done, 4 clips per batch
    with pytest.raises(CheckpointError, match=r"1 processes x batch 4.*1 processes x batch 2.*"
                                              r"--resume_from_epoch_start true"):
        _run_real(tmp_path, data, 7, ckpt_path="last", batch_size=2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    del ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]  # a loop state we cannot read
    torch.save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="cannot resume inside the epoch.*--resume_from_epoch_start true"):
        _run_real(tmp_path, data, 7, ckpt_path=str(tmp_path / "odd.ckpt"))
    # Asked to, the other batch size restarts epoch 1's order; Lightning still ends the epoch on its count.
    resumed, _ = _run_real(tmp_path, data, 7, ckpt_path="last", batch_size=2, restart_epoch=True)
    assert min(resumed) == 5 and len(resumed) > 0
