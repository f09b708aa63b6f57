"""Pretraining objectives: normalised-pixel reconstruction targets, masked MSE, hierarchical contrast."""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange

from hicmae.models.config import ModelConfig
from hicmae.models.pretrain import PretrainOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TARGET_EPS = 1e-6


def _normalise_tokens(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero mean, unit (unbiased) std along ``dim``; the eps is added to the std, as the original."""
    return (x - x.mean(dim=dim, keepdim=True)) / (x.var(dim=dim, unbiased=True, keepdim=True).sqrt() + TARGET_EPS)


def _keep_masked(tokens: torch.Tensor, mask: torch.Tensor, num_masked: int) -> torch.Tensor:
    """The masked tokens of each row, in ascending token order (as the decoders predict them)."""
    ids = torch.argsort((~mask).to(torch.int32), dim=1, stable=True)[:, :num_masked]
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


@functools.lru_cache(maxsize=None)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as float32 (1, 3, 1, 1, 1) tensors on ``device``, made once per device: a
    tensor from host values is a blocking copy to the GPU, i.e. a host sync, if made every step."""
    def table(values):
        return torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, 1, 1, 1)

    return table(IMAGENET_MEAN), table(IMAGENET_STD)


@torch.no_grad()
def video_target(video: torch.Tensor, mask: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Reconstruction target of the masked video tokens, ``(B, num_video_masked, video_patch_dim)``.

    Undo the ImageNet normalisation; cut tubes (pixel order frame, row, column, colour); normalise each
    token per colour channel; then, with ``frame_diff_target``, replace each later frame of a tube by its
    difference to the first (on the normalised values).
    """
    mean, std = _imagenet_stats(video.device)
    pixels = video.float() * std + mean
    p, t = config.patch_size, config.tubelet_size
    tokens = rearrange(pixels, "b c (t p0) (h p1) (w p2) -> b (t h w) p0 (p1 p2) c", p0=t, p1=p, p2=p)
    if config.normalize_target:
        b, n = tokens.shape[:2]
        tokens = _normalise_tokens(tokens.reshape(b, n, -1, 3), dim=2).reshape(tokens.shape)
    if config.frame_diff_target:
        tokens = torch.cat([tokens[:, :, :1], tokens[:, :, 1:] - tokens[:, :, :1]], dim=2)
    tokens = tokens.flatten(2)
    return _keep_masked(tokens, mask, config.num_video_masked)


@torch.no_grad()
def audio_target(audio: torch.Tensor, mask: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Target of the masked spectrogram patches, ``(B, num_audio_masked, patch**2)``, normalised per patch."""
    p = config.patch_size
    tokens = rearrange(audio.float(), "b c (t p1) (f p2) -> b (t f) (p1 p2 c)", p1=p, p2=p)
    if config.normalize_target:
        tokens = _normalise_tokens(tokens, dim=-1)
    return _keep_masked(tokens, mask, config.num_audio_masked)


def symmetric_info_nce(logits_video_to_audio: torch.Tensor, logits_audio_to_video: torch.Tensor,
                       targets: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the two cross-entropies; the positive of row i is column ``targets[i]`` (default i)."""
    if targets is None:
        targets = torch.arange(logits_video_to_audio.shape[0], device=logits_video_to_audio.device)
    return 0.5 * (F.cross_entropy(logits_video_to_audio.float(), targets)
                  + F.cross_entropy(logits_audio_to_video.float(), targets))


def _all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_gather  # differentiable: gradients flow back to each rank

    return torch.cat(all_gather(x.contiguous()), dim=0)


def hierarchical_contrastive_loss(outputs: PretrainOutput, temperature: float, gather: bool = False) -> torch.Tensor:
    """Sum over skip layers of the symmetric InfoNCE between pooled video and audio embeddings.

    By default (the original) negatives are the other clips of the local batch. With ``gather`` the
    embeddings of every process are gathered with gradients, so each local clip is contrasted against
    the global batch; under DDP's gradient averaging the loss and gradients then equal those of a single
    process holding the whole global batch.
    """
    if not (gather and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return sum(symmetric_info_nce(v2a, a2v)
                   for v2a, a2v in zip(outputs.logits_video_to_audio, outputs.logits_audio_to_video))
    rank, local = dist.get_rank(), outputs.video_embeddings[0].shape[0]
    targets = torch.arange(local, device=outputs.video_embeddings[0].device) + rank * local
    total = 0.0
    for video, audio in zip(outputs.video_embeddings, outputs.audio_embeddings):
        all_video, all_audio = _all_gather_with_grad(video), _all_gather_with_grad(audio)
        total = total + symmetric_info_nce(video @ all_audio.t() / temperature,
                                           audio @ all_video.t() / temperature, targets)
    return total


def pretrain_losses(outputs: PretrainOutput, video: torch.Tensor, audio: torch.Tensor, video_mask: torch.Tensor,
                    audio_mask: torch.Tensor, config: ModelConfig, contrastive_gather: bool = False
                    ) -> dict[str, torch.Tensor]:
    """``loss = mse_video + mse_audio + contrastive_weight * contrastive`` and its terms."""
    loss_video = F.mse_loss(outputs.pred_video.float(), video_target(video, video_mask, config))
    loss_audio = F.mse_loss(outputs.pred_audio.float(), audio_target(audio, audio_mask, config))
    loss_contrastive = hierarchical_contrastive_loss(outputs, config.contrastive_temperature, contrastive_gather)
    return {
        "loss": loss_video + loss_audio + config.contrastive_weight * loss_contrastive,
        "loss_video": loss_video,
        "loss_audio": loss_audio,
        "loss_contrastive": loss_contrastive,
    }
