/* unet.c - see unet.h. In order: the layer table and its loader (one walk
 * of UNetModel.__init__ that binds or lists the tensors), the workspace
 * plan, resampling, the blocks, the forward. The kernels are nn/'s:
 * convolution (conv.h), GroupNorm fused with FiLM and SiLU (norm.h), GEMM
 * and softmax (ops.h). */
#include "libcommon/models/unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/nn/ops.h"
#include "libcommon/nn/bf16.h"
#include "libcommon/nn/conv.h"
#include "libcommon/nn/norm.h"
#include "libcommon/models/walk.h"

#define GN_GROUPS 32
#define GN_EPS 1e-5
/* Largest workspace a shape may ask for (the sizes come from model files). */

enum { L_RES, L_ATTN, L_DOWN, L_UP };

typedef struct {
    const float *in_norm_w, *in_norm_b;   /* in_layers.0: [cin], [cin] */
    uc_wref in_conv_w;                    /* in_layers.2: [cout, cin, 3, 3] */
    const float *in_conv_b;               /* [cout] */
    uc_wref emb_w;                        /* emb_layers.1: [cout * (1 + ss), E] */
    const float *emb_b;                   /* [cout * (1 + ss)] */
    const float *out_norm_w, *out_norm_b; /* out_layers.0: [cout], [cout] */
    uc_wref out_conv_w;                   /* out_layers.3: [cout, cout, 3, 3] */
    const float *out_conv_b;              /* [cout] */
    uc_wref skip_w;                       /* skip_connection: [cout, cin, 1, 1]; none: identity */
    const float *skip_b;                  /* [cout]; NULL: identity */
    uc_winograd_slot *in_slot, *out_slot; /* the convolutions' Winograd transforms */
} resblock;

typedef struct {
    const float *norm_w, *norm_b; /* norm: [c], [c] */
    uc_wref qkv_w, ekv_w, proj_w; /* qkv [3c, c, 1]; encoder_kv [2c, enc, 1] (none without text); proj_out [c, c, 1] */
    const float *qkv_b, *ekv_b, *proj_b; /* [3c], [2c] (NULL without text), [c] */
    int heads;
} attnblock;

typedef struct {
    int kind;   /* L_RES, L_ATTN, L_DOWN, L_UP */
    int updown; /* L_RES: -1 down-sampling, +1 up-sampling, 0 neither */
    int cin, cout;
    int ds;   /* downsample factor of the layer's input */
    int pop;  /* first layer of an output block: its input is cat[h, skip] (cin counts both) */
    int push; /* last layer of an input block: its output is kept as a skip */
    resblock res;
    attnblock attn;
    uc_wref rs_w;             /* L_DOWN op / L_UP conv: [c, c, 3, 3]; none: pool / plain nearest */
    const float *rs_b;        /* [c]; NULL: pool / plain nearest */
    uc_winograd_slot *rs_slot;
} layer;

struct uc_unet {
    uc_unet_config cfg;
    int64_t E;                            /* time embedding width, 4C */
    int ch0;                              /* mult[0] * C: conv_in output, conv_out input */
    uc_wref te0_w, te2_w;                 /* time_embed.0: [E, C]; time_embed.2: [E, E] */
    const float *te0_b, *te2_b;           /* [E], [E] */
    uc_wref conv_in_w;                    /* input_blocks.0.0: [ch0, in, 3, 3] */
    const float *conv_in_b;               /* [ch0] */
    const float *out_norm_w, *out_norm_b; /* out.0: [ch0], [ch0] */
    uc_wref out_conv_w;                   /* out.2: [out, ch0, 3, 3] */
    const float *out_conv_b;              /* [out] */
    uc_winograd_slot *conv_in_slot, *out_conv_slot;
    layer *layers;
    int nlayers;
    uc_winograd_slot **slots; /* every slot, to free */
    int nslots;
};

struct uc_unet_ws {
    uc_unet_config cfg; /* the config it was sized for */
    int64_t B, H, W, L;
    float *act[4];      /* activation buffers, [C, B, h, w] each, act_n floats */
    int64_t act_n;
    float *hs;          /* skip stack, all pushed activations back to back */
    int64_t *hs_off;    /* per pushed activation: offset in hs */
    float *col;         /* convolution scratch: im2col tile or Winograd transforms */
    int64_t col_n;
    float *qkv, *ekv, *scores; /* attention: [3c, B*T], [2c, B*L], [T, L + T] */
    float *emb_act, *emb_out;  /* SiLU(emb) [B, E]; emb_layers output [B, 2 * cmax] */
    float *te, *te_hid;        /* time embedding: sinusoids [B, C], hidden [B, E] */
};

void uc_unet_config_default(uc_unet_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->num_heads = 1;
    cfg->num_head_channels = -1;
    cfg->num_heads_upsample = -1;
    cfg->conv_resample = 1;
    cfg->use_middle_attention = 1;
}

