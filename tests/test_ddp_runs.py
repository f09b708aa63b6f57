"""Real multi-process runs of pretrain.py and finetune.py on the CPU (gloo), as users launch them: Lightning's
``ddp`` strategy, ``torchrun`` and a SLURM-style launch (the variables ``srun`` sets, for 2 local tasks).

A :class:`ddp_probe.Probe` callback in the run's config records what every process did; the manifests repeat
one clip, so any randomness shared between processes shows as equal tensors.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ddp_probe import launch_env
from training_helpers import TINY, make_tiny_demo

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
CLIPS = 24  # rows of the repeated-clip manifests
BATCH = 2  # per process: 6 batches per process and epoch
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = make_tiny_demo(tmp_path_factory.mktemp("demo"), num_clips=3, num_classes=3)
    lines = [line.split(",") for line in (root / "finetune.csv").read_text().splitlines()]
    one = dict(zip(lines[0], lines[1]))  # clip 0
    rows = [f"{one['video']},{one['audio']},{'abc'[i % 3]}" for i in range(CLIPS)]
    (root / "same_clip.csv").write_text("video,audio,label\n" + "\n".join(rows) + "\n")
    return root


def _config(tmp_path: Path, name: str, entry: str, data: dict, probe: dict, **trainer) -> Path:
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}
    model = {"model_preset": "tiny", "model_overrides": overrides, "base_lr": 0.05, "warmup_steps": 2}
    if entry == "finetune.py":
        model.update(num_classes=3)
    cfg = {
        "seed_everything": 0,
        "model": model,
        # No loader workers: forking them in a multi-threaded DDP process can hang in CPython's fork handling
        # (3 times in about 100 runs here; see data.worker_start_method). Workers are tested in one process.
        "data": {"batch_size": BATCH, "num_workers": 0, "sampling_rate": 2, **data},
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_epochs": 2, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
                    "default_root_dir": str(tmp_path / name),
                    "callbacks": [
                        {"class_path": "hicmae.training.callbacks.AtomicCheckpoint",
                         "init_args": {"every_n_train_steps": 1}},
                        {"class_path": "ddp_probe.Probe", "init_args": {"out_dir": str(tmp_path / name / "probe"),
                                                                        **probe}}],
                    **trainer},
    }
    if entry == "finetune.py":
        cfg["test_after_fit"] = False
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _launch(how: str, entry: str, config: Path, *extra: str) -> list[subprocess.CompletedProcess]:
    """Run ``entry fit --config config`` on 2 processes; returns the launched processes' results (the SLURM
    tasks are independent processes, as under srun: nothing kills one when the other fails)."""
    args = [entry, "fit", "--config", str(config), *extra]
    port = _free_port()
    if how == "lightning":  # Lightning starts the second process itself
        return [subprocess.run([sys.executable, *args], cwd=REPO, env=launch_env(), capture_output=True, text=True,
                               timeout=TIMEOUT)]
    if how == "torchrun":
        return [subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                "--master_addr", "127.0.0.1", "--master_port", str(port), *args], cwd=REPO,
                               env=launch_env(), capture_output=True, text=True, timeout=TIMEOUT)]
    assert how == "slurm"  # what `srun --ntasks 2` sets for each task on one node
    logs = [config.with_name(f"{config.stem}.task{rank}.log") for rank in range(2)]
    procs = []
    for rank, log in enumerate(logs):
        env = launch_env(SLURM_NTASKS=2, SLURM_NTASKS_PER_NODE=2, SLURM_NNODES=1, SLURM_PROCID=rank,
                         SLURM_LOCALID=rank, SLURM_NODEID=0, SLURM_JOB_ID=4242, SLURM_JOB_NAME="hicmae-test",
                         SLURM_NODELIST="127.0.0.1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        with open(log, "w") as out:
            procs.append(subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                          env=env))
    codes = [p.wait(timeout=TIMEOUT) for p in procs]
    return [subprocess.CompletedProcess(p.args, code, log.read_text(), "") for p, code, log in zip(procs, codes, logs)]


def _ok(results) -> None:
    for r in results:
        assert r.returncode == 0, (r.stdout or "")[-3000:] + (r.stderr or "")[-3000:]


def _probes(run: Path) -> list[dict]:
    return [torch.load(run / "probe" / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory):
    """An uninterrupted 2-epoch pretraining run launched with torchrun."""
    tmp = tmp_path_factory.mktemp("ref")
    config = _config(tmp, "ref", "pretrain.py", {"train_manifest": str(demo / "same_clip.csv")}, {})
    _ok(_launch("torchrun", "pretrain.py", config))
    return tmp / "ref"


def test_processes_that_load_the_same_clip_draw_different_augmentations_and_masks(reference):
    rank0, rank1 = (p["first_batch"] for p in _probes(reference))
    for key in ("video", "audio", "video_mask", "audio_mask"):
        assert rank0[key].shape == rank1[key].shape
        assert not torch.equal(rank0[key], rank1[key]), f"{key}: both processes drew the same"
    # Within one process too, the copies of the clip differ (per-sample keys).
    assert not torch.equal(rank0["video"][0], rank0["video"][1])
    # What the module draws for a batch without masks differs per process as well.
    masks0, masks1 = (p["module_masks"] for p in _probes(reference))
    assert not torch.equal(masks0[0], masks1[0]) and not torch.equal(masks0[1], masks1[1])


def test_torchrun_processes_split_every_epoch_and_end_identical_with_one_checkpoint_writer(reference):
    probes = _probes(reference)
    assert [p["rank"] for p in probes] == [0, 1] and all(p["world_size"] == 2 for p in probes)
    assert [p["is_global_zero"] for p in probes] == [True, False]  # only process 0 writes checkpoints
    for epoch in (0, 1):
        seen0, seen1 = (p["indices"][epoch] for p in probes)
        assert len(seen0) == len(seen1) == CLIPS // 2
        assert set(seen0).isdisjoint(seen1) and set(seen0) | set(seen1) == set(range(CLIPS))
    assert probes[0]["indices"][0] != probes[0]["indices"][1]  # a new order every epoch
    _assert_same_params(probes[0]["params"], probes[1]["params"])
    checkpoints = sorted(p.name for p in (reference / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and not [c for c in checkpoints if c.startswith(".") or "-v" in c]
    assert torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12


def test_stopped_mid_epoch_and_resumed_under_slurm_equals_the_uninterrupted_run(demo, reference, tmp_path):
    """Lightning's ddp runs 8 steps (2 of 6 batches into epoch 1) and stops; a SLURM-style launch resumes with
    --ckpt_path last. Every process ends with the weights of the uninterrupted torchrun run, having loaded only
    the 4 + 6 batches it had not trained on."""
    data = {"train_manifest": str(demo / "same_clip.csv")}
    cut = _config(tmp_path, "run", "pretrain.py", data, {"stop_at_step": 8})
    _ok(_launch("lightning", "pretrain.py", cut))
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    resume = _config(tmp_path, "run", "pretrain.py", data, {})
    results = _launch("slurm", "pretrain.py", resume, "--ckpt_path", "last")
    _ok(results)
    resumed, full = _probes(tmp_path / "run"), _probes(reference)
    for rank in (0, 1):
        assert resumed[rank]["global_step"] == 12 and resumed[rank]["world_size"] == 2
        assert resumed[rank]["indices"][1] == full[rank]["indices"][1][2 * BATCH:]  # the rest of epoch 1
        _assert_same_params(resumed[rank]["params"], full[rank]["params"])
    assert not any("not resumable" in r.stdout for r in results)


def _mixup_lambda(before: torch.Tensor, after: torch.Tensor) -> float:
    """Solve after = lam * before + (1 - lam) * before.flip(0) for lam, and check the batch is exactly that."""
    partner = before.flip(0)
    lam = float(((after - partner) * (before - partner)).sum() / ((before - partner) ** 2).sum())
    torch.testing.assert_close(after, lam * before + (1 - lam) * partner, rtol=1e-4, atol=1e-4)
    return lam


def test_finetuning_processes_draw_their_own_augmentations_and_mixup(demo, tmp_path):
    data = {"train_manifest": str(demo / "same_clip.csv"), "rand_augment": "rand-m7-n4-mstd0.5-inc1",
            "mixup_alpha": 0.8, "cutmix_alpha": 0.0}  # Mixup only, so lambda can be read off the batch
    config = _config(tmp_path, "ft", "finetune.py", data, {}, max_epochs=1)
    _ok(_launch("lightning", "finetune.py", config))
    rank0, rank1 = _probes(tmp_path / "ft")
    assert not torch.equal(rank0["batch_before_step"]["video"], rank1["batch_before_step"]["video"])
    assert not torch.equal(rank0["first_batch"]["audio"], rank1["first_batch"]["audio"])
    lam0, lam1 = (_mixup_lambda(p["batch_before_step"]["video"], p["first_batch"]["video"]) for p in (rank0, rank1))
    assert 0 <= lam0 <= 1 and 0 <= lam1 <= 1 and abs(lam0 - lam1) > 1e-4
    assert rank0["first_batch"]["label"].shape == (BATCH, 3)  # soft targets
    assert set(rank0["indices"][0]).isdisjoint(rank1["indices"][0])
    _assert_same_params(rank0["params"], rank1["params"])


def test_a_non_finite_loss_on_one_process_stops_every_process_with_the_same_error(demo, tmp_path):
    config = _config(tmp_path, "nan", "pretrain.py", {"train_manifest": str(demo / "same_clip.csv")},
                     {"nan_at": [1, 3]})  # process 1's input at global step 3
    results = _launch("slurm", "pretrain.py", config)  # nothing but the error itself can stop process 0
    assert [r.returncode != 0 for r in results] == [True, True]
    errors = [(tmp_path / "nan" / "probe" / f"rank{r}.error.txt").read_text() for r in range(2)]
    assert errors[0] == errors[1]
    assert errors[0].startswith("NonFiniteLossError: non-finite loss at global step 3 on process 1 (loss=nan")
    # The diverged weights were never written: the last checkpoint is the one before the bad step.
    assert torch.load(tmp_path / "nan" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_the_bad_sample_limit_counts_the_skips_of_every_process(demo, tmp_path):
    """3 missing files in 20 rows, limit 10%: over both processes 3 of at least 23 draws are bad (13%), while
    each process alone sees at most 2 of its own share. Every process stops with the same error."""
    lines = (demo / "same_clip.csv").read_text().splitlines()
    rows = lines[1:18] + [f"{demo}/missing_{i}.mp4,,a" for i in range(3)]
    (tmp_path / "bad.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    data = {"train_manifest": str(tmp_path / "bad.csv"), "root": str(demo), "on_bad_sample": "skip",
            "max_bad_fraction": 0.1}
    config = _config(tmp_path, "bad", "pretrain.py", data, {}, max_epochs=1)
    results = _launch("slurm", "pretrain.py", config)
    assert [r.returncode != 0 for r in results] == [True, True]
    errors = [(tmp_path / "bad" / "probe" / f"rank{r}.error.txt").read_text() for r in range(2)]
    assert errors[0] == errors[1]
    found = re.match(rf"DataError: {tmp_path / 'bad.csv'}: too many bad samples over all processes: (\d+) of (\d+) ",
                     errors[0])
    assert found, errors[0]
    bad, total = map(int, found.groups())
    assert bad >= 3 and total >= 20 and bad / total > 0.1


# ---------------------------------------------------------------------------------------------- shards
@pytest.fixture(scope="module")
def shards(demo, tmp_path_factory):
    """The 24 rows of same_clip.csv in 8 shards of 3: one pair of shards for each of 2 processes x 2 workers."""
    from hicmae.cli import main

    out = tmp_path_factory.mktemp("shards") / "s"
    assert main(["shard", str(demo / "same_clip.csv"), str(out), "--clips-per-shard", "3", "--size", "0",
                 "--workers", "1"]) == 0
    return out


def _shard_data(shards: Path) -> dict:
    # forkserver: loader workers start from a clean process, clear of the fork hang noted in _config.
    return {"train_shards": str(shards), "num_workers": 2, "worker_start_method": "forkserver",
            "shuffle_buffer": 2}


@pytest.fixture(scope="module")
def shard_reference(shards, tmp_path_factory):
    """An uninterrupted 2-epoch pretraining run on shards, 2 processes x 2 loader workers, under torchrun."""
    tmp = tmp_path_factory.mktemp("shard_ref")
    _ok(_launch("torchrun", "pretrain.py", _config(tmp, "ref", "pretrain.py", _shard_data(shards), {})))
    return tmp / "ref"


def test_shards_are_split_across_2_processes_x_2_workers_without_overlap(shard_reference):
    probes = _probes(shard_reference)
    for epoch in (0, 1):
        seen0, seen1 = (p["indices"][epoch] for p in probes)
        assert len(seen0) == len(seen1) == CLIPS // 2
        assert len(set(seen0 + seen1)) == CLIPS  # every clip once per epoch: no reader shared a shard
    assert probes[0]["indices"][0] != probes[0]["indices"][1]  # a new order every epoch
    rank0, rank1 = (p["first_batch"] for p in probes)
    assert not torch.equal(rank0["video"], rank1["video"]) and not torch.equal(rank0["audio"], rank1["audio"])
    _assert_same_params(probes[0]["params"], probes[1]["params"])


def test_a_run_on_shards_stopped_mid_epoch_and_resumed_equals_the_uninterrupted_run(shards, shard_reference, tmp_path):
    """Stopped 2 of 6 batches into epoch 1 (each worker one batch in), resumed under torchrun: every process
    reads the rest of its shards in the same order and ends with the uninterrupted run's weights."""
    cut = _config(tmp_path, "run", "pretrain.py", _shard_data(shards), {"stop_at_step": 8})
    _ok(_launch("torchrun", "pretrain.py", cut))
    resume = _config(tmp_path, "run", "pretrain.py", _shard_data(shards), {})
    _ok(_launch("torchrun", "pretrain.py", resume, "--ckpt_path", "last"))
    resumed, full = _probes(tmp_path / "run"), _probes(shard_reference)
    for rank in (0, 1):
        assert resumed[rank]["global_step"] == 12
        assert resumed[rank]["indices"][1] == full[rank]["indices"][1][2 * BATCH:]
        _assert_same_params(resumed[rank]["params"], full[rank]["params"])
