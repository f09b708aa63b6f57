"""Test results on disk: per-clip predictions (CSV), metrics (JSON), confusion matrix (PNG), and the protocol.

A number means little without the protocol that produced it: which weights were tested (and whether test data
chose them), how many views each clip had, what each metric is, the seeds, the model and the library versions.
:func:`run_protocol` reads these from the run itself (trainer, data module, module), never from defaults, and
``metrics.json`` carries them beside the metrics; :func:`protocol_fields` words them for tables.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import platform
from pathlib import Path

import torch

from hicmae.atomic import atomic_path

log = logging.getLogger(__name__)


def write_results(out_dir: str | Path, merged: dict, metrics: dict, *, task: str, class_names: list[str] | None,
                  num_classes: int, selection: str | None = None, protocol: dict | None = None,
                  clips: list[tuple[str, str | None]] | None = None, title: str | None = None) -> dict[str, Path]:
    """Writes ``predictions.csv``, ``metrics.json`` and, for classification, ``confusion_matrix.png``.

    ``protocol``: :func:`run_protocol`'s record, stored in ``metrics.json`` and summed up under the confusion
    matrix; ``selection``: how the weights were chosen, in words (default: the protocol's statement).
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
    if "groups" in merged:  # one prediction per group of clips (see hicmae.training.metrics.merge_groups)
        table["group"] = list(merged["groups"])
        table["num_clips"] = merged["num_clips"].cpu().long().tolist()
    elif clips is not None:
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
    if selection is None:
        selection = model_selection(protocol) if protocol else "not recorded"
    payload = {"task": task, "num_clips": int(scores.shape[0]), "model_selection": selection,
               "metrics": {k: float(v) for k, v in metrics.items()}}
    if "groups" in merged:
        payload.update(num_clips=int(merged["num_clips"].sum()), num_groups=len(merged["groups"]),
                       scored_per="group of clips (the manifest's group column)")
    if protocol is not None:
        payload["protocol"] = protocol
    with atomic_path(paths["metrics"]) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if task == "classification":
        from hicmae.training.metrics import confusion_matrix

        cm = confusion_matrix(scores, targets, num_classes)
        paths["confusion_matrix"] = out / "confusion_matrix.png"
        plot_confusion(cm, names, paths["confusion_matrix"], title, protocol_brief(protocol) if protocol else None)
    log.info("wrote test results to %s", out)
    return paths


def plot_confusion(cm: torch.Tensor, names: list[str], path: Path, title: str | None = None,
                   note: str | None = None) -> None:
    """Row-normalised colours, counts written in the cells; ``note`` (the protocol in brief) under the plot, so
    the picture says how it was made when it travels without its metrics.json."""
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
    if note:
        fig.text(0.01, 0.005, note, fontsize=6, ha="left", va="bottom", wrap=True)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if rows[i, j] > 0.5 else "black")
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- the protocol
# What each metric key of training.metrics means; per-dimension keys (``ccc_valence``) are the same for one
# dimension. Percent for the categorical metrics, as the papers print them; fractions for CCC and PCC.
METRIC_DEFINITIONS = {
    "classification": {
        "war": "WAR, weighted average recall = accuracy: clips predicted right / all clips, %",
        "uar": "UAR, unweighted average recall = macro recall: the mean over classes of each class's recall, %",
        "wf1": "weighted F1: per-class F1 averaged with the classes' clip counts as weights, %",
        "mf1": "macro F1: the unweighted mean of per-class F1, %",
    },
    "multilabel": {
        "map": "mAP: the mean over labels of average precision, %",
        "wf1": "weighted F1: per-label F1 (sigmoid > 0.5) averaged with the labels' counts as weights, %",
        "mf1": "macro F1: the unweighted mean of per-label F1 (sigmoid > 0.5), %",
    },
    "regression": {
        "ccc": "CCC, concordance correlation 2cov/(var_p + var_t + (mean_p - mean_t)^2) with unbiased (co)variances "
               "as the original, mean over dimensions, fraction in [-1, 1]",
        "pcc": "PCC, Pearson correlation, mean over dimensions, fraction in [-1, 1]",
        "mae": "mean absolute error, mean over dimensions",
        "rmse": "root mean squared error, mean over dimensions",
    },
}

VIEW_MERGE = {  # how a clip's test views become one prediction (training.metrics.ViewMerger)
    "classification": "softmax per view, probabilities averaged over the clip's views, argmax",
    "multilabel": "sigmoid per view, averaged over the clip's views",
    "regression": "raw outputs averaged over the clip's views",
}


def metric_definitions(task: str, keys) -> dict[str, str]:
    """Definitions of the metric keys a run reported (``keys``), one per metric; per-dimension keys named once."""
    table = METRIC_DEFINITIONS.get(task, {})
    out, per_dim = {}, set()
    for key in keys:
        if key in table:
            out[key] = table[key]
        elif key.split("_")[0] in table:
            per_dim.add(key.split("_")[0])
    for base in sorted(per_dim):
        out[f"{base}_<dimension>"] = f"{base.upper()} of one dimension"
    return out


