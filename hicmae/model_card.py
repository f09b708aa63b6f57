"""The README.md model card of a release folder: what the Hub shows and what a reader needs to trust it.

It says what the model predicts, on what data and with what recipe it was trained, how it was
evaluated and with what result, under which licence, and how to load it. Everything comes from the
release's metadata (config.json); what the export did not know is said to be unknown, not invented.
The YAML front matter carries the fields the Hub indexes: ``library_name``, ``license``, ``tags``,
``pipeline_tag`` (where one fits) and ``datasets``.
"""

from __future__ import annotations

import json

PAPER = ("Sun, Lian, Liu, Tao. HiCMAE: Hierarchical Contrastive Masked Autoencoder for Self-Supervised "
         "Audio-Visual Emotion Recognition. Information Fusion, 2024. arXiv:2401.05698")
# Hub pipeline tags: a classifier of video clips; a pretraining model gives features. None fits regression.
_PIPELINE = {"classification": "video-classification", "multilabel": "video-classification",
             "pretrain": "feature-extraction"}


def front_matter(meta: dict) -> dict:
    tags = ["hicmae", "audio-visual", "emotion-recognition", "affective-computing", "pytorch", "safetensors"]
    if meta["kind"] == "pretrain":
        tags += ["self-supervised-learning", "masked-autoencoder"]
    else:
        tags.append("dimensional-emotion" if meta["task"] == "regression" else "video-classification")
    fm: dict = {"library_name": "hicmae", "license": meta.get("license") or "unknown", "tags": tags}
    if meta["task"] in _PIPELINE:
        fm["pipeline_tag"] = _PIPELINE[meta["task"]]
    datasets = meta.get("dataset")
    if datasets:
        fm["datasets"] = [datasets] if isinstance(datasets, str) else list(datasets)
    return fm


def _table(rows: list[tuple[str, object]]) -> str:
    lines = ["| | |", "| --- | --- |"]
    for key, value in rows:
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        lines.append(f"| {key} | {text.replace('|', '/')} |")
    return "\n".join(lines)


def _what(meta: dict) -> str:
    arch = meta["architecture"]
    size = f"{arch['video_dim']}-wide, {arch['encoder_depth']}-layer encoders"
    if meta["kind"] == "pretrain":
        return (f"Self-supervised HiCMAE pretraining weights ({size}): masked audio-visual autoencoder with "
                "hierarchical skip connections and cross-modal contrast. Fine-tune them on a labelled dataset "
                "(`finetune.py`), or use their encoders as a feature extractor (`hicmae extract-features`).")
    how = "linear probe (frozen backbone)" if meta.get("linear_probe") else "fine-tuned"
    modalities = " + ".join(meta["modalities"])
    if meta["task"] == "regression":
        return (f"HiCMAE ({size}), {how} on {modalities}, regressing {meta['num_classes']} emotion dimensions: "
                f"{', '.join(meta['target_names'])}.")
    kind = "labels (multi-label)" if meta["task"] == "multilabel" else "classes"
    return (f"HiCMAE ({size}), {how} on {modalities}, classifying clips into {meta['num_classes']} emotion "
            f"{kind}: {', '.join(meta['class_names'])}.")


def _data(meta: dict) -> str:
    training = meta.get("training") or {}
    data = dict(training.get("data") or {})
    lines = []
    if meta.get("dataset"):
        lines.append(f"Dataset: {meta['dataset']}.")
    evaluation = (meta.get("metrics") or {}).get("data") or {}
    for key in ("train_manifest", "val_manifest", "test_manifest", "fold"):
        value = data.get(key, evaluation.get(key))
        if value is not None:
            lines.append(f"- {key}: `{value}`")
    if not lines:
        return "Not recorded by the export (give `--dataset` to `hicmae export`)."
    return "\n".join(lines)


