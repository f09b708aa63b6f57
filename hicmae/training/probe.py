"""Linear probing on frozen features (MAE's protocol: BatchNorm1d without affine, then a linear layer).

This module is the fast offline probe that ``hicmae.demo`` uses: features extracted once, then the head
trained in memory. Probing through training runs is another path: ``finetune.py --model.linear_probe true``
(and ``hicmae kfold ... -- --model.linear_probe true``) trains the same BatchNorm + linear head, which
``FinetuneModule`` builds itself, on a frozen backbone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from hicmae.models import HiCMAEClassifier


def probe_head(feature_dim: int, num_classes: int) -> nn.Sequential:
    head = nn.Linear(feature_dim, num_classes)
    nn.init.trunc_normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return nn.Sequential(nn.BatchNorm1d(feature_dim, affine=False, eps=1e-6), head)


@torch.no_grad()
def extract_features(model: HiCMAEClassifier, loader: DataLoader) -> dict[str, torch.Tensor]:
    """Features of every item of ``loader`` (views kept apart): ``features, labels, index, view``."""
    model.eval()
    out = {"features": [], "labels": [], "index": [], "view": []}
    for batch in loader:
        mods = model.modalities
        out["features"].append(model.forward_features(batch["video"] if "video" in mods else None,
                                                      batch["audio"] if "audio" in mods else None).float())
        out["labels"].append(batch["label"])
        out["index"].append(batch["index"])
        out["view"].append(batch.get("view", torch.zeros_like(batch["index"])))
    return {k: torch.cat(v) for k, v in out.items()}


def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int = 100,
                       lr: float = 0.1, batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0) -> nn.Module:
    """Train BN + linear on fixed features with SGD (momentum 0.9) and a cosine lr; returns the head in eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = probe_head(features.shape[1], num_classes)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-features.shape[0] // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=g)
        for start in range(0, features.shape[0], batch_size):
            ids = order[start:start + batch_size]
            if ids.numel() < 2:  # BatchNorm needs two samples
                continue
            loss = nn.functional.cross_entropy(head(features[ids]), labels[ids].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


@torch.no_grad()
def probe_scores(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return head(features)
