/* sr.c - see sr.h. In order: the config, the one walk of the weights
 * (bind or list), the handle, the forward with its buffers, sampling. */
#include "libcommon/models/sr.h"

#include <string.h>

#include "formats/base.h"
#include "libcommon/models/model_file.h"
#include "libcommon/models/unet.h"
#include "libcommon/models/walk.h"

typedef struct {
    uc_unet_config unet; /* both models: hparams channels, depth, channels_multiple */
    int scale;           /* output side / input side (hparams.scale, default 4) */
} sr_config;

static const char default_config[] =
    "{\"model\": {\"type\": \"improved_sr_64_256\", \"diffusion_sampler\": \"uniform\", \"hparams\":"
    " {\"channels\": 320, \"depth\": 3, \"channels_multiple\": [1, 2, 3, 4], \"dropout\": 0.0}},"
    " \"diffusion\": {\"steps\": 1000, \"learn_sigma\": false, \"sigma_small\": true,"
    " \"noise_schedule\": \"squaredcos_cap_v2\", \"use_kl\": false, \"predict_xstart\": false,"
    " \"rescale_learned_sigmas\": true, \"timestep_respacing\": \"7\"}, \"sampling\":"
    " {\"timestep_respacing\": \"7\", \"clip_denoise\": true}}";

const char *uc_sr_default_config(void) { return default_config; }

/* Hyperparameters from model.hparams (and diffusion.learn_sigma, which
 * doubles the output channels). */
static int config_parse(const cJSON *hp, const cJSON *diffusion, sr_config *cfg)
{
    uc_unet_config *u = &cfg->unet;
    memset(cfg, 0, sizeof *cfg);
    uc_unet_config_default(u);
    if (!cJSON_IsObject(hp))
        return uc_err("sr config: model.hparams missing");
    int learn_sigma = 0;
    if (uc_cfg_int(hp, "channels", -1, 1, 16384, &u->model_channels) ||
        uc_cfg_int(hp, "depth", -1, 0, 64, &u->num_res_blocks) ||
        uc_cfg_int(hp, "scale", 4, 1, 64, &cfg->scale) ||
        (diffusion && uc_cfg_int(diffusion, "learn_sigma", 0, 0, 1, &learn_sigma)))
        return uc_err_prefix("sr config");
    int n = uc_cfg_int_list(cJSON_GetObjectItemCaseSensitive(hp, "channels_multiple"), "channels_multiple",
                            u->channel_mult, UC_UNET_MAXLEVEL);
    if (n < 0)
        return -1;
    if (n == 0)
        return uc_err("sr config: channels_multiple is empty");
    u->nlevels = n;
    /* SuperResUNetModel as ImprovedSupRes64to256ProgressiveModel builds it */
    u->in_channels = 6;
    u->out_channels = learn_sigma ? 6 : 3;
    u->nattn = 0;
    u->use_middle_attention = 0;
    u->resblock_updown = 1;
    u->use_scale_shift_norm = 0;
    return 0;
}

struct uc_sr {
    sr_config cfg;
    uc_sr_info info;
    uc_unet *first;   /* keys "model_first_steps." + UNetModel names */
    uc_unet *last;    /* keys "model_last_step." + UNetModel names */
    cJSON *diffusion; /* owned copy of the config's diffusion section */
    st_file *file;    /* owned when opened from a path, else NULL */
    st_file *wf;      /* the file the weights are bound in (file or borrowed) */
    int held;         /* the UNet whose pages were read last: 0 first, 1 last, -1 none */
    uc_schedule sched; /* of the last respacing asked for */
    /* buffers of a forward of (B, H, W), shared by both models */
    uc_unet_ws *ws;
    int64_t B, H, W;
    float *in, *emb; /* cat[x, low_res] [B, 6, H, W]; time embedding [B, 4C] */
    double *t;       /* sampling timesteps, t_n of them */
    int64_t t_n;
    int tile;        /* uc_sr_set_tile: the side of the tiles a sample runs on, 0: whole */
    int overlap;     /* ... and the pixels neighbouring tiles share at least */
};

static int parse_stage(const cJSON *config, sr_config *cfg, const cJSON **diff)
{
    const cJSON *hp;
    return uc_model_sections(config, "sr", &hp, diff) ? -1 : config_parse(hp, *diff, cfg);
}