def _recipe(meta: dict) -> str:
    training = meta.get("training") or {}
    rows = list((training.get("recipe") or {}).items())
    rows += [(k, v) for k, v in (training.get("data") or {}).items() if k not in
             ("train_manifest", "val_manifest", "test_manifest", "fold")]
    for key in ("epoch", "global_step"):
        if training.get(key) is not None:
            rows.append((f"checkpoint {key}", training[key]))
    if meta.get("source"):
        rows.append(("exported from", f"`{meta['source']}`"))
    if not rows:
        return "Not recorded by the export."
    return _table(rows)


def _metrics(meta: dict) -> str:
    record = meta.get("metrics")
    if not record:
        return "No test results were found beside the checkpoint (`<run>/results/<checkpoint>/metrics.json`)."
    rows = [(k, f"{v:.4g}") for k, v in record.get("values", {}).items()]
    text = _table(rows).replace("| | |", "| metric | value |", 1)
    protocol = [("clips tested", record.get("num_clips")), ("model selection", record.get("model_selection"))]
    protocol += list((record.get("protocol") or {}).items())
    return text + "\n\nEvaluation protocol:\n\n" + _table([(k, v) for k, v in protocol if v is not None])


def _outputs(meta: dict) -> str:
    if meta["kind"] == "pretrain":
        return "None (no head): encoders, fusion and decoders of the pretraining model."
    names = meta.get("target_names") or meta.get("class_names")
    act = meta.get("head_activation") or "none"
    after = {"classification": "softmax over classes, averaged over a clip's views",
             "multilabel": "sigmoid per label, averaged over a clip's views",
             "regression": "raw values, averaged over a clip's views"}[meta["task"]]
    return (f"{meta['num_classes']} outputs in this order: {', '.join(f'`{n}`' for n in names)} "
            f"(head activation: {act}; scores: {after}).")


def _usage(meta: dict, name: str) -> str:
    cls = "HiCMAEPretrain" if meta["kind"] == "pretrain" else "HiCMAEClassifier"
    loader = "load_pretrain" if meta["kind"] == "pretrain" else "load_classifier"
    lines = ["```python", f"from hicmae.models import {cls}", "",
             f'model = {cls}.from_pretrained("user/{name}")  # a Hub repo id, or the path of this folder',
             "", "# with the metadata (task, names, preprocessing, metrics):",
             f"from hicmae.hub import {loader}", f'model, meta = {loader}("user/{name}")', "```", ""]
    lines += ["```bash"]
    if meta["kind"] == "classifier":
        lines.append(f"hicmae predict user/{name} clip.mp4")
    lines += [f"hicmae extract-features user/{name} clips.csv features.parquet", "```", "",
              "With `HF_HUB_OFFLINE=1` a repo id is read from the local Hugging Face cache only. "
              "`checksums.sha256` (SHA-256 of model.safetensors and config.json) is verified on every load."]
    return "\n".join(lines)


def model_card(meta: dict, name: str) -> str:
    """The README.md of a release folder named ``name``, from its metadata."""
    import yaml

    p = meta["preprocessing"]
    licence = meta.get("license") or "unknown"
    sections = [
        "---\n" + yaml.safe_dump(front_matter(meta), sort_keys=False) + "---",
        f"# {meta.get('name') or name}",
        (meta.get("description") + "\n\n" if meta.get("description") else "") + _what(meta),
        "## Outputs\n\n" + _outputs(meta),
        "## Training data\n\n" + _data(meta),
        "## Training recipe\n\n" + _recipe(meta),
        "## Metrics\n\n" + _metrics(meta),
        "## Input\n\n" + _table([("video", p["video"]), ("frames", f"{p['num_frames']} x {p['img_size']} px, every "
                                 f"{p['sampling_rate']}-th frame"), ("audio", p["audio"]),
                                 ("audio input", f"{p['audio_size'][0]} frames x {p['mel_bins']} mel bins")]),
        "## How to load\n\n" + _usage(meta, name),
        "## Licence\n\n" + f"`{licence}`. " + ("The weights were not given a licence at export (`--license`): "
                                               "ask their author. " if licence == "unknown" else "")
        + "Weights trained on a dataset may also be bound by that dataset's terms of use.",
        "## Citation\n\n" + PAPER,
    ]
    return "\n\n".join(sections) + "\n"
