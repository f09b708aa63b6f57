"""Safe checkpoint loading and conversion of the original HiCMAE checkpoints onto our models.

Nothing here unpickles arbitrary objects: ``torch.load(..., weights_only=True)`` with an explicit
allow-list (the original stores its argparse ``Namespace`` under ``args``), or safetensors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hicmae.errors import EMPTY, PICKLE, SAFETENSORS, ZIP, CheckpointError, describe_content
from hicmae.models import HiCMAEClassifier

log = logging.getLogger(__name__)

# Original key prefix -> ours. Longest prefixes first so that e.g. "encoder_audio." wins over "encoder.".
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("encoder_fusion.blocks_audio.", "fusion.audio_blocks."),
    ("encoder_fusion.blocks.", "fusion.video_blocks."),
    ("encoder_fusion.norm_audio.", "fusion.audio_norm."),
    ("encoder_fusion.norm.", "fusion.video_norm."),
    ("encoder_to_decoder_audio.", "audio_branch.to_decoder."),
    ("encoder_to_decoder.", "video_branch.to_decoder."),
    ("encoder_audio.", "audio_encoder."),
    ("encoder.", "video_encoder."),
    ("decoder_audio.", "audio_branch.decoder."),
    ("decoder.", "video_branch.decoder."),
)
_EXACT = {"mask_token": "video_branch.mask_token", "mask_token_audio": "audio_branch.mask_token"}
# What the original fine-tuning model does not use from a pretraining checkpoint.
_PRETRAIN_ONLY = {"mask_token", "mask_token_audio", "encoder_to_decoder", "encoder_to_decoder_audio", "decoder",
                  "decoder_audio"}
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadReport:
    """Keys that a non-strict load left missing in the model or found unexpected in the checkpoint.

    ``str()`` lists every key (for the debug log and for callers that want details); :meth:`summary`
    is the short form for the console.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # present but deliberately not loaded (e.g. a head of another size)
    loaded: int = 0
    # ModelConfig field -> (checkpoint's value, model's value), where the shapes say they differ.
    architecture: dict[str, tuple] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [f"{name} ({len(keys)}): {', '.join(keys)}" for name, keys in
                 (("missing", self.missing), ("unexpected", self.unexpected), ("skipped", self.skipped)) if keys]
        return "; ".join(parts) or "all keys matched"

    def summary(self, limit: int = 6) -> str:
        """One short line: counts, and each list's names (up to ``limit``) or else its modules with counts."""
        parts = [f"{self.loaded} tensors loaded"]
        for label, keys in (("missing from the checkpoint, left as initialised", self.missing),
                            ("unexpected, ignored", self.unexpected), ("of another shape, skipped", self.skipped)):
            if keys:
                parts.append(f"{len(keys)} {label} ({_names_or_modules(keys, limit)})")
        return "; ".join(parts)


def _names_or_modules(keys: list[str], limit: int) -> str:
    """``a.x, b.y`` when there are few keys, else ``video_encoder.* (130), head.* (2), ...``."""
    if len(keys) <= limit:
        return ", ".join(keys)
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(key.split(".")[0], []).append(key)
    shown = [names[0] if len(names) == 1 else f"{module}.* ({len(names)})" for module, names in groups.items()]
    return ", ".join(shown[:limit]) + (f", and {len(shown) - limit} more modules" if len(shown) > limit else "")


