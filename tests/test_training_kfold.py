"""``hicmae kfold`` collects each fold's fresh test results (fold runs stubbed: no training here)."""

import json
import statistics
from pathlib import Path

import pytest

from hicmae.cli import main
from hicmae.training import kfold
from hicmae.training.results import atomic_path


def _results_dir(args: list[str]) -> str:
    return args[args.index("--model.results_dir") + 1]


def _kfold(tmp_path, *folds: int) -> int:
    return main(["kfold", "--config", "cfg.yaml", "--folds", *map(str, folds), "--out", str(tmp_path)])


def _write_metrics(results_dir, metrics: dict) -> None:
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    (Path(results_dir) / "metrics.json").write_text(json.dumps({"metrics": metrics, "model_selection": "best"}))


def test_a_fold_without_test_results_fails_even_if_an_earlier_run_left_some(tmp_path, monkeypatch, capsys):
    _write_metrics(tmp_path / "fold1" / "results", {"war": 99.0})  # stale: from an earlier run
    monkeypatch.setattr(kfold, "run_fold", lambda args: 0)  # trains, tests nothing
    assert _kfold(tmp_path, 1) == 1
    assert "fold 1 trained but wrote no test results" in capsys.readouterr().err
    assert not (tmp_path / "kfold.json").exists()
    # The earlier results are kept aside, not lost.
    assert json.loads((tmp_path / "fold1.previous" / "results" / "metrics.json").read_text())["metrics"] == {
        "war": 99.0}


def test_fresh_fold_results_replace_stale_ones_and_are_tabulated(tmp_path, monkeypatch, capsys):
    _write_metrics(tmp_path / "fold2" / "results", {"war": 99.0, "uar": 99.0})
    fresh = {1: {"war": 60.0, "uar": 50.0}, 2: {"war": 70.0, "uar": 40.0}}
    calls = []

    def run_fold(args):
        fold = int(args[args.index("--data.fold") + 1])
        calls.append(fold)
        _write_metrics(_results_dir(args), fresh[fold])
        if fold == 1:
            (Path(_results_dir(args)) / "predictions.csv").write_text("index,label\n")
        return 0

    monkeypatch.setattr(kfold, "run_fold", run_fold)
    assert _kfold(tmp_path, 1, 2) == 0
    assert calls == [1, 2]
    summary = json.loads((tmp_path / "kfold.json").read_text())
    assert summary["folds"] == {"1": fresh[1], "2": fresh[2]}
    assert summary["summary"]["war"] == {"mean": 65.0, "std": pytest.approx(statistics.stdev([60.0, 70.0]))}
    assert "| 2 | 70.00 | 40.00 |" in (tmp_path / "kfold.md").read_text()
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    out = capsys.readouterr().out
    # Progress: each fold's place in the run, then where every result is.
    assert "== fold 1 (1/2) ==" in out and "== fold 2 (2/2):" in out and "left ==" in out
    assert str(tmp_path / "kfold.md") in out
    assert f"fold 1: {tmp_path / 'fold1' / 'results'}/  metrics.json, predictions.csv\n" in out
    assert out.rstrip().splitlines()[-2] == f"  fold 2: {tmp_path / 'fold2' / 'results'}/  metrics.json"


def test_fold_header_estimates_the_time_left_from_the_folds_done():
    assert kfold.fold_header(4, 1, 5, 0.0) == "== fold 4 (1/5) =="
    # Two folds took 10 minutes: the three left should take about 15.
    assert kfold.fold_header(2, 3, 5, 600.0) == "== fold 2 (3/5): 10 min 0 s so far, about 15 min 0 s left =="


def test_a_failing_fold_stops_with_its_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(kfold, "run_fold", lambda args: 3)
    assert _kfold(tmp_path, 1, 2) == 3
    assert "fold 1 failed (exit code 3)" in capsys.readouterr().err


def test_an_interrupted_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with atomic_path(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
