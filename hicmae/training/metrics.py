"""Evaluation: per-clip merging of test views (exactly once under DDP) and the field's metrics.

Each process feeds the per-view outputs it saw into :class:`ViewMerger`, a torchmetrics ``Metric`` whose
states are gathered across processes at ``compute``. Rows are then de-duplicated by (clip, view), which
removes the copies a ``DistributedSampler`` pads the last batch with, and the views of each clip are merged
as the original does (REFERENCE.md 12): softmax per view then mean (categorical), sigmoid then mean
(multi-label), mean of raw outputs (regression).
"""

from __future__ import annotations

import torch
import torchmetrics.functional as TMF
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

TASKS = ("classification", "multilabel", "regression")


class ViewMerger(Metric):
    """Collects (clip index, view id, raw output, target) rows; ``compute`` returns one row per clip."""

    full_state_update = False

    def __init__(self, task: str = "classification", **kwargs):
        super().__init__(**kwargs)
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        for name in ("index", "view", "outputs", "targets"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor, view: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.index.append(index.detach().long().reshape(-1))
        self.view.append(view.detach().long().reshape(-1))
        self.outputs.append(outputs.detach().float().reshape(index.numel(), -1))
        self.targets.append(targets.detach().reshape(index.numel(), -1).float())

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"index": (N,), "scores": (N, C), "targets": (N, ...), "num_views": (N,)}`` sorted by clip index."""
        index, view = dim_zero_cat(self.index), dim_zero_cat(self.view)
        outputs, targets = dim_zero_cat(self.outputs), dim_zero_cat(self.targets)
        # Unique (clip, view) rows: padding duplicates are exact copies, so keeping the first is safe.
        key = index * (int(view.max()) + 1 if view.numel() else 1) + view
        _, inverse = torch.unique(key, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1 if inverse.numel() else 0,), key.numel(), dtype=torch.long,
                           device=key.device)
        first = first.scatter_reduce(0, inverse, torch.arange(key.numel(), device=key.device), reduce="amin")
        index, outputs, targets = index[first], outputs[first], targets[first]
        if self.task == "classification":
            scores = outputs.softmax(dim=-1)
        elif self.task == "multilabel":
            scores = outputs.sigmoid()
        else:
            scores = outputs
        clips, clip_of_row = torch.unique(index, return_inverse=True)
        n = clips.numel()
        summed = torch.zeros(n, scores.shape[1], device=scores.device).index_add_(0, clip_of_row, scores)
        counts = torch.zeros(n, device=scores.device).index_add_(0, clip_of_row, torch.ones_like(clip_of_row,
                                                                                             dtype=torch.float))
        clip_targets = torch.zeros(n, targets.shape[1], device=targets.device).index_copy_(0, clip_of_row, targets)
        return {"index": clips, "scores": summed / counts[:, None], "targets": clip_targets, "num_views": counts}


def merge_groups(merged: dict[str, torch.Tensor], groups: list[str | None]) -> dict:
    """One row per group of clips (``groups[i]``: the group of manifest row i): the mean of the clips' merged
    scores, the first clip's target. With equally many views per clip this is the original's AVCAffe merge,
    the mean over every view of every clip of a task video. ``groups`` names the groups in row order."""
    index = merged["index"].cpu().tolist()
    names = [groups[i] if groups[i] is not None else f"row {i}" for i in index]
    order = list(dict.fromkeys(names))
    of = torch.tensor([order.index(n) for n in names], device=merged["scores"].device)
    n, scores = len(order), merged["scores"]
    counts = torch.zeros(n, device=scores.device).index_add_(0, of, torch.ones_like(of, dtype=torch.float))
    summed = torch.zeros(n, scores.shape[1], device=scores.device).index_add_(0, of, scores)
    first = torch.full((n,), len(index), dtype=torch.long, device=of.device).scatter_reduce(
        0, of, torch.arange(len(index), device=of.device), reduce="amin")
    views = torch.zeros(n, device=scores.device).index_add_(0, of, merged["num_views"].float())
    return {"index": torch.arange(n), "scores": summed / counts[:, None], "targets": merged["targets"][first],
            "num_views": views, "groups": order, "num_clips": counts}


def classification_metrics(scores: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, float]:
    """WAR (accuracy), UAR (mean per-class recall), weighted and macro F1, in percent as the papers report."""
    preds, targets = scores.argmax(dim=-1), targets.reshape(-1).long()
    kw = dict(task="multiclass", num_classes=num_classes)
    return {
        "war": 100 * TMF.accuracy(preds, targets, average="micro", **kw).item(),
        "uar": 100 * TMF.recall(preds, targets, average="macro", **kw).item(),
        "wf1": 100 * TMF.f1_score(preds, targets, average="weighted", **kw).item(),
        "mf1": 100 * TMF.f1_score(preds, targets, average="macro", **kw).item(),
    }


def confusion_matrix(scores: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: true class, columns: predicted class."""
    return TMF.confusion_matrix(scores.argmax(dim=-1), targets.reshape(-1).long(), task="multiclass",
                                num_classes=num_classes)


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    targets = targets.long()
    kw = dict(task="multilabel", num_labels=targets.shape[1], threshold=threshold)
    return {
        "map": 100 * TMF.average_precision(scores, targets, average="macro", **{k: v for k, v in kw.items()
                                                                                if k != "threshold"}).item(),
        "mf1": 100 * TMF.f1_score(scores, targets, average="macro", **kw).item(),
        "wf1": 100 * TMF.f1_score(scores, targets, average="weighted", **kw).item(),
    }


def ccc(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Concordance correlation per column. torchmetrics uses unbiased (co)variances throughout, which is the
    original's definition (numpy ``cov``)."""
    return TMF.concordance_corrcoef(preds, targets).reshape(-1)


def regression_metrics(preds: torch.Tensor, targets: torch.Tensor, names: list[str] | None = None
                       ) -> dict[str, float]:
    """Per-dimension CCC, PCC, MAE, RMSE (keys ``ccc_<name>``) and their means over dimensions (``ccc``)."""
    preds, targets = preds.float().reshape(preds.shape[0], -1), targets.float().reshape(targets.shape[0], -1)
    dims = preds.shape[1]
    names = names or [str(i) for i in range(dims)]
    per = {
        "ccc": ccc(preds, targets),
        "pcc": TMF.pearson_corrcoef(preds, targets),
        "mae": TMF.mean_absolute_error(preds, targets, num_outputs=dims),
        "rmse": TMF.mean_squared_error(preds, targets, squared=False, num_outputs=dims),
    }
    out = {}
    for metric, values in per.items():
        values = values.reshape(-1)
        out[metric] = values.mean().item()
        for name, v in zip(names, values):
            out[f"{metric}_{name}"] = v.item()
    return out