def run_protocol(module, merged: dict, metrics: dict) -> dict:
    """The protocol of the test that ``module`` (a FinetuneModule) has just run, read from its trainer.

    ``merged``: the per-clip merged outputs (for the views each clip really had); ``metrics``: what was measured.
    """
    trainer = module.trainer
    data = dict(getattr(getattr(trainer, "datamodule", None), "hparams", None) or {})
    h = module.hparams
    return {
        "checkpoint": checkpoint_record(trainer, data, getattr(module, "loaded_checkpoint", None)),
        "views": views_record(data, merged, h.task),
        "metrics": metric_definitions(h.task, metrics),
        "seed": {"seed_everything": _global_seed(), "data_seed": data.get("seed")},
        "eval_gain_augment": data.get("eval_gain_augment"),
        "model": {"preset": h.model_preset, "overrides": dict(h.model_overrides or {}), "task": h.task,
                  "num_classes": h.num_classes, "modalities": list(h.modalities),
                  "linear_probe": bool(h.linear_probe), "init_checkpoint": h.init_checkpoint,
                  "parameters": sum(p.numel() for p in module.model.parameters())},
        "data": {k: data.get(k) for k in ("train_manifest", "val_manifest", "test_manifest", "fold")},
        "trainer": {"precision": str(trainer.precision), "world_size": trainer.world_size,
                    "max_epochs": trainer.max_epochs},
        "versions": versions(),
    }


def checkpoint_record(trainer, data: dict, loaded: dict | None = None) -> dict:
    """Which weights were tested and how they were chosen.

    ``selection``: ``best`` (the tested file is a checkpoint callback's best: ``monitor``/``mode``, and
    ``selected_on`` ``test`` when the validation split is the test split, as in the original, else
    ``validation``), ``last`` (the last epoch's weights), ``given`` (a file chosen outside this run) or
    ``initial`` (no training in this process). ``loaded``: the tested checkpoint's epoch and step.
    """
    tested = getattr(trainer, "ckpt_path", None)
    callbacks = list(getattr(trainer, "checkpoint_callbacks", []) or [])
    record = {"tested": str(tested) if tested else None, "selection": None, "monitor": None, "mode": None,
              "score": None, "selected_on": None, "epoch": None, "global_step": None}
    best = next((cb for cb in callbacks if tested and cb.monitor and _same_path(tested, cb.best_model_path)), None)
    if tested:
        record.update({k: (loaded or {}).get(k) for k in ("epoch", "global_step")})
    if best is not None:
        score = best.best_model_score
        record.update(selection="best", monitor=best.monitor, mode=best.mode,
                      score=None if score is None else float(score), selected_on=_selection_split(data))
    elif tested:
        last = any(_same_path(tested, cb.last_model_path) for cb in callbacks) or Path(tested).name == "last.ckpt"
        record["selection"] = "last" if last else "given"
    elif trainer.global_step > 0:  # the weights in memory after this process's fit
        record.update(selection="last", epoch=trainer.current_epoch - 1, global_step=trainer.global_step)
    else:
        record["selection"] = "initial"
    record["statement"] = _selection_statement(record, data)
    return record


def _selection_statement(record: dict, data: dict) -> str:
    """The checkpoint choice in words; it starts with "selected on test" whenever test data chose the weights."""
    kind = record["selection"]
    if kind == "best":
        rule = f"best {record['monitor']} ({record['mode']}) over the epochs"
        if record["selected_on"] == "test":
            return (f"selected on test: {rule}, measured on the validation split, which is the test split "
                    "(the original's protocol for most datasets)")
        val = Path(str(data.get("val_manifest"))).name
        return f"selected on validation: {rule} on {val}, apart from the test split"
    if kind == "last":
        why = "no validation split" if not data.get("val_manifest") else "not selected on any split"
        return f"last epoch's weights ({why})"
    if kind == "given":
        return f"as given ({Path(record['tested']).name}): how these weights were chosen is not known to this run"
    return "no training in this run: the weights the model was built with (model.init_checkpoint, if any)"


def _selection_split(data: dict) -> str | None:
    """``test`` when the validation manifest is the test manifest (same file, or byte-identical as MSP-IMPROV's
    val.csv and test.csv); ``validation`` for a split of its own; None without validation."""
    val, test = data.get("val_manifest"), data.get("test_manifest")
    if not val:
        return None
    if test and (_same_path(val, test) or _same_content(val, test)):
        return "test"
    return "validation"


def _same_path(a, b) -> bool:
    return bool(a) and bool(b) and Path(a).resolve() == Path(b).resolve()