/* The two UNets, first steps then last step. */
static int walk(uc_walk *w, uc_sr *s)
{
    w->prefix = "model_first_steps.";
    if (!(s->first = uc_unet_walk(w, &s->cfg.unet)))
        return w->rc ? w->rc : -1;
    w->prefix = "model_last_step.";
    if (!(s->last = uc_unet_walk(w, &s->cfg.unet)))
        return w->rc ? w->rc : -1;
    return 0;
}

static cJSON *parse_json(const char *config_json)
{
    cJSON *j = cJSON_Parse(config_json ? config_json : default_config);
    if (!j)
        uc_err("sr config: not JSON");
    return j;
}

int uc_sr_tensors(const char *config_json, uc_tensor_fn fn, void *ctx)
{
    cJSON *config = parse_json(config_json);
    if (!config)
        return -1;
    uc_sr s = {0};
    const cJSON *diff;
    uc_walk w = {.fn = fn, .ctx = ctx};
    int rc = parse_stage(config, &s.cfg, &diff) ? -1 : walk(&w, &s);
    uc_unet_free(s.first);
    uc_unet_free(s.last);
    cJSON_Delete(config);
    return rc;
}

static int load(void *sv, st_file *f, const cJSON *config)
{
    uc_sr *s = sv;
    const cJSON *diff;
    uc_walk w = {.f = f};
    if (parse_stage(config, &s->cfg, &diff) || walk(&w, s))
        return -1;
    s->diffusion = cJSON_Duplicate(diff, 1);
    s->wf = f;
    s->held = -1;
    s->info.scale = s->cfg.scale;
    s->info.channels = s->cfg.unet.model_channels;
    s->info.levels = s->cfg.unet.nlevels;
    s->info.out_channels = s->cfg.unet.out_channels;
    return 0;
}

/* load for a model file, which is for sampling: its diffusion section
 * must hold and match its outputs, found at open rather than at the first
 * image. */
static int load_file(void *sv, st_file *f, const cJSON *config)
{
    uc_sr *s = sv;
    if (load(sv, f, config))
        return -1;
    const uc_diffusion *sc = uc_schedule_get(&s->sched, s->diffusion, "");
    if (!sc)
        return -1;
    int learned = sc->var_type == UC_VAR_LEARNED || sc->var_type == UC_VAR_LEARNED_RANGE;
    if (learned != (s->cfg.unet.out_channels == 6))
        return uc_err("sr config: diffusion.learn_sigma is %s, but the model has %d output channels",
                      learned ? "true" : "false", s->cfg.unet.out_channels);
    return 0;
}

uc_sr *uc_sr_open(const char *path)
{
    uc_sr *s = uc_alloc(1, sizeof *s);
    if (!(s->file = uc_model_open(path, "sr", "an sr", load_file, s, &s->info.model))) {
        uc_sr_free(s);
        return NULL;
    }
    return s;
}

uc_sr *uc_sr_load(st_file *f, const char *config_json)
{
    cJSON *config = parse_json(config_json);
    uc_sr *s = uc_alloc(1, sizeof *s);
    if (!config || load(s, f, config) || uc_model_info_fill(f, "sr", &s->info.model)) {
        cJSON_Delete(config);
        uc_sr_free(s);
        return NULL;
    }
    cJSON_Delete(config);
    return s;
}

static void free_buffers(uc_sr *s)
{
    uc_unet_ws_free(s->ws);
    uc_free(s->in);
    uc_free(s->emb);
    s->ws = NULL;
    s->in = s->emb = NULL;
    s->B = s->H = s->W = 0;
}

void uc_sr_free(uc_sr *s)
{
    if (!s)
        return;
    free_buffers(s);
    uc_free(s->t);
    uc_unet_free(s->first);
    uc_unet_free(s->last);
    cJSON_Delete(s->diffusion);
    uc_schedule_free(&s->sched);
    if (s->file)
        st_close(s->file);
    uc_free(s);
}

const uc_sr_info *uc_sr_get_info(const uc_sr *s) { return &s->info; }

int uc_sr_steps(uc_sr *s, const char *respacing)
{
    const uc_diffusion *sc = uc_schedule_get(&s->sched, s->diffusion, respacing);
    return sc ? sc->steps : -1;
}

