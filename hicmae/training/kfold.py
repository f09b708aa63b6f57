"""``hicmae kfold``: fine-tune (or linear-probe) every fold of a dataset and tabulate per-fold and mean ± std.

Each fold runs ``finetune.py fit`` in its own process (clean state; Lightning's DDP launch works there)
with ``--data.fold k``; fit ends with a test of the selected checkpoint, whose ``metrics.json`` this
command collects into ``kfold.csv``, ``kfold.md`` and ``kfold.json`` in ``--out``. A fold's earlier
results (from a previous run into the same ``--out``) are moved to ``results.previous`` first, so they
can never pass for the new run's.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from hicmae.training.results import atomic_path

log = logging.getLogger(__name__)


def fold_args(config: str, fold: int, out: Path, overrides: list[str]) -> list[str]:
    run = out / f"fold{fold}"
    return ["fit", "--config", config, "--data.fold", str(fold), "--trainer.default_root_dir", str(run),
            "--model.results_dir", str(run / "results"), *overrides]


def run_fold(args: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "hicmae.training.finetune_main", *args])


def summarise(per_fold: dict[int, dict]) -> dict:
    keys = sorted({k for m in per_fold.values() for k in m})
    summary = {}
    for key in keys:
        values = [m[key] for m in per_fold.values() if key in m]
        summary[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return summary


def table(per_fold: dict[int, dict], summary: dict, keys: list[str] | None = None) -> str:
    keys = keys or list(summary)
    lines = ["| fold | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    for fold, metrics in sorted(per_fold.items()):
        lines.append(f"| {fold} | " + " | ".join(f"{metrics.get(k, float('nan')):.2f}" for k in keys) + " |")
    lines.append("| mean ± std | " + " | ".join(f"{summary[k]['mean']:.2f} ± {summary[k]['std']:.2f}"
                                                 for k in keys) + " |")
    return "\n".join(lines)


def write_outputs(out: Path, per_fold: dict[int, dict], selection: dict[int, str]) -> str:
    import pandas as pd

    summary = summarise(per_fold)
    headline = [k for k in ("war", "uar", "wf1", "mf1", "ccc", "pcc", "map") if k in summary] or list(summary)
    text = table(per_fold, summary, headline)
    rows = [{"fold": f, **m} for f, m in sorted(per_fold.items())]
    with atomic_path(out / "kfold.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    with atomic_path(out / "kfold.md") as tmp:
        tmp.write_text(text + "\n")
    with atomic_path(out / "kfold.json") as tmp:
        tmp.write_text(json.dumps({"folds": per_fold, "summary": summary, "model_selection": selection},
                                  indent=2) + "\n")
    return text


def set_aside(results: Path) -> None:
    """Move a fold's earlier results to ``results.previous`` (replacing older ones) before it runs again."""
    if results.exists():
        previous = results.with_name(results.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        results.rename(previous)
        print(f"earlier results moved to {previous}", flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a fine-tuning YAML, e.g. configs/finetune/crema_d.yaml")
    p.add_argument("--folds", type=int, nargs="+", required=True, help="fold ids, e.g. 1 2 3 4 5")
    p.add_argument("--out", default=None, help="output folder (default: runs/kfold_<config name>)")
    p.add_argument("overrides", nargs=argparse.REMAINDER,
                   help="after --: options for finetune.py, e.g. -- --model.init_checkpoint ckpt --model.linear_probe true")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/kfold_{Path(args.config).stem}")
    out.mkdir(parents=True, exist_ok=True)
    overrides = [a for a in args.overrides if a != "--"]
    per_fold, selection = {}, {}
    for fold in args.folds:
        print(f"== fold {fold} ==", flush=True)
        results = out / f"fold{fold}" / "results"
        set_aside(results)
        code = run_fold(fold_args(args.config, fold, out, overrides))
        metrics_path = results / "metrics.json"
        if code != 0:
            print(f"fold {fold} failed (exit code {code}); see {out / f'fold{fold}'}", file=sys.stderr)
            return code
        if not metrics_path.exists():
            print(f"fold {fold} trained but wrote no test results ({metrics_path} is missing): kfold needs a "
                  "test after fit, i.e. data.test_manifest set and test_after_fit true", file=sys.stderr)
            return 1
        result = json.loads(metrics_path.read_text())
        per_fold[fold] = result["metrics"]
        selection[fold] = result.get("model_selection", "")
    print(write_outputs(out, per_fold, selection))
    print(f"\nper-fold results in {out}/kfold.csv, kfold.md, kfold.json")
    return 0
