"""The HiCMAE fine-tuning model: hierarchical feature fusion over full (unmasked) encoders."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hicmae.errors import ConfigError
from hicmae.models.config import ModelConfig
from hicmae.models.encoders import FusionEncoder, audio_encoder, video_encoder
from hicmae.models.layers import init_trunc_normal_, init_xavier_

MODALITIES = ("video", "audio")
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


class HiCMAEClassifier(nn.Module):
    """Encoders (and fusion, with both modalities) plus a linear head on the fused feature.

    With both modalities the feature is ``fc_norm([video HFF, audio HFF, fused video, fused audio])``
    (width ``4C``), where HFF is a softmax-weighted average over all encoder layers of the mean-pooled,
    normalised tokens. With one modality (not in the original code; the authors' suggestion in their issue
    #15) the feature is that modality's HFF alone (width ``C``) and no fusion encoder is built.

    Args:
        config: the architecture (``drop_path_rate`` 0.1 is the original fine-tuning recipe).
        num_classes: outputs of the head (classes, labels or regression dimensions); 0 for no head.
        modalities: ``("video", "audio")``, ``("video",)`` or ``("audio",)``.
        head_activation: optional ``"sigmoid" | "relu" | "tanh"`` after the head (off in the original recipes).
        fused_attn, grad_checkpointing: as in :class:`~hicmae.models.HiCMAEPretrain`.
    """

    def __init__(self, config: ModelConfig, num_classes: int, modalities: Sequence[str] = MODALITIES,
                 head_activation: str | None = None, fused_attn: bool = True, grad_checkpointing: bool = False):
        super().__init__()
        modalities = tuple(modalities)
        if not modalities or any(m not in MODALITIES for m in modalities) or len(set(modalities)) != len(modalities):
            raise ConfigError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}")
        if head_activation is not None and head_activation not in _ACTIVATIONS:
            raise ConfigError(f"head_activation must be one of {sorted(_ACTIVATIONS)} or None, got {head_activation!r}")
        self.config = config
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        depth = config.encoder_depth
        self.video_encoder = video_encoder(config, fused_attn) if "video" in self.modalities else None
        self.audio_encoder = audio_encoder(config, fused_attn) if "audio" in self.modalities else None
        self.fusion = FusionEncoder(config, fused_attn) if len(self.modalities) == 2 else None
        if self.video_encoder is not None:
            self.video_layer_weights = nn.Parameter(torch.ones(depth) / depth)
        if self.audio_encoder is not None:
            self.audio_layer_weights = nn.Parameter(torch.ones(depth) / depth)
        self.feature_dim = (config.feature_dim if self.fusion is not None
                            else config.video_dim if self.video_encoder is not None else config.audio_dim)
        self.fc_norm = nn.LayerNorm(self.feature_dim, eps=config.norm_eps)
        self.head = nn.Linear(self.feature_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_activation = _ACTIVATIONS[head_activation]() if head_activation else nn.Identity()
        self.num_classes = num_classes
        self._init_weights()
        self.set_grad_checkpointing(grad_checkpointing)

    @classmethod
    def from_pretrained(cls, source: str, *, device: str | torch.device = "cpu", **kwargs) -> "HiCMAEClassifier":
        """Load a release file or folder, a Hugging Face Hub repo id (``user/name``; from the local cache
        with ``HF_HUB_OFFLINE=1``) or a training checkpoint, in eval mode; see :func:`hicmae.hub.load_classifier`
        (which also returns the metadata). Imported here, so the models need neither it nor huggingface_hub."""
        from hicmae.hub import load_classifier

        return load_classifier(source, device=device, **kwargs)[0]

    def _init_weights(self) -> None:
        # As the original before loading weights: timm ViT init for the encoders, Xavier for the fusion
        # encoder, PyTorch defaults for fc_norm and head.
        for encoder in (self.video_encoder, self.audio_encoder):
            if encoder is not None:
                init_trunc_normal_(encoder)
        if self.fusion is not None:
            init_xavier_(self.fusion)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in (self.video_encoder, self.audio_encoder, self.fusion):
            if module is not None:
                module.grad_checkpointing = enable

    @staticmethod
    def _hierarchical_feature(layers: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        pooled = torch.stack([layer.mean(dim=1) for layer in layers], dim=1)  # (B, L, C)
        return (pooled * weights.softmax(dim=0).to(pooled.dtype).view(1, -1, 1)).sum(dim=1)

    def forward_features(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised fused feature (B, feature_dim). An input of an unused modality is ignored."""
        all_layers = range(self.config.encoder_depth)
        features, last = [], {}
        for name, encoder, x in (("video", self.video_encoder, video), ("audio", self.audio_encoder, audio)):
            if encoder is None:
                continue
            if x is None:
                raise ValueError(f"this classifier uses modalities {self.modalities}: pass {name}=...")
            _, layers = encoder(x, return_layers=all_layers)
            features.append(self._hierarchical_feature(layers, getattr(self, f"{name}_layer_weights")))
            last[name] = layers[-1]
        if self.fusion is not None:
            fused_video, fused_audio = self.fusion(last["video"], last["audio"])
            features += [fused_video.mean(dim=1), fused_audio.mean(dim=1)]
        return self.fc_norm(torch.cat(features, dim=-1))

    def forward(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> torch.Tensor:
        return self.head_activation(self.head(self.forward_features(video, audio)))
