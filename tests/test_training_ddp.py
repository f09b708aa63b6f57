"""Two CPU processes (gloo): gathered contrastive loss and gradients equal one process over the global batch;
fine-tuning metrics count every test clip exactly once."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hicmae.training import PretrainModule
from training_helpers import TINY, SyntheticClips, tiny_config

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(n: int = 8) -> dict:
    data = SyntheticClips(n, tiny_config(), pretrain=True)
    return {k: torch.stack([data[i][k] for i in range(n)]) for k in ("video", "audio", "video_mask", "audio_mask")}


def _loss_and_grads(module: PretrainModule, batch: dict) -> tuple[float, dict]:
    module.zero_grad()
    loss = module._step(batch)[0]["loss"]
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, gather: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    module = PretrainModule("tiny", TINY, contrastive_gather=gather)
    batch = {k: v[rank * 4:(rank + 1) * 4] for k, v in _batch().items()}
    loss, grads = _loss_and_grads(module, batch)
    # What DDP does: average the loss for reporting, average the gradients.
    loss_t = torch.tensor(loss)
    dist.all_reduce(loss_t)
    for g in grads.values():
        dist.all_reduce(g)
        g /= 2
    if rank == 0:
        torch.save({"loss": loss_t.item() / 2, "grads": grads}, out)
    dist.destroy_process_group()


def _two_process(tmp_path, gather: bool) -> dict:
    out = str(tmp_path / f"ddp_{gather}.pt")
    mp.spawn(_worker, args=(_free_port(), gather, out), nprocs=2, join=True)
    return torch.load(out)


def test_gathered_contrastive_loss_and_grads_equal_one_process_over_the_global_batch(tmp_path):
    torch.manual_seed(0)
    single = PretrainModule("tiny", TINY)
    loss, grads = _loss_and_grads(single, _batch())
    ddp = _two_process(tmp_path, gather=True)
    assert ddp["loss"] == pytest.approx(loss, rel=1e-5)
    assert set(ddp["grads"]) == set(grads)
    for name, g in grads.items():
        assert torch.allclose(ddp["grads"][name], g, rtol=1e-4, atol=1e-6), name
    # The original's local-only negatives differ: the test can tell the two apart.
    local = _two_process(tmp_path, gather=False)
    assert abs(local["loss"] - loss) > 1e-3


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
    rows = (tmp_path / "r2" / "predictions.csv").read_text().splitlines()[1:]
    assert sorted(int(r.split(",")[0]) for r in rows) == list(range(9))
    assert all(r.split(",")[1] == "3" for r in rows)  # the padded duplicate view is not counted twice