/* The buffers of a forward of B images of HxW (both models share a config). */
static int fit(uc_sr *s, int64_t B, int64_t H, int64_t W)
{
    if (s->ws && s->B == B && s->H == H && s->W == W)
        return 0;
    free_buffers(s);
    if (!(s->ws = uc_unet_ws_new(s->first, B, H, W, 0)))
        return -1;
    s->B = B, s->H = H, s->W = W;
    s->in = uc_alloc((size_t)(B * 6 * H * W), sizeof(float));
    s->emb = uc_alloc((size_t)(B * uc_unet_emb_dim(s->first)), sizeof(float));
    return 0;
}

int uc_sr_forward(uc_sr *s, int last, int64_t B, int64_t H, int64_t W, const float *x, const double *t,
                  const float *low_res, float *out)
{
    uc_unet *u = last ? s->last : s->first;
    if (fit(s, B, H, W))
        return -1;
    /* one UNet in memory at a time: the other's weights (mapped F32) go
     * back to the page cache before this one's are read, and its cached
     * Winograd transforms are freed */
    if (s->held >= 0 && s->held != last) {
        st_release(s->wf, s->held ? "model_last_step." : "model_first_steps.");
        uc_unet_drop_transforms(s->held ? s->last : s->first);
    }
    s->held = last;
    int64_t img = 3 * H * W;
    float *in = s->in, *emb = s->emb;
    for (int64_t b = 0; b < B; b++) { /* cat[x, low_res] on channels */
        memcpy(in + 2 * b * img, x + b * img, (size_t)img * sizeof(float));
        memcpy(in + (2 * b + 1) * img, low_res + b * img, (size_t)img * sizeof(float));
    }
    uc_unet_time_embed(u, s->ws, t, emb);
    return uc_unet_forward(u, s->ws, in, emb, NULL, NULL, out);
}

int uc_sr_set_tile(uc_sr *s, int tile, int overlap)
{
    int unit = 1 << (s->cfg.unet.nlevels - 1);
    if (tile < 0 || tile % unit)
        return uc_err("sr: tile %d: not 0 or a positive multiple of %d (the network's levels)", tile, unit);
    if (tile == 0 && overlap != 0)
        return uc_err("sr: overlap %d: no tiles to overlap (tile 0: the whole picture)", overlap);
    if (overlap < 0 || overlap > tile / 2)
        return uc_err("sr: overlap %d: not in [0, %d] (half the tile of %d)", overlap, tile / 2, tile);
    s->tile = tile;
    s->overlap = overlap;
    return 0;
}

/* Tiles of side T along a side of L, each S = T - overlap after the one
 * before, the last one ending at L (so it may overlap more). */
static int64_t tile_count(int64_t L, int64_t T, int64_t S) { return L <= T ? 1 : (L - T + S - 1) / S + 1; }
static int64_t tile_origin(int64_t L, int64_t T, int64_t S, int64_t k) { return UC_MIN(k * S, L - T); }
/* A tile's weight at its pixel i along one side: rising from 1 at its edges
 * to overlap + 1, so across an overlap of that width two tiles cross-fade
 * linearly; all 1 without overlap (a plain mean). */
static float tile_weight(int64_t T, int overlap, int64_t i) { return (float)UC_MIN(UC_MIN(i + 1, T - i), overlap + 1); }

/* Pixels one network call on tiles takes at most (about): the pictures'
 * own, or this many when they have fewer. Overlapping tiles hold up to 4
 * times the pixels of the picture; a small picture's still run as one
 * batch. */
#define TILE_BATCH_PX (1 << 18)

typedef struct {
    int64_t th, tw, sy, sx, ny, nx; /* tile sides, strides and counts */
    int64_t n, per_call, calls;     /* tiles of B pictures, and their batches (the last padded) */
} tiling;