def _strip_wrappers(key: str) -> str:
    """Drop the prefixes DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) add to key names."""
    for prefix in _WRAPPER_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def _rename(key: str) -> str:
    key = _strip_wrappers(key)
    if key in _EXACT:
        return _EXACT[key]
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def convert_original_state_dict(state_dict: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Map an original HiCMAE state_dict onto our key names.

    ``kind="pretrain"`` keeps every tensor (for :class:`HiCMAEPretrain`); ``kind="finetune"`` is for
    :class:`HiCMAEClassifier` and drops what only pretraining uses (mask tokens, decoders, projections),
    as the original fine-tuning script does, so a pretraining checkpoint initialises a classifier.
    """
    if kind not in ("pretrain", "finetune"):
        raise ValueError(f"kind must be 'pretrain' or 'finetune', got {kind!r}")
    out = {}
    for key, value in state_dict.items():
        if kind == "finetune" and _strip_wrappers(key).split(".")[0] in _PRETRAIN_ONLY:
            continue
        out[_rename(key)] = value
    return out


def _is_original(state_dict: dict) -> bool:
    return any(k.removeprefix("module.").startswith(("encoder.", "encoder_audio.", "encoder_fusion.")) for k in state_dict)


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = False,
                         source: str | os.PathLike | None = None, recorded: dict | None = None) -> LoadReport:
    """Load ``state_dict`` (ours or original names) into ``model``; report what did not match, by name.

    Tensors whose shape differs from the model's (typically a classifier head with another number of
    classes) are skipped and reported rather than failing the whole load, unless ``strict``. A
    checkpoint of another architecture (other widths, depths, patch sizes: see
    :func:`describe_architecture`) raises :class:`CheckpointError` saying so, before anything is
    loaded, since initialising from it would leave the backbone random; the error's ``report`` holds
    the details. ``source`` (the file) and ``recorded`` (the ``model_preset`` / ``model_overrides`` the
    checkpoint was trained with, when it records them) only word that error.
    """
    if _is_original(state_dict):
        state_dict = convert_original_state_dict(
            state_dict, "finetune" if isinstance(model, HiCMAEClassifier) else "pretrain")
    else:
        state_dict = {_strip_wrappers(k): v for k, v in state_dict.items()}
        if isinstance(model, HiCMAEClassifier):
            state_dict = {k: v for k, v in state_dict.items()
                          if not k.startswith(("video_branch.", "audio_branch."))}
    own = model.state_dict()
    report = LoadReport()
    loadable = {}
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            report.skipped.append(f"{key} {tuple(value.shape)} != {tuple(own[key].shape)}")
        else:
            loadable[key] = value
    theirs, ours = describe_architecture(state_dict), describe_architecture(own)
    report.architecture = {k: (theirs[k], ours[k]) for k in theirs if k in ours and theirs[k] != ours[k]}
    if report.architecture:
        report.missing = [k for k in own if k not in loadable]
        report.unexpected = [k for k in loadable if k not in own]
        log.debug("checkpoint %s does not fit %s: %s", source, type(model).__name__, report)
        err = CheckpointError(source, _architecture_mismatch(report.architecture, model, recorded))
        err.report = report
        raise err
    result = model.load_state_dict(loadable, strict=False)
    report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    report.loaded = len(loadable) - len(report.unexpected)
    log.debug("loaded weights into %s: %s", type(model).__name__, report)
    if strict and (report.missing or report.unexpected or report.skipped):
        err = CheckpointError(source, f"state_dict does not fit {type(model).__name__}: {report.summary()}")
        err.report = report
        raise err
    return report


# ModelConfig fields that decide tensor shapes, in the order a mismatch lists them.
_ARCHITECTURE_FIELDS = ("video_dim", "audio_dim", "encoder_depth", "fusion_depth", "patch_size", "tubelet_size",
                        "mlp_ratio", "decoder_dim", "decoder_depth")


def describe_architecture(state_dict: dict[str, torch.Tensor]) -> dict[str, int | float]:
    """The :class:`ModelConfig` sizes a state_dict (our key names) implies, read from tensor shapes:
    encoder widths from the patch embeddings, depths from the numbers of blocks, patch and tubelet
    sizes, MLP ratio, and the decoder's width and depth when it has one. Absent parts are left out."""
    arch: dict[str, int | float] = {}

    def blocks(prefix: str) -> int:
        return len({m.group(1) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})

    for modality in ("video", "audio"):
        embed = state_dict.get(f"{modality}_encoder.patch_embed.proj.weight")
        if embed is not None:
            arch[f"{modality}_dim"] = int(embed.shape[0])
            arch["patch_size"] = int(embed.shape[-1])
            if embed.ndim == 5:  # (dim, 3, tubelet, patch, patch)
                arch["tubelet_size"] = int(embed.shape[2])
        if depth := blocks(f"{modality}_encoder.blocks."):
            arch["encoder_depth"] = max(depth, int(arch.get("encoder_depth", 0)))
        fc1 = state_dict.get(f"{modality}_encoder.blocks.0.mlp.fc1.weight")
        if fc1 is not None:
            arch["mlp_ratio"] = fc1.shape[0] / fc1.shape[1]
    if depth := blocks("fusion.video_blocks."):
        arch["fusion_depth"] = depth
    to_decoder = state_dict.get("video_branch.to_decoder.weight", state_dict.get("audio_branch.to_decoder.weight"))
    if to_decoder is not None:
        arch["decoder_dim"] = int(to_decoder.shape[0])
    if depth := max(blocks("video_branch.decoder.blocks."), blocks("audio_branch.decoder.blocks.")):
        arch["decoder_depth"] = depth
    return {k: arch[k] for k in _ARCHITECTURE_FIELDS if k in arch}


