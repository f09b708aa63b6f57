"""Per-clip embeddings for users' own models (``hicmae extract-features``).

Clips go through the evaluation views of the fine-tuning pipeline (``FinetuneDataset`` in test mode,
without the original's random test-time gain), as :class:`hicmae.inference.Predictor` does, so the same
clip always gives the same features; a clip's feature is the mean over its views. Features (``FEATURES``):

- ``fusion`` (default): the normalised hierarchical fusion feature the classifier head sees,
  ``fc_norm([video HFF, audio HFF, fused video, fused audio])`` (width 4C with both modalities);
- ``video_hff`` / ``audio_hff``: one modality's hierarchical feature (softmax-weighted mean over layers of
  the mean-pooled, normalised tokens), width C;
- ``fused_video`` / ``fused_audio``: the fusion encoder's mean-pooled output streams, width C;
- ``video_layers`` / ``audio_layers``: every encoder layer's mean-pooled normalised tokens, (layers, C).

A pretraining release has no learned layer weights or ``fc_norm``: its encoders and fusion are put in a
classifier whose layer weights are uniform and whose ``fc_norm`` is the plain LayerNorm, exactly what
fine-tuning starts from. Every manifest row gets a record: features, or empty features and the error.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hicmae.atomic import atomic_path
from hicmae.errors import ConfigError, DataError
from hicmae.progress import progress_bar

log = logging.getLogger(__name__)

FEATURES = ("fusion", "video_hff", "audio_hff", "fused_video", "fused_audio", "video_layers", "audio_layers")
FORMATS = (".parquet", ".npy")


def as_feature_model(model: torch.nn.Module):
    """The classifier whose :meth:`forward_features` gives the features: the model itself, or for a
    pretraining model a head-less classifier over its encoders and fusion (see the module docstring)."""
    from hicmae.models import HiCMAEClassifier

    if isinstance(model, HiCMAEClassifier):
        return model
    clf = HiCMAEClassifier(model.config, 0).to(next(model.parameters()).device)
    parts = ("video_encoder.", "audio_encoder.", "fusion.")
    shared = {k: v for k, v in model.state_dict().items() if k.startswith(parts)}
    result = clf.load_state_dict(shared, strict=False)
    missing = {k.split(".")[0] for k in result.missing_keys}
    if result.unexpected_keys or missing - {"video_layer_weights", "audio_layer_weights", "fc_norm"}:
        raise ConfigError(f"the pretraining model's encoders do not fit a classifier: {result}")
    return clf.eval()


class FeatureExtractor:
    """A model loaded once (any source :func:`hicmae.hub.load_model` takes), and its features for batches."""

    def __init__(self, source: str | os.PathLike, device: str | torch.device = "cpu", num_segments: int = 2,
                 **load_kwargs: object):
        from hicmae.hub import load_model

        model, self.meta = load_model(source, device=device, **load_kwargs)
        self.source = os.fspath(source)
        self.model = as_feature_model(model)
        self.device = device
        self.num_segments = num_segments

    @property
    def available(self) -> tuple[str, ...]:
        """The features this model has (a one-modality classifier has no fusion streams)."""
        mods = self.model.modalities
        names = ["fusion"]
        names += [f"{m}_hff" for m in mods]
        if self.model.fusion is not None:
            names += ["fused_video", "fused_audio"]
        names += [f"{m}_layers" for m in mods]
        return tuple(n for n in FEATURES if n in names)

    def check(self, names) -> list[str]:
        names = list(dict.fromkeys(names))
        unknown = [n for n in names if n not in FEATURES]
        if unknown or not names:
            raise ConfigError(f"unknown features {unknown}: choose from {', '.join(FEATURES)}")
        absent = [n for n in names if n not in self.available]
        if absent:
            raise ConfigError(f"this model has no {', '.join(absent)} (modalities {list(self.model.modalities)}): "
                              f"it has {', '.join(self.available)}")
        return names

    @torch.no_grad()
    def features(self, video: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every feature of :attr:`available` for a batch of views, float32 on the CPU."""
        model = self.model
        depth = model.config.encoder_depth
        parts: dict[str, torch.Tensor] = {}
        pieces, last = [], {}
        for name, encoder, x in (("video", model.video_encoder, video), ("audio", model.audio_encoder, audio)):
            if encoder is None:
                continue
            _, layers = encoder(x.to(self.device), return_layers=range(depth))
            parts[f"{name}_layers"] = torch.stack([layer.mean(dim=1) for layer in layers], dim=1)
            hff = model._hierarchical_feature(layers, getattr(model, f"{name}_layer_weights"))
            parts[f"{name}_hff"] = hff
            pieces.append(hff)
            last[name] = layers[-1]
        if model.fusion is not None:
            fused_video, fused_audio = model.fusion(last["video"], last["audio"])
            parts["fused_video"], parts["fused_audio"] = fused_video.mean(dim=1), fused_audio.mean(dim=1)
            pieces += [parts["fused_video"], parts["fused_audio"]]
        parts["fusion"] = model.fc_norm(torch.cat(pieces, dim=-1))
        return {k: v.float().cpu() for k, v in parts.items()}

    def dataset(self, manifest) -> "_Views":
        from hicmae.data.datasets import FinetuneDataset
        from hicmae.data.manifest import Manifest, Row

        # The evaluation pipeline wants a label per row; features never read it.
        rows = [Row(video=r.video, audio=r.audio, labels=["clip"], start=r.start, end=r.end, line=r.line)
                for r in manifest.rows]
        views = FinetuneDataset(Manifest(path=manifest.path, rows=rows, label_columns=["label"]), self.model.config,
                                sampling_rate=int(self.meta["preprocessing"].get("sampling_rate", 4)),
                                task="classification", mode="test", class_names=["clip"], eval_gain_augment=False,
                                test_num_segment=self.num_segments, test_num_crop=1, on_bad_sample="raise")
        return _Views(views)


