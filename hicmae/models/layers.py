"""Transformer building blocks of HiCMAE: attention, MLP, blocks, positional tables, patch embeddings.

Parameter names (``qkv``, ``q_bias``, ``v_bias``, ``cross_norm1`` ...) follow the original so that
released checkpoints map onto these modules without reshaping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sinusoidal table ``(1, num_positions, dim)``; even channels sin, odd cos (interleaved).

    Built in float64 and cast to float32, as the original does, so the values match bit for bit.
    """
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    exponent = 2 * torch.div(torch.arange(dim), 2, rounding_mode="floor").to(torch.float64) / dim
    angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    table = torch.empty(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.to(torch.float32).unsqueeze(0)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over ``(B, heads, N, d)`` tensors.

    ``fused`` uses ``scaled_dot_product_attention`` (flash / memory-efficient kernels where available);
    otherwise the original's explicit matmul and softmax, kept for comparison.
    """
    if fused:
        return F.scaled_dot_product_attention(q, k, v)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return attn.softmax(dim=-1) @ v


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-head self-attention with learned q and v biases and a fixed zero k bias (BEiT convention)."""

    def __init__(self, dim: int, num_heads: int, fused: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(_merge_heads(attend(qkv[0], qkv[1], qkv[2], self.fused)))


class CrossAttention(nn.Module):
    """Queries from ``x``, keys and values from ``context`` (of width ``context_dim``); zero k bias."""

    def __init__(self, dim: int, context_dim: int, num_heads: int, fused: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.fused = fused
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim, dim * 2, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = F.linear(x, self.q.weight, self.q_bias).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        kv_bias = torch.cat((torch.zeros_like(self.v_bias), self.v_bias))
        kv = F.linear(context, self.kv.weight, kv_bias)
        kv = kv.reshape(b, context.shape[1], 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(_merge_heads(attend(q, kv[0], kv[1], self.fused)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention then MLP, each with a residual and drop path."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6, fused_attn: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, fused=fused_attn)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossSelfBlock(Block):
    """Cross-attention to a context, then a self-attention :class:`Block` (the original's ``CSBlock``).

    The context is normalised inside the block by its own LayerNorm (``cross_norm2``).
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, norm_eps: float = 1e-6, fused_attn: bool = True):
        super().__init__(dim, num_heads, mlp_ratio, drop_path, norm_eps, fused_attn)
        self.cross_norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_norm2 = nn.LayerNorm(context_dim, eps=norm_eps)
        self.cross_attn = CrossAttention(dim, context_dim, num_heads, fused=fused_attn)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x + self.drop_path(self.cross_attn(self.cross_norm1(x), self.cross_norm2(context)))
        return super().forward(x)


def _row_index(ids: torch.Tensor) -> torch.Tensor:
    return torch.arange(ids.shape[0], device=ids.device).unsqueeze(1).expand_as(ids)


class VideoPatchEmbed(nn.Module):
    """Non-overlapping ``tubelet x patch x patch`` tubes → tokens in time-major order ``(B, N, dim)``.

    :meth:`embed_tokens` embeds only some token positions. A convolution whose stride equals its kernel is
    a linear map applied to each tube on its own, so embedding the kept tubes with the flattened kernel
    gives the same tokens as embedding every tube and keeping those (the sums differ only in float
    rounding order), at a tenth of the cost with the 90% tube mask.
    """

    def __init__(self, patch_size: int, tubelet_size: int, dim: int, in_chans: int = 3):
        super().__init__()
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)

    def grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        (pt, ph, pw), (_, _, t, h, w) = self.proj.kernel_size, x.shape
        return t // pt, h // ph, w // pw

    def embed_tokens(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Tokens at positions ``ids`` (B, n) only (time-major index ``t*h*w + row*w + col``) → (B, n, dim)."""
        (pt, ph, pw), (b, c, _, _, _) = self.proj.kernel_size, x.shape
        t, h, w = self.grid(x)
        tubes = x.view(b, c, t, pt, h, ph, w, pw)
        # Advanced indices split by slices move to the front: (B, n, C, pt, ph, pw), only the kept tubes read.
        tubes = tubes[_row_index(ids), :, ids // (h * w), :, (ids // w) % h, :, ids % w, :]
        return F.linear(tubes.reshape(*ids.shape, -1), self.proj.weight.flatten(1), self.proj.bias)


class AudioPatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` spectrogram patches → tokens ordered (time, frequency).

    :meth:`embed_tokens` embeds only some positions, as :class:`VideoPatchEmbed` does.
    """

    def __init__(self, patch_size: int, dim: int, in_chans: int = 1):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        (pt, pf), (_, _, t, f) = self.proj.kernel_size, x.shape
        return t // pt, f // pf

    def embed_tokens(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Tokens at positions ``ids`` (B, n) only (index ``t*f + freq``) → (B, n, dim)."""
        (pt, pf), (b, c, _, _) = self.proj.kernel_size, x.shape
        t, f = self.grid(x)
        patches = x.view(b, c, t, pt, f, pf)[_row_index(ids), :, ids // f, :, ids % f, :]  # (B, n, C, pt, pf)
        return F.linear(patches.reshape(*ids.shape, -1), self.proj.weight.flatten(1), self.proj.bias)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Linearly increasing stochastic-depth rates, ``linspace(0, rate, depth)`` as the original."""
    return [r.item() for r in torch.linspace(0, rate, depth)] if depth else []


def init_xavier_(module: nn.Module) -> None:
    """Xavier-uniform Linear weights with zero bias; LayerNorm weight 1, bias 0 (the original's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_trunc_normal_(module: nn.Module, std: float = 0.02) -> None:
    """timm's ViT init: truncated-normal Linear weights (bounds +-2), zero bias, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


