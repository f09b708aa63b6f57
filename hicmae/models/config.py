"""The architecture of a HiCMAE model, as one dataclass with named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hicmae.errors import ConfigError


@dataclass
class ModelConfig:
    """Every architectural choice of HiCMAE; defaults are the base model of the paper.

    Field names follow ``tests/fixtures/README.md`` so that an original configuration maps
    onto this class one to one.
    """

    # Inputs and tokenisation.
    img_size: int = 160
    num_frames: int = 16
    patch_size: int = 16
    tubelet_size: int = 2
    audio_size: tuple[int, int] = (256, 128)  # (time frames, mel bins)
    # Encoders (one per modality, same depth).
    video_dim: int = 512
    video_heads: int = 8
    audio_dim: int = 512
    audio_heads: int = 8
    encoder_depth: int = 10
    # 0-based encoder layers feeding the decoders' skip connections and the contrastive loss.
    skip_layers: tuple[int, ...] = (3, 6, 9)
    # Cross-modal fusion encoder.
    fusion_depth: int = 2
    fusion_heads: int = 8
    # Decoders (pretraining only); decoder_depth - 1 must equal len(skip_layers).
    decoder_dim: int = 384
    decoder_heads: int = 6
    decoder_depth: int = 4
    # Hierarchical cross-modal contrastive learning.
    contrastive_weight: float = 0.0025
    contrastive_temperature: float = 0.07
    # Masking (pretraining): fraction of video patches per frame and of audio patches hidden.
    video_mask_ratio: float = 0.9
    audio_mask_ratio: float = 0.8
    # Reconstruction targets.
    normalize_target: bool = True
    frame_diff_target: bool = True
    # Blocks.
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        self.audio_size = tuple(int(s) for s in self.audio_size)
        self.skip_layers = tuple(int(i) for i in self.skip_layers)
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def video_grid(self) -> tuple[int, int, int]:
        """Token grid (time, height, width) of the video."""
        side = self.img_size // self.patch_size
        return self.num_frames // self.tubelet_size, side, side

    @property
    def audio_grid(self) -> tuple[int, int]:
        """Token grid (time, frequency) of the spectrogram."""
        return self.audio_size[0] // self.patch_size, self.audio_size[1] // self.patch_size

    @property
    def num_video_tokens(self) -> int:
        t, h, w = self.video_grid
        return t * h * w

    @property
    def num_audio_tokens(self) -> int:
        t, f = self.audio_grid
        return t * f

    @property
    def num_video_masked(self) -> int:
        """Masked video tokens per clip: the same spatial pattern in every time slot."""
        t, h, w = self.video_grid
        return t * int(self.video_mask_ratio * h * w)

    @property
    def num_audio_masked(self) -> int:
        return int(self.audio_mask_ratio * self.num_audio_tokens)

    @property
    def video_patch_dim(self) -> int:
        """Values per video token in the reconstruction target (frames x pixels x colours)."""
        return self.tubelet_size * self.patch_size**2 * 3

    @property
    def audio_patch_dim(self) -> int:
        return self.patch_size**2

    @property
    def feature_dim(self) -> int:
        """Width of the classifier's fused feature: [video HFF, audio HFF, fused video, fused audio]."""
        return 2 * (self.video_dim + self.audio_dim)

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        """The paper's sizes: ``tiny`` (C=256), ``small`` (C=384) or ``base`` (C=512)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["audio_size"] = list(self.audio_size)
        d["skip_layers"] = list(self.skip_layers)
        return d

    def validate(self) -> None:
        problems = []
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_frames % self.tubelet_size:
            problems.append(f"num_frames {self.num_frames} is not a multiple of tubelet_size {self.tubelet_size}")
        if any(s % self.patch_size for s in self.audio_size):
            problems.append(f"audio_size {self.audio_size} is not a multiple of patch_size {self.patch_size}")
        for dim, heads, what in ((self.video_dim, self.video_heads, "video"), (self.audio_dim, self.audio_heads, "audio"),
                                 (self.decoder_dim, self.decoder_heads, "decoder")):
            if dim % heads:
                problems.append(f"{what} width {dim} is not divisible by its {heads} heads")
        if self.video_dim % self.fusion_heads or self.audio_dim % self.fusion_heads:
            problems.append(f"fusion_heads {self.fusion_heads} must divide video_dim and audio_dim")
        if len(self.skip_layers) != self.decoder_depth - 1:
            problems.append(f"decoder_depth - 1 ({self.decoder_depth - 1}) must equal the number of skip_layers "
                            f"({len(self.skip_layers)})")
        if any(not 0 <= i < self.encoder_depth for i in self.skip_layers):
            problems.append(f"skip_layers {self.skip_layers} must lie in [0, encoder_depth={self.encoder_depth})")
        if not (0.0 <= self.video_mask_ratio < 1.0 and 0.0 <= self.audio_mask_ratio < 1.0):
            problems.append("mask ratios must lie in [0, 1)")
        if problems:
            raise ConfigError("invalid ModelConfig: " + "; ".join(problems))


_ENCODER = dict(encoder_depth=10, fusion_depth=2, decoder_depth=4, skip_layers=(3, 6, 9))

PRESETS: dict[str, dict] = {
    # The original repository has no tiny pretraining model; its decoder size (128 wide, 2 heads) is ours.
    "tiny": dict(video_dim=256, video_heads=4, audio_dim=256, audio_heads=4, fusion_heads=4,
                 decoder_dim=128, decoder_heads=2, **_ENCODER),
    "small": dict(video_dim=384, video_heads=6, audio_dim=384, audio_heads=6, fusion_heads=6,
                  decoder_dim=192, decoder_heads=3, **_ENCODER),
    "base": dict(video_dim=512, video_heads=8, audio_dim=512, audio_heads=8, fusion_heads=8,
                 decoder_dim=384, decoder_heads=6, **_ENCODER),
}
