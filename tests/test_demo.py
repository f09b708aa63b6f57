"""``python -m hicmae.demo`` end to end, shortened (the full run's numbers are in the README/report)."""

import json

import pytest

from hicmae.demo import main

pytestmark = pytest.mark.slow


def test_demo_runs_every_stage_and_prints_the_table(tmp_path, capsys):
    summary = main(["--out", str(tmp_path), "--clips", "30", "--pretrain-epochs", "1", "--finetune-epochs", "1"])
    out = capsys.readouterr().out
    assert "| random init | linear probe | 5 |" in out and "| pretrained | fine-tune | fold 0 |" in out
    assert len(summary["probe_pretrained"]) == len(summary["probe_random"]) == 5
    assert all(0 <= r["war"] <= 100 for r in summary["probe_pretrained"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["finetune"]["num_clips"] == 6  # fold 0 of 30 clips
    assert (tmp_path / "pretrain" / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "results.md").read_text().count("|") > 20
