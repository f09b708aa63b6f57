"""Unimodal ViT encoders and the cross-modal fusion encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hicmae.models.config import ModelConfig
from hicmae.models.layers import (AudioPatchEmbed, Block, CrossSelfBlock, VideoPatchEmbed, drop_path_rates,
                                  sinusoid_table)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` (B, n) of ``x`` (B, N, C) → (B, n, C)."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def run_block(block: nn.Module, use_checkpoint: bool, *args: torch.Tensor) -> torch.Tensor:
    """Call ``block``, trading compute for memory with activation checkpointing when asked and training."""
    if use_checkpoint and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


class Encoder(nn.Module):
    """A plain ViT over one modality: patch embedding, fixed sinusoidal positions, blocks, shared final norm.

    The same final LayerNorm normalises every layer output that is returned (the original's hierarchical
    features are taken after it).
    """

    def __init__(self, patch_embed: nn.Module, num_tokens: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, drop_path_rate: float, norm_eps: float, fused_attn: bool = True):
        super().__init__()
        self.patch_embed = patch_embed
        # A fixed table, recomputed from the sizes: not a parameter and never in a state_dict.
        self.register_buffer("pos_embed", sinusoid_table(num_tokens, dim), persistent=False)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, dpr, norm_eps, fused_attn) for dpr in drop_path_rates(drop_path_rate, depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.grad_checkpointing = False
        # With ``keep``: embed only the kept patches (True) or embed all, then keep some (the original's way).
        self.visible_patch_embed = True

    def embed(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embedding plus positions, of every token or only of the positions ``keep`` (B, n)."""
        if keep is None or not self.visible_patch_embed:
            x = self.patch_embed(x) + self.pos_embed.to(x.dtype)
            return x if keep is None else gather_tokens(x, keep)
        grid = self.patch_embed.grid(x)
        if math.prod(grid) != self.pos_embed.shape[1]:
            raise ValueError(f"input of shape {tuple(x.shape)} gives a token grid {grid}, "
                             f"not the {self.pos_embed.shape[1]} tokens this encoder was built for")
        pos = self.pos_embed.to(x.dtype).expand(x.shape[0], -1, -1)
        return self.patch_embed.embed_tokens(x, keep) + gather_tokens(pos, keep)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None,
                return_layers: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode ``x``; with ``keep`` (B, n) only those token positions are encoded (masked pretraining).

        Returns the normalised last-layer tokens and the normalised outputs of ``return_layers`` (0-based).
        """
        x = self.embed(x, keep)
        wanted = set(return_layers)
        layers = {}
        for i, block in enumerate(self.blocks):
            x = run_block(block, self.grad_checkpointing, x)
            if i in wanted:
                layers[i] = self.norm(x)
        return self.norm(x), [layers[i] for i in return_layers]


def video_encoder(config: ModelConfig, fused_attn: bool = True) -> Encoder:
    embed = VideoPatchEmbed(config.patch_size, config.tubelet_size, config.video_dim)
    return Encoder(embed, config.num_video_tokens, config.video_dim, config.encoder_depth, config.video_heads,
                   config.mlp_ratio, config.drop_path_rate, config.norm_eps, fused_attn)


def audio_encoder(config: ModelConfig, fused_attn: bool = True) -> Encoder:
    embed = AudioPatchEmbed(config.patch_size, config.audio_dim)
    return Encoder(embed, config.num_audio_tokens, config.audio_dim, config.encoder_depth, config.audio_heads,
                   config.mlp_ratio, config.drop_path_rate, config.norm_eps, fused_attn)


class FusionEncoder(nn.Module):
    """Cross-modal fusion: per layer, each stream cross-attends to the other's previous-layer tokens.

    Both streams are updated simultaneously from the previous layer's values (not one after the other).
    """

    def __init__(self, config: ModelConfig, fused_attn: bool = True):
        super().__init__()
        rates = drop_path_rates(config.drop_path_rate, config.fusion_depth)
        c = config
        self.video_blocks = nn.ModuleList(
            CrossSelfBlock(c.video_dim, c.audio_dim, c.fusion_heads, c.mlp_ratio, r, c.norm_eps, fused_attn) for r in rates)
        self.audio_blocks = nn.ModuleList(
            CrossSelfBlock(c.audio_dim, c.video_dim, c.fusion_heads, c.mlp_ratio, r, c.norm_eps, fused_attn) for r in rates)
        self.video_norm = nn.LayerNorm(c.video_dim, eps=c.norm_eps)
        self.audio_norm = nn.LayerNorm(c.audio_dim, eps=c.norm_eps)
        self.grad_checkpointing = False

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for video_block, audio_block in zip(self.video_blocks, self.audio_blocks):
            video, audio = (run_block(video_block, self.grad_checkpointing, video, audio),
                            run_block(audio_block, self.grad_checkpointing, audio, video))
        return self.video_norm(video), self.audio_norm(audio)
