"""Pretraining decoder with hierarchical skip connections to the encoder."""

from __future__ import annotations

import torch
from torch import nn

from hicmae.models.encoders import run_block
from hicmae.models.layers import Block, CrossSelfBlock


class SkipDecoder(nn.Module):
    """Block 1 self-attends; block k (k >= 2) first cross-attends to skip feature ``skips[-(k-1)]``.

    With skips from encoder layers (4, 7, 10), block 2 sees layer 10, block 3 layer 7, block 4 layer 4
    (U-Net order). Only the last ``num_predicted`` tokens (the masked ones) are normalised and predicted.
    """

    def __init__(self, dim: int, num_heads: int, depth: int, out_dim: int, mlp_ratio: float, norm_eps: float,
                 fused_attn: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(
            [Block(dim, num_heads, mlp_ratio, 0.0, norm_eps, fused_attn)]
            + [CrossSelfBlock(dim, dim, num_heads, mlp_ratio, 0.0, norm_eps, fused_attn) for _ in range(depth - 1)])
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, out_dim)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], num_predicted: int) -> torch.Tensor:
        x = run_block(self.blocks[0], self.grad_checkpointing, x)
        for block, skip in zip(self.blocks[1:], reversed(skips)):
            x = run_block(block, self.grad_checkpointing, x, skip)
        return self.head(self.norm(x[:, -num_predicted:]))
