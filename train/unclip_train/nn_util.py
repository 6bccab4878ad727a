"""Small building blocks shared by the Karlo-style models."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding [N, dim]: cos of t*f_i then sin of t*f_i,
    f_i = max_period^(-i/half), i < half = dim // 2 (zero-padded if odd)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32, optionally followed by
    SiLU (guided-diffusion's normalization(channels, swish))."""

    def __init__(self, channels, swish=0.0):
        super().__init__(32, channels)
        self.swish = swish

    def forward(self, x):
        y = super().forward(x.float()).to(x.dtype)
        if self.swish == 1.0:
            return F.silu(y)
        if self.swish:
            return y * torch.sigmoid(y * float(self.swish))
        return y


def zero_(module):
    for p in module.parameters():
        nn.init.zeros_(p)
    return module
