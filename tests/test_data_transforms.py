"""Video transforms against a pipeline built directly from PIL + numpy, as the original runs them."""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hicmae.data import transforms as T

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def random_frames(t, h, w, seed=0):
    """Noise on top of a gradient: detail at every scale, so resampling filters show their differences."""
    rng = np.random.default_rng(seed)
    grad = np.linspace(0, 200, w)[None, None, :, None] + np.linspace(0, 50, h)[None, :, None, None]
    return np.clip(grad + rng.integers(0, 56, (t, h, w, 3)), 0, 255).astype(np.uint8)


def pil_reference(frames, size, box=None):
    """The original: PIL crop (left, top, right, bottom), PIL bilinear resize, ToTensor (/255), normalise."""
    out = []
    for f in frames:
        image = Image.fromarray(f)
        if box is not None:
            image = image.crop(box)
        x = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float64) / 255.0
        out.append((x - MEAN) / STD)
    return torch.from_numpy(np.stack(out)).permute(3, 0, 1, 2).float()  # (3, T, H, W)


def old_float_path(frames, size):
    """What the pipeline did before: float frames, torch antialiased bilinear."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)).permute(1, 0, 2, 3).float()


def test_pretrain_video_is_pil_crop_and_bilinear_resize():
    frames = random_frames(3, 224, 224)
    for seed in range(5):
        left, top, cw, ch = T.multi_scale_crop_box(224, 224, 160, np.random.default_rng(seed))
        expected = pil_reference(frames, 160, (left, top, left + cw, top + ch))
        got = T.pretrain_video(frames, 160, np.random.default_rng(seed))
        assert got.shape == (3, 3, 160, 160) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_finetune_eval_video_is_pil_bilinear_resize_to_a_square():
    frames = random_frames(2, 180, 224, seed=1)  # not square: the aspect is not kept
    got = T.finetune_eval_video(frames, 160)
    assert got.shape == (3, 2, 160, 160)
    torch.testing.assert_close(got, pil_reference(frames, 160), atol=1e-5, rtol=0)


def test_reference_tells_pil_from_the_float_resize():
    # The PIL path rounds to uint8 and filters differently: a 224 -> 160 downscale must differ visibly
    # from the float path, or the tests above could not catch a return to it.
    frames = random_frames(2, 224, 224, seed=2)
    diff = (T.finetune_eval_video(frames, 160) - old_float_path(frames, 160)).abs()
    assert diff.max() > 5e-3 and diff.mean() > 1e-3
