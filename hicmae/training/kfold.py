"""``hicmae kfold``: fine-tune (or linear-probe) every fold of a dataset and tabulate per-fold and mean ± std.

Each fold runs ``finetune.py fit`` in its own process (clean state; Lightning's DDP launch works there)
with ``--data.fold k``; fit ends with a test of the selected checkpoint, whose ``metrics.json`` this
command collects into ``kfold.csv``, ``kfold.md`` and ``kfold.json`` in ``--out``. A fold's earlier run
folder (from a previous run into the same ``--out``) is moved to ``fold<k>.previous`` first: its results
can never pass for the new run's, and the new run does not find a run folder already in use. The command's arguments are defined in :mod:`hicmae.cli`, so that
``hicmae kfold --help`` imports no training code.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
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


def set_aside(run: Path) -> None:
    """Move a fold's earlier run folder to ``<run>.previous`` (replacing an older one) before it runs again."""
    if run.exists():
        previous = run.with_name(run.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        run.rename(previous)
        print(f"earlier run moved to {previous}", flush=True)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/kfold_{Path(args.config).stem}")
    out.mkdir(parents=True, exist_ok=True)
    overrides = [a for a in args.overrides if a != "--"]
    per_fold, selection = {}, {}
    started = time.monotonic()
    for n, fold in enumerate(args.folds, 1):
        # A plain line, not a bar: each fold's own process prints Lightning's progress bars beneath it.
        print(fold_header(fold, n, len(args.folds), time.monotonic() - started), flush=True)
        results = out / f"fold{fold}" / "results"
        set_aside(out / f"fold{fold}")
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
    print(f"\n{where_results_are(out, list(args.folds))}\n(all {len(args.folds)} folds in "
          f"{_duration(time.monotonic() - started)})")
    return 0


def fold_header(fold: int, n: int, total: int, elapsed: float) -> str:
    """``== fold 3 (2/5): 4 min 10 s so far, about 16 min 40 s left ==``: the mean time
    of the folds done so far, times the folds left (this one included)."""
    text = f"== fold {fold} ({n}/{total})"
    if n > 1:
        text += f": {_duration(elapsed)} so far, about {_duration(elapsed / (n - 1) * (total - n + 1))} left"
    return text + " =="


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


# What a fold's test writes into its results folder (training.results.write_results), in the order listed.
RESULT_FILES = ("metrics.json", "predictions.csv", "confusion_matrix.png")


def where_results_are(out: Path, folds: list[int]) -> str:
    """Where to look after a run: the tables, then each fold's results folder with the files it holds."""
    lines = [f"tables (per fold, mean ± std): {out / 'kfold.md'}, kfold.csv, kfold.json",
             "test results per fold (checkpoints and logs: the folder above):"]
    for fold in folds:
        results = out / f"fold{fold}" / "results"
        present = [name for name in RESULT_FILES if (results / name).exists()]
        lines.append(f"  fold {fold}: {results}/  " + ", ".join(present))
    return "\n".join(lines)
