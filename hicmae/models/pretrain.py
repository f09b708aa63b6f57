"""The HiCMAE pretraining model: masked audio-visual autoencoding with hierarchical skips and contrast."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hicmae.models.config import ModelConfig
from hicmae.models.decoder import SkipDecoder
from hicmae.models.encoders import Encoder, FusionEncoder, audio_encoder, gather_tokens, video_encoder
from hicmae.models.layers import init_xavier_, sinusoid_table


@dataclass
class PretrainOutput:
    """What one pretraining forward pass produces.

    ``pred_*`` hold predictions for the masked tokens in ascending token order. The embeddings are the
    L2-normalised, mean-pooled visible tokens of each skip layer (unimodal, before fusion); the logits are
    their cosine similarities over the temperature, one (B, B) matrix per skip layer.
    """

    pred_video: torch.Tensor
    pred_audio: torch.Tensor
    video_embeddings: tuple[torch.Tensor, ...]
    audio_embeddings: tuple[torch.Tensor, ...]
    logits_video_to_audio: tuple[torch.Tensor, ...]
    logits_audio_to_video: tuple[torch.Tensor, ...]


def split_by_mask(mask: torch.Tensor, num_masked: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the visible then the masked tokens, each in ascending order, with static sizes."""
    ids = torch.argsort(mask.to(torch.int32), dim=1, stable=True)
    num_visible = mask.shape[1] - num_masked
    return ids[:, :num_visible], ids[:, num_visible:]


