"""The guided-diffusion UNet in Karlo's two variants, written from the
architecture (Dhariwal & Nichol 2021; GLIDE; Karlo's decoder and improved
SR models):

  PLMImUNet          64px-decoder style: time embedding + CLIP image
                     embedding (clip_emb) + pooled text (text_feat_proj)
                     added to the timestep embedding; attention blocks at
                     chosen resolutions attend to encoder tokens: clip_emb_mult
                     tokens projected from the image embedding (clip_tok_proj)
                     followed by the projected text sequence (text_seq_proj);
                     cf_param replaces the image embedding for guidance.
  SuperResUNetModel  no attention, no conditioning but time; input is
                     cat[x_t, low_res] on channels.

Names follow the checkpoints: time_embed.{0,2}, input_blocks.{i}.{j},
middle_block.{j}, output_blocks.{i}.{j}, out.{0,2}; ResBlock: in_layers.{0,2},
emb_layers.1, out_layers.{0,3}, skip_connection; AttentionBlock: norm, qkv,
encoder_kv, proj_out (1-D convolutions)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .nn_util import GroupNorm32, LayerNorm, timestep_embedding, zero_


class ResBlock(nn.Module):
    def __init__(self, ch, emb_ch, dropout, out_ch=None, scale_shift=False, up=False, down=False):
        super().__init__()
        out_ch = out_ch or ch
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(GroupNorm32(ch, swish=1.0), nn.Identity(),
                                       nn.Conv2d(ch, out_ch, 3, padding=1))
        self.up, self.down = up, down
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(GroupNorm32(out_ch, swish=0.0 if scale_shift else 1.0),
                                        nn.SiLU() if scale_shift else nn.Identity(),
                                        nn.Dropout(dropout),
                                        zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def _resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2, 2)
        return x

    def forward(self, x, emb):
        if self.up or self.down:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self._resample(h))
            x = self._resample(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention whose keys/values are prefixed by encoder
    tokens. qkv channels are head-major ([q k v] per head); encoder_kv
    likewise ([k v] per head). q and k are each scaled by ch^-1/4."""

    def __init__(self, ch, num_heads=1, num_head_channels=-1, encoder_channels=None):
        super().__init__()
        self.heads = num_heads if num_head_channels == -1 else ch // num_head_channels
        self.norm = GroupNorm32(ch, swish=0.0)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, 2 * ch, 1)
        self.proj_out = zero_(nn.Conv1d(ch, ch, 1))

    def forward(self, x, enc=None, mask=None):
        b, c, hh, ww = x.shape
        n = hh * ww
        d = c // self.heads
        qkv = self.qkv(self.norm(x).reshape(b, c, n)).reshape(b * self.heads, 3 * d, n)
        q, k, v = qkv.split(d, dim=1)
        if enc is not None:
            ek, ev = self.encoder_kv(enc).reshape(b * self.heads, 2 * d, -1).split(d, dim=1)
            k = torch.cat([ek, k], dim=-1)
            v = torch.cat([ev, v], dim=-1)
        s = d ** -0.25
        w = torch.einsum("bct,bcs->bts", q * s, k * s)
        if mask is not None:
            m = F.pad(mask, (0, n), value=0.0)  # encoder tokens first, then pixels
            w = w + m[:, None].expand(-1, self.heads, -1).reshape(b * self.heads, 1, -1)
        a = torch.einsum("bts,bcs->bct", w.softmax(dim=-1), v)
        return x + self.proj_out(a.reshape(b, c, n)).reshape(b, c, hh, ww)


class Seq(nn.ModuleList):
    """TimestepEmbedSequential: passes emb to ResBlocks, encoder tokens and
    mask to AttentionBlocks."""

    def forward(self, x, emb, enc=None, mask=None):
        for m in self:
            if isinstance(m, ResBlock):
                x = m(x, emb)
            elif isinstance(m, AttentionBlock):
                x = m(x, enc, mask)
            else:
                x = m(x)
        return x


