"""Karlo's diffusion prior: a causal transformer (PriorTransformer) that
predicts the normalised CLIP image embedding x0 from the text, written from
the architecture (Ramesh et al. 2022 sec. 2.1; Karlo's released prior).

Input sequence (length text_ctx + 4): projected text token features, the
projected pooled text embedding, the timestep embedding, the projected
noisy image embedding x_t, a learned query (prd_emb); plus a learned
positional embedding. Pre-LN blocks (GELU MLP) with a fused head-major QKV
projection, q and k each scaled by d^-1/4; additive causal mask plus a
key-padding mask from the text mask (the 4 extra positions always valid).
Optional final LayerNorm, then out_proj of the last position.

State-dict names (under the wrapper's 'model.' prefix): time_embed.{0,2},
text_enc_proj, text_emb_proj, clip_img_proj, out_proj, positional_embedding
[1, ctx+4, W], prd_emb [1, 1, W], final_ln,
transformer.resblocks.{i}.{ln_1, attn.c_qkv, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .nn_util import LayerNorm, timestep_embedding


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x, mask):
        n, l, w = x.shape
        d = w // self.heads
        # head-major fused layout: per head [q | k | v], each d wide
        qkv = self.c_qkv(x).view(n, l, self.heads, 3 * d)
        q, k, v = qkv.split(d, dim=-1)
        s = d ** -0.25
        att = torch.einsum("nthd,nshd->nhts", q * s, k * s)
        att = (att + mask[:, None]).softmax(dim=-1)
        out = torch.einsum("nhts,nshd->nthd", att, v).reshape(n, l, w)
        return self.c_proj(out)


class MLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm(width)

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])

    def forward(self, x, mask):
        for b in self.resblocks:
            x = b(x, mask)
        return x


class PriorTransformer(nn.Module):
    EXT = 4  # text emb, time emb, x_t, query

    def __init__(self, text_ctx, xf_width, xf_layers, xf_heads, xf_final_ln, clip_dim, **_):
        super().__init__()
        self.text_ctx, self.xf_width, self.clip_dim = text_ctx, xf_width, clip_dim
        w = xf_width
        self.time_embed = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.text_enc_proj = nn.Linear(clip_dim, w)
        self.text_emb_proj = nn.Linear(clip_dim, w)
        self.clip_img_proj = nn.Linear(clip_dim, w)
        self.out_proj = nn.Linear(w, clip_dim)
        self.transformer = Transformer(w, xf_layers, xf_heads)
        self.final_ln = LayerNorm(w) if xf_final_ln else None
        self.positional_embedding = nn.Parameter(torch.randn(1, text_ctx + self.EXT, w) * 0.01)
        self.prd_emb = nn.Parameter(torch.randn(1, 1, w) * 0.01)
        n = text_ctx + self.EXT
        self.register_buffer("causal_mask", torch.full((n, n), float("-inf")).triu_(1)[None], persistent=False)

    def forward(self, x, timesteps, text_emb, text_enc, mask):
        """x [N, D] normalised noisy embedding, timesteps [N] (0..999),
        text_emb [N, D], text_enc [N, ctx, W_clip], mask [N, ctx] bool
        (True = real token). Returns the x0 prediction [N, D]."""
        n = x.shape[0]
        mask = F.pad(mask, (0, self.EXT), value=True)
        seq = torch.cat([
            self.text_enc_proj(text_enc),
            self.text_emb_proj(text_emb)[:, None],
            self.time_embed(timestep_embedding(timesteps, self.xf_width))[:, None],
            self.clip_img_proj(x)[:, None],
            self.prd_emb.to(x.dtype).expand(n, -1, -1),
        ], dim=1) + self.positional_embedding
        pad = torch.zeros(mask.shape, dtype=seq.dtype, device=seq.device).masked_fill(~mask, float("-inf"))
        out = self.transformer(seq, pad[:, None, :] + self.causal_mask)
        if self.final_ln is not None:
            out = self.final_ln(out)
        return self.out_proj(out[:, -1])


class PriorDiffusionModel(nn.Module):
    """Holds the network under 'model.' (the checkpoint layout) and the
    embedding statistics (clip_mean, clip_std: exported as tensors of the
    prior file, not part of Karlo's state dict)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = PriorTransformer(**config["model"]["hparams"])
        d = config["model"]["hparams"]["clip_dim"]
        self.register_buffer("clip_mean", torch.zeros(d), persistent=False)
        self.register_buffer("clip_std", torch.ones(d), persistent=False)

    def guided(self, x, t, text_emb, text_enc, mask, scale):
        """Karlo's guided_model_fn: the first half of x is run with the
        conditional (first half) and unconditional (second half) text;
        out = uncond + s * (cond - uncond), duplicated over both halves."""
        half = x[: len(x) // 2]
        out = self.model(torch.cat([half, half]), t, text_emb, text_enc, mask)
        c, u = out.chunk(2)
        g = u + scale * (c - u)
        return torch.cat([g, g])

    def sample(self, diffusion, text_emb, text_enc, mask, scale, draw, trace=None):
        """Karlo's guided prior sample over diffusion's steps: rows as in
        guided (conditional text, then unconditional), x0 clamped to +-10 and
        not to [-1, 1]. Returns the normalised sample of every row (the first
        half are the guided draws); draw and trace as in sample_loop."""
        return diffusion.sample_loop(lambda x, t: self.guided(x, t, text_emb, text_enc, mask, scale),
                                     (text_emb.shape[0], self.model.clip_dim), draw, clip_denoised=False,
                                     denoised_fn=lambda x: x.clamp(-10, 10), trace=trace)
