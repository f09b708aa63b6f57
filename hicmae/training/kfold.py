"""``hicmae kfold``: fine-tune (or linear-probe) every fold of a dataset and tabulate per-fold and mean ± std.

Each fold runs ``finetune.py fit`` in its own process (clean state; Lightning's DDP launch works there)
with ``--data.fold k``; fit ends with a test of the selected checkpoint, whose ``metrics.json`` this
command collects into ``kfold.csv``, ``kfold.md`` and ``kfold.json`` in ``--out``. A fold's earlier run
folder (from a previous run into the same ``--out``) is moved to ``fold<k>.previous`` first: its results
can never pass for the new run's, and the new run does not find a run folder already in use.

The tables stand beside the published numbers under a stated protocol: each fold's ``metrics.json`` records
how it was tested (:func:`hicmae.training.results.run_protocol`); every table file repeats that protocol and
adds the reported numbers of :mod:`hicmae.training.paper` for the dataset (``--dataset``, else named by the
config file or its logger tags) at the same class count and modalities. The command's arguments are defined
in :mod:`hicmae.cli`, so that ``hicmae kfold --help`` imports no training code.
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

from hicmae.training import paper
from hicmae.atomic import atomic_path
from hicmae.training.results import protocol_fields

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


# ---------------------------------------------------------------------------------------------- which dataset
def resolve_dataset(config: str, explicit: str | None = None) -> tuple[str | None, str]:
    """The dataset a kfold run is about (for the reported numbers) and how that was decided.

    In order: ``--dataset``; the config file's name (``crema_d.yaml``, or a name that starts with one, as
    ``crema_d_probe.yaml``); the dataset named in the config's logger tags (the shipped configs tag their
    wandb runs with it, so a renamed copy still says what it is). None when none of these names one.
    """
    if explicit:
        return paper.dataset_name(explicit) or explicit, f"--dataset {explicit}"
    name = _dataset_in_name(Path(config).stem)
    if name:
        return name, f"the config file name {Path(config).name}"
    for tag in _config_tags(config):
        name = paper.dataset_name(tag)
        if name:
            return name, f"the config's logger tag {tag!r}"
    return None, "not known: pass --dataset NAME to show the reported numbers"


def _dataset_in_name(stem: str) -> str | None:
    """``crema_d`` for ``crema_d``, ``CREMA-D`` or ``crema_d_linear_probe``: the longest leading run of words."""
    words = stem.replace("-", "_").split("_")
    for n in range(len(words), 0, -1):
        name = paper.dataset_name("_".join(words[:n]))
        if name:
            return name
    return None


def _config_tags(config: str) -> list[str]:
    """The ``tags`` of the loggers a config file sets (none when it cannot be read)."""
    import yaml

    try:
        cfg = yaml.safe_load(Path(config).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    loggers = (cfg.get("trainer") or {}).get("logger") if isinstance(cfg, dict) else None
    loggers = loggers if isinstance(loggers, list) else [loggers]
    tags = []
    for logger in loggers:
        if isinstance(logger, dict):
            tags += [str(t) for t in ((logger.get("init_args") or {}).get("tags") or [])]
    return tags


# ---------------------------------------------------------------------------------------------- the tables
HEADLINE = ("war", "uar", "wf1", "mf1", "ccc", "pcc", "map")
NOT_REPORTED = "not reported"


def _fmt(key: str, value: float | None) -> str:
    """Percent metrics with 2 decimals as the papers print them; fractions (CCC, PCC, errors) with 4."""
    if value is None:
        return NOT_REPORTED
    return f"{value:.2f}" if key.split("_")[0] in ("war", "uar", "wf1", "mf1", "map") else f"{value:.4f}"


def _columns(summary: dict, rows: list[paper.Reported]) -> list[str]:
    """The headline metrics we measured, then any other measured metric a reported row has a number for."""
    keys = [k for k in HEADLINE if k in summary]
    keys += [k for k in summary if k not in keys and any(k in r.metrics for r in rows)]
    return keys or list(summary)


def _common(protocols: dict[int, dict | None], *path: str):
    """A protocol value equal in every fold (e.g. model.num_classes), else None."""
    values = []
    for p in protocols.values():
        for key in path:
            p = (p or {}).get(key)
        values.append(p)
    return values[0] if values and all(v == values[0] for v in values) else None


def merge_fields(fields: dict[int, dict[str, str]]) -> dict[str, str]:
    """One wording per protocol aspect: the folds' common one, or each fold's where they differ."""
    merged = {}
    for key in next(iter(fields.values()), {}):
        values = {fold: f.get(key, "not recorded") for fold, f in sorted(fields.items())}
        distinct = set(values.values())
        merged[key] = distinct.pop() if len(distinct) == 1 else "; ".join(f"fold {k}: {v}" for k, v in values.items())
    return merged


def comparability(protocols: dict[int, dict | None], rows: list[paper.Reported]) -> list[str]:
    """Where our runs differ from what the reported rows measured (fine-tuned, mostly HiCMAE-B)."""
    if not rows:
        return []
    notes = []
    preset = _common(protocols, "model", "preset")
    if preset != "base":
        ours = (f"our model preset is {preset}" if preset else
                "our model preset is not recorded, or not the same, in every fold")
        notes.append(f"{ours}; most reported rows are HiCMAE-B (preset base)")
    if _common(protocols, "model", "linear_probe"):
        notes.append("our runs are linear probes; the reported rows are full fine-tuning")
    return notes


def table(per_fold: dict[int, dict], summary: dict, keys: list[str] | None = None,
          tested: dict[int, str] | None = None, rows: list[paper.Reported] = ()) -> str:
    """Markdown: one row per fold, mean ± std, then one row per reported result (our units)."""
    keys = keys or list(summary)
    extra = [" tested |"] if tested else []
    lines = ["| fold | " + " | ".join(keys) + " |" + "".join(extra), "| --- |" + " --- |" * (len(keys) + len(extra))]
    for fold, metrics in sorted(per_fold.items()):
        cells = " | ".join(_fmt(k, metrics.get(k, float("nan"))) for k in keys)
        lines.append(f"| {fold} | {cells} |" + (f" {tested.get(fold, '')} |" if tested else ""))
    mean = " | ".join(f"{_fmt(k, summary[k]['mean'])} ± {_fmt(k, summary[k]['std'])}" for k in keys)
    lines.append(f"| mean ± std | {mean} |" + ("  |" if tested else ""))
    for r in rows:
        cells = " | ".join(_fmt(k, paper.in_units(k, r.metrics[k]) if k in r.metrics else None) for k in keys)
        lines.append(f"| {r.label} | {cells} |" + ("  |" if tested else ""))
    return "\n".join(lines)


def _reported_json(r: paper.Reported) -> dict:
    return {"label": r.label, "source": r.source, "source_text": paper.SOURCES[r.source], "model": r.model,
            "setting": r.setting, "num_classes": r.num_classes, "modalities": list(r.modalities),
            "metrics": {k: paper.in_units(k, v) for k, v in r.metrics.items()}, "as_printed": r.metrics,
            "folds": r.folds}


def write_outputs(out: Path, results: dict[int, dict], dataset: tuple[str | None, str] = (None, "not known"),
                  run_info: dict | None = None) -> str:
    """Writes kfold.md, kfold.csv and kfold.json from each fold's metrics.json payload; returns the markdown.

    Every file states the protocol (from the folds' own records) and, where REFERENCE.md has them, the
    reported numbers for the dataset at the same class count and modalities, converted to our units.
    """
    per_fold = {f: r["metrics"] for f, r in results.items()}
    protocols = {f: r.get("protocol") for f, r in results.items()}
    fields = {f: protocol_fields(p) for f, p in protocols.items()}
    common = merge_fields(fields)
    name, source = dataset
    rows = paper.reported(name, num_classes=_common(protocols, "model", "num_classes"),
                          modalities=_common(protocols, "model", "modalities")) if name else []
    summary = summarise(per_fold)
    keys = _columns(summary, rows)
    notes = comparability(protocols, rows)
    definitions = _common(protocols, "metrics") if all(protocols.values()) else None
    text = markdown(name, source, per_fold, summary, keys, fields, common, rows, notes, definitions)
    _write_csv(out / "kfold.csv", per_fold, summary, fields, common, rows)
    payload = {"dataset": {"name": name, "from": source}, **(run_info or {}), "folds": per_fold, "summary": summary,
               "model_selection": {f: r.get("model_selection", "") for f, r in results.items()},
               "protocol": common, "protocol_per_fold": protocols,
               "reported": [_reported_json(r) for r in rows], "comparability": notes}
    with atomic_path(out / "kfold.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    with atomic_path(out / "kfold.md") as tmp:
        tmp.write_text(text + "\n")
    return text


def markdown(name: str | None, source: str, per_fold: dict, summary: dict, keys: list[str], fields: dict,
             common: dict, rows: list[paper.Reported], notes: list[str], definitions: dict | None = None) -> str:
    """The table, where the reported rows come from, what keeps them from comparing, then the protocol
    (``definitions``: the metric definitions when every fold has the same, listed one per line)."""
    tested = {f: fl["tested"] for f, fl in fields.items()}
    lines = [f"# {name or 'dataset not known'}: {len(per_fold)} fold{'' if len(per_fold) == 1 else 's'}", "",
             table(per_fold, summary, keys, tested, rows), ""]
    if name:
        lines.append(f"Dataset: {name} (from {source}).")
    else:
        lines.append(f"Dataset {source}.")
    if rows:
        used = dict.fromkeys(r.source for r in rows)
        lines.append(f"Reported rows ({NOT_REPORTED!r}: the source prints no number for it): "
                     + "; ".join(f"{paper.SHORT[s]} = {paper.SOURCES[s]}" for s in used) + ".")
    elif name:
        lines.append(f"Reported numbers: none known to hicmae for {name} at this class count and modalities.")
    lines += [f"Not comparable as is: {n}." for n in notes]
    lines += ["", "## Protocol", ""]
    for key, value in common.items():
        if key == "metrics" and definitions:
            lines.append("- metrics (per clip, after merging its views):")
            lines += [f"  - {metric}: {text}" for metric, text in definitions.items()]
        elif key != "tested":
            lines.append(f"- {key}: {value}")
    return "\n".join(lines)


def _write_csv(path: Path, per_fold: dict, summary: dict, fields: dict, common: dict,
               rows: list[paper.Reported]) -> None:
    """One row per fold (with its protocol), mean and std (with the common protocol), one per reported result."""
    import pandas as pd

    table_rows = [{"row": "fold", "fold": f, "source": "ours", **m, **fields[f]} for f, m in sorted(per_fold.items())]
    for stat in ("mean", "std"):
        table_rows.append({"row": stat, "fold": "", "source": "ours", **{k: v[stat] for k, v in summary.items()},
                           **common})
    for r in rows:
        table_rows.append({"row": "reported", "fold": "", "source": f"{r.label} ({paper.SOURCES[r.source]})",
                           **{k: paper.in_units(k, v) for k, v in r.metrics.items() if k in summary}})
    with atomic_path(path) as tmp:
        pd.DataFrame(table_rows).to_csv(tmp, index=False)


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
    dataset = resolve_dataset(args.config, getattr(args, "dataset", None))
    print(f"dataset: {dataset[0]} (from {dataset[1]})" if dataset[0] else f"dataset {dataset[1]}", flush=True)
    results_of = {}
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
        results_of[fold] = json.loads(metrics_path.read_text())
    run_info = {"config": str(args.config), "overrides": overrides, "folds_run": list(args.folds)}
    print(write_outputs(out, results_of, dataset, run_info))
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
