"""OpenAI CLIP (ViT image tower + causal text transformer), written from the
architecture of Radford et al. 2021 with the state-dict names of OpenAI's
checkpoints:

  token_embedding.weight            [vocab, W]
  positional_embedding              [ctx, W]
  transformer.resblocks.{i}.{ln_1,attn.in_proj_weight,attn.in_proj_bias,
      attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}
  ln_final, text_projection [W, D], logit_scale []
  visual.{conv1 (no bias), class_embedding, positional_embedding, ln_pre,
      transformer.resblocks.*, ln_post, proj [Wv, D]}

Pre-LN blocks with QuickGELU MLPs; the text tower uses a causal mask and
pools at the first argmax of the token ids (EOT is the highest id). Tensors
are kept batch-first (NLD) here; the arithmetic is the same."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused input projection
    (in_proj_weight [3W, W]: rows q, k, v) and out_proj, the parameter
    layout of torch's MultiheadAttention that CLIP checkpoints use."""

    def __init__(self, width, heads):
        super().__init__()
        assert width % heads == 0, "width must divide into heads"
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, mask=None):
        n, l, w = x.shape
        hd = w // self.heads
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, l, self.heads, hd).transpose(1, 2) for t in (q, k, v))
        att = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-1, -2)
        if mask is not None:
            att = att + mask
        out = att.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(n, l, w))


class MLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x, mask=None):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])

    def forward(self, x, mask=None):
        for b in self.resblocks:
            x = b(x, mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, resolution, patch, width, layers, heads, out_dim):
        super().__init__()
        grid = resolution // patch
        s = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(s * torch.randn(width))
        self.positional_embedding = nn.Parameter(s * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(s * torch.randn(width, out_dim))

    def tokens(self, image):
        """Per-token transformer output [N, grid^2+1, W] (CLS first), before ln_post."""
        x = self.conv1(image).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.transformer(self.ln_pre(x))

    def forward(self, image):
        return self.ln_post(self.tokens(image)[:, 0]) @ self.proj


class CLIP(nn.Module):
    """cfg: OpenAI CLIP constructor arguments (embed_dim, image_resolution,
    vision_layers, vision_width, vision_patch_size, context_length,
    vocab_size, transformer_width, transformer_heads, transformer_layers),
    plus optional vision_heads (default vision_width // 64 as OpenAI)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        w = cfg["transformer_width"]
        vheads = cfg.get("vision_heads") or max(1, cfg["vision_width"] // 64)
        self.context_length = cfg["context_length"]
        self.visual = VisionTransformer(cfg["image_resolution"], cfg["vision_patch_size"],
                                        cfg["vision_width"], cfg["vision_layers"], vheads,
                                        cfg["embed_dim"])
        self.transformer = Transformer(w, cfg["transformer_layers"], cfg["transformer_heads"])
        self.token_embedding = nn.Embedding(cfg["vocab_size"], w)
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, w))
        self.ln_final = LayerNorm(w)
        self.text_projection = nn.Parameter(torch.empty(w, cfg["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        mask = torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self._init()

    def _init(self):
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for tr in (self.transformer, self.visual.transformer):
            n = len(tr.resblocks)
            proj_std = tr.width ** -0.5 * (2 * n) ** -0.5
            for b in tr.resblocks:
                nn.init.normal_(b.attn.in_proj_weight, std=tr.width ** -0.5)
                nn.init.zeros_(b.attn.out_proj.bias)
                nn.init.normal_(b.attn.out_proj.weight, std=proj_std)
                nn.init.normal_(b.mlp.c_fc.weight, std=(2 * tr.width) ** -0.5)
                nn.init.normal_(b.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    def encode_text_full(self, tokens):
        """(pooled [N, D], sequence after ln_final [N, ctx, W]): Karlo's
        CustomizedCLIP.encode_text."""
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, self.attn_mask))
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection
        return pooled, x

    def encode_text(self, tokens):
        return self.encode_text_full(tokens)[0]

    def encode_image(self, image):
        return self.visual(image)

    def forward(self, image, tokens):
        i = self.encode_image(image)
        t = self.encode_text(tokens)
        i = i / i.norm(dim=1, keepdim=True)
        t = t / t.norm(dim=1, keepdim=True)
        logits = self.logit_scale.exp() * i @ t.t()
        return logits, logits.t()


# OpenAI's preprocessing constants (clip._transform): pixels in [0,1], then
# (x - mean) / std per channel.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_images(u8):
    """uint8 [N, H, W, 3] (or float [N,3,H,W] in [0,1]) -> CLIP input [N, 3, H, W]."""
    if u8.dtype == torch.uint8:
        x = u8.permute(0, 3, 1, 2).float() / 255.0
    else:
        x = u8
    m = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
