"""``hicmae kfold`` collects each fold's fresh test results into tables that state the protocol and put the
reported numbers beside ours (fold runs stubbed, except one real run of tiny models in this process)."""

import copy
import json
import statistics
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hicmae.cli import main
from hicmae.training import kfold, paper
from hicmae.training.results import atomic_path

REPO = Path(__file__).resolve().parents[1]


def _results_dir(args: list[str]) -> str:
    return args[args.index("--model.results_dir") + 1]


def _kfold(tmp_path, *folds: int, config: str = "cfg.yaml", extra: tuple[str, ...] = ()) -> int:
    return main(["kfold", "--config", config, "--folds", *map(str, folds), "--out", str(tmp_path), *extra])


# What results.run_protocol records, in the shape a real fold writes (test_training_protocol checks that shape).
PROTOCOL = {
    "checkpoint": {"tested": "/runs/fold1/checkpoints/best-7.ckpt", "selection": "best", "monitor": "val/war",
                   "mode": "max", "score": 61.0, "selected_on": "test", "epoch": 7, "global_step": 80,
                   "statement": "selected on test: best val/war (max) over the epochs, measured on the validation "
                                "split, which is the test split (the original's protocol for most datasets)"},
    "views": {"test_num_segment": 2, "test_num_crop": 2, "per_clip": 4, "observed_per_clip": [4, 4],
              "merge": "softmax per view, probabilities averaged over the clip's views, argmax"},
    "metrics": {"war": "WAR = accuracy", "uar": "UAR = macro recall"},
    "seed": {"seed_everything": 0, "data_seed": 0},
    "eval_gain_augment": True,
    "model": {"preset": "base", "overrides": {}, "task": "classification", "num_classes": 6,
              "modalities": ["video", "audio"], "linear_probe": False, "init_checkpoint": "pre.ckpt",
              "parameters": 81_000_000},
    "data": {"fold": 1},
    "trainer": {"precision": "16-mixed", "world_size": 4, "max_epochs": 50},
    "versions": {"hicmae": "0.1.0", "torch": "2.5.1", "pytorch_lightning": "2.4.0"},
}


def protocol(**changes) -> dict:
    """PROTOCOL with some parts changed, e.g. ``protocol(model={"num_classes": 4})``."""
    p = copy.deepcopy(PROTOCOL)
    for part, values in changes.items():
        p[part].update(values) if isinstance(values, dict) else p.__setitem__(part, values)
    return p


def _write_metrics(results_dir, metrics: dict, protocol: dict | None = None) -> None:
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    payload = {"metrics": metrics, "model_selection": "best"}
    if protocol is not None:
        payload["protocol"] = protocol
    (Path(results_dir) / "metrics.json").write_text(json.dumps(payload))


def _stub_folds(monkeypatch, results: dict[int, tuple[dict, dict | None]]) -> None:
    """Fold runs that only write the given (metrics, protocol) as their test results."""
    def run_fold(args):
        fold = int(args[args.index("--data.fold") + 1])
        _write_metrics(_results_dir(args), *results[fold])
        return 0

    monkeypatch.setattr(kfold, "run_fold", run_fold)


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


# ---------------------------------------------------------------------------------------------- reported numbers
CREMA = {1: ({"war": 80.0, "uar": 79.0, "wf1": 78.0, "mf1": 77.0}, protocol()),
         2: ({"war": 82.0, "uar": 81.0, "wf1": 80.0, "mf1": 79.0},
             protocol(checkpoint={"tested": "/runs/fold2/checkpoints/best-9.ckpt", "global_step": 100}))}


