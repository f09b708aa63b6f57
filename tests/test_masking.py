import torch

from hicmae.masking import pretrain_masks, random_mask, tube_mask
from hicmae.models import ModelConfig


def test_pretrain_masks_have_the_original_counts():
    video, audio = pretrain_masks(ModelConfig.preset("base"), batch=4)
    assert video.shape == (4, 800) and audio.shape == (4, 128)
    assert video.dtype == torch.bool and audio.dtype == torch.bool
    assert (video.sum(1) == 720).all() and (audio.sum(1) == 102).all()


def test_tube_mask_repeats_one_spatial_pattern_over_time():
    mask = tube_mask(8, 100, 90, batch=3)
    grid = mask.view(3, 8, 100)
    assert (grid == grid[:, :1]).all()
    assert not (grid[0, 0] == grid[1, 0]).all() or not (grid[0, 0] == grid[2, 0]).all()


def test_single_sample_masks_have_no_batch_dim():
    assert random_mask(128, 102).shape == (128,)
    assert tube_mask(8, 100, 90).shape == (800,)


def test_masks_are_reproducible_from_a_seed_and_vary_without_it():
    a = pretrain_masks(ModelConfig.preset("tiny"), batch=2, generator=torch.Generator().manual_seed(7))
    b = pretrain_masks(ModelConfig.preset("tiny"), batch=2, generator=torch.Generator().manual_seed(7))
    c = pretrain_masks(ModelConfig.preset("tiny"), batch=2, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_every_position_gets_masked_eventually():
    """Uniform: no position is systematically kept (a biased sampler would leave some never masked)."""
    counts = random_mask(16, 4, batch=2000, generator=torch.Generator().manual_seed(0)).sum(0).float()
    assert counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500