class _Views(Dataset):
    """The evaluation views, where a clip that cannot be read gives ``ok=False`` and its error instead of
    stopping the run (a batch must not fail for one bad file)."""

    def __init__(self, views):
        self.views = views
        c = views.config
        self.shapes = ((3, c.num_frames, c.img_size, c.img_size), (1, *c.audio_size))

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> dict:
        clip, view = divmod(index, self.views.num_views)
        try:
            item = self.views[index]
            return {"video": item["video"], "audio": item["audio"], "clip": clip, "view": view, "ok": True, "error": ""}
        except (DataError, OSError, RuntimeError, ValueError) as err:
            return {"video": torch.zeros(self.shapes[0]), "audio": torch.zeros(self.shapes[1]), "clip": clip,
                    "view": view, "ok": False, "error": str(err)}


@dataclass
class FeatureSummary:
    """What a run wrote: the files, the feature shapes per clip, and the rows that failed with why."""

    outputs: list[Path]
    num_clips: int
    shapes: dict[str, tuple[int, ...]]
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (row, video, error)

    def lines(self) -> list[str]:
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in self.shapes.items())
        out = [f"wrote {self.num_clips - len(self.failed)} of {self.num_clips} clips ({shapes}) to "
               + ", ".join(map(str, self.outputs))]
        return out + [f"failed: row {row} {video}: {error}" for row, video, error in self.failed]


def extract_features(source: str | os.PathLike, manifest: str | os.PathLike, out: str | os.PathLike, *,
                     features=("fusion",), root: str | os.PathLike | None = None, device: str = "cpu",
                     batch_size: int = 8, num_workers: int = 0, num_segments: int = 2,
                     progress: bool | None = False, **load_kwargs: object) -> FeatureSummary:
    """Features of every clip of ``manifest`` to ``out`` (``.parquet``, or ``.npy`` with an index CSV).

    Parquet: one row per manifest row with ``row`` (0-based), ``line`` (in the manifest file),
    ``video``, ``audio``, ``start``, ``end``, ``error`` (empty when it worked) and one float32 list column
    per feature (``video_layers`` becomes ``video_layer_0``, ``video_layer_1``...), null for failed rows;
    the file's metadata names the model, features, views and preprocessing. ``.npy``: an array
    (clips, ...) per feature, in manifest order, NaN for failed rows: ``out`` itself for one feature,
    ``<stem>.<feature>.npy`` for several; ``<stem>.csv`` holds the clip ids and errors.
    """
    from hicmae.data.manifest import read_manifest

    out = Path(out)
    if out.suffix not in FORMATS:
        raise ConfigError(f"{out}: the output must end in .parquet or .npy")
    if out.suffix == ".parquet":
        _pyarrow()  # fail before any work when it is missing
    extractor = FeatureExtractor(source, device, num_segments, **load_kwargs)
    names = extractor.check(features)
    clips = read_manifest(manifest, root)
    rows = clips.rows
    views = extractor.dataset(clips)
    per_clip = views.views.num_views
    n = len(rows)
    results: dict[str, np.ndarray] = {}
    errors = [""] * n
    sums: dict[int, dict[str, torch.Tensor]] = {}
    counts: dict[int, int] = {}
    loader = DataLoader(views, batch_size=batch_size, num_workers=num_workers)
    with progress_bar(n, "features", "clip", progress) as bar:
        for batch in loader:
            ok = batch["ok"]
            for clip, good, error in zip(batch["clip"].tolist(), ok.tolist(), batch["error"]):
                if not good and not errors[clip]:
                    errors[clip] = error
            if ok.any():
                parts = extractor.features(batch["video"][ok], batch["audio"][ok])
                for j, clip in enumerate(batch["clip"][ok].tolist()):
                    acc = sums.setdefault(clip, {})
                    for name in names:
                        acc[name] = acc[name] + parts[name][j] if name in acc else parts[name][j].clone()
            for clip in batch["clip"].tolist():
                counts[clip] = counts.get(clip, 0) + 1
                if counts[clip] == per_clip:  # the clip's last view: its mean is final
                    acc = sums.pop(clip, None)
                    if acc is not None and not errors[clip]:  # a clip with a failed view gets no features
                        for name in names:
                            if name not in results:  # NaN until written: failed rows stay NaN
                                results[name] = np.full((n, *acc[name].shape), np.nan, dtype=np.float32)
                            results[name][clip] = (acc[name] / per_clip).numpy()
                    bar.update(1)
    if not results:  # every clip failed: the widths come from the model itself
        results = {name: np.full((n, *shape), np.nan, dtype=np.float32)
                   for name, shape in _shapes_of(extractor, names).items()}
    shapes = {name: tuple(array.shape[1:]) for name, array in results.items()}
    info = {"model": extractor.source, "kind": extractor.meta["kind"], "task": extractor.meta["task"],
            "features": {k: list(v) for k, v in shapes.items()}, "views_per_clip": per_clip,
            "view_merge": "mean of the features of a clip's views", "manifest": os.fspath(manifest),
            "preprocessing": extractor.meta["preprocessing"]}
    ids = [{"row": i, "line": r.line, "video": r.video, "audio": r.audio or "", "start": r.start, "end": r.end,
            "error": errors[i]} for i, r in enumerate(rows)]
    if out.suffix == ".parquet":
        outputs = [_write_parquet(out, ids, results, info)]
    else:
        outputs = _write_npy(out, ids, results)
    failed = [(i, rows[i].video, e) for i, e in enumerate(errors) if e]
    for row, video, error in failed:
        log.warning("row %d (%s) failed: %s", row, video, error)
    return FeatureSummary(outputs, n, shapes, failed)