def test_tables_put_the_reported_numbers_beside_ours_and_state_the_protocol(tmp_path, monkeypatch):
    _stub_folds(monkeypatch, CREMA)
    assert _kfold(tmp_path, 1, 2, config="configs/finetune/crema_d.yaml") == 0
    md = (tmp_path / "kfold.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "# crema_d: 2 folds"
    assert "| fold | war | uar | wf1 | mf1 | tested |" in lines
    assert "| 1 | 80.00 | 79.00 | 78.00 | 77.00 | best: best-7.ckpt (step 80) |" in lines
    assert "| 2 | 82.00 | 81.00 | 80.00 | 79.00 | best: best-9.ckpt (step 100) |" in lines
    assert "| mean ± std | 81.00 ± 1.41 | 80.00 ± 1.41 | 79.00 ± 1.41 | 78.00 ± 1.41 |  |" in lines
    # REFERENCE.md 15: README mean UAR 84.94 / WAR 84.91; paper WAR 84.89 / UAR 84.91; no F1 reported.
    assert "| HiCMAE-B, 6 classes: README, mean of 5 folds | 84.91 | 84.94 | not reported | not reported |  |" in lines
    assert "| HiCMAE-B, 6 classes: paper, Tab. 6 | 84.89 | 84.91 | not reported | not reported |  |" in lines
    assert "| HiCMAE-B, 6 classes: AVF-MAE++ reprint | 84.89 | 84.91 | not reported | not reported |  |" in lines
    assert not any("4 classes" in line or "audio only" in line for line in lines)  # other settings left out
    assert "Dataset: crema_d (from the config file name crema_d.yaml)." in lines
    # The protocol, once for all folds where they agree; the tested file is per fold, in the table.
    protocol_lines = lines[lines.index("## Protocol") + 2:]
    assert protocol_lines[0] == f"- checkpoint: {PROTOCOL['checkpoint']['statement']}"
    assert "- views: 2 temporal segments x 2 spatial crops = 4 per clip (seen: 4); softmax per view, " \
           "probabilities averaged over the clip's views, argmax" in protocol_lines
    metrics_at = protocol_lines.index("- metrics (per clip, after merging its views):")
    assert protocol_lines[metrics_at + 1:metrics_at + 3] == ["  - war: WAR = accuracy", "  - uar: UAR = macro recall"]
    assert "- seed: seed_everything 0, data.seed 0" in protocol_lines
    assert any(line.startswith("- eval_gain_augment: true") for line in protocol_lines)
    assert any(line.startswith("- model: preset base, 81.0M parameters, fine-tuned, video + audio, 6 outputs")
               for line in protocol_lines)
    assert "- versions: hicmae 0.1.0, torch 2.5.1, pytorch_lightning 2.4.0" in protocol_lines
    assert not any(line.startswith("- tested") for line in protocol_lines)
    assert "Not comparable" not in md  # base, fine-tuned: nothing to warn about

    table = pd.read_csv(tmp_path / "kfold.csv")
    assert list(table["row"]) == ["fold", "fold", "mean", "std", "reported", "reported", "reported"]
    assert list(table["war"]) == pytest.approx([80.0, 82.0, 81.0, statistics.stdev([80.0, 82.0]), 84.91, 84.89, 84.89])
    assert table["wf1"].isna().tolist()[4:] == [True] * 3
    assert table.loc[1, "tested"] == "best: best-9.ckpt (step 100)"
    assert (table["checkpoint"][:4] == PROTOCOL["checkpoint"]["statement"]).all()
    assert table.loc[4, "source"].startswith("HiCMAE-B, 6 classes: README, mean of 5 folds (HiCMAE README (github")

    summary = json.loads((tmp_path / "kfold.json").read_text())
    assert summary["dataset"] == {"name": "crema_d", "from": "the config file name crema_d.yaml"}
    assert summary["config"] == "configs/finetune/crema_d.yaml" and summary["folds_run"] == [1, 2]
    assert summary["protocol"]["checkpoint"] == PROTOCOL["checkpoint"]["statement"]
    assert summary["protocol_per_fold"]["2"]["checkpoint"]["global_step"] == 100
    assert [r["source"] for r in summary["reported"]] == ["readme", "paper", "reprint"]
    assert summary["reported"][0]["folds"]["1"] == {"uar": 86.66, "war": 86.67}


@pytest.mark.parametrize("model, expected", [
    ({"num_classes": 4}, {"HiCMAE-B, 4 classes: AVF-MAE++ reprint": 94.13}),
    ({"modalities": ["audio"]}, {"HiCMAE-B, 6 classes, audio only: paper, Tab. 6": 71.01,
                                 "HiCMAE-B, 6 classes, audio only: AVF-MAE++ reprint": 71.01}),
    ({"modalities": ["video"]}, {"HiCMAE-B, 6 classes, video only: AVF-MAE++ reprint": 77.21}),
    ({"num_classes": 7}, {}),
])
def test_reported_rows_are_those_of_the_same_class_count_and_modalities(tmp_path, monkeypatch, model, expected):
    _stub_folds(monkeypatch, {1: ({"war": 50.0}, protocol(model=model))})
    assert _kfold(tmp_path, 1, config="crema_d.yaml") == 0
    reported = json.loads((tmp_path / "kfold.json").read_text())["reported"]
    assert {r["label"]: r["metrics"]["war"] for r in reported} == expected
    if not expected:
        assert "Reported numbers: none known to hicmae for crema_d at this class count" in (tmp_path / "kfold.md").read_text()


def test_regression_tables_show_the_reported_ccc_and_pcc_per_dimension_in_our_units(tmp_path, monkeypatch):
    dims = ("arousal", "valence", "dominance")
    metrics = {"ccc": 0.4, "pcc": 0.5, "mae": 0.2, "rmse": 0.3, **{f"ccc_{d}": 0.4 for d in dims},
               **{f"pcc_{d}": 0.5 for d in dims}}
    p = protocol(model={"task": "regression", "num_classes": 3},
                 checkpoint={"monitor": "val/ccc", "statement": "selected on test: best val/ccc (max)"})
    _stub_folds(monkeypatch, {1: (metrics, p), 2: ({**metrics, "ccc": 0.6}, p)})
    assert _kfold(tmp_path, 1, 2, config="werewolf_xl.yaml") == 0
    lines = (tmp_path / "kfold.md").read_text().splitlines()
    assert lines[2] == ("| fold | ccc | pcc | ccc_arousal | ccc_dominance | ccc_valence | pcc_arousal | "
                        "pcc_dominance | pcc_valence | tested |")
    assert "| mean ± std | 0.5000 ± 0.1414 | 0.5000 ± 0.0000 |" in lines[6]
    # Printed x 100 in the paper (arousal CCC 31.85, PCC 33.74); our CCC and PCC are fractions.
    assert lines[7].startswith("| HiCMAE-B: paper, Tab. 11 | not reported | not reported | 0.3185 | 0.3754 | "
                               "0.6481 | 0.3374 | 0.4066 | 0.6923 |")
    reported = json.loads((tmp_path / "kfold.json").read_text())["reported"][0]
    assert reported["metrics"]["ccc_valence"] == pytest.approx(0.6481)
    assert reported["as_printed"]["ccc_valence"] == 64.81


def test_protocol_lines_name_each_fold_where_folds_differ_or_did_not_record_it(tmp_path, monkeypatch):
    _stub_folds(monkeypatch, {1: ({"war": 50.0}, protocol(seed={"seed_everything": 1})),
                              2: ({"war": 60.0}, protocol(seed={"seed_everything": 2})),
                              3: ({"war": 70.0}, None)})
    assert _kfold(tmp_path, 1, 2, 3, config="crema_d.yaml") == 0
    md = (tmp_path / "kfold.md").read_text()
    assert ("- seed: fold 1: seed_everything 1, data.seed 0; fold 2: seed_everything 2, data.seed 0; "
            "fold 3: not recorded") in md
    assert "| 3 | 70.00 | not recorded |" in md
    # Without every fold's class count the comparison cannot be narrowed: every crema_d setting is listed.
    assert "4 classes" in md


def test_runs_unlike_the_reported_ones_are_flagged(tmp_path, monkeypatch):
    _stub_folds(monkeypatch, {1: ({"war": 50.0}, protocol(model={"preset": "tiny", "linear_probe": True}))})
    assert _kfold(tmp_path, 1, config="crema_d.yaml") == 0
    md = (tmp_path / "kfold.md").read_text()
    assert "Not comparable as is: our model preset is tiny; most reported rows are HiCMAE-B (preset base)." in md
    assert "Not comparable as is: our runs are linear probes; the reported rows are full fine-tuning." in md
    assert json.loads((tmp_path / "kfold.json").read_text())["comparability"][1].startswith("our runs are linear")


# ---------------------------------------------------------------------------------------------- which dataset
def test_every_shipped_config_names_a_dataset_with_reported_numbers():
    configs = sorted((REPO / "configs" / "finetune").glob("*.yaml"))
    assert sorted(c.stem for c in configs) == sorted(paper.DATASETS)
    for config in configs:
        name, how = kfold.resolve_dataset(str(config))
        assert name == config.stem and "config file name" in how
        cfg = yaml.safe_load(config.read_text())
        rows = paper.reported(name, num_classes=cfg["model"]["num_classes"], modalities=cfg["model"]["modalities"])
        assert rows, f"{config.name}: no reported number at its class count and modalities"


def test_the_dataset_comes_from_the_option_the_config_name_or_its_tags(tmp_path):
    assert kfold.resolve_dataset("x/crema_d_linear_probe.yaml") == (
        "crema_d", "the config file name crema_d_linear_probe.yaml")
    assert kfold.resolve_dataset("CREMA-D.yaml")[0] == "crema_d"
    assert kfold.resolve_dataset("cfg.yaml", "MER2023") == ("mer_multi", "--dataset MER2023")
    assert kfold.resolve_dataset("cfg.yaml", "my_new_set") == ("my_new_set", "--dataset my_new_set")
    copied = tmp_path / "my_run.yaml"  # a renamed copy of a shipped config still says what it is
    copied.write_text((REPO / "configs" / "finetune" / "ravdess.yaml").read_text())
    assert kfold.resolve_dataset(str(copied)) == ("ravdess", "the config's logger tag 'ravdess'")
    plain = tmp_path / "plain.yaml"
    plain.write_text("model: {task: classification}\ntrainer: {logger: false}\n")
    name, how = kfold.resolve_dataset(str(plain))
    assert name is None and "pass --dataset" in how


def test_an_unknown_dataset_gets_no_reported_rows_until_named(tmp_path, monkeypatch, capsys):
    _stub_folds(monkeypatch, {1: ({"war": 50.0}, protocol(model={"num_classes": 8}))})
    assert _kfold(tmp_path / "a", 1) == 0
    md = (tmp_path / "a" / "kfold.md").read_text()
    assert md.startswith("# dataset not known: 1 fold\n") and "pass --dataset NAME" in md and "paper" not in md
    assert "dataset not known: pass --dataset" in capsys.readouterr().out
    assert _kfold(tmp_path / "b", 1, extra=("--dataset", "ravdess")) == 0
    md = (tmp_path / "b" / "kfold.md").read_text()
    assert "| HiCMAE-B: paper, Tab. 9 | 87.99 |" in md and "Dataset: ravdess (from --dataset ravdess)." in md


# ---------------------------------------------------------------------------------------------- a real run
def test_a_real_kfold_run_tabulates_each_folds_results_and_protocol(tmp_path, monkeypatch):
    """Two folds of a tiny model on demo files through finetune.py's CLI (in this process, to stay fast)."""
    from hicmae.training.cli import finetune_main
    from training_helpers import cli_config, make_tiny_demo

    demo = make_tiny_demo(tmp_path / "demo", num_clips=12, num_classes=6)
    csv = str(demo / "finetune.csv")
    cfg = cli_config(tmp_path, "crema_d", {"warmup_steps": 1},
                     {"train_manifest": csv, "val_manifest": csv, "test_manifest": csv, "rand_augment": None,
                      "test_num_segment": 2, "test_num_crop": 1}, {"max_epochs": 1})

    def run_fold(args):
        try:
            finetune_main(args)
        except SystemExit as stop:
            return stop.code or 0
        return 0

    monkeypatch.setattr(kfold, "run_fold", run_fold)
    out = tmp_path / "kfold"
    assert _kfold(out, 0, 1, config=cfg) == 0
    md = (out / "kfold.md").read_text()
    lines = md.splitlines()
    for fold in (0, 1):
        result = json.loads((out / f"fold{fold}" / "results" / "metrics.json").read_text())
        p = result["protocol"]
        assert p["data"]["fold"] == fold and p["model"]["num_classes"] == 6
        row = f"| {fold} | " + " | ".join(f"{result['metrics'][k]:.2f}" for k in ("war", "uar", "wf1", "mf1"))
        assert any(line.startswith(row + f" | best: {Path(p['checkpoint']['tested']).name} (step ") for line in lines)
    # Selected on the test fold (val = test manifest), stated as such; and the paper's 6-class CREMA-D rows.
    assert "- checkpoint: selected on test: best val/war (max) over the epochs" in md
    assert "- views: 2 temporal segments x 1 spatial crops = 2 per clip (seen: 2)" in md
    assert "| HiCMAE-B, 6 classes: paper, Tab. 6 | 84.89 | 84.91 |" in md
    assert "Not comparable as is: our model preset is tiny" in md
    (tmp_path.parent / "kfold_example.md").write_text(md)  # kept for the README text
