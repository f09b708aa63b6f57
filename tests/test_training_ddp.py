"""Two CPU processes (gloo) under Lightning's DDP: the gathered contrastive loss trains as one process over the
global batch; fine-tuning metrics count every test clip exactly once."""

import pytest
import pytorch_lightning as pl
import torch

from hicmae.training import PretrainModule
from training_helpers import TINY, SyntheticClips, loader, tiny_config

pytestmark = pytest.mark.slow


class FirstStep(pl.Callback):
    """Saves each process's loss and gradients (after DDP's all-reduce) at the first optimiser step."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.loss = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss = float(outputs["loss"])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_end(self, trainer, pl_module):
        torch.save({"loss": self.loss, "grads": self.grads}, self.out_dir / f"rank{trainer.global_rank}.pt")


def _first_step(tmp_path, devices: int, gather: bool) -> list[dict]:
    out = tmp_path / f"{devices}_{gather}"
    out.mkdir()
    pl.seed_everything(0)
    module = PretrainModule("tiny", TINY, contrastive_gather=gather, warmup_steps=0)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                         max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[FirstStep(out)])
    # 8 clips: one batch of 8 on one process, or 4 per process (Lightning's DistributedSampler: 0 2 4 6 | 1 3 5 7).
    trainer.fit(module, loader(SyntheticClips(8, tiny_config(), pretrain=True), batch_size=8 // devices))
    return [torch.load(out / f"rank{r}.pt") for r in range(devices)]


def test_gathered_contrastive_loss_trains_as_one_process_over_the_global_batch(tmp_path):
    (single,) = _first_step(tmp_path, 1, gather=False)
    gathered = _first_step(tmp_path, 2, gather=True)
    # Each process's loss covers its own clips against the global batch: their mean is the global loss, and
    # DDP's averaged gradients are the global batch's.
    assert (gathered[0]["loss"] + gathered[1]["loss"]) / 2 == pytest.approx(single["loss"], rel=1e-5)
    for rank in (0, 1):
        assert gathered[rank]["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            torch.testing.assert_close(gathered[rank]["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # The original's per-process negatives give other gradients: the test can tell the two apart.
    local = _first_step(tmp_path, 2, gather=False)
    differs = [not torch.allclose(local[0]["grads"][n], g, rtol=1e-4, atol=1e-6) for n, g in single["grads"].items()]
    assert any(differs)


def test_finetuning_metrics_under_ddp_count_each_test_clip_once(tmp_path):
    import pytorch_lightning as pl

    from hicmae.training import FinetuneModule
    from training_helpers import make_tiny_demo, tiny_datamodule

    root = make_tiny_demo(tmp_path / "demo", num_clips=9)  # 9 clips x 3 views = 27 items: the sampler pads rank 1

    def run(devices: int) -> dict:
        pl.seed_everything(0)
        module = FinetuneModule("tiny", TINY, num_classes=3, results_dir=str(tmp_path / f"r{devices}"))
        trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.test(module, datamodule=tiny_datamodule(root, batch_size=4, test_num_segment=3))
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

    one, two = run(1), run(2)
    assert two["test/num_clips"] == one["test/num_clips"] == 9
    for key in ("test/war", "test/uar", "test/wf1", "test/mf1"):
        assert two[key] == pytest.approx(one[key], abs=1e-4)
    import json

    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["num_clips"] == 9
    import pandas as pd

    rows = pd.read_csv(tmp_path / "r2" / "predictions.csv")
    assert sorted(rows["index"]) == list(range(9))
    assert (rows["num_views"] == 3).all()  # the padded duplicate view is not counted twice
