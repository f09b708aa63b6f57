import torch
import torch.nn.functional as F

from hicmae.losses import audio_target, hierarchical_contrastive_loss, pretrain_losses, video_target
from hicmae.masking import pretrain_masks
from hicmae.models import HiCMAEPretrain, ModelConfig

CONFIG = ModelConfig(img_size=32, num_frames=4, video_dim=64, video_heads=2, audio_dim=64, audio_heads=2,
                     audio_size=(32, 32), encoder_depth=3, skip_layers=(0, 1, 2), fusion_heads=2, decoder_dim=32,
                     decoder_heads=2)


def test_video_target_is_frame_difference_of_normalised_patches():
    video = torch.randn(1, 3, 4, 32, 32)
    mask, _ = pretrain_masks(CONFIG, batch=1, generator=torch.Generator().manual_seed(0))
    target = video_target(video, mask, CONFIG)
    assert target.shape == (1, CONFIG.num_video_masked, 1536)
    plain = video_target(video, mask, CONFIG.replace(frame_diff_target=False))
    token = plain[0, 0].view(2, 256, 3)  # (frame, pixel, colour)
    # Each colour channel of each token is normalised to zero mean and unit (unbiased) std.
    assert torch.allclose(token.mean(dim=(0, 1)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(token.std(dim=(0, 1)), torch.ones(3), atol=1e-3)
    diff = target[0, 0].view(2, 256, 3)
    assert torch.allclose(diff[0], token[0]) and torch.allclose(diff[1], token[1] - token[0], atol=1e-6)


def test_targets_follow_the_mask_in_ascending_order():
    audio = torch.randn(2, 1, 32, 32)
    _, mask = pretrain_masks(CONFIG, batch=2, generator=torch.Generator().manual_seed(0))
    target = audio_target(audio, mask, CONFIG.replace(normalize_target=False))
    patches = audio.unfold(2, 16, 16).unfold(3, 16, 16).reshape(2, 4, 256)  # (t f) order, pixel order (p1 p2)
    for b in range(2):
        assert torch.equal(target[b], patches[b][mask[b]])


def _cross_entropy_diagonal(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log softmax(row)[i] at the row's own column i, written out."""
    log_probs = logits - logits.exp().sum(dim=1, keepdim=True).log()
    return -log_probs.diagonal().mean()


def test_contrastive_loss_uses_the_models_own_cosine_logits_and_trains_both_encoders():
    torch.manual_seed(0)
    model = HiCMAEPretrain(CONFIG)
    video, audio = torch.randn(4, 3, 4, 32, 32), torch.randn(4, 1, 32, 32)
    vm, am = pretrain_masks(CONFIG, batch=4)
    out = model(video, vm, audio, am)
    temperature = CONFIG.contrastive_temperature
    assert len(out.logits_video_to_audio) == len(out.logits_audio_to_video) == len(CONFIG.skip_layers)
    for v, a, v2a, a2v in zip(out.video_embeddings, out.audio_embeddings, out.logits_video_to_audio,
                              out.logits_audio_to_video):
        cosine = F.cosine_similarity(v[:, None], a[None], dim=-1)  # (video i, audio j)
        assert torch.allclose(v2a, cosine / temperature, atol=1e-4)
        assert torch.equal(a2v, v2a.t())
        assert v2a.abs().max() <= 1 / temperature + 1e-4
        assert v2a.std() > 0  # not a constant matrix
    expected = sum(0.5 * (_cross_entropy_diagonal(v2a) + _cross_entropy_diagonal(a2v))
                   for v2a, a2v in zip(out.logits_video_to_audio, out.logits_audio_to_video))
    loss = hierarchical_contrastive_loss(out, temperature)
    assert torch.allclose(loss, expected, atol=1e-5)

    loss.backward()
    for encoder in (model.video_encoder, model.audio_encoder):
        assert encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    # The contrast acts on the unimodal encoders only: fusion and decoders get no gradient from it.
    assert all(p.grad is None for p in model.fusion.parameters())
    assert all(p.grad is None for p in model.video_branch.parameters())


def test_total_loss_weights_terms_as_the_original():
    torch.manual_seed(0)
    model = HiCMAEPretrain(CONFIG)
    video, audio = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 1, 32, 32)
    vm, am = pretrain_masks(CONFIG, batch=2)
    losses = pretrain_losses(model(video, vm, audio, am), video, audio, vm, am, CONFIG)
    expected = losses["loss_video"] + losses["loss_audio"] + 0.0025 * losses["loss_contrastive"]
    assert torch.allclose(losses["loss"], expected)
    losses["loss"].backward()
    assert model.video_encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
