"""Model shapes, sizes, gradients and switches for every preset and modality set."""

import pytest
import torch

from hicmae.errors import ConfigError
from hicmae.masking import pretrain_masks
from hicmae.models import HiCMAEClassifier, HiCMAEPretrain, ModelConfig


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset,expected", [("tiny", 20_473_370), ("small", 45_652_250), ("base", 80_792_602)])
def test_classifier_parameter_count_equals_original(preset, expected):
    assert n_params(HiCMAEClassifier(ModelConfig.preset(preset), num_classes=6)) == expected


@pytest.mark.parametrize("preset,expected", [("small", 50_584_576), ("base", 99_609_344), ("tiny", 22_746_368)])
def test_pretrain_parameter_count_equals_original(preset, expected):
    assert n_params(HiCMAEPretrain(ModelConfig.preset(preset))) == expected


def test_no_positional_table_in_state_dict_and_k_bias_is_not_a_parameter():
    model = HiCMAEPretrain(ModelConfig.preset("tiny"))
    keys = model.state_dict().keys()
    assert not any("pos_embed" in k for k in keys)
    assert not any("k_bias" in k for k in keys)


def small_inputs(config: ModelConfig, batch: int = 2):
    video = torch.randn(batch, 3, config.num_frames, config.img_size, config.img_size)
    audio = torch.randn(batch, 1, *config.audio_size)
    return video, audio


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_pretrain_forward_backward_every_preset(preset):
    # Full widths and depths of the preset, on a smaller input so the test stays fast on a CPU.
    config = ModelConfig.preset(preset, img_size=64, audio_size=(64, 32))
    model = HiCMAEPretrain(config)
    video, audio = small_inputs(config)
    video_mask, audio_mask = pretrain_masks(config, batch=2, generator=torch.Generator().manual_seed(0))
    out = model(video, video_mask, audio, audio_mask)
    assert out.pred_video.shape == (2, config.num_video_masked, 1536)
    assert out.pred_audio.shape == (2, config.num_audio_masked, 256)
    assert len(out.logits_video_to_audio) == len(config.skip_layers)
    assert all(m.shape == (2, 2) for m in out.logits_video_to_audio)
    loss = out.pred_video.square().mean() + out.pred_audio.square().mean() + sum(m.sum() for m in out.logits_audio_to_video)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_pretrain_full_size_tiny_shapes():
    config = ModelConfig.preset("tiny")
    model = HiCMAEPretrain(config)
    video, audio = small_inputs(config, batch=1)
    vm, am = pretrain_masks(config, batch=1)
    with torch.no_grad():
        out = model(video, vm, audio, am)
    assert out.pred_video.shape == (1, 720, 1536) and out.pred_audio.shape == (1, 102, 256)


@pytest.mark.parametrize("preset,modalities", [
    ("tiny", ("video", "audio")), ("small", ("video", "audio")), ("base", ("video", "audio")),
    ("tiny", ("video",)), ("tiny", ("audio",)), ("base", ("audio",))])
def test_classifier_forward_backward(preset, modalities):
    config = ModelConfig.preset(preset, img_size=32, num_frames=4, audio_size=(32, 32))
    model = HiCMAEClassifier(config, num_classes=7, modalities=modalities)
    video, audio = small_inputs(config)
    logits = model(video=video, audio=audio)
    assert logits.shape == (2, 7)
    features = model.forward_features(video=video, audio=audio)
    width = {2: 4, 1: 1}[len(modalities)] * config.video_dim
    assert features.shape == (2, width) and model.head.in_features == width
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # Only the used modalities' modules exist.
    assert (model.fusion is not None) == (len(modalities) == 2)
    assert (model.audio_encoder is None) == ("audio" not in modalities)


def test_single_modality_classifier_needs_its_input():
    config = ModelConfig.preset("tiny", img_size=32, num_frames=4, audio_size=(32, 32))
    model = HiCMAEClassifier(config, num_classes=3, modalities=("audio",))
    _, audio = small_inputs(config)
    assert model(audio=audio).shape == (2, 3)
    with pytest.raises(ValueError, match="audio"):
        model(video=torch.randn(2, 3, 4, 32, 32))