def _same_content(a, b) -> bool:
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def views_record(data: dict, merged: dict, task: str) -> dict:
    """Test views as configured (segments x crops) and as they came: the fewest and most views a clip had."""
    segments, crops = data.get("test_num_segment"), data.get("test_num_crop")
    counts = merged["num_views"].reshape(-1)
    return {"test_num_segment": segments, "test_num_crop": crops,
            "per_clip": segments * crops if segments and crops else None,
            "observed_per_clip": [int(counts.min()), int(counts.max())] if counts.numel() else None,
            "merge": VIEW_MERGE.get(task)}


def _global_seed() -> int | None:
    """The seed ``seed_everything`` set in this process (Lightning keeps it in ``PL_GLOBAL_SEED``), or None."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed not in (None, "") else None


def versions() -> dict[str, str]:
    import pytorch_lightning
    import torchmetrics

    import hicmae

    return {"hicmae": hicmae.__version__, "torch": torch.__version__,
            "pytorch_lightning": pytorch_lightning.__version__, "torchmetrics": torchmetrics.__version__,
            "python": platform.python_version()}


def model_selection(protocol: dict) -> str:
    """The one-line ``model_selection`` of metrics.json: the statement and the tested file."""
    ckpt = protocol.get("checkpoint", {})
    return f"{ckpt.get('statement', 'not recorded')}; weights: {ckpt.get('tested') or 'in memory at test time'}"


def protocol_fields(protocol: dict | None) -> dict[str, str]:
    """The protocol in words, one entry per aspect (for kfold.md lines and kfold.csv columns).

    ``tested`` names the file and step (it differs between folds); the others are meant to be equal across folds.
    """
    p = protocol or {}
    missing = "not recorded"
    ckpt, views, seed, model, trainer, vers = (p.get(k) or {} for k in
                                               ("checkpoint", "views", "seed", "model", "trainer", "versions"))
    fields = {"checkpoint": ckpt.get("statement", missing), "tested": _tested(ckpt) if ckpt else missing}
    fields["views"] = _views(views) if views else missing
    fields["metrics"] = "; ".join(f"{k} = {v}" for k, v in (p.get("metrics") or {}).items()) or missing
    fields["seed"] = (f"seed_everything {_or_not_set(seed.get('seed_everything'))}, "
                      f"data.seed {_or_not_set(seed.get('data_seed'))}" if seed else missing)
    gain = p.get("eval_gain_augment")
    fields["eval_gain_augment"] = missing if gain is None else (
        "true: random audio gain at test too, as the original (scores vary with the seed)" if gain else
        "false: no random audio gain at test (deterministic scores)")
    fields["model"] = _model(model) if model else missing
    fields["training"] = (f"precision {trainer.get('precision')}, {trainer.get('world_size')} process(es), "
                          f"max_epochs {trainer.get('max_epochs')}" if trainer else missing)
    fields["versions"] = ", ".join(f"{k} {v}" for k, v in vers.items()) or missing
    return fields


def _tested(ckpt: dict) -> str:
    name = Path(ckpt["tested"]).name if ckpt.get("tested") else "weights in memory"
    step = f" (step {ckpt['global_step']})" if ckpt.get("global_step") is not None else ""
    return f"{ckpt.get('selection')}: {name}{step}"


def _or_not_set(value) -> str:
    return "not set" if value is None else str(value)


def _views(views: dict) -> str:
    seen = views.get("observed_per_clip")
    seen = "" if not seen else f" (seen: {seen[0]})" if seen[0] == seen[1] else f" (seen: {seen[0]} to {seen[1]})"
    if views.get("per_clip") is None:  # test data not from a hicmae data module
        return f"views per clip not set by a hicmae data module{seen}; {views.get('merge')}"
    return (f"{views.get('test_num_segment')} temporal segments x {views.get('test_num_crop')} spatial crops "
            f"= {views.get('per_clip')} per clip{seen}; {views.get('merge')}")


def _model(model: dict) -> str:
    how = "linear probe (frozen backbone)" if model.get("linear_probe") else "fine-tuned"
    params = f", {model['parameters'] / 1e6:.1f}M parameters" if model.get("parameters") else ""
    return (f"preset {model.get('preset')}{params}, {how}, {' + '.join(model.get('modalities') or [])}, "
            f"{model.get('num_classes')} outputs ({model.get('task')}), init {model.get('init_checkpoint') or 'none'}")


def protocol_brief(protocol: dict) -> str:
    """One short line for the confusion matrix: checkpoint choice, views, seed, preset."""
    ckpt, views, seed, model = (protocol.get(k) or {} for k in ("checkpoint", "views", "seed", "model"))
    choice = ckpt.get("selection") or "?"
    if choice == "best":
        choice += f" {ckpt.get('monitor')}, selected on {ckpt.get('selected_on')}"
    return (f"checkpoint: {choice} | views {views.get('test_num_segment')}x{views.get('test_num_crop')} | "
            f"seed {seed.get('seed_everything')} | preset {model.get('preset')}")