class MaskedDecoderBranch(nn.Module):
    """Projection to decoder width, mask token, decoder positions and the skip decoder of one modality."""

    def __init__(self, encoder_dim: int, num_tokens: int, out_dim: int, config: ModelConfig, fused_attn: bool):
        super().__init__()
        c = config
        self.to_decoder = nn.Linear(encoder_dim, c.decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        self.register_buffer("pos_embed", sinusoid_table(num_tokens, c.decoder_dim), persistent=False)
        self.decoder = SkipDecoder(c.decoder_dim, c.decoder_heads, c.decoder_depth, out_dim, c.mlp_ratio, c.norm_eps,
                                   fused_attn)

    def forward(self, fused: torch.Tensor, skips: list[torch.Tensor], visible_ids: torch.Tensor,
                masked_ids: torch.Tensor) -> torch.Tensor:
        pos = self.pos_embed.to(fused.dtype).expand(fused.shape[0], -1, -1)
        pos_visible = gather_tokens(pos, visible_ids)
        pos_masked = gather_tokens(pos, masked_ids)
        # The same projection serves the main input and every skip feature (the original shares it).
        visible = self.to_decoder(fused) + pos_visible
        skips = [self.to_decoder(s) + pos_visible for s in skips]
        tokens = torch.cat([visible, self.mask_token.to(fused.dtype) + pos_masked], dim=1)
        return self.decoder(tokens, skips, masked_ids.shape[1])


class HiCMAEPretrain(nn.Module):
    """Two masked encoders, a fusion encoder and two skip decoders (REFERENCE.md section 5).

    Args:
        config: the architecture; its mask ratios fix how many tokens every mask hides.
        fused_attn: attention through ``scaled_dot_product_attention`` (default) or explicit softmax.
        grad_checkpointing: recompute block activations in the backward pass to save memory.
        visible_patch_embed: embed only the visible patches (default; 10% of the video tubes, 20% of the
            spectrogram patches with the paper's masks) instead of embedding every patch and dropping the
            masked ones as the original does. The same linear map on the same patches, so the outputs agree
            to float rounding (tested against the original's fixtures and the embed-all path).
    """

    def __init__(self, config: ModelConfig, fused_attn: bool = True, grad_checkpointing: bool = False,
                 visible_patch_embed: bool = True):
        super().__init__()
        self.config = config
        self.video_encoder: Encoder = video_encoder(config, fused_attn)
        self.audio_encoder: Encoder = audio_encoder(config, fused_attn)
        self.fusion = FusionEncoder(config, fused_attn)
        self.video_branch = MaskedDecoderBranch(config.video_dim, config.num_video_tokens, config.video_patch_dim,
                                                config, fused_attn)
        self.audio_branch = MaskedDecoderBranch(config.audio_dim, config.num_audio_tokens, config.audio_patch_dim,
                                                config, fused_attn)
        self._init_weights()
        self.set_grad_checkpointing(grad_checkpointing)
        self.set_visible_patch_embed(visible_patch_embed)

    def set_visible_patch_embed(self, enable: bool = True) -> None:
        """Embed only the visible patches (True) or every patch, then keep the visible ones (the original)."""
        for encoder in (self.video_encoder, self.audio_encoder):
            encoder.visible_patch_embed = enable

    @classmethod
    def from_pretrained(cls, source: str, *, device: str | torch.device = "cpu", **kwargs) -> "HiCMAEPretrain":
        """Load a release file or folder, a Hugging Face Hub repo id (``user/name``; from the local cache
        with ``HF_HUB_OFFLINE=1``) or a training checkpoint, in eval mode; see :func:`hicmae.hub.load_pretrain`
        (which also returns the metadata). Imported here, so the models need neither it nor huggingface_hub."""
        from hicmae.hub import load_pretrain

        return load_pretrain(source, device=device, **kwargs)[0]

    def _init_weights(self) -> None:
        # As the original: Xavier for transformer Linears; patch embeddings and the encoder-to-decoder
        # projections keep PyTorch's default init; mask tokens truncated normal std 0.02 cut at +-0.02.
        for module in (self.video_encoder, self.audio_encoder, self.fusion,
                       self.video_branch.decoder, self.audio_branch.decoder):
            init_xavier_(module)
        for branch in (self.video_branch, self.audio_branch):
            nn.init.trunc_normal_(branch.mask_token, std=0.02, a=-0.02, b=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in (self.video_encoder, self.audio_encoder, self.fusion,
                       self.video_branch.decoder, self.audio_branch.decoder):
            module.grad_checkpointing = enable

    def _check_mask(self, mask: torch.Tensor, num_tokens: int, num_masked: int, name: str) -> None:
        if mask.dtype != torch.bool or mask.ndim != 2 or mask.shape[1] != num_tokens:
            raise ValueError(f"{name} must be a bool tensor (B, {num_tokens}), got {tuple(mask.shape)} {mask.dtype}")
        if torch.compiler.is_compiling():
            return
        message = f"every row of {name} must mask exactly {num_masked} tokens (from the config's mask ratio)"
        counts = mask.sum(dim=1)
        try:  # checked on the device, no host read: on a GPU a bad mask fails the kernel asynchronously
            torch._assert_async((counts == num_masked).all(), message)
        except RuntimeError:  # on the CPU it raises here
            raise ValueError(f"{message}, got counts {counts.tolist()}") from None

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor, audio: torch.Tensor,
                audio_mask: torch.Tensor) -> PretrainOutput:
        c = self.config
        self._check_mask(video_mask, c.num_video_tokens, c.num_video_masked, "video_mask")
        self._check_mask(audio_mask, c.num_audio_tokens, c.num_audio_masked, "audio_mask")
        video_visible, video_masked = split_by_mask(video_mask, c.num_video_masked)
        audio_visible, audio_masked = split_by_mask(audio_mask, c.num_audio_masked)

        video_tokens, video_skips = self.video_encoder(video, video_visible, c.skip_layers)
        audio_tokens, audio_skips = self.audio_encoder(audio, audio_visible, c.skip_layers)

        video_emb = tuple(F.normalize(s.mean(dim=1), dim=-1) for s in video_skips)
        audio_emb = tuple(F.normalize(s.mean(dim=1), dim=-1) for s in audio_skips)
        logits_v2a = tuple(v @ a.t() / c.contrastive_temperature for v, a in zip(video_emb, audio_emb))

        video_fused, audio_fused = self.fusion(video_tokens, audio_tokens)
        return PretrainOutput(
            pred_video=self.video_branch(video_fused, video_skips, video_visible, video_masked),
            pred_audio=self.audio_branch(audio_fused, audio_skips, audio_visible, audio_masked),
            video_embeddings=video_emb,
            audio_embeddings=audio_emb,
            logits_video_to_audio=logits_v2a,
            logits_audio_to_video=tuple(m.t() for m in logits_v2a),
        )
