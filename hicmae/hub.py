"""Release folders in the Hugging Face Hub layout, and one loader for everything a user may hold.

A release folder is what the Hub shows as a model repository::

    model.safetensors   the weights (our key names), with the one-file release header inside, so the
                        file alone is still a release (:func:`hicmae.checkpoint.load_release`)
    config.json         architecture (every ModelConfig field), preprocessing, task, class or
                        dimension names, metrics: see :func:`release_metadata`
    README.md           the model card, with the YAML front matter the Hub reads
    checksums.sha256    SHA-256 of model.safetensors and config.json (``sha256sum -c`` format),
                        verified before anything is loaded

:func:`load_model` (and :func:`load_classifier`, :func:`load_pretrain`) take a one-file release, a
release folder, a Hub repo id (``user/name``, optionally ``@revision``), a ``finetune.py`` /
``pretrain.py`` checkpoint or an original ``.pth``. A local path never touches the network; a repo id
is fetched by ``huggingface_hub`` (only the four files above, never a pickle), or read from its local
cache alone when ``HF_HUB_OFFLINE=1``. Nothing here unpickles anything but weights.

``huggingface_hub`` is imported only for repo ids and pushes, so loading local files does not need it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from hicmae.checkpoint import RELEASE_FORMAT, read_safetensors, save_release
from hicmae.errors import PICKLE, SAFETENSORS, ZIP, CheckpointError, describe_content

log = logging.getLogger(__name__)

WEIGHTS, CONFIG, CARD, CHECKSUMS = "model.safetensors", "config.json", "README.md", "checksums.sha256"
# What the checksums cover: what the loader reads. The card is left out so it can be edited on the Hub.
CHECKSUMMED = (WEIGHTS, CONFIG)
RELEASE_FILES = (WEIGHTS, CONFIG, CARD, CHECKSUMS)
# "user/name" or "user/name@revision", as the Hub spells repo ids.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


# ---------------------------------------------------------------------------------------------- metadata
def preprocessing(config, sampling_rate: int = 4) -> dict:
    """How a clip becomes the model's input, so that someone without hicmae can feed the model."""
    from hicmae.data.audio import FBANK_MEAN, FBANK_STD
    from hicmae.data.media import SAMPLE_RATE
    from hicmae.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return {"img_size": config.img_size, "num_frames": config.num_frames, "sampling_rate": int(sampling_rate),
            "video_mean": list(IMAGENET_MEAN), "video_std": list(IMAGENET_STD),
            "video": "RGB face crops resized to img_size x img_size, num_frames frames every sampling_rate-th "
                     "frame, scaled to [0, 1] then normalised with video_mean / video_std; tensor (3, T, H, W)",
            "audio_sample_rate": SAMPLE_RATE, "audio_size": list(config.audio_size),
            "mel_bins": config.audio_size[1], "fbank_mean": FBANK_MEAN, "fbank_std": FBANK_STD,
            "audio": "16 kHz mono, mean removed, Kaldi fbank (25 ms Hanning window, 10 ms shift, htk_compat), "
                     "padded or cut to audio_size[0] frames, then (fbank - fbank_mean) / (2 * fbank_std); "
                     "tensor (1, time, mel)"}


