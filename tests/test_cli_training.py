"""pretrain.py / finetune.py (LightningCLI) and ``hicmae kfold`` on real demo files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hicmae.training.cli import FinetuneCLI, PretrainCLI
from training_helpers import cli_config, make_tiny_demo

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_tiny_demo(tmp_path_factory.mktemp("demo"), num_clips=12, num_classes=3)


def _config(tmp_path, name, model, data, trainer) -> str:
    return cli_config(tmp_path, name, model, data, trainer)


def test_pretrain_cli_links_sizes_checkpoints_and_resumes_with_ckpt_path_last(demo, tmp_path):
    run = tmp_path / "pre"
    cfg = _config(tmp_path, "pre", {"warmup_steps": 1}, {"train_manifest": str(demo / "pretrain.csv")},
                  {"max_epochs": 1, "default_root_dir": str(run)})
    cli = PretrainCLI(args=["fit", "--config", cfg])
    assert cli.datamodule.hparams.img_size == 32 and cli.datamodule.hparams.audio_frames == 32  # from the model
    assert cli.model.probe is not None  # the pretrain manifest has labels: online probe on
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    cli = PretrainCLI(args=["fit", "--config", cfg, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert cli.trainer.global_step == 6  # continued from step 3, not restarted
    assert torch.load(last, weights_only=True)["epoch"] == 1


def test_finetune_cli_fits_selects_and_tests(demo, tmp_path):
    run = tmp_path / "ft"
    csv = str(demo / "finetune.csv")
    cfg = _config(tmp_path, "ft", {"warmup_steps": 1, "results_dir": str(run / "results")},
                  {"train_manifest": csv, "val_manifest": csv, "test_manifest": csv, "fold": 0, "rand_augment": None,
                   "test_num_segment": 2, "test_num_crop": 1},
                  {"max_epochs": 2, "default_root_dir": str(run)})
    cli = FinetuneCLI(args=["fit", "--config", cfg])
    assert cli.datamodule.hparams.task == "classification"
    assert cli.model.hparams.num_classes == 3
    result = json.loads((run / "results" / "metrics.json").read_text())
    assert result["num_clips"] == 6  # fold 0 of 12 clips
    assert result["model_selection"].startswith("selected on test")  # val manifest == test manifest
    assert "best-" in result["model_selection"]
    assert (run / "checkpoints" / "last.ckpt").exists()


def test_kfold_runs_every_fold_and_tabulates(demo, tmp_path):
    csv = str(demo / "finetune.csv")
    cfg = _config(tmp_path, "kf", {"warmup_steps": 1},
                  {"train_manifest": csv, "test_manifest": csv, "rand_augment": None, "test_num_segment": 1,
                   "test_num_crop": 1}, {"max_epochs": 1})
    out = tmp_path / "kfold"
    proc = subprocess.run([sys.executable, "-m", "hicmae.cli", "kfold", "--config", cfg, "--folds", "0", "1",
                           "--out", str(out), "--", "--model.linear_probe", "true"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "kfold.json").read_text())
    assert sorted(summary["folds"]) == ["0", "1"]
    assert set(summary["summary"]["war"]) == {"mean", "std"}
    table = (out / "kfold.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[2:5]] == ["| 0", "| 1", "| mean ± std"]  # header, rule, folds, mean
    assert "## Protocol" in table
    assert "no validation split" in summary["model_selection"]["0"]
    # The run ends saying where every result is.
    assert f"{out / 'kfold.md'}, kfold.csv, kfold.json" in proc.stdout
    for fold in (0, 1):
        assert f"fold {fold}: {out / f'fold{fold}' / 'results'}/  metrics.json, predictions.csv, confusion_matrix.png" \
            in proc.stdout


def test_wandb_runs_offline_without_credentials(demo, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    cfg = _config(tmp_path, "wb", {"warmup_steps": 1}, {"train_manifest": str(demo / "pretrain.csv")},
                  {"max_steps": 1, "default_root_dir": str(tmp_path / "run"),
                   "logger": {"class_path": "pytorch_lightning.loggers.WandbLogger",
                              "init_args": {"project": "hicmae-test", "save_dir": str(tmp_path / "run")}}})
    PretrainCLI(args=["fit", "--config", cfg])
    import os

    assert os.environ["WANDB_MODE"] == "offline"
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_clips_of_one_group_are_scored_once_with_their_mean_prediction(demo, tmp_path):
    """AVCAffe's protocol: a manifest's `group` column merges the clips of one video. Two identical runs, one
    tested per clip and one per group of two same-label clips: each group's probabilities are the mean of its
    clips', and the metrics count groups."""
    import pandas as pd

    lines = (demo / "finetune.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [dict(zip(lines[0].split(","), ln.split(","))) for ln in lines[1:]]
    test = sorted((r for r in rows if r["fold"] == "0"), key=lambda r: r["label"])
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join([lines[0], *(",".join(r[c] for c in header) for r in test)]) + "\n")
    grouped = tmp_path / "grouped.csv"
    groups = [f"{r['label']}_{i // 2}" for i, r in enumerate(test)]
    grouped.write_text("\n".join([lines[0] + ",group", *(",".join(r[c] for c in header) + f",{g}"
                                                          for r, g in zip(test, groups))]) + "\n")
    results = {}
    for name, manifest in (("plain", plain), ("grouped", grouped)):
        run = tmp_path / name
        cfg = _config(tmp_path, name, {"warmup_steps": 1, "results_dir": str(run / "results")},
                      {"train_manifest": str(demo / "finetune.csv"), "test_manifest": str(manifest), "fold": 0,
                       "root": str(demo), "rand_augment": None, "test_num_segment": 2, "test_num_crop": 1},
                      {"max_epochs": 1, "default_root_dir": str(run)})
        FinetuneCLI(args=["fit", "--config", cfg])
        results[name] = (pd.read_csv(run / "results" / "predictions.csv"),
                         json.loads((run / "results" / "metrics.json").read_text()))
    (clips, _), (merged, summary) = results["plain"], results["grouped"]
    assert len(set(groups)) == len(merged) < len(clips) and summary["num_groups"] == len(merged)
    assert summary["num_clips"] == len(clips)
    p = [c for c in clips.columns if c.startswith("p_")]
    clips["group"] = [groups[i] for i in clips["index"]]
    expected = clips.groupby("group", sort=False)[p].mean()
    for _, row in merged.iterrows():
        assert row[p].to_numpy(float) == pytest.approx(expected.loc[row["group"]].to_numpy(float), abs=1e-6)
    war = 100 * (merged["target"] == merged["prediction"]).mean()
    assert summary["metrics"]["war"] == pytest.approx(war)