def _architecture_mismatch(diff: dict[str, tuple], model: nn.Module, recorded: dict | None) -> str:
    """One sentence: what the checkpoint holds, what the model is, what to set."""
    from hicmae.models.config import PRESETS, ModelConfig

    theirs = ", ".join(f"{k} {a:g}" for k, (a, _) in diff.items())
    ours = ", ".join(f"{k} {b:g}" for k, (_, b) in diff.items())
    config = getattr(model, "config", None)
    recorded = recorded or {}
    if recorded.get("model_preset"):  # our Lightning checkpoints record what built them
        overrides = recorded.get("model_overrides") or {}
        fix = (f"set model.model_preset: {recorded['model_preset']}"
               + (f" and model.model_overrides: {_flow(overrides)}" if overrides else "")
               + " as the run that wrote it did")
    elif recorded.get("config") and config is not None:  # a release's header holds its whole ModelConfig
        fields = (*_ARCHITECTURE_FIELDS, "video_heads", "audio_heads", "fusion_heads", "decoder_heads", "skip_layers")
        own, theirs_config = config.to_dict(), recorded["config"]
        wanted = {k: theirs_config[k] for k in fields if k in theirs_config and theirs_config[k] != own[k]}
        fix = f"set model.model_overrides to match (model_overrides: {_flow(wanted)}, from the file's header)"
    else:
        wanted = {k: a for k, (a, _) in diff.items()}
        presets = [name for name in PRESETS
                   if all(getattr(ModelConfig.preset(name), k) == v for k, v in wanted.items())]
        depth = wanted.get("encoder_depth")
        if not presets and depth and config is not None and max(config.skip_layers, default=0) >= depth:
            # The shallower encoder needs skip layers inside it to make a valid ModelConfig: suggest the
            # presets' spacing (every third of ten layers, ending at the last). Only pretraining uses them.
            n = int(wanted.get("decoder_depth", config.decoder_depth)) - 1
            step = max(int(depth) // max(n, 1), 1)
            skips = sorted(max(int(depth) - 1 - step * i, 0) for i in range(n))
            if skips:
                wanted["skip_layers"] = skips
        if presets:
            fix = f"set model.model_preset: {presets[0]} to match"
        else:
            fix = f"set model.model_overrides to match (e.g. model_overrides: {_flow(wanted)}"
            if {"video_dim", "audio_dim"} & set(diff):
                fix += ", and the numbers of heads it was trained with, which shapes do not record"
            fix += ")"
    return f"this checkpoint holds a model with {theirs}, but this {type(model).__name__} has {ours}: {fix}"


def _flow(mapping: dict) -> str:
    """A mapping in YAML flow style, as a config file or a --model.model_overrides value takes it."""
    def value(v: object) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(map(value, v)) + "]"
        return f"{v:g}" if isinstance(v, float) else str(v)

    return "{" + ", ".join(f"{k}: {value(v)}" for k, v in mapping.items()) + "}"


# The original saves an argparse Namespace under "args"; allow exactly that, nothing else.
_SAFE_GLOBALS = [argparse.Namespace]


def safe_torch_load(path: str | os.PathLike) -> object:
    """``torch.load(path, weights_only=True)`` (allowing the original's argparse Namespace), with a
    :class:`CheckpointError` that says what the file is when it is not a checkpoint."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS), warnings.catch_warnings():
            # Plain pickles make torch warn (and ask for a bug report) before failing; the error says it all.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except IsADirectoryError:
        raise CheckpointError(path, "expected a checkpoint file, found a folder") from None
    except Exception as exc:  # pickle refusals, truncated zips, not-a-checkpoint files
        raise CheckpointError(path, _why_not_loadable(path, exc)) from None


def _why_not_loadable(path: Path, exc: Exception) -> str:
    message = str(exc)
    kind = describe_content(path)
    # Text first: the unpickler reads a text starting with "c" as a GLOBAL opcode and calls it unsafe.
    if kind not in (ZIP, PICKLE, SAFETENSORS, EMPTY, None):
        return f"not a checkpoint (it looks like {kind})"
    # torch words it "Unsupported global: GLOBAL x" or, for blocked modules (os, posix...), "unsupported GLOBAL x".
    unsafe = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", message)
    if unsafe:  # the weights-only unpickler met an object it does not allow: refuse, whatever the file claims
        return (f"not a checkpoint that can be loaded safely: it pickles {unsafe.group(1)}, which is not plain "
                "weights, and unpickling it could run code from the file")
    if kind == ZIP:  # torch.save writes a zip with <name>/data.pkl inside
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "a damaged or truncated checkpoint (its zip directory is unreadable): copy or download it again"
        if not any(n.endswith("/data.pkl") for n in names):
            return "not a checkpoint (it looks like a zip archive without the data.pkl torch.save writes)"
    elif kind == PICKLE:
        return "not a checkpoint (it looks like a Python pickle, not a file written by torch.save)"
    elif kind == SAFETENSORS:
        return "not a torch checkpoint (it looks like a safetensors file: give it the .safetensors suffix)"
    elif kind == EMPTY:
        return "not a checkpoint (it is empty: 0 bytes)"
    if isinstance(exc, pickle.UnpicklingError) or not message.strip():  # torch's own text is of no use here
        return "not a checkpoint (its content matches no format torch.save writes)"
    return f"not a checkpoint torch can read ({message.strip().splitlines()[0][:200]})"


def load_original_checkpoint(path: str | os.PathLike) -> dict:
    """Read an original ``checkpoint-*.pth`` safely: a dict with ``model`` and maybe ``optimizer``,
    ``epoch``, ``scaler``, ``args`` (returned as a plain dict) and ``model_ema``.

    Raises :class:`CheckpointError` for anything else: other pickled objects, a file that is not a
    checkpoint, or a checkpoint without model weights.
    """
    path = Path(path)
    return original_checkpoint_of(safe_torch_load(path), path)


def original_checkpoint_of(obj: object, path: str | os.PathLike) -> dict:
    """:func:`load_original_checkpoint` on an object ``safe_torch_load`` has already read from ``path``."""
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict with a 'model' entry, found {type(obj).__name__}")
    for key in ("model", "module"):
        if key in obj and isinstance(obj[key], dict):
            break
    else:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            obj = {"model": obj}  # a bare state_dict
        else:
            raise CheckpointError(path, f"no 'model' state_dict in the checkpoint (top-level keys: {sorted(obj)[:10]})")
        key = "model"
    model = obj[key]
    bad = [k for k, v in model.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(path, f"'{key}' holds non-tensor entries: {bad[:5]}")
    out = dict(obj)
    out["model"] = model
    if isinstance(out.get("args"), argparse.Namespace):
        out["args"] = vars(out["args"])
    return out


def model_from_original(ckpt: dict, path: str | os.PathLike, preset: str | None = None,
                        overrides: dict | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model of an original checkpoint (as :func:`load_original_checkpoint` returns it).

    The original records no architecture, so it is read from the tensor shapes (widths, depths, patch
    sizes: :func:`describe_architecture`), the input sizes from its ``args`` (``input_size``,
    ``num_frames``, the ``_a<frames>`` of its model name) and the numbers of heads, which shapes do not
    show, from the preset of the same width (``preset`` and ``overrides`` win over all of these). A state
    with decoders gives a :class:`HiCMAEPretrain`, one with a ``head`` a :class:`HiCMAEClassifier`.
    Returns the eval-mode model and what the checkpoint says about it (``sampling_rate``, ``source``).
    """
    from hicmae.models import HiCMAEPretrain, ModelConfig
    from hicmae.models.config import PRESETS

    state, args = ckpt["model"], ckpt.get("args") or {}
    pretrain = any(_strip_wrappers(k).split(".")[0] in _PRETRAIN_ONLY for k in state)
    ours = convert_original_state_dict(state, "pretrain" if pretrain else "finetune")
    if not pretrain and "head.weight" not in ours:
        raise CheckpointError(path, "neither a pretraining model (no decoders) nor a classifier (no 'head'): "
                                    "not a HiCMAE checkpoint")
    arch = describe_architecture(ours)
    if preset is None:
        preset = next((name for name, p in PRESETS.items() if p["video_dim"] == arch.get("video_dim")
                       and p["audio_dim"] == arch.get("audio_dim")), None)
        if preset is None:
            raise CheckpointError(path, f"widths {arch.get('video_dim')}/{arch.get('audio_dim')} match no preset "
                                        f"({', '.join(PRESETS)}): give the preset and the numbers of heads")
    fields = {k: v for k, v in arch.items() if k != "decoder_depth" or pretrain}
    if not pretrain:
        fields.pop("decoder_dim", None)
    for key, name in (("input_size", "img_size"), ("num_frames", "num_frames")):
        if isinstance(args.get(key), int):
            fields[name] = args[key]
    audio = re.search(r"_a(\d+)", str(args.get("model", "")))
    if audio:
        fields["audio_size"] = (int(audio.group(1)), ModelConfig.preset(preset).audio_size[1])
    wanted = {**{k: v for k, v in fields.items() if PRESETS[preset].get(k, getattr(ModelConfig, k, None)) != v},
              **(overrides or {})}
    if "encoder_depth" in wanted and "skip_layers" not in wanted:
        # Classifiers never use skip layers, but ModelConfig wants valid ones: the presets' last three.
        depth = int(wanted["encoder_depth"])
        wanted["skip_layers"] = tuple(max(depth - 1 - 3 * i, 0) for i in reversed(range(3)))
    try:
        config = ModelConfig.preset(preset, **wanted)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"cannot describe this checkpoint's architecture: {exc}") from None
    if pretrain:
        model: nn.Module = HiCMAEPretrain(config)
    else:
        modalities = tuple(m for m in ("video", "audio") if any(k.startswith(f"{m}_encoder.") for k in ours))
        model = HiCMAEClassifier(config, int(ours["head.weight"].shape[0]), modalities)
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(path, f"weights do not fit the architecture read from them (preset {preset}): "
                                    f"{str(exc).splitlines()[0][:200]}") from None
    info = {"source": Path(path).name}
    if isinstance(args.get("sampling_rate"), int):
        info["sampling_rate"] = args["sampling_rate"]
    return model.eval(), info


