"""One folder per run, through the real entry points: everything a run writes lands in --trainer.default_root_dir,
a resume continues the same logs, a second run is refused, failed starts leave nothing, interrupts say how to
resume, and mistakes get one line that says what to do."""

from __future__ import annotations

import csv
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddp_probe import launch_env
from hicmae.errors import ConfigError
from hicmae.training.cli import FinetuneCLI, PretrainCLI, pretrain_main
from training_helpers import cli_config, make_tiny_demo

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_tiny_demo(tmp_path_factory.mktemp("demo"), num_clips=12, num_classes=3)


def _pretrain_config(tmp_path, demo, **trainer) -> str:
    return cli_config(tmp_path, "pre", {"warmup_steps": 1, "probe_num_classes": 0},
                      {"train_manifest": str(demo / "pretrain.csv")}, trainer)


def _steps(metrics: Path) -> list[int]:
    with open(metrics, newline="") as f:
        return sorted({int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss_step")})


def test_a_run_folder_holds_the_config_checkpoints_logs_and_results(demo, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    run = tmp_path / "ft"
    csv_path = str(demo / "finetune.csv")
    cfg = cli_config(tmp_path, "ft", {"warmup_steps": 1},
                     {"train_manifest": csv_path, "val_manifest": csv_path, "test_manifest": csv_path, "fold": 0,
                      "rand_augment": None, "test_num_segment": 1, "test_num_crop": 1},
                     {"max_epochs": 1, "default_root_dir": str(run)})
    with caplog.at_level("WARNING"):
        cli = FinetuneCLI(args=["fit", "--config", cfg])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft", "ft.yaml"]
    assert (run / "config.yaml").exists() and (run / "logs" / "metrics.csv").exists()
    assert not list(run.rglob("version_*"))
    results = run / "results" / Path(cli.trainer.checkpoint_callback.best_model_path).stem
    assert sorted(p.name for p in results.iterdir()) == ["confusion_matrix.png", "metrics.json", "predictions.csv"]
    assert f"test results in {results}" in caplog.text
    with open(results / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(Path(r["video"]).exists() and r["video"].endswith(".mp4") for r in rows)
    title = cli.model._results_title({"war": 50.0, "uar": 40.0})
    assert title == "finetune.csv, test fold 0: WAR 50.0%, UAR 40.0%"


def test_a_resumed_run_continues_its_metrics_file_and_a_second_run_is_refused(demo, tmp_path):
    run = tmp_path / "run"
    cfg = _pretrain_config(tmp_path, demo, max_epochs=1, default_root_dir=str(run))
    PretrainCLI(args=["fit", "--config", cfg])
    assert _steps(run / "logs" / "metrics.csv") == [0, 1, 2]
    before = (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"already holds a run.*--ckpt_path last.*--trainer.default_root_dir"):
        PretrainCLI(args=["fit", "--config", cfg, "--trainer.max_epochs", "2"])
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before  # untouched
    PretrainCLI(args=["fit", "--config", cfg, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert _steps(run / "logs" / "metrics.csv") == [0, 1, 2, 3, 4, 5]  # one file for the whole run
    assert not list(run.rglob("version_*"))


def test_a_failed_start_leaves_no_folder_and_says_what_is_wrong_in_one_line(demo, tmp_path, capsys):
    run = tmp_path / "new_run"
    cfg = cli_config(tmp_path, "bad", {"warmup_steps": 1}, {"train_manifest": str(tmp_path / "missing.csv")},
                     {"max_epochs": 1, "default_root_dir": str(run)})
    with pytest.raises(SystemExit) as done:
        pretrain_main(["fit", "--config", cfg])
    assert done.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "missing.csv" in err[-1] and "Traceback" not in "\n".join(err)
    assert not run.exists()


def test_a_mistyped_option_gets_the_nearest_valid_one_and_optimizer_options_are_gone(demo, tmp_path, capsys):
    cfg = _pretrain_config(tmp_path, demo, max_epochs=1, default_root_dir=str(tmp_path / "run"))
    with pytest.raises(SystemExit):
        PretrainCLI(args=["fit", "--config", cfg, "--model.base_lrr", "0.1"])
    assert "did you mean --model.base_lr?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        PretrainCLI(args=["fit", "--help"])
    help_text = capsys.readouterr().out
    assert "--model.base_lr" in help_text and "--optimizer" not in help_text and "--lr_scheduler" not in help_text


def _run_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=launch_env(), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_an_interrupted_run_ends_with_its_checkpoint_and_the_resume_command(demo, tmp_path, signal_name):
    run = tmp_path / "run"
    cfg = _pretrain_config(tmp_path, demo, max_epochs=3, default_root_dir=str(run), callbacks=[
        {"class_path": "hicmae.training.callbacks.AtomicCheckpoint", "init_args": {"every_n_train_steps": 2}},
        {"class_path": "ddp_probe.SignalAt", "init_args": {"step": 5, "signal": signal_name}}])
    done = _run_script([str(REPO / "pretrain.py"), "fit", "--config", cfg], tmp_path)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "interrupted" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    if signal_name == "SIGTERM":  # Lightning stops at the end of the batch: the run writes its state there
        assert f"wrote {last} at step 5" in lines[0]
        assert torch.load(last, weights_only=True)["global_step"] == 5
    else:  # Ctrl-C may land mid-step: nothing is written, the line names what there is
        assert f"the last checkpoint is {last} (step 4)" in lines[0]
    command = lines[0].split("Resume: ", 1)[1]
    assert command.endswith("--ckpt_path last") and "pretrain.py fit --config" in command
    program, *args = shlex.split(command)
    assert program == "python"
    resumed = _run_script(args, tmp_path)  # the printed command, as a user would paste it
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == 9


def test_lightning_notices_about_our_own_usage_are_silenced(demo, tmp_path):
    run = tmp_path / "run"
    cfg = _pretrain_config(tmp_path, demo, max_epochs=1, default_root_dir=str(run), log_every_n_steps=50)
    first = _run_script([str(REPO / "pretrain.py"), "fit", "--config", cfg], tmp_path)
    again = _run_script([str(REPO / "pretrain.py"), "fit", "--config", cfg, "--trainer.max_epochs", "2",
                         "--ckpt_path", "last"], tmp_path)
    for done in (first, again):
        assert done.returncode == 0, done.stderr[-3000:]
        for noise in ("litlogger", "LeafSpec", "Total length of `list`", "exists and is not empty"):
            assert noise not in done.stderr, noise
    # What a user can act on still shows: a logging interval longer than the epoch.
    assert re.search(r"smaller than the logging interval", first.stderr)
