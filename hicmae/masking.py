"""Pretraining masks: tube masking for video, random masking for audio.

Masks are boolean with True = masked. Every mask of one kind hides the same number of tokens, which
the encoders rely on to gather visible tokens with a reshape (static shapes, ``torch.compile``-able).
"""

from __future__ import annotations

import torch

from hicmae.models.config import ModelConfig


def random_mask(num_tokens: int, num_masked: int, *, batch: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Hide ``num_masked`` of ``num_tokens`` positions uniformly at random, independently per row.

    Returns ``(num_tokens,)`` or, with ``batch``, ``(batch, num_tokens)``, on the generator's device.
    """
    if not 0 <= num_masked <= num_tokens:
        raise ValueError(f"cannot mask {num_masked} of {num_tokens} tokens")
    rows = 1 if batch is None else batch
    device = generator.device if generator is not None else None
    order = torch.rand(rows, num_tokens, generator=generator, device=device).argsort(dim=1)
    mask = torch.zeros(rows, num_tokens, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :num_masked], True)
    return mask[0] if batch is None else mask


def tube_mask(time_slots: int, patches_per_slot: int, num_masked_per_slot: int, *, batch: int | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One random spatial pattern repeated over every time slot (VideoMAE's tube masking).

    Token order is time-major (index = t * patches_per_slot + p), as the patch embedding produces.
    """
    spatial = random_mask(patches_per_slot, num_masked_per_slot, batch=batch, generator=generator)
    return spatial.unsqueeze(-2).expand(*spatial.shape[:-1], time_slots, patches_per_slot).flatten(-2)


def pretrain_masks(config: ModelConfig, *, batch: int | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (video_mask, audio_mask) pair one pretraining sample (or batch) needs under ``config``."""
    t, h, w = config.video_grid
    video = tube_mask(t, h * w, int(config.video_mask_ratio * h * w), batch=batch, generator=generator)
    audio = random_mask(config.num_audio_tokens, config.num_audio_masked, batch=batch, generator=generator)
    return video, audio
