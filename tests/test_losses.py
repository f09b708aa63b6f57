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


def test_contrastive_loss_is_low_for_aligned_pairs_and_high_for_shuffled():
    torch.manual_seed(0)
    model = HiCMAEPretrain(CONFIG)
    video = torch.randn(4, 3, 4, 32, 32)
    audio = torch.randn(4, 1, 32, 32)
    vm, am = pretrain_masks(CONFIG, batch=4)
    out = model(video, vm, audio, am)
    # Replace the embeddings by perfectly aligned ones: loss must be near its minimum.
    emb = F.normalize(torch.randn(4, 64), dim=-1)
    logits = emb @ emb.t() / 0.07
    out.logits_video_to_audio = (logits,) * 3
    out.logits_audio_to_video = (logits.t(),) * 3
    aligned = hierarchical_contrastive_loss(out, 0.07)
    shuffled = emb[[1, 2, 3, 0]]
    out.logits_video_to_audio = (emb @ shuffled.t() / 0.07,) * 3
    out.logits_audio_to_video = (shuffled @ emb.t() / 0.07,) * 3
    assert aligned < 0.5 < hierarchical_contrastive_loss(out, 0.07)


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