static int tiled(const uc_sr *s, int64_t B, int64_t H, int64_t W, tiling *g)
{
    if (s->tile == 0 || (s->tile >= H && s->tile >= W))
        return 0;
    g->th = UC_MIN((int64_t)s->tile, H), g->tw = UC_MIN((int64_t)s->tile, W);
    g->sy = UC_MAX(g->th - s->overlap, 1), g->sx = UC_MAX(g->tw - s->overlap, 1);
    g->ny = tile_count(H, g->th, g->sy), g->nx = tile_count(W, g->tw, g->sx);
    g->n = B * g->ny * g->nx;
    int64_t px = UC_MAX(B * H * W, (int64_t)TILE_BATCH_PX);
    g->calls = (g->n * g->th * g->tw + px - 1) / px;
    g->per_call = (g->n + g->calls - 1) / g->calls;
    return 1;
}

/* uc_sr_forward over the tiles of s->tile (in g.calls batches), each
 * output pixel the mean of the tiles that hold it, weighted by tile_weight
 * along both sides. */
static int forward_tiled(uc_sr *s, int last, int64_t B, int64_t H, int64_t W, const float *x, const double *t,
                         const float *low_res, float *out)
{
    tiling g;
    if (!tiled(s, B, H, W, &g))
        return uc_sr_forward(s, last, B, H, W, x, t, low_res, out);
    int64_t th = g.th, tw = g.tw, nx = g.nx, nt = g.ny * nx, oc = s->cfg.unet.out_channels;
    /* N tiles in batches of C (the padding after the last tile: copies of
     * the first, their outputs unused), so every call has one shape */
    int64_t tpx = th * tw, C = g.per_call, N = C * g.calls;
    float *tx = uc_alloc((size_t)(N * 3 * tpx), sizeof(float)), *tl = uc_alloc((size_t)(N * 3 * tpx), sizeof(float));
    float *to = uc_alloc((size_t)(N * oc * tpx), sizeof(float)), *wsum = uc_alloc((size_t)(H * W), sizeof(float));
    float *wt = uc_alloc((size_t)tpx, sizeof(float));
    double *tt = uc_alloc((size_t)N, sizeof(double));
    int64_t *org = uc_alloc((size_t)(2 * nt), sizeof(int64_t)); /* each tile's top and left */
    for (int64_t k = 0; k < nt; k++) {
        org[2 * k] = tile_origin(H, th, g.sy, k / nx);
        org[2 * k + 1] = tile_origin(W, tw, g.sx, k % nx);
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < nt; k++) {
            int64_t oy = org[2 * k], ox = org[2 * k + 1], n = b * nt + k;
            tt[n] = t[b];
            for (int64_t c = 0; c < 3; c++)
                for (int64_t y = 0; y < th; y++) {
                    size_t src = (size_t)(((b * 3 + c) * H + oy + y) * W + ox), dst = (size_t)(((n * 3 + c) * th + y) * tw);
                    memcpy(tx + dst, x + src, (size_t)tw * sizeof(float));
                    memcpy(tl + dst, low_res + src, (size_t)tw * sizeof(float));
                }
        }
    for (int64_t n = g.n; n < N; n++) {
        memcpy(tx + n * 3 * tpx, tx, (size_t)(3 * tpx) * sizeof(float));
        memcpy(tl + n * 3 * tpx, tl, (size_t)(3 * tpx) * sizeof(float));
        tt[n] = tt[0];
    }
    int rc = 0;
    for (int64_t n = 0; n < N && rc == 0; n += C)
        rc = uc_sr_forward(s, last, C, th, tw, tx + n * 3 * tpx, tt + n, tl + n * 3 * tpx, to + n * oc * tpx);
    if (rc == 0) {
        for (int64_t y = 0; y < th; y++)
            for (int64_t i = 0; i < tw; i++)
                wt[y * tw + i] = tile_weight(th, s->overlap, y) * tile_weight(tw, s->overlap, i);
        memset(out, 0, (size_t)(B * oc * H * W) * sizeof(float));
        for (int64_t k = 0; k < nt; k++)
            for (int64_t y = 0; y < th; y++)
                for (int64_t i = 0; i < tw; i++)
                    wsum[(org[2 * k] + y) * W + org[2 * k + 1] + i] += wt[y * tw + i];
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < nt; k++) {
                int64_t oy = org[2 * k], ox = org[2 * k + 1], n = b * nt + k;
                for (int64_t c = 0; c < oc; c++)
                    for (int64_t y = 0; y < th; y++) {
                        float *o = out + ((b * oc + c) * H + oy + y) * W + ox;
                        const float *p = to + ((n * oc + c) * th + y) * tw, *w = wt + y * tw;
                        const float *sum = wsum + (oy + y) * W + ox;
                        for (int64_t i = 0; i < tw; i++)
                            o[i] += p[i] * w[i] / sum[i];
                    }
            }
    }
    uc_free(tx);
    uc_free(tl);
    uc_free(to);
    uc_free(wsum);
    uc_free(wt);
    uc_free(tt);
    uc_free(org);
    return rc;
}