def test_bad_modalities_and_config_are_refused():
    with pytest.raises(ConfigError, match="modalities"):
        HiCMAEClassifier(ModelConfig.preset("tiny"), 3, modalities=("text",))
    with pytest.raises(ConfigError, match="skip_layers"):
        ModelConfig.preset("tiny", decoder_depth=3)
    with pytest.raises(ConfigError, match="preset"):
        ModelConfig.preset("huge")


def test_masks_with_wrong_count_are_refused_clearly():
    config = ModelConfig.preset("tiny", img_size=32, audio_size=(32, 32))
    model = HiCMAEPretrain(config)
    video, audio = small_inputs(config)
    vm, am = pretrain_masks(config, batch=2)
    am[0, ~am[0]] = True  # one row hides everything
    with pytest.raises(ValueError, match="exactly"):
        model(video, vm, audio, am)


def _tiny():
    return ModelConfig(img_size=32, num_frames=4, video_dim=64, video_heads=2, audio_dim=64, audio_heads=2,
                       audio_size=(32, 32), encoder_depth=3, skip_layers=(0, 1, 2), fusion_heads=2, decoder_dim=32,
                       decoder_heads=2, video_mask_ratio=0.5, audio_mask_ratio=0.5)


def test_sdpa_and_plain_math_attention_agree():
    torch.manual_seed(0)
    config = _tiny()
    fused = HiCMAEPretrain(config, fused_attn=True).eval()
    plain = HiCMAEPretrain(config, fused_attn=False).eval()
    plain.load_state_dict(fused.state_dict())
    video, audio = small_inputs(config)
    vm, am = pretrain_masks(config, batch=2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = fused(video, vm, audio, am), plain(video, vm, audio, am)
    torch.testing.assert_close(a.pred_video, b.pred_video, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.pred_audio, b.pred_audio, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["pretrain", "classifier"])
def test_gradient_checkpointing_gives_the_same_gradients(kind):
    torch.manual_seed(0)
    config = _tiny()
    build = (lambda ckpt: HiCMAEPretrain(config, grad_checkpointing=ckpt)) if kind == "pretrain" else \
        (lambda ckpt: HiCMAEClassifier(config, 4, grad_checkpointing=ckpt))
    plain, ckpt = build(False), build(True)
    ckpt.load_state_dict(plain.state_dict())
    video, audio = small_inputs(config)
    vm, am = pretrain_masks(config, batch=2)

    def loss(model):
        if kind == "pretrain":
            out = model(video, vm, audio, am)
            return out.pred_video.square().mean() + out.pred_audio.square().mean()
        return model(video, audio).square().mean()

    loss(plain).backward()
    loss(ckpt).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_pretrain_model_compiles_as_one_graph():
    """Static shapes: no graph break from data-dependent indexing (fullgraph raises on any break)."""
    torch._dynamo.reset()
    config = _tiny()
    model = HiCMAEPretrain(config).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    video, audio = small_inputs(config)
    vm, am = pretrain_masks(config, batch=2)
    with torch.no_grad():
        out = compiled(video, vm, audio, am)
        ref = model(video, vm, audio, am)
    torch.testing.assert_close(out.pred_video, ref.pred_video)


def test_classifier_compiles_as_one_graph():
    torch._dynamo.reset()
    config = _tiny()
    model = HiCMAEClassifier(config, 3).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    video, audio = small_inputs(config)
    with torch.no_grad():
        torch.testing.assert_close(compiled(video, audio), model(video, audio))


def test_preset_decoder_sizes():
    assert (ModelConfig.preset("tiny").decoder_dim, ModelConfig.preset("tiny").decoder_heads) == (128, 2)
    assert ModelConfig.preset("small").decoder_dim == 192 and ModelConfig.preset("base").decoder_dim == 384
    base = ModelConfig.preset("base")
    assert (base.num_video_tokens, base.num_video_masked, base.num_audio_tokens, base.num_audio_masked) == (800, 720, 128, 102)
