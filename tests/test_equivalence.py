"""Our models reproduce the original HiCMAE code's outputs (fixtures made by running the original)."""

from pathlib import Path

import pytest
import torch

from hicmae.checkpoint import convert_original_state_dict
from hicmae.losses import audio_target, pretrain_losses, video_target
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain, ModelConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOL = 1e-5


def close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Within 1e-5 absolute, or relative for values above 1 (the fixtures' stated precision)."""
    scale = theirs.abs().clamp(min=1.0)
    err = ((ours - theirs).abs() / scale).max().item()
    assert ours.shape == theirs.shape and err <= TOL, f"max scaled error {err:.2e}"


def fixture_path(name: str) -> Path:
    path = FIXTURES / name
    assert path.exists(), f"fixture missing: {path} (it is part of the repository; see tests/fixtures/README.md)"
    return path


@pytest.fixture(scope="module")
def fixture():
    data = torch.load(fixture_path("mini_a.pt"), weights_only=True)
    assert data["format"] == "hicmae-original-equivalence/1"
    return data


@pytest.fixture(scope="module")
def pretrain_config(fixture):
    config = ModelConfig(**fixture["config"])
    meta = fixture["meta"]
    _, h, w = config.video_grid
    # The fixture's masks hide other counts than the default ratios: set the ratios to match them.
    return config.replace(video_mask_ratio=meta["video_masked_per_frame"] / (h * w),
                          audio_mask_ratio=meta["audio_masked"] / config.num_audio_tokens)


@pytest.mark.parametrize("fused_attn", [True, False], ids=["sdpa", "math"])
def test_pretrain_outputs_targets_and_losses_equal_original(fixture, pretrain_config, fused_attn):
    data = fixture["pretrain"]
    model = HiCMAEPretrain(pretrain_config, fused_attn=fused_attn).eval()
    model.load_state_dict(convert_original_state_dict(data["state_dict"], "pretrain"), strict=True)
    args = data["video"], data["video_mask"], data["audio"], data["audio_mask"]
    with torch.no_grad():
        out = model(*args)
        losses = pretrain_losses(out, data["video"], data["audio"], data["video_mask"], data["audio_mask"],
                                 pretrain_config)
    close(out.pred_video, data["pred_video"])
    close(out.pred_audio, data["pred_audio"])
    close(torch.stack(out.logits_video_to_audio), data["logits_video_to_audio"])
    close(torch.stack(out.logits_audio_to_video), data["logits_audio_to_video"])
    close(video_target(data["video"], data["video_mask"], pretrain_config), data["target_video"])
    close(audio_target(data["audio"], data["audio_mask"], pretrain_config), data["target_audio"])
    for ours, theirs in (("loss_video", "loss_video"), ("loss_audio", "loss_audio"),
                         ("loss_contrastive", "loss_contrastive"), ("loss", "loss_total")):
        close(losses[ours], data[theirs])


@pytest.mark.parametrize("fused_attn", [True, False], ids=["sdpa", "math"])
def test_finetune_logits_and_features_equal_original(fixture, fused_attn):
    data = fixture["finetune"]
    model = HiCMAEClassifier(ModelConfig(**fixture["config"]), fixture["meta"]["num_classes"], fused_attn=fused_attn)
    model.load_state_dict(convert_original_state_dict(data["state_dict"], "finetune"), strict=True)
    model.eval()
    with torch.no_grad():
        close(model.forward_features(data["video"], data["audio"]), data["features"])
        close(model(data["video"], data["audio"]), data["logits"])


def _original_keys(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in fixture_path(name).read_text().splitlines():
        key, shape = line.split(" ", 1)
        keys[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return keys


@pytest.mark.parametrize("name,kind", [("base_pretrain_keys.txt", "pretrain"), ("base_finetune_keys.txt", "finetune")])
def test_every_released_base_key_converts_onto_our_base_model(name, kind):
    original = _original_keys(name)
    state = {k: torch.zeros(shape) for k, shape in original.items()}
    converted = convert_original_state_dict(state, kind)
    config = ModelConfig.preset("base")
    model = HiCMAEPretrain(config) if kind == "pretrain" else HiCMAEClassifier(config, num_classes=6)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    assert len(converted) == len(original)  # nothing dropped, nothing merged
    model.load_state_dict(converted, strict=True)


def test_released_pretraining_checkpoint_initialises_a_classifier():
    """What the original fine-tuning script loads from checkpoint-99.pth: all encoders and fusion."""
    state = {k: torch.zeros(shape) for k, shape in _original_keys("base_pretrain_keys.txt").items()}
    converted = convert_original_state_dict(state, "finetune")
    model = HiCMAEClassifier(ModelConfig.preset("base"), num_classes=6)
    result = model.load_state_dict(converted, strict=False)
    assert sorted(result.missing_keys) == ["audio_layer_weights", "fc_norm.bias", "fc_norm.weight",
                                           "head.bias", "head.weight", "video_layer_weights"]
    assert result.unexpected_keys == []