class UNetModel(nn.Module):
    def __init__(self, in_channels, model_channels, out_channels, num_res_blocks,
                 attention_resolutions, dropout=0.0, channel_mult=(1, 2, 4, 8), clip_dim=None,
                 num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
                 use_scale_shift_norm=False, use_middle_attention=True, resblock_updown=True,
                 encoder_channels=None):
        super().__init__()
        assert resblock_updown, "only resblock_updown=True (Karlo's setting) is implemented"
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.model_channels = model_channels
        self.clip_dim = clip_dim
        emb_ch = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        if clip_dim is not None:
            self.clip_emb = nn.Linear(clip_dim, emb_ch)

        def res(ci, co=None, **kw):
            return ResBlock(ci, emb_ch, dropout, co, use_scale_shift_norm, **kw)

        def attn(c, heads):
            return AttentionBlock(c, heads, num_head_channels, encoder_channels)

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([Seq([nn.Conv2d(in_channels, ch, 3, padding=1)])])
        chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(Seq([res(ch, ch, down=True)]))
                chans.append(ch)
                ds *= 2
        mid = [res(ch)] + ([attn(ch, num_heads)] if use_middle_attention else []) + [res(ch)]
        self.middle_block = Seq(mid)
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True))
                    ds //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(GroupNorm32(ch, swish=1.0), nn.Identity(),
                                 zero_(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def run(self, h, emb, enc=None, mask=None):
        hs = []
        for m in self.input_blocks:
            h = m(h, emb, enc, mask)
            hs.append(h)
        h = self.middle_block(h, emb, enc, mask)
        for m in self.output_blocks:
            h = m(torch.cat([h, hs.pop()], dim=1), emb, enc, mask)
        return self.out(h)


class SuperResUNetModel(UNetModel):
    """in_channels counts the image only; the network sees 2x (x_t and low_res)."""

    def __init__(self, in_channels=3, **kw):
        super().__init__(in_channels=2 * in_channels, **kw)

    def forward(self, x, timesteps, low_res):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        return self.run(torch.cat([x, low_res], dim=1), emb)


class PLMImUNet(UNetModel):
    def __init__(self, text_ctx, xf_width, clip_emb_mult, clip_emb_drop=0.0, **kw):
        super().__init__(encoder_channels=xf_width or None, **kw)
        self.text_ctx, self.xf_width, self.clip_emb_mult = text_ctx, xf_width, clip_emb_mult
        d = self.clip_dim
        self.text_seq_proj = nn.Sequential(nn.Linear(d, xf_width), LayerNorm(xf_width))
        self.text_feat_proj = nn.Linear(d, 4 * self.model_channels)
        self.clip_tok_proj = nn.Linear(d, xf_width * clip_emb_mult)
        if clip_emb_drop > 0:
            self.cf_param = nn.Parameter(torch.randn(d) * 0.02)

    def forward(self, x, timesteps, txt_feat, txt_feat_seq, mask, y):
        """x [N,3,H,W], timesteps [N] (0..999), txt_feat [N,D], txt_feat_seq
        [N,ctx,W_clip], mask [N,ctx] bool (True = real token), y [N,D] image
        embedding (or cf_param rows)."""
        n = x.shape[0]
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        emb = emb + self.clip_emb(y) + self.text_feat_proj(txt_feat)
        # clip tokens: [N, xf_width * mult] viewed as [N, xf_width, mult]
        enc = torch.cat([self.clip_tok_proj(y).reshape(n, -1, self.clip_emb_mult),
                         self.text_seq_proj(txt_feat_seq).permute(0, 2, 1)], dim=2)
        mask = F.pad(mask, (self.clip_emb_mult, 0), value=True)
        add = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, float("-inf"))
        return self.run(x, emb, enc, add)


def decoder_unet(h):
    """PLMImUNet from Karlo's t2i-decoder hparams (channel_mult and
    attention_resolutions as comma strings, image_size = 2^(levels+2))."""
    size = h["image_size"]
    mult = tuple(int(c) for c in h["channel_mult"].split(","))
    assert 2 ** (len(mult) + 2) == size, "channel_mult levels do not fit image_size"
    att = tuple(size // int(r) for r in str(h["attention_resolutions"]).split(","))
    return PLMImUNet(text_ctx=h["text_ctx"], xf_width=h["xf_width"], clip_emb_mult=h["clip_emb_mult"],
                     clip_emb_drop=h["clip_emb_drop"], in_channels=3, model_channels=h["num_channels"],
                     out_channels=6 if h["learn_sigma"] else 3, num_res_blocks=h["num_res_blocks"],
                     attention_resolutions=att, dropout=h["dropout"], channel_mult=mult,
                     num_heads=h["num_heads"], num_head_channels=h["num_head_channels"],
                     num_heads_upsample=h["num_heads_upsample"],
                     use_scale_shift_norm=h["use_scale_shift_norm"],
                     resblock_updown=h["resblock_updown"], clip_dim=h["clip_dim"])


def sr_unet(h):
    """SuperResUNetModel from Karlo's improved_sr_64_256 hparams."""
    return SuperResUNetModel(in_channels=3, model_channels=h["channels"], out_channels=3,
                             num_res_blocks=h["depth"], attention_resolutions=(),
                             dropout=h["dropout"], channel_mult=tuple(h["channels_multiple"]),
                             resblock_updown=True, use_middle_attention=False)


class Text2ImProgressiveModel(nn.Module):
    """Checkpoint layout of the decoder: the UNet under 'model.'."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = decoder_unet(config["model"]["hparams"])

    def guided(self, x, t, txt_feat, txt_feat_seq, mask, y, scale):
        """Karlo's guided_model_fn: CFG on the eps channels only; the
        variance channels pass through from both halves."""
        half = x[: len(x) // 2]
        out = self.model(torch.cat([half, half]), t, txt_feat, txt_feat_seq, mask, y)
        eps, rest = out[:, :3], out[:, 3:]
        c, u = eps.chunk(2)
        g = u + scale * (c - u)
        return torch.cat([torch.cat([g, g]), rest], dim=1)


class ImprovedSupRes64to256ProgressiveModel(nn.Module):
    """Checkpoint layout of the upsampler: two UNets, model_first_steps (all
    steps but the last) and model_last_step (t_spaced = 0)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        h = config["model"]["hparams"]
        self.model_first_steps = sr_unet(h)
        self.model_last_step = sr_unet(h)