def release_metadata(header: dict, source: str | os.PathLike | None = None) -> dict:
    """The metadata of a release (config.json's content) from a one-file release's header.

    Keys: ``format``, ``library_name``, ``kind`` (classifier | pretrain), ``task`` (classification |
    multilabel | regression | pretrain), for classifiers ``num_classes``, ``modalities``,
    ``head_activation``, ``linear_probe`` and ``class_names`` (classification, multilabel) or
    ``target_names`` (regression); ``architecture`` (ModelConfig fields), ``preprocessing``, then what
    the exporter recorded: ``metrics``, ``training``, ``source``, ``license``... Names the release does
    not record are numbered ("0", "1", ...).
    """
    from hicmae.models import ModelConfig

    extra = dict(header.get("metadata") or {})
    kind = header.get("kind")
    if kind not in ("classifier", "pretrain") or "config" not in header:
        raise CheckpointError(source, f"release header of unknown kind {kind!r}: not a hicmae release")
    try:
        config = ModelConfig(**header["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(source, f"the release's architecture is not a valid ModelConfig: {exc}") from None
    meta: dict = {"format": RELEASE_FORMAT, "library_name": "hicmae", "kind": kind}
    if kind == "classifier":
        task = extra.pop("task", "classification")
        n = int(header["num_classes"])
        names_key = "target_names" if task == "regression" else "class_names"
        names = extra.pop(names_key, None) or [str(i) for i in range(n)]
        extra.pop("class_names" if names_key == "target_names" else "target_names", None)
        if len(names) != n:
            raise CheckpointError(source, f"the release names {len(names)} outputs but its head has {n}")
        meta.update(task=task, num_classes=n, modalities=list(header["modalities"]),
                    head_activation=header.get("head_activation"), linear_probe=bool(extra.pop("linear_probe", False)))
        meta[names_key] = list(names)
    else:
        extra.pop("task", None)
        meta["task"] = "pretrain"
    meta["architecture"] = config.to_dict()
    sampling_rate = extra.pop("sampling_rate", None)
    meta["preprocessing"] = extra.pop("preprocessing", None) or preprocessing(config, sampling_rate or 4)
    meta.update(extra)
    return meta


def _header_of(meta: dict) -> dict:
    """The one-file header that :func:`release_metadata` turns into ``meta`` (for building the model)."""
    header = {"kind": meta["kind"], "config": meta["architecture"], "format": RELEASE_FORMAT}
    if meta["kind"] == "classifier":
        header.update(num_classes=meta["num_classes"], modalities=meta["modalities"],
                      head_activation=meta.get("head_activation"))
    return header


def build_model(meta: dict, **model_kwargs: object) -> nn.Module:
    """An untrained model of the architecture ``meta`` (release metadata) describes."""
    from hicmae.models import HiCMAEClassifier, HiCMAEPretrain, ModelConfig

    config = ModelConfig(**meta["architecture"])
    if meta["kind"] == "classifier":
        return HiCMAEClassifier(config, meta["num_classes"], meta["modalities"],
                                head_activation=meta.get("head_activation"), **model_kwargs)
    return HiCMAEPretrain(config, **model_kwargs)


# ---------------------------------------------------------------------------------------------- writing
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_release_folder(model: nn.Module, folder: str | os.PathLike, **metadata: object) -> Path:
    """Write ``model`` as a release folder (see the module docstring); returns the folder.

    ``metadata``: task, class_names / target_names, sampling_rate, metrics (see
    :func:`hicmae.training.export.metrics_record`), training, source, and the card's ``license``,
    ``name``, ``dataset``, ``description``. The folder is built beside the target and moved into place
    in one step; an existing release folder is replaced, any other existing folder is refused.
    """
    from hicmae.checkpoint import read_release

    folder = Path(folder)
    if folder.exists() and not _replaceable(folder):
        raise CheckpointError(folder, "exists and is not a release folder: choose a new or empty folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_release(model, tmp / WEIGHTS, **metadata)
        _, header = read_release(tmp / WEIGHTS, weights=False)
        meta = release_metadata(header, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        from hicmae.model_card import model_card

        (tmp / CARD).write_text(model_card(meta, folder.name))
        write_checksums(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _replaceable(folder: Path) -> bool:
    """An empty folder, or one holding only a release's files (what an earlier export wrote)."""
    if not folder.is_dir():
        return False
    names = {p.name for p in folder.iterdir()}
    return not names or (CHECKSUMS in names and names <= set(RELEASE_FILES) | {".gitattributes"})


def write_checksums(folder: str | os.PathLike) -> Path:
    """(Re)write ``checksums.sha256`` for the files :func:`verify_checksums` checks (after editing config.json)."""
    folder = Path(folder)
    lines = [f"{_sha256(folder / name)}  {name}\n" for name in CHECKSUMMED]
    (folder / CHECKSUMS).write_text("".join(lines))
    return folder / CHECKSUMS


# ---------------------------------------------------------------------------------------------- reading
def verify_checksums(folder: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` unless every file that ``checksums.sha256`` lists has that SHA-256
    and the weights and config are among them."""
    folder = Path(folder)
    path = folder / CHECKSUMS
    if not path.is_file():
        raise CheckpointError(folder, f"no {CHECKSUMS}: not a complete hicmae release folder (write one with "
                                      "`hicmae export CHECKPOINT FOLDER`)")
    expected = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not name or "/" in name or name.startswith("."):
            raise CheckpointError(path, f"line {number} is not '<sha256>  <file name>'")
        expected[name.lstrip("*")] = digest
    for name in CHECKSUMMED:
        if name not in expected:
            raise CheckpointError(path, f"lists no checksum for {name}")
    for name, digest in expected.items():
        target = folder / name
        if not target.is_file():
            raise CheckpointError(target, f"missing: {CHECKSUMS} lists it")
        actual = _sha256(target)
        if actual != digest:
            raise CheckpointError(target, f"SHA-256 {actual[:12]}... does not match {digest[:12]}... in {CHECKSUMS}: "
                                          "the file is damaged or was changed; download or export it again")


def read_release_folder(folder: str | os.PathLike,
                        weights: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights (none with ``weights=False``) and metadata of a release folder, checksums verified first."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(folder, _not_a_release_folder(folder))
    verify_checksums(folder)
    try:
        meta = json.loads((folder / CONFIG).read_text())
    except ValueError as exc:
        raise CheckpointError(folder / CONFIG, f"not valid JSON ({exc})") from None
    if meta.get("format") != RELEASE_FORMAT:
        raise CheckpointError(folder / CONFIG, f"unsupported release format {meta.get('format')!r} "
                                               f"(expected {RELEASE_FORMAT})")
    meta = release_metadata({**_header_of(meta), "metadata": _extras(meta)}, folder / CONFIG)
    state, _ = read_safetensors(folder / WEIGHTS, weights)
    return state, meta


def _extras(meta: dict) -> dict:
    """config.json less what :func:`_header_of` carries: the header's ``metadata`` part."""
    skip = {"format", "library_name", "kind", "num_classes", "modalities", "head_activation", "architecture"}
    return {k: v for k, v in meta.items() if k not in skip}


def _not_a_release_folder(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    pickles = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    if pickles:
        return (f"no {WEIGHTS}, only {', '.join(pickles[:3])}: hicmae loads releases from safetensors and never "
                "unpickles a repository's files")
    return f"no {WEIGHTS} in this folder (it holds: {', '.join(names[:8]) or 'nothing'}): not a hicmae release folder"


def _load_file_release(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from hicmae.checkpoint import read_release

    state, header = read_release(path)
    return state, release_metadata(header, path)


def resolve(source: str | os.PathLike, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local path for ``source``: itself when it exists, else the snapshot of the Hub repo it names.

    Only the release files are fetched. Offline (``HF_HUB_OFFLINE=1``), only the local cache is read.
    """
    path = Path(source)
    if path.exists():
        return path
    text = os.fspath(source)
    if not _REPO_ID.match(text) or text.startswith((".", "/")) or path.suffix in (".ckpt", ".pth", ".safetensors"):
        raise CheckpointError(path, "file not found")
    repo_id, _, at = text.partition("@")
    return _snapshot(repo_id, revision or at or None, cache_dir)


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or value.strip().lower() in ("1", "true", "yes", "on")


def _snapshot(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path:
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise CheckpointError(repo_id, "no such file or folder; loading it as a Hugging Face Hub repo id needs "
                                       "huggingface_hub (pip install huggingface_hub)") from None
    offline = _offline()
    try:
        folder = huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                                   allow_patterns=list(RELEASE_FILES), local_files_only=offline,
                                                   library_name="hicmae")
    except LocalEntryNotFoundError:
        where = "HF_HUB_OFFLINE is set and it is" if offline else "it is"
        raise CheckpointError(repo_id, f"no such file or folder, and as a Hugging Face Hub repo id {where} not in "
                                       "the local cache" + (": download it once online" if offline else
                                                            " and the Hub could not be reached")) from None
    except RepositoryNotFoundError:
        raise CheckpointError(repo_id, "no such file or folder, nor a Hugging Face Hub repository you can read "
                                       "(private? log in with `hf auth login`)") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(repo_id, f"could not fetch it from the Hugging Face Hub: "
                                       f"{str(exc).splitlines()[0][:200]}") from None
    log.info("%s resolved to %s", repo_id, folder)
    return Path(folder)


def load_model(source: str | os.PathLike, *, device: str | torch.device = "cpu", revision: str | None = None,
               cache_dir: str | os.PathLike | None = None, class_names: list[str] | None = None,
               preset: str | None = None, overrides: dict | None = None,
               **model_kwargs: object) -> tuple[nn.Module, dict]:
    """The eval-mode model in ``source`` (classifier or pretraining) on ``device``, and its metadata.

    ``source``: a one-file ``.safetensors`` release, a release folder, a Hub repo id (``user/name`` or
    ``user/name@revision``), a ``finetune.py`` / ``pretrain.py`` checkpoint (``.ckpt``) or an original
    ``.pth``. ``class_names``: for sources that do not record them. ``preset`` / ``overrides``: the
    architecture of an original ``.pth`` where its shapes and args do not tell it (numbers of heads of a
    non-preset width). ``model_kwargs``: e.g. ``fused_attn=False``. The metadata is
    :func:`release_metadata`'s, whatever the source.
    """
    path = resolve(source, revision, cache_dir)
    if path.is_dir():
        state, meta = read_release_folder(path)
    else:
        kind = describe_content(path)
        if path.suffix == ".safetensors" or kind == SAFETENSORS:
            state, meta = _load_file_release(path)
        elif path.suffix in (".ckpt", ".pth", ".pt", ".bin") or kind in (ZIP, PICKLE):
            return _from_checkpoint(path, device, class_names, model_kwargs, preset, overrides)
        else:
            raise CheckpointError(path, f"not a release or checkpoint (it looks like {kind or 'unknown data'})")
    model = build_model(meta, **model_kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(path, "weights do not fit the architecture its config describes: "
                                    f"{str(exc).splitlines()[0][:200]}") from None
    if class_names:
        meta = _rename_outputs(meta, class_names, path)
    return model.to(device).eval(), meta


def _from_checkpoint(path: Path, device, class_names, model_kwargs, preset, overrides) -> tuple[nn.Module, dict]:
    """A training or original checkpoint: rebuilt through the exporter, then described like a release."""
    from hicmae.training.export import model_from_checkpoint

    model, info = model_from_checkpoint(path, class_names, preset, overrides)
    if model_kwargs:  # e.g. fused_attn=False: rebuild with them, same weights
        header = _model_header(model, info)
        fresh = build_model(release_metadata(header, path), **model_kwargs)
        fresh.load_state_dict(model.state_dict(), strict=True)
        model = fresh
    meta = release_metadata(_model_header(model, info), path)
    return model.to(device).eval(), meta


def _model_header(model: nn.Module, info: dict) -> dict:
    from hicmae.models import HiCMAEClassifier

    header = {"kind": "pretrain", "config": model.config.to_dict(), "metadata": dict(info)}
    if isinstance(model, HiCMAEClassifier):
        act = type(model.head_activation).__name__.lower()
        header.update(kind="classifier", num_classes=model.num_classes, modalities=list(model.modalities),
                      head_activation=None if act == "identity" else act)
    return header


def _rename_outputs(meta: dict, names: list[str], path: Path) -> dict:
    if meta["kind"] != "classifier":
        return meta
    if len(names) != meta["num_classes"]:
        raise CheckpointError(path, f"{len(names)} class names given but the head has {meta['num_classes']} outputs")
    key = "target_names" if meta["task"] == "regression" else "class_names"
    return {**meta, key: list(names)}


def load_classifier(source: str | os.PathLike, *, device: str | torch.device = "cpu",
                    **kwargs: object) -> tuple[nn.Module, dict]:
    """:func:`load_model` for a fine-tuned classifier (a pretraining model is refused: it has no head)."""
    model, meta = load_model(source, device=device, **kwargs)
    if meta["kind"] != "classifier":
        raise CheckpointError(source, "a pretraining model has no classifier head: fine-tune it first (finetune.py), "
                                      "or load it with load_pretrain / HiCMAEPretrain.from_pretrained")
    return model, meta


def load_pretrain(source: str | os.PathLike, *, device: str | torch.device = "cpu",
                  **kwargs: object) -> tuple[nn.Module, dict]:
    """:func:`load_model` for a pretraining model (a classifier is refused: it has no decoders)."""
    model, meta = load_model(source, device=device, **kwargs)
    if meta["kind"] != "pretrain":
        raise CheckpointError(source, "a fine-tuned classifier, not a pretraining model (it has no decoders): "
                                      "load it with load_classifier / HiCMAEClassifier.from_pretrained")
    return model, meta


# ---------------------------------------------------------------------------------------------- publishing
def push_to_hub(source: str | os.PathLike | nn.Module, repo_id: str, *, private: bool | None = None,
                token: str | None = None, commit_message: str | None = None, revision: str | None = None,
                **metadata: object) -> str:
    """Publish a release folder (or a model, written as one first with ``metadata``) to the Hub repo
    ``repo_id``, creating the repo if needed; returns the commit URL.

    The folder is checked (checksums, loadable config) before anything is sent.
    """
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(source, nn.Module):
            folder = save_release_folder(source, Path(tmp) / "release", **metadata)
        else:
            folder = Path(source)
            if not folder.is_dir():
                raise CheckpointError(folder, "push_to_hub takes a release folder (write one with `hicmae export`)")
        read_release_folder(folder, weights=False)
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                 allow_patterns=list(RELEASE_FILES),
                                 commit_message=commit_message or "Upload HiCMAE release")
    return str(getattr(info, "commit_url", info))