def _shapes_of(extractor: FeatureExtractor, names: list[str]) -> dict[str, tuple[int, ...]]:
    c = extractor.model.config
    video = torch.zeros(1, 3, c.num_frames, c.img_size, c.img_size)
    audio = torch.zeros(1, 1, *c.audio_size)
    parts = extractor.features(video, audio)
    return {name: tuple(parts[name].shape[1:]) for name in names}


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigError("writing Parquet needs pyarrow (pip install pyarrow); or write .npy") from None
    return pyarrow


def _columns(results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One 2-D array per output column: per-layer features split into one column per layer."""
    columns = {}
    for name, array in results.items():
        if array.ndim == 3:  # (clips, layers, C)
            stem = name.removesuffix("_layers")
            columns.update({f"{stem}_layer_{i}": array[:, i] for i in range(array.shape[1])})
        else:
            columns[name] = array
    return columns


def _write_parquet(out: Path, ids: list[dict], results: dict[str, np.ndarray], info: dict) -> Path:
    pa = _pyarrow()
    import pyarrow.parquet as pq

    failed = np.array([bool(r["error"]) for r in ids])
    table = {key: pa.array([r[key] for r in ids]) for key in ("row", "line", "video", "audio")}
    table["start"] = pa.array([r["start"] for r in ids], type=pa.float64())
    table["end"] = pa.array([r["end"] for r in ids], type=pa.float64())
    table["error"] = pa.array([r["error"] for r in ids], type=pa.string())
    for name, array in _columns(results).items():
        flat = pa.array(np.ascontiguousarray(array, dtype=np.float32).reshape(-1))
        # Null, not NaN, for rows whose clip failed: Parquet readers then skip them in aggregates.
        table[name] = pa.FixedSizeListArray.from_arrays(flat, array.shape[1],
                                                        mask=pa.array(failed) if failed.any() else None)
    schema_table = pa.table(table).replace_schema_metadata({"hicmae": json.dumps(info)})
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pq.write_table(schema_table, tmp)
    return out


def _write_npy(out: Path, ids: list[dict], results: dict[str, np.ndarray]) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in results.items():
        path = out if len(results) == 1 else out.with_name(f"{out.stem}.{name}.npy")
        with atomic_path(path) as tmp:
            np.save(tmp, array)
        paths.append(path)
    index = out.with_suffix(".csv")
    with atomic_path(index) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["row", "line", "video", "audio", "start", "end", "error"])
        writer.writeheader()
        for r in ids:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return [*paths, index]


def read_features(path: str | os.PathLike, feature: str = "fusion") -> tuple[np.ndarray, list[dict]]:
    """One feature (clips, ...) and the clip ids (with errors) that :func:`extract_features` wrote to
    ``path`` (the ``out`` it was given): from Parquet, or from the ``.npy`` files and their index CSV."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        ids = table.select(["row", "line", "video", "audio", "start", "end", "error"]).to_pylist()
        if feature.endswith("_layers"):
            stem = feature.removesuffix("_layers")
            cols = sorted((c for c in table.column_names if c.startswith(f"{stem}_layer_")),
                          key=lambda c: int(c.rsplit("_", 1)[1]))
            return np.stack([_column(table, c) for c in cols], axis=1), ids
        return _column(table, feature), ids
    with open(path.with_suffix(".csv"), newline="", encoding="utf-8") as f:
        ids = list(csv.DictReader(f))
    several = path.with_name(f"{path.stem}.{feature}.npy")
    return np.load(several if several.exists() else path), ids


def _column(table, name: str) -> np.ndarray:
    values = table.column(name).to_pylist()
    width = next((len(v) for v in values if v is not None), 0)
    return np.array([v if v is not None else [np.nan] * width for v in values], dtype=np.float32)