const uc_unet_config *uc_unet_cfg(const uc_unet *u) { return &u->cfg; }
int64_t uc_unet_emb_dim(const uc_unet *u) { return u->E; }
int64_t uc_unet_stride(const uc_unet *u) { return (int64_t)1 << (u->cfg.nlevels - 1); }

/* ---- building the layer table ---------------------------------------- */

#define D1 UC_D1
#define D2 UC_D2
#define D3 UC_D3
#define D4 UC_D4

static int has_attn(const uc_unet_config *c, int ds)
{
    for (int i = 0; i < c->nattn; i++)
        if (c->attn_ds[i] == ds)
            return 1;
    return 0;
}

/* A Winograd slot of u's (a 3x3 convolution's transform cache). */
static uc_winograd_slot *new_slot(uc_unet *u)
{
    u->slots = uc_xrealloc(u->slots, (size_t)u->nslots + 1, sizeof *u->slots);
    return u->slots[u->nslots++] = uc_alloc(1, sizeof(uc_winograd_slot));
}

static layer *add_layer(uc_unet *u, int kind, int cin, int cout, int ds)
{
    u->layers = uc_xrealloc(u->layers, (size_t)u->nlayers + 1, sizeof *u->layers);
    layer *l = &u->layers[u->nlayers++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->cin = cin;
    l->cout = cout;
    l->ds = ds;
    return l;
}

static void load_res(uc_unet *u, uc_walk *ld, layer *l, const char *at)
{
    int64_t ci = l->cin, co = l->cout, ne = co * (u->cfg.use_scale_shift_norm ? 2 : 1);
    resblock *r = &l->res;
    r->in_norm_w = uc_walk_tensor(ld, D1(ci), "%s.in_layers.0.weight", at);
    r->in_norm_b = uc_walk_tensor(ld, D1(ci), "%s.in_layers.0.bias", at);
    r->in_conv_w = uc_walk_weight(ld, D4(co, ci, 3, 3), "%s.in_layers.2.weight", at);
    r->in_conv_b = uc_walk_tensor(ld, D1(co), "%s.in_layers.2.bias", at);
    r->emb_w = uc_walk_weight(ld, D2(ne, u->E), "%s.emb_layers.1.weight", at);
    r->emb_b = uc_walk_tensor(ld, D1(ne), "%s.emb_layers.1.bias", at);
    r->out_norm_w = uc_walk_tensor(ld, D1(co), "%s.out_layers.0.weight", at);
    r->out_norm_b = uc_walk_tensor(ld, D1(co), "%s.out_layers.0.bias", at);
    r->out_conv_w = uc_walk_weight(ld, D4(co, co, 3, 3), "%s.out_layers.3.weight", at);
    r->out_conv_b = uc_walk_tensor(ld, D1(co), "%s.out_layers.3.bias", at);
    r->in_slot = new_slot(u);
    r->out_slot = new_slot(u);
    if (ci != co) {
        r->skip_w = uc_walk_weight(ld, D4(co, ci, 1, 1), "%s.skip_connection.weight", at);
        r->skip_b = uc_walk_tensor(ld, D1(co), "%s.skip_connection.bias", at);
    }
}

static int load_attn(uc_unet *u, uc_walk *ld, layer *l, int heads, const char *at)
{
    int64_t c = l->cin, enc = u->cfg.encoder_channels;
    attnblock *a = &l->attn;
    if (u->cfg.num_head_channels != -1) {
        if (u->cfg.num_head_channels <= 0 || c % u->cfg.num_head_channels)
            return uc_err("%s: %lld channels are not a multiple of num_head_channels %d", at, (long long)c,
                          u->cfg.num_head_channels);
        heads = (int)(c / u->cfg.num_head_channels);
    }
    if (heads <= 0 || c % heads)
        return uc_err("%s: %lld channels cannot be split into %d heads", at, (long long)c, heads);
    a->heads = heads;
    a->norm_w = uc_walk_tensor(ld, D1(c), "%s.norm.weight", at);
    a->norm_b = uc_walk_tensor(ld, D1(c), "%s.norm.bias", at);
    a->qkv_w = uc_walk_weight(ld, D3(3 * c, c, 1), "%s.qkv.weight", at);
    a->qkv_b = uc_walk_tensor(ld, D1(3 * c), "%s.qkv.bias", at);
    if (enc > 0) {
        a->ekv_w = uc_walk_weight(ld, D3(2 * c, enc, 1), "%s.encoder_kv.weight", at);
        a->ekv_b = uc_walk_tensor(ld, D1(2 * c), "%s.encoder_kv.bias", at);
    }
    a->proj_w = uc_walk_weight(ld, D3(c, c, 1), "%s.proj_out.weight", at);
    a->proj_b = uc_walk_tensor(ld, D1(c), "%s.proj_out.bias", at);
    return 0;
}

static int check_config(const uc_unet_config *c)
{
    if (c->in_channels < 1 || c->in_channels > 64 || c->out_channels < 1 || c->out_channels > 64)
        return uc_err("unet config: in/out channels %d/%d out of range", c->in_channels, c->out_channels);
    if (c->model_channels < 1 || c->model_channels > 16384)
        return uc_err("unet config: model_channels %d out of range", c->model_channels);
    if (c->num_res_blocks < 0 || c->num_res_blocks > 64)
        return uc_err("unet config: num_res_blocks %d out of range", c->num_res_blocks);
    if (c->nlevels < 1 || c->nlevels > UC_UNET_MAXLEVEL)
        return uc_err("unet config: %d levels (channel_mult) out of range 1..%d", c->nlevels, UC_UNET_MAXLEVEL);
    for (int i = 0; i < c->nlevels; i++) {
        int64_t ch = (int64_t)c->channel_mult[i] * c->model_channels;
        if (c->channel_mult[i] < 1 || ch > 65536)
            return uc_err("unet config: channel_mult[%d] = %d out of range", i, c->channel_mult[i]);
        if (ch % GN_GROUPS)
            return uc_err("unet config: %lld channels at level %d are not a multiple of %d groups", (long long)ch,
                          i, GN_GROUPS);
    }
    if (c->nattn < 0 || c->nattn > (int)UC_COUNT(c->attn_ds))
        return uc_err("unet config: too many attention resolutions");
    if (c->encoder_channels < 0 || c->encoder_channels > 65536)
        return uc_err("unet config: encoder_channels %d out of range", c->encoder_channels);
    return 0;
}

uc_unet *uc_unet_load(st_file *f, const char *prefix, const uc_unet_config *cfg)
{
    uc_walk w = {.f = f, .prefix = prefix};
    return uc_unet_walk(&w, cfg);
}

int uc_unet_tensors(const uc_unet_config *cfg, const char *prefix, uc_tensor_fn fn, void *ctx)
{
    uc_walk w = {.fn = fn, .ctx = ctx, .prefix = prefix};
    uc_unet *u = uc_unet_walk(&w, cfg);
    uc_unet_free(u);
    return u ? 0 : w.rc ? w.rc : -1;
}

/* The layer table, in the order of UNetModel.__init__. */
uc_unet *uc_unet_walk(uc_walk *ld, const uc_unet_config *cfg)
{
    if (check_config(cfg))
        return NULL;
    uc_unet *u = uc_alloc(1, sizeof *u);
    u->cfg = *cfg;
    const uc_unet_config *c = &u->cfg;
    int64_t C = c->model_channels;
    u->E = 4 * C;
    char at[64];
    int heads_up = c->num_heads_upsample == -1 ? c->num_heads : c->num_heads_upsample;

    u->te0_w = uc_walk_weight(ld, D2(u->E, C), "time_embed.0.weight");
    u->te0_b = uc_walk_tensor(ld, D1(u->E), "time_embed.0.bias");
    u->te2_w = uc_walk_weight(ld, D2(u->E, u->E), "time_embed.2.weight");
    u->te2_b = uc_walk_tensor(ld, D1(u->E), "time_embed.2.bias");

    int ch = c->channel_mult[0] * c->model_channels;
    u->ch0 = ch;
    u->conv_in_w = uc_walk_weight(ld, D4(ch, c->in_channels, 3, 3), "input_blocks.0.0.weight");
    u->conv_in_b = uc_walk_tensor(ld, D1(ch), "input_blocks.0.0.bias");
    u->conv_in_slot = new_slot(u);
    int chans[UC_UNET_MAXLEVEL * 66], nchans = 0, ds = 1, blk = 1;
    chans[nchans++] = ch;
    for (int lv = 0; lv < c->nlevels && !ld->rc; lv++) {
        int mch = c->channel_mult[lv] * c->model_channels;
        for (int r = 0; r < c->num_res_blocks; r++, blk++) {
            layer *l = add_layer(u, L_RES, ch, mch, ds);
            snprintf(at, sizeof at, "input_blocks.%d.0", blk);
            load_res(u, ld, l, at);
            ch = mch;
            if (has_attn(c, ds)) {
                l = add_layer(u, L_ATTN, ch, ch, ds);
                snprintf(at, sizeof at, "input_blocks.%d.1", blk);
                if (load_attn(u, ld, l, c->num_heads, at))
                    goto fail;
            }
            l->push = 1;
            chans[nchans++] = ch;
        }
        if (lv != c->nlevels - 1) {
            layer *l;
            if (c->resblock_updown) {
                l = add_layer(u, L_RES, ch, ch, ds);
                l->updown = -1;
                snprintf(at, sizeof at, "input_blocks.%d.0", blk);
                load_res(u, ld, l, at);
            } else {
                l = add_layer(u, L_DOWN, ch, ch, ds);
                if (c->conv_resample) {
                    l->rs_w = uc_walk_weight(ld, D4(ch, ch, 3, 3), "input_blocks.%d.0.op.weight", blk);
                    l->rs_b = uc_walk_tensor(ld, D1(ch), "input_blocks.%d.0.op.bias", blk);
                    l->rs_slot = new_slot(u);
                }
            }
            l->push = 1;
            chans[nchans++] = ch;
            ds *= 2;
            blk++;
        }
    }

    layer *l = add_layer(u, L_RES, ch, ch, ds);
    load_res(u, ld, l, "middle_block.0");
    int mid = 1;
    if (c->use_middle_attention) {
        l = add_layer(u, L_ATTN, ch, ch, ds);
        if (load_attn(u, ld, l, c->num_heads, "middle_block.1"))
            goto fail;
        mid = 2;
    }
    l = add_layer(u, L_RES, ch, ch, ds);
    snprintf(at, sizeof at, "middle_block.%d", mid);
    load_res(u, ld, l, at);

    blk = 0;
    for (int lv = c->nlevels - 1; lv >= 0 && !ld->rc; lv--) {
        int mch = c->channel_mult[lv] * c->model_channels;
        for (int i = 0; i <= c->num_res_blocks; i++, blk++) {
            int ich = chans[--nchans];
            l = add_layer(u, L_RES, ch + ich, mch, ds);
            l->pop = 1;
            snprintf(at, sizeof at, "output_blocks.%d.0", blk);
            load_res(u, ld, l, at);
            ch = mch;
            int j = 1;
            if (has_attn(c, ds)) {
                l = add_layer(u, L_ATTN, ch, ch, ds);
                snprintf(at, sizeof at, "output_blocks.%d.1", blk);
                if (load_attn(u, ld, l, heads_up, at))
                    goto fail;
                j = 2;
            }
            if (lv && i == c->num_res_blocks) {
                if (c->resblock_updown) {
                    l = add_layer(u, L_RES, ch, ch, ds);
                    l->updown = 1;
                    snprintf(at, sizeof at, "output_blocks.%d.%d", blk, j);
                    load_res(u, ld, l, at);
                } else {
                    l = add_layer(u, L_UP, ch, ch, ds);
                    if (c->conv_resample) {
                        l->rs_w = uc_walk_weight(ld, D4(ch, ch, 3, 3), "output_blocks.%d.%d.conv.weight", blk, j);
                        l->rs_b = uc_walk_tensor(ld, D1(ch), "output_blocks.%d.%d.conv.bias", blk, j);
                        l->rs_slot = new_slot(u);
                    }
                }
                ds /= 2;
            }
        }
    }
    u->out_norm_w = uc_walk_tensor(ld, D1(ch), "out.0.weight");
    u->out_norm_b = uc_walk_tensor(ld, D1(ch), "out.0.bias");
    u->out_conv_w = uc_walk_weight(ld, D4(c->out_channels, u->ch0, 3, 3), "out.2.weight");
    u->out_conv_b = uc_walk_tensor(ld, D1(c->out_channels), "out.2.bias");
    u->out_conv_slot = new_slot(u);
    if (ld->rc)
        goto fail;
    return u;
fail:
    uc_unet_free(u);
    return NULL;
}

void uc_unet_drop_transforms(uc_unet *u)
{
    for (int i = 0; i < u->nslots; i++)
        uc_winograd_slot_free(u->slots[i]);
}

void uc_unet_free(uc_unet *u)
{
    if (!u)
        return;
    uc_unet_drop_transforms(u);
    for (int i = 0; i < u->nslots; i++)
        uc_free(u->slots[i]);
    uc_free(u->slots);
    uc_free(u->layers);
    uc_free(u);
}

/* ---- workspace plan --------------------------------------------------- */

typedef struct {
    int64_t act, hs, npush, col, qkv, ekv, scores, cmax;
    double flops, done; /* direct count; multiplications done (Winograd's fewer) */
} plan;

static void plan_conv(plan *p, int64_t B, int64_t cin, int64_t cout, int k, int stride, int64_t ho, int64_t wo)
{
    double direct = 2.0 * (double)cout * (double)cin * k * k * (double)(B * ho * wo);
    p->flops += direct;
    p->done += uc_conv2d_winograd(k, stride, B, cin, ho, wo)
                   ? 2.0 * 36 * (double)cout * (double)cin * (double)(B * ((ho + 3) / 4) * ((wo + 3) / 4))
                   : direct;
    p->col = UC_MAX(p->col, uc_conv2d_scratch(B, cin, cout, k, stride, ho, wo));
}

static void make_plan(const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L, plan *p)
{
    const uc_unet_config *c = &u->cfg;
    memset(p, 0, sizeof *p);
    int64_t hw = H * W;
    p->act = B * hw * UC_MAX(c->in_channels, UC_MAX(c->out_channels, u->ch0));
    plan_conv(p, B, c->in_channels, u->ch0, 3, 1, H, W);
    p->hs = (int64_t)u->ch0 * B * hw;
    p->npush = 1;
    p->cmax = u->ch0;
    for (int i = 0; i < u->nlayers; i++) {
        const layer *l = &u->layers[i];
        int64_t h = H / l->ds, w = W / l->ds, ho = h, wo = w;
        if ((l->kind == L_RES && l->updown > 0) || l->kind == L_UP)
            ho *= 2, wo *= 2;
        if ((l->kind == L_RES && l->updown < 0) || l->kind == L_DOWN)
            ho /= 2, wo /= 2;
        int64_t big = UC_MAX(h * w, ho * wo);
        p->act = UC_MAX(p->act, B * big * UC_MAX(l->cin, l->cout));
        p->cmax = UC_MAX(p->cmax, UC_MAX(l->cin, l->cout));
        if (l->kind == L_RES) {
            plan_conv(p, B, l->cin, l->cout, 3, 1, ho, wo);
            plan_conv(p, B, l->cout, l->cout, 3, 1, ho, wo);
            if (l->res.skip_b)
                plan_conv(p, B, l->cin, l->cout, 1, 1, ho, wo);
        } else if (l->kind == L_ATTN) {
            int64_t cc = l->cin, T = h * w;
            p->qkv = UC_MAX(p->qkv, 3 * cc * B * T);
            p->ekv = UC_MAX(p->ekv, 2 * cc * B * L);
            p->scores = UC_MAX(p->scores, T * (L + T));
            plan_conv(p, B, cc, 3 * cc, 1, 1, h, w);
            plan_conv(p, B, cc, cc, 1, 1, h, w);
            double att = 4.0 * (double)B * cc * (double)T * (double)(L + T);
            if (c->encoder_channels > 0)
                att += 2.0 * (double)(2 * cc) * c->encoder_channels * (double)(B * L);
            p->flops += att;
            p->done += att;
        } else if (l->rs_b) {
            plan_conv(p, B, l->cin, l->cout, 3, l->kind == L_DOWN ? 2 : 1, ho, wo);
        }
        if (l->push) {
            p->hs += (int64_t)l->cout * B * ho * wo;
            p->npush++;
        }
    }
    plan_conv(p, B, u->ch0, c->out_channels, 3, 1, H, W);
    /* time embedding MLP and the emb_layers are negligible */
}

/* What uc_unet_ws_new allocates for plan p. */
static double ws_bytes(const uc_unet *u, const plan *p, int64_t B)
{
    double floats = 4.0 * (double)p->act + (double)p->hs + (double)p->col + (double)p->qkv + (double)p->ekv +
                    (double)p->scores + (double)B * (2.0 * (double)u->E + 2.0 * (double)p->cmax +
                                                       (double)u->cfg.model_channels);
    return floats * sizeof(float) + (double)(p->npush + 1) * sizeof(int64_t);
}

double uc_unet_ws_bytes(const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L)
{
    plan p;
    make_plan(u, B, H, W, L, &p);
    return ws_bytes(u, &p, B);
}

double uc_unet_flops(const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L)
{
    plan p;
    make_plan(u, B, H, W, L, &p);
    return p.flops;
}

double uc_unet_flops_done(const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L)
{
    plan p;
    make_plan(u, B, H, W, L, &p);
    return p.done;
}

uc_unet_ws *uc_unet_ws_new(const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L)
{
    int64_t s = uc_unet_stride(u);
    if (B < 1 || B > 4096 || H < 1 || W < 1 || H > 16384 || W > 16384 || L < 0 || L > 65536) {
        uc_err("unet: shape %lldx%lldx%lld with %lld tokens out of range", (long long)B, (long long)H,
               (long long)W, (long long)L);
        return NULL;
    }
    if (H % s || W % s) {
        uc_err("unet: image %lldx%lld is not a multiple of %lld (the model has %d levels)", (long long)H,
               (long long)W, (long long)s, u->cfg.nlevels);
        return NULL;
    }
    if ((u->cfg.encoder_channels > 0) != (L > 0)) {
        uc_err("unet: %s", L > 0 ? "text tokens given to a model without encoder_kv" : "model needs text tokens");
        return NULL;
    }
    plan p;
    make_plan(u, B, H, W, L, &p);
    char what[96];
    snprintf(what, sizeof what, "unet: %lld images of %lldx%lld", (long long)B, (long long)H, (long long)W);
    if (uc_mem_fits(what, ws_bytes(u, &p, B)))
        return NULL;
    uc_unet_ws *ws = uc_alloc(1, sizeof *ws);
    ws->cfg = u->cfg;
    ws->B = B, ws->H = H, ws->W = W, ws->L = L;
    ws->act_n = p.act;
    for (int i = 0; i < 4; i++)
        ws->act[i] = uc_alloc((size_t)p.act, sizeof(float));
    ws->hs = uc_alloc((size_t)p.hs, sizeof(float));
    ws->hs_off = uc_alloc((size_t)p.npush + 1, sizeof(int64_t));
    ws->col_n = p.col;
    ws->col = uc_alloc((size_t)p.col + 1, sizeof(float));
    ws->qkv = uc_alloc((size_t)p.qkv + 1, sizeof(float));
    ws->ekv = uc_alloc((size_t)p.ekv + 1, sizeof(float));
    ws->scores = uc_alloc((size_t)p.scores + 1, sizeof(float));
    ws->emb_act = uc_alloc((size_t)(B * u->E), sizeof(float));
    ws->emb_out = uc_alloc((size_t)(B * 2 * p.cmax), sizeof(float));
    ws->te = uc_alloc((size_t)(B * u->cfg.model_channels), sizeof(float));
    ws->te_hid = uc_alloc((size_t)(B * u->E), sizeof(float));
    return ws;
}

int uc_unet_ws_fits(const uc_unet_ws *ws, const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L)
{
    return ws && !memcmp(&ws->cfg, &u->cfg, sizeof ws->cfg) && ws->B == B && ws->H == H && ws->W == W &&
           ws->L == L;
}

void uc_unet_ws_free(uc_unet_ws *ws)
{
    if (!ws)
        return;
    for (int i = 0; i < 4; i++)
        uc_free(ws->act[i]);
    uc_free(ws->hs);
    uc_free(ws->hs_off);
    uc_free(ws->col);
    uc_free(ws->qkv);
    uc_free(ws->ekv);
    uc_free(ws->scores);
    uc_free(ws->emb_act);
    uc_free(ws->emb_out);
    uc_free(ws->te);
    uc_free(ws->te_hid);
    uc_free(ws);
}

/* ---- kernels ------------------------------------------------------------ */

static void conv2d(uc_unet_ws *ws, const float *x, int64_t cin, int64_t h, int64_t w, uc_wref wgt,
                   uc_winograd_slot *slot, const float *bias, int64_t cout, int k, int stride, float *y, int accumulate)
{
    uc_conv2d_w(x, ws->B, cin, h, w, wgt, bias, cout, k, stride, y, accumulate, ws->col, ws->col_n, slot);
}

/* 2x nearest up-sampling (dir > 0) or 2x2 average pooling (dir < 0) of
 * x[C, B*h, w] (planes = C * B). */
static void resample(const float *x, float *y, int64_t planes, int64_t h, int64_t w, int dir)
{
    for (int64_t p = 0; p < planes; p++) {
        const float *s = x + p * h * w;
        if (dir > 0) {
            float *d = y + p * 4 * h * w;
            for (int64_t i = 0; i < 2 * h; i++)
                for (int64_t j = 0; j < 2 * w; j++)
                    d[i * 2 * w + j] = s[(i / 2) * w + j / 2];
        } else {
            float *d = y + p * (h / 2) * (w / 2);
            for (int64_t i = 0; i < h / 2; i++)
                for (int64_t j = 0; j < w / 2; j++) {
                    const float *a = s + 2 * i * w + 2 * j;
                    d[i * (w / 2) + j] = (a[0] + a[1] + a[w] + a[w + 1]) / 4.0f;
                }
        }
    }
}

/* ---- blocks ----------------------------------------------------------- */

/* ResBlock on act[xi] (input at the layer's ds) with act[ti], act[tj] and
 * act[ri] free; the output lands in act[tj]. */
static void resblock_fwd(const uc_unet *u, uc_unet_ws *ws, const layer *l, int xi, int ti, int tj, int ri)
{
    const resblock *r = &l->res;
    int64_t B = ws->B, h = ws->H / l->ds, w = ws->W / l->ds, ho = h, wo = w;
    if (l->updown > 0)
        ho *= 2, wo *= 2;
    else if (l->updown < 0)
        ho /= 2, wo /= 2;
    float *x = ws->act[xi], *t1 = ws->act[ti], *t2 = ws->act[tj], *res = ws->act[ri];
    int ss = u->cfg.use_scale_shift_norm;

    /* in_layers: norm + SiLU, [resample h and x], conv */
    uc_group_norm(x, t1, l->cin, B, h * w, GN_GROUPS, GN_EPS, r->in_norm_w, r->in_norm_b, NULL, 1);
    const float *hin = t1, *xs = x;
    if (l->updown) {
        resample(t1, t2, l->cin * B, h, w, l->updown);
        resample(x, t1, l->cin * B, h, w, l->updown);
        hin = t2, xs = t1;
    }
    conv2d(ws, hin, l->cin, ho, wo, r->in_conv_w, r->in_slot, r->in_conv_b, l->cout, 3, 1, res, 0);

    /* the time embedding: FiLM inside the out norm, or added before it */
    int64_t ne = l->cout * (ss ? 2 : 1), n = ho * wo;
    uc_linear_w(ws->emb_out, ws->emb_act, r->emb_w, r->emb_b, B, u->E, ne);
    if (ss) {
        uc_group_norm(res, res, l->cout, B, n, GN_GROUPS, GN_EPS, r->out_norm_w, r->out_norm_b, ws->emb_out, 1);
    } else {
        for (int64_t c = 0; c < l->cout; c++)
            for (int64_t b = 0; b < B; b++) {
                float *p = res + (c * B + b) * n, e = ws->emb_out[b * ne + c];
                for (int64_t i = 0; i < n; i++)
                    p[i] += e;
            }
        uc_group_norm(res, res, l->cout, B, n, GN_GROUPS, GN_EPS, r->out_norm_w, r->out_norm_b, NULL, 1);
    }
    /* out conv into t2 (free: hin is consumed), plus the skip connection */
    conv2d(ws, res, l->cout, ho, wo, r->out_conv_w, r->out_slot, r->out_conv_b, l->cout, 3, 1, t2, 0);
    if (r->skip_b)
        conv2d(ws, xs, l->cin, ho, wo, r->skip_w, NULL, r->skip_b, l->cout, 1, 1, t2, 1);
    else
        uc_add(t2, xs, l->cout * B * n);
}

/* AttentionBlock in place on x[c, B, T]; tmp is a free activation buffer. */
static void attn_fwd(const uc_unet *u, uc_unet_ws *ws, const layer *l, float *x, float *tmp, const float *enc,
                     const float *mask)
{
    const attnblock *a = &l->attn;
    int64_t B = ws->B, L = ws->L, c = l->cin, T = (ws->H / l->ds) * (ws->W / l->ds), BT = B * T, BL = B * L;
    int64_t heads = a->heads, ch = c / heads, S = L + T;
    float scale = (float)(1.0 / sqrt(sqrt((double)ch)));

    uc_group_norm(x, tmp, c, B, T, GN_GROUPS, GN_EPS, a->norm_w, a->norm_b, NULL, 0);
    for (int64_t o = 0; o < 3 * c; o++)
        for (int64_t j = 0; j < BT; j++)
            ws->qkv[o * BT + j] = a->qkv_b[o];
    uc_gemm_w(3 * c, BT, c, a->qkv_w, c, tmp, BT, 1, 1.0f, ws->qkv, BT);
    /* q and k are each scaled by ch^-1/4 (rows h*3ch .. h*3ch+2ch) */
    for (int64_t hd = 0; hd < heads; hd++)
        for (int64_t j = 0; j < 2 * ch * BT; j++)
            ws->qkv[hd * 3 * ch * BT + j] *= scale;
    if (L > 0) {
        int64_t ec = u->cfg.encoder_channels;
        for (int64_t o = 0; o < 2 * c; o++)
            for (int64_t j = 0; j < BL; j++)
                ws->ekv[o * BL + j] = a->ekv_b[o];
        uc_gemm_w(2 * c, BL, ec, a->ekv_w, ec, enc, BL, 1, 1.0f, ws->ekv, BL);
        for (int64_t hd = 0; hd < heads; hd++)
            for (int64_t j = 0; j < ch * BL; j++)
                ws->ekv[hd * 2 * ch * BL + j] *= scale;
    }
    float *att = tmp; /* [c, B*T]: head hd writes rows hd*ch .. */
    for (int64_t b = 0; b < B; b++)
        for (int64_t hd = 0; hd < heads; hd++) {
            const float *q = ws->qkv + hd * 3 * ch * BT + b * T, *k = q + ch * BT, *v = q + 2 * ch * BT;
            float *sc = ws->scores;
            const float *ek = NULL, *ev = NULL;
            if (L > 0) {
                ek = ws->ekv + hd * 2 * ch * BL + b * L;
                ev = ek + ch * BL;
                uc_gemm(T, L, ch, q, 1, BT, ek, BL, 1, 0.0f, sc, S);
                if (mask)
                    for (int64_t j = 0; j < L; j++)
                        if (mask[b * L + j] != 0.0f)
                            for (int64_t t = 0; t < T; t++)
                                sc[t * S + j] += mask[b * L + j];
            }
            uc_gemm(T, T, ch, q, 1, BT, k, BT, 1, 0.0f, sc + L, S);
            uc_softmax_rows_blocked(sc, T, S);
            float *o = att + hd * ch * BT + b * T;
            if (L > 0)
                uc_gemm(ch, T, L, ev, BL, 1, sc, 1, S, 0.0f, o, BT);
            uc_gemm(ch, T, T, v, BT, 1, sc + L, 1, S, L > 0 ? 1.0f : 0.0f, o, BT);
        }
    /* x += proj_out(att) */
    for (int64_t o = 0; o < c; o++)
        for (int64_t j = 0; j < BT; j++)
            x[o * BT + j] += a->proj_b[o];
    uc_gemm_w(c, BT, c, a->proj_w, c, att, BT, 1, 1.0f, x, BT);
}

/* ---- forward ---------------------------------------------------------- */

void uc_unet_time_embed(const uc_unet *u, uc_unet_ws *ws, const double *t, float *emb)
{
    int64_t B = ws->B, C = u->cfg.model_channels, E = u->E;
    float *te = ws->te, *hid = ws->te_hid;
    for (int64_t b = 0; b < B; b++)
        uc_timestep_embedding(te + b * C, t[b], C);
    uc_linear_w(hid, te, u->te0_w, u->te0_b, B, C, E);
    uc_silu(hid, B * E);
    uc_linear_w(emb, hid, u->te2_w, u->te2_b, B, E, E);
}

int uc_unet_forward(const uc_unet *u, uc_unet_ws *ws, const float *x, const float *emb, const float *enc,
                    const float *mask, float *out)
{
    if (memcmp(&ws->cfg, &u->cfg, sizeof ws->cfg))
        return uc_err("unet: workspace made for another model config");
    if (ws->L > 0 && !enc)
        return uc_err("unet: model needs text tokens");
    const uc_unet_config *c = &u->cfg;
    int64_t B = ws->B, H = ws->H, W = ws->W, HW = H * W;
    memcpy(ws->emb_act, emb, (size_t)(B * u->E) * sizeof(float));
    uc_silu(ws->emb_act, B * u->E);

    /* NCHW -> [C, B, HW] */
    float *xin = ws->act[1];
    for (int64_t b = 0; b < B; b++)
        for (int64_t ci = 0; ci < c->in_channels; ci++)
            memcpy(xin + (ci * B + b) * HW, x + (b * c->in_channels + ci) * HW, (size_t)HW * sizeof(float));
    int hi = 0; /* act index holding h */
    conv2d(ws, xin, c->in_channels, H, W, u->conv_in_w, u->conv_in_slot, u->conv_in_b, u->ch0, 3, 1, ws->act[hi], 0);
    int64_t ch = u->ch0, top = 0, hs_used = u->ch0 * B * HW;
    memcpy(ws->hs, ws->act[hi], (size_t)hs_used * sizeof(float));
    ws->hs_off[top++] = 0;

    for (int i = 0; i < u->nlayers; i++) {
        const layer *l = &u->layers[i];
        int64_t n = B * (H / l->ds) * (W / l->ds);
        int f1 = (hi + 1) % 4, f2 = (hi + 2) % 4, f3 = (hi + 3) % 4;
        if (l->pop) { /* h = cat[h, skip] on channels */
            int64_t ich = l->cin - ch, off = ws->hs_off[--top];
            float *cat = ws->act[f1];
            memcpy(cat, ws->act[hi], (size_t)(ch * n) * sizeof(float));
            memcpy(cat + ch * n, ws->hs + off, (size_t)(ich * n) * sizeof(float));
            hs_used = off;
            int old = hi;
            hi = f1, f1 = old;
        }
        if (l->kind == L_RES) {
            resblock_fwd(u, ws, l, hi, f1, f2, f3);
            hi = f2;
        } else if (l->kind == L_ATTN) {
            attn_fwd(u, ws, l, ws->act[hi], ws->act[f1], enc, mask);
        } else {
            int64_t h = H / l->ds, w = W / l->ds;
            if (l->kind == L_DOWN && l->rs_b) {
                conv2d(ws, ws->act[hi], l->cin, h, w, l->rs_w, l->rs_slot, l->rs_b, l->cout, 3, 2, ws->act[f1], 0);
            } else {
                resample(ws->act[hi], ws->act[f1], l->cin * B, h, w, l->kind == L_UP ? 1 : -1);
                if (l->kind == L_UP && l->rs_b) {
                    conv2d(ws, ws->act[f1], l->cin, 2 * h, 2 * w, l->rs_w, l->rs_slot, l->rs_b, l->cout, 3, 1, ws->act[f2], 0);
                    f1 = f2;
                }
            }
            hi = f1;
        }
        ch = l->cout;
        if (l->push) {
            int64_t hw2 = (H / l->ds) * (W / l->ds);
            if (l->kind == L_DOWN || (l->kind == L_RES && l->updown < 0))
                hw2 /= 4;
            int64_t m = ch * B * hw2;
            memcpy(ws->hs + hs_used, ws->act[hi], (size_t)m * sizeof(float));
            ws->hs_off[top++] = hs_used;
            hs_used += m;
        }
    }
    float *t = ws->act[(hi + 1) % 4], *o = ws->act[(hi + 2) % 4];
    uc_group_norm(ws->act[hi], t, ch, B, HW, GN_GROUPS, GN_EPS, u->out_norm_w, u->out_norm_b, NULL, 1);
    conv2d(ws, t, ch, H, W, u->out_conv_w, u->out_conv_slot, u->out_conv_b, c->out_channels, 3, 1, o, 0);
    for (int64_t b = 0; b < B; b++)
        for (int64_t co = 0; co < c->out_channels; co++)
            memcpy(out + (b * c->out_channels + co) * HW, o + (co * B + b) * HW, (size_t)HW * sizeof(float));
    return 0;
}