# ---------------------------------------------------------------------------------------------- releases
RELEASE_FORMAT = "hicmae-release/1"


def save_release(model: nn.Module, path: str | os.PathLike, **metadata: object) -> Path:
    """Write ``model`` as one ``.safetensors`` file that :func:`load_release` rebuilds anywhere.

    The header carries the format, the model kind, its :class:`ModelConfig` and, for a classifier, the
    number of outputs and modalities; ``metadata`` adds JSON-serialisable extras (class names, the
    training recipe, a licence...). The file is written atomically.
    """
    from safetensors.torch import save_file

    from hicmae.models import HiCMAEPretrain

    if isinstance(model, HiCMAEClassifier):
        header = {"kind": "classifier", "num_classes": model.num_classes, "modalities": list(model.modalities),
                  "head_activation": _activation_name(model)}
    elif isinstance(model, HiCMAEPretrain):
        header = {"kind": "pretrain"}
    else:
        raise TypeError(f"save_release takes a HiCMAEPretrain or HiCMAEClassifier, not {type(model).__name__}")
    header.update(format=RELEASE_FORMAT, config=model.config.to_dict(), metadata=metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # safetensors writes its files 0600; a release is meant to be shared, so it gets the mode of an
    # ordinary new file (0666 minus the umask), which creating the file ourselves first reveals.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
    mode = os.stat(tmp).st_mode & 0o777
    try:
        save_file(tensors, str(tmp), metadata={"hicmae": json.dumps(header)})
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _activation_name(model: HiCMAEClassifier) -> str | None:
    name = type(model.head_activation).__name__.lower()
    return None if name == "identity" else name


def read_release(path: str | os.PathLike, weights: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights (none with ``weights=False``) and the header (kind, config, ...) of a release file."""
    path = Path(path)
    state, metadata = read_safetensors(path, weights)
    raw = metadata.get("hicmae")
    if raw is None:
        raise CheckpointError(path, "a safetensors file without a hicmae header: not a hicmae release")
    header = json.loads(raw)
    if header.get("format") != RELEASE_FORMAT:
        raise CheckpointError(path, f"unsupported release format {header.get('format')!r} (expected {RELEASE_FORMAT})")
    return state, header


def read_safetensors(path: str | os.PathLike, weights: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors (none with ``weights=False``) and the string metadata of a ``.safetensors`` file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()} if weights else {}
    except Exception as exc:
        kind = describe_content(path)
        if kind == ZIP:
            reason = "not a safetensors file (it looks like a zip archive, e.g. a PyTorch checkpoint)"
        elif kind is not None and kind != SAFETENSORS:
            reason = f"not a safetensors file (it looks like {kind})"
        else:
            reason = f"not a safetensors file ({str(exc)[:200]})"
        raise CheckpointError(path, reason) from None
    return state, metadata


def load_release(path: str | os.PathLike, **model_kwargs: object) -> nn.Module:
    """Rebuild the model saved by :func:`save_release` (``model_kwargs``: e.g. ``fused_attn=False``)."""
    from hicmae.models import HiCMAEPretrain, ModelConfig

    state, header = read_release(path)
    config = ModelConfig(**header["config"])
    if header["kind"] == "classifier":
        model = HiCMAEClassifier(config, header["num_classes"], header["modalities"],
                                 head_activation=header.get("head_activation"), **model_kwargs)
    else:
        model = HiCMAEPretrain(config, **model_kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(path, f"weights do not fit the model its header describes: {str(exc)[:300]}") from None
    return model.eval()
