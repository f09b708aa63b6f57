"""Safe checkpoint loading and conversion of the original HiCMAE checkpoints onto our models.

Nothing here unpickles arbitrary objects: ``torch.load(..., weights_only=True)`` with an explicit
allow-list (the original stores its argparse ``Namespace`` under ``args``), or safetensors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hicmae.errors import CheckpointError
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
    """Keys that a non-strict load left missing in the model or found unexpected in the checkpoint."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # present but deliberately not loaded (e.g. a head of another size)

    def __str__(self) -> str:
        parts = [f"{name} ({len(keys)}): {', '.join(keys)}" for name, keys in
                 (("missing", self.missing), ("unexpected", self.unexpected), ("skipped", self.skipped)) if keys]
        return "; ".join(parts) or "all keys matched"


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


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = False) -> LoadReport:
    """Load ``state_dict`` (ours or original names) into ``model``; report what did not match, by name.

    Tensors whose shape differs from the model's (typically a classifier head with another number of
    classes) are skipped and reported rather than failing the whole load, unless ``strict``.
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
    result = model.load_state_dict(loadable, strict=False)
    report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if strict and (report.missing or report.unexpected or report.skipped):
        raise CheckpointError(None, f"state_dict does not fit {type(model).__name__}: {report}")
    log.info("loaded weights into %s: %s", type(model).__name__, report)
    return report


# The original saves an argparse Namespace under "args"; allow exactly that, nothing else.
_SAFE_GLOBALS = [argparse.Namespace]


def _torch_load(path: Path) -> object:
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except Exception as exc:  # pickle refusals, truncated zips, not-a-checkpoint files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"not a checkpoint that can be loaded safely ({reason[:300]})") from None


def load_original_checkpoint(path: str | os.PathLike) -> dict:
    """Read an original ``checkpoint-*.pth`` safely: a dict with ``model`` and maybe ``optimizer``,
    ``epoch``, ``scaler``, ``args`` (returned as a plain dict) and ``model_ema``.

    Raises :class:`CheckpointError` for anything else: other pickled objects, a file that is not a
    checkpoint, or a checkpoint without model weights.
    """
    path = Path(path)
    obj = _torch_load(path)
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
    save_file(tensors, str(tmp), metadata={"hicmae": json.dumps(header)})
    os.replace(tmp, path)
    return path


def _activation_name(model: HiCMAEClassifier) -> str | None:
    name = type(model.head_activation).__name__.lower()
    return None if name == "identity" else name


def read_release(path: str | os.PathLike, weights: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights (none with ``weights=False``) and the header (kind, config, ...) of a release file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("hicmae")
            state = {k: f.get_tensor(k) for k in f.keys()} if weights else {}
    except Exception as exc:
        raise CheckpointError(path, f"not a safetensors file ({str(exc)[:200]})") from None
    if raw is None:
        raise CheckpointError(path, "a safetensors file without a hicmae header: not a hicmae release")
    header = json.loads(raw)
    if header.get("format") != RELEASE_FORMAT:
        raise CheckpointError(path, f"unsupported release format {header.get('format')!r} (expected {RELEASE_FORMAT})")
    return state, header


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
