"""Turn pretraining predictions back into pixels and spectrograms, for the reconstruction images.

The decoders predict *normalised* patches (and, for video, frame differences within a tube). To show
them, each predicted patch is un-normalised with the mean and std of the true patch (as VideoMAE's
visualisation does), the frame difference is undone, and the patches are put back in place.
"""

from __future__ import annotations

import torch
from einops import rearrange

from hicmae.losses import IMAGENET_MEAN, IMAGENET_STD, TARGET_EPS
from hicmae.models import ModelConfig


def _stats(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=dim, keepdim=True), x.var(dim=dim, unbiased=True, keepdim=True).sqrt() + TARGET_EPS


@torch.no_grad()
def reconstruct_video(video: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, config: ModelConfig
                      ) -> dict[str, torch.Tensor]:
    """One clip: ``video (3, T, H, W)`` normalised, ``mask (N,)``, ``pred (num_masked, patch_dim)``.

    Returns ``target``, ``masked`` (hidden patches grey) and ``reconstruction`` as ``(T, H, W, 3)`` in [0, 1].
    """
    p, t = config.patch_size, config.tubelet_size
    _, frames, height, width = video.shape
    mean = video.new_tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = video.new_tensor(IMAGENET_STD).view(3, 1, 1, 1)
    pixels = video.float() * std + mean  # un-clamped: the target's statistics
    tokens = rearrange(pixels, "c (t p0) (h p1) (w p2) -> (t h w) p0 (p1 p2) c", p0=t, p1=p, p2=p)
    masked_ids = torch.nonzero(mask, as_tuple=True)[0]  # ascending, as the decoder predicts them
    guess = pred.float().reshape(len(masked_ids), t, p * p, 3)
    if config.frame_diff_target:
        guess = torch.cat([guess[:, :1], guess[:, 1:] + guess[:, :1]], dim=1)
    if config.normalize_target:
        true = tokens[masked_ids].reshape(len(masked_ids), -1, 3)
        m, s = _stats(true, dim=1)
        guess = (guess.reshape(len(masked_ids), -1, 3) * s + m).reshape(guess.shape)
    recon = tokens.clone()
    recon[masked_ids] = guess
    hidden = tokens.clone()
    hidden[masked_ids] = 0.5

    def image(x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "(t h w) p0 (p1 p2) c -> (t p0) (h p1) (w p2) c", t=frames // t, h=height // p,
                         w=width // p, p0=t, p1=p, p2=p)

    return {"target": image(tokens).clamp(0, 1), "masked": image(hidden).clamp(0, 1),
            "reconstruction": image(recon).clamp(0, 1)}


@torch.no_grad()
def reconstruct_audio(audio: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, config: ModelConfig
                      ) -> dict[str, torch.Tensor]:
    """One clip: ``audio (1, time, mel)``; returns ``(time, mel)`` maps (hidden patches at the minimum)."""
    p = config.patch_size
    time, mel = audio.shape[-2:]
    tokens = rearrange(audio.float(), "c (t p1) (f p2) -> (t f) (p1 p2 c)", p1=p, p2=p)
    masked_ids = torch.nonzero(mask, as_tuple=True)[0]
    guess = pred.float()
    if config.normalize_target:
        m, s = _stats(tokens[masked_ids], dim=-1)
        guess = guess * s + m
    recon = tokens.clone()
    recon[masked_ids] = guess
    hidden = tokens.clone()
    hidden[masked_ids] = tokens.min()

    def image(x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "(t f) (p1 p2) -> (t p1) (f p2)", t=time // p, f=mel // p, p1=p, p2=p)

    return {"target": image(tokens), "masked": image(hidden), "reconstruction": image(recon)}