double uc_sr_bytes(const uc_sr *s, int64_t B, int64_t H, int64_t W)
{
    double img = (double)(B * 3 * H * W) * sizeof(float);
    /* the UNet's workspace, cat[x, low_res], and the sampler's step buffers
     * (x0, mean, log-variance, noise, next, and the model output: 2 images
     * for a learned variance) */
    tiling g;
    if (!tiled(s, B, H, W, &g))
        return uc_unet_ws_bytes(s->first, B, H, W, 0) + 2 * img + 7 * img;
    /* on tiles: the network's workspace and cat[x, low_res] for one batch
     * of them, and forward_tiled's copies of all (x, low_res, the outputs) */
    double tpx = (double)(g.th * g.tw) * sizeof(float), all = (double)(g.per_call * g.calls);
    return uc_unet_ws_bytes(s->first, g.per_call, g.th, g.tw, 0) + 6 * g.per_call * tpx + 7 * img +
           (6 + s->cfg.unet.out_channels) * all * tpx + (double)(H * W) * sizeof(float) + tpx +
           (double)(2 * g.ny * g.nx) * sizeof(int64_t);
}

static double flops(const uc_sr *s, int64_t B, int64_t H, int64_t W, int done)
{
    int64_t C = s->cfg.unet.model_channels, E = 4 * C;
    return (done ? uc_unet_flops_done : uc_unet_flops)(s->first, B, H, W, 0) +
           2.0 * (double)B * (double)(C * E + E * E);
}

double uc_sr_flops(const uc_sr *s, int64_t B, int64_t H, int64_t W) { return flops(s, B, H, W, 0); }
double uc_sr_flops_done(const uc_sr *s, int64_t B, int64_t H, int64_t W) { return flops(s, B, H, W, 1); }

typedef struct {
    uc_sr *s;
    int64_t B, H, W;
    const float *low_res;
    const uc_stage_opts *o;
} sample_ctx;

static int model_fn(void *ctx, const uc_step *st, const float *x, float *out)
{
    sample_ctx *k = ctx;
    for (int64_t i = 0; i < k->B; i++)
        k->s->t[i] = (double)st->t_model;
    int rc = forward_tiled(k->s, st->index == st->count - 1, k->B, k->H, k->W, x, k->s->t, k->low_res, out);
    if (rc == 0 && k->o->progress)
        k->o->progress(k->o->progress_ctx, st->call + 1, st->calls);
    return rc;
}

int uc_sr_sample(uc_sr *s, int64_t B, int64_t H, int64_t W, const float *low_res, const uc_stage_opts *o,
                 float *x)
{
    if (uc_sr_steps(s, o->respacing) < 0)
        return -1;
    int learned = s->sched.d.var_type == UC_VAR_LEARNED || s->sched.d.var_type == UC_VAR_LEARNED_RANGE;
    if (learned != (s->cfg.unet.out_channels == 6))
        return uc_err("sr: the diffusion config does not match the model's outputs");
    if (B < 1 || B > 4096)
        return uc_err("sr: %lld images out of range", (long long)B);
    if (s->t_n < B) {
        uc_free(s->t);
        s->t = uc_alloc((size_t)B, sizeof(double));
        s->t_n = B;
    }
    sample_ctx k = {s, B, H, W, low_res, o};
    uc_sample_opts so = {
        .n = B,
        .channels = 3,
        .spatial = H * W,
        .sampler = o->sampler,
        .eta = o->eta,
        .denoise = {.clamp = 0, .clip_denoised = 1},
        .model = model_fn,
        .model_ctx = &k,
        .noise = o->noise,
        .noise_ctx = o->noise_ctx,
        .trace = o->trace,
        .trace_ctx = o->trace_ctx,
        .edit = o->edit,
    };
    return uc_diffusion_sample(&s->sched.d, &so, x);
}
