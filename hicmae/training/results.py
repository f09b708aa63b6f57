"""Test results on disk: per-clip predictions (CSV), metrics (JSON), confusion matrix (PNG)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write to; on success it replaces ``path`` in one step.

    An interrupted run or a concurrent reader never sees a half-written file: ``path`` holds the old content or the new.
    The temporary name keeps the suffix, so writers that pick the format from it (pandas, matplotlib) work.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_results(out_dir: str | Path, merged: dict, metrics: dict, *, task: str, class_names: list[str] | None,
                  num_classes: int, selection: str, clips: list[tuple[str, str | None]] | None = None,
                  title: str | None = None) -> dict[str, Path]:
    """Writes ``predictions.csv``, ``metrics.json`` and, for classification, ``confusion_matrix.png``.

    ``clips``: (video, audio) of every manifest row, so each prediction names its files; ``title``: the
    confusion matrix's (dataset, split, headline metric).
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores, targets = merged["scores"].cpu(), merged["targets"].cpu()
    names = list(class_names) if class_names and len(class_names) == scores.shape[1] else \
        [str(i) for i in range(scores.shape[1])]
    index = merged["index"].cpu().tolist()
    table = {"index": index}
    if clips is not None:
        table["video"] = [clips[i][0] for i in index]
        table["audio"] = [clips[i][1] or "" for i in index]
    table["num_views"] = merged["num_views"].cpu().long().tolist()
    if task == "classification":
        table["target"] = [names[int(t)] for t in targets.reshape(-1)]
        table["prediction"] = [names[int(p)] for p in scores.argmax(-1)]
        table.update({f"p_{n}": scores[:, i].tolist() for i, n in enumerate(names)})
    else:
        table.update({f"target_{n}": targets[:, i].tolist() for i, n in enumerate(names)})
        table.update({f"pred_{n}": scores[:, i].tolist() for i, n in enumerate(names)})
    paths = {"predictions": out / "predictions.csv", "metrics": out / "metrics.json"}
    with atomic_path(paths["predictions"]) as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False)
    payload = {"task": task, "num_clips": int(scores.shape[0]), "model_selection": selection,
               "metrics": {k: float(v) for k, v in metrics.items()}}
    with atomic_path(paths["metrics"]) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    if task == "classification":
        from hicmae.training.metrics import confusion_matrix

        cm = confusion_matrix(scores, targets, num_classes)
        paths["confusion_matrix"] = out / "confusion_matrix.png"
        plot_confusion(cm, names, paths["confusion_matrix"], title)
    log.info("wrote test results to %s", out)
    return paths


def plot_confusion(cm: torch.Tensor, names: list[str], path: Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = cm.cpu().float()
    rows = cm / cm.sum(dim=1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(names), 1.0 + 0.6 * len(names)))
    ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if rows[i, j] > 0.5 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
