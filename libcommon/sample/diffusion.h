/* diffusion.h - Gaussian diffusion shared by every stage (prior, decoder,
 * super-resolution): beta schedules, timestep respacing, the posterior
 * q(x_{t-1} | x_t, x_0), the model's p(x_{t-1} | x_t), and the DDPM and DDIM
 * sampling loops, with the semantics of Karlo's (guided-diffusion's)
 * GaussianDiffusion and SpacedDiffusion; and DPM-Solver++(2M) (Lu et al.
 * 2022), a deterministic multistep solver of the diffusion ODE on the same
 * respaced timesteps.
 *
 * Numerics, as upstream: every schedule array is computed in double; when a
 * coefficient is used on a tensor it is rounded to float first and all
 * tensor arithmetic is float (upstream gathers a float64 buffer and casts it
 * to float32 before multiplying).
 *
 * Shapes: a batch is x[n][channels][spatial] in float, C order: the prior's
 * embeddings are [n][clip_dim][1] (spatial 1), images [n][3][H*W]. A model
 * output has the same layout with `channels` channels, or 2*channels for
 * LEARNED / LEARNED_RANGE variance (first half the mean prediction, second
 * half the variance values, per row).
 *
 * Timesteps: the diffusion works on SPACED indices t = 0..steps-1; the
 * network sees the ORIGINAL step timestep_map[t] (0..base_steps-1).
 *
 * Classifier-free guidance is not part of this file: it belongs to the
 * model callback. Karlo's layout is a batch of 2B rows, [cond..., uncond...];
 * its guided model function runs the network on [x[:B], x[:B]] with the
 * conditional and the unconditional conditioning, forms
 * g = uncond + s * (cond - uncond) on the mean prediction only (eps for the
 * decoder, x0 for the prior) and returns [g, g] for both halves; learned
 * variance channels are taken from each row's own output, unguided. The
 * second half of x is bookkeeping that never reaches the network. A
 * caller that needs only the first half may equally sample n = B rows with a
 * callback that builds the 2B network batch itself: the rows of the first
 * half evolve identically. */
#ifndef UNCLIP_DIFFUSION_H
#define UNCLIP_DIFFUSION_H

#include <cjson/cJSON.h>
#include <stdint.h>

/* What the network predicts. */
typedef enum {
    UC_MEAN_EPSILON, /* the noise eps (decoder, SR) */
    UC_MEAN_START_X  /* x_0 itself (prior) */
} uc_mean_type;

/* Where the variance of p(x_{t-1} | x_t) comes from. */
typedef enum {
    UC_VAR_FIXED_SMALL,  /* posterior variance, log clipped at t = 0 */
    UC_VAR_FIXED_LARGE,  /* betas, with posterior_variance[1] at t = 0 */
    UC_VAR_LEARNED,      /* extra channels are log variance */
    UC_VAR_LEARNED_RANGE /* extra channels v in [-1,1] interpolate the logs of both */
} uc_var_type;

typedef enum { UC_SAMPLER_DDPM, UC_SAMPLER_DDIM, UC_SAMPLER_DPMPP_2M } uc_sampler;

/* The sampler's name in options and records: "ddpm", "ddim", "dpm++2m". */
const char *uc_sampler_name(uc_sampler s);

/* Longest accepted respacing string and largest base process. */
#define UC_DIFFUSION_MAX_STEPS 100000
#define UC_RESPACING_MAX 256

/* A (respaced) diffusion process. All arrays have `steps` entries, indexed
 * by the spaced timestep t, and are owned by the struct. */
typedef struct {
    int steps;                                /* T: number of spaced steps */
    int base_steps;                           /* length of the original process (1000) */
    uc_mean_type mean_type;
    uc_var_type var_type;
    int64_t *timestep_map;                    /* [T] original timestep of each spaced index */
    double *betas;                            /* [T] respaced: 1 - acp[t_i] / acp[t_{i-1}] */
    double *log_betas;                        /* [T] log(betas) (LEARNED_RANGE's upper end) */
    double *alphas_cumprod;                   /* [T] */
    double *alphas_cumprod_prev;              /* [T] acp[t-1], 1 at t = 0 */
    double *sqrt_recip_alphas_cumprod;        /* [T] sqrt(1 / acp) */
    double *sqrt_recipm1_alphas_cumprod;      /* [T] sqrt(1 / acp - 1) */
    double *posterior_variance;               /* [T] beta (1 - acp_prev) / (1 - acp) */
    double *posterior_log_variance_clipped;   /* [T] log, entry 0 replaced by entry 1 */
    double *posterior_mean_coef1;             /* [T] multiplies x_0 */
    double *posterior_mean_coef2;             /* [T] multiplies x_t */
    double *fixed_large_variance;             /* [T] posterior_variance[1], betas[1:] */
} uc_diffusion;

/* Betas of a named schedule in double: "squaredcos_cap_v2" (cosine,
 * max_beta 0.999) or "linear" (Ho et al., scaled by 1000 / n).
 * betas: n entries. */
int uc_beta_schedule(const char *name, int n, double *betas);

/* The kept original timesteps of a respacing, sorted ascending, as Karlo's
 * space_timesteps: "" (all), "N" or "N1,N2,..." (counts per equal section,
 * positions rounded half-to-even), "ddimN" (the smallest integer stride
 * giving exactly N steps), "fast27" (Karlo's preset). out: base_steps
 * entries of room; *count receives the number kept. */
int uc_space_timesteps(int base_steps, const char *respacing, int64_t *out, int *count);

/* Build the process from a base schedule and a respacing. */
int uc_diffusion_init(uc_diffusion *d, const char *schedule, int base_steps, const char *respacing,
                      uc_mean_type mean_type, uc_var_type var_type);
/* The same from Karlo's `diffusion` config section (steps, noise_schedule,
 * learn_sigma, sigma_small, predict_xstart, timestep_respacing); a non-NULL
 * respacing overrides the section's timestep_respacing. */
int uc_diffusion_from_config(uc_diffusion *d, const cJSON *diffusion, const char *respacing);
void uc_diffusion_free(uc_diffusion *d);

/* Karlo's choice of sampler for a respacing: DDIM when it starts with
 * "ddim" or "fast", DDPM otherwise. */
uc_sampler uc_sampler_for_respacing(const char *respacing);

/* A stage's schedule, kept for the respacing it was built with: the
 * prior, decoder and SR each hold one and rebuild it only when asked for
 * another respacing. Zero-initialised is empty. */
typedef struct {
    uc_diffusion d;   /* valid when have */
    int have;
    char *respacing;  /* owned: what d was built with; NULL: the section's own */
} uc_schedule;

/* The schedule of the config section `diffusion` respaced by respacing
 * (NULL: the section's own timestep_respacing), from s when it was built
 * for the same string; NULL and uc_err when the section or the respacing
 * is bad. */
const uc_diffusion *uc_schedule_get(uc_schedule *s, const cJSON *diffusion, const char *respacing);
void uc_schedule_free(uc_schedule *s);

/* Treatment of the predicted x_0 before it is used (Karlo's denoised_fn,
 * then clip_denoised). */
typedef struct {
    float clamp;       /* > 0: clamp x_0 to [-clamp, clamp] first (prior: 10); 0: off */
    int clip_denoised; /* clamp x_0 to [-1, 1] (decoder, SR) */
} uc_denoise;

/* q(x_{t-1} | x_t, x_0) for rows x[n][cs] with per-row spaced t[n]. Any of
 * mean, var, log_var may be NULL. */
void uc_q_posterior(const uc_diffusion *d, int64_t n, int64_t cs, const int64_t *t, const float *x_start,
                    const float *x_t, float *mean, float *var, float *log_var);

/* p(x_{t-1} | x_t) from a model output: x[n][channels][spatial] at spaced
 * t[n], model_out as described at the top. Outputs have x's shape; var and
 * log_var may be NULL. */
int uc_p_mean_variance(const uc_diffusion *d, int64_t n, int64_t channels, int64_t spatial, const int64_t *t,
                       const float *x, const float *model_out, const uc_denoise *dn, float *mean, float *var,
                       float *log_var, float *pred_xstart);

/* One ancestral step: x_prev = mean + [t != 0] exp(log_var / 2) noise. */
void uc_ddpm_step(int64_t n, int64_t cs, const int64_t *t, const float *mean, const float *log_var,
                  const float *noise, float *x_prev);
/* One DDIM step with eta (eps re-derived from x_0):
 * x_prev = x0 sqrt(acp_prev) + sqrt(1 - acp_prev - sigma^2) eps + [t != 0] sigma noise. */
void uc_ddim_step(const uc_diffusion *d, int64_t n, int64_t cs, const int64_t *t, const float *x,
                  const float *pred_xstart, const float *noise, float eta, float *x_prev);

/* One step of DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", data
 * prediction, multistep second order) from spaced timestep t to t - 1 (the
 * clean sample at t = 0), all rows at t: with alpha = sqrt(acp),
 * sigma = sqrt(1 - acp), lambda = log(alpha / sigma), s = acp[t], the
 * target acp_prev[t] and h = lambda_target - lambda_s,
 *   x_prev = (sigma_target / sigma_s) x + alpha_target (1 - e^-h) D,
 * D = x0 (first order: x0_prev NULL, or t = 0, where x_prev = x0), else
 * D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev with r = h_prev / h, h_prev the
 * previous step's (t + 1 to t). x0 and x0_prev are the treated x_0
 * predictions at t and t + 1. Coefficients in double, rounded to float. */
void uc_dpmpp_2m_step(const uc_diffusion *d, int64_t n, int64_t cs, int64_t t, const float *x, const float *x0,
                      const float *x0_prev, float *x_prev);

/* The sampling loop. */
typedef struct {
    int index;       /* 0-based position in sampling order */
    int count;       /* number of steps (d->steps) */
    int64_t t;       /* spaced timestep: count-1-index */
    int64_t t_model; /* original timestep fed to the network: timestep_map[t] */
    int call, calls; /* 0-based model evaluation and how many in all: index
                        and count, except in an edit that resamples
                        (uc_edit), where a step can be taken again */
} uc_step;

/* Model output for the whole batch x[n][channels][spatial] at step s into
 * out[n][out_channels][spatial] (out_channels = 2 * channels for learned
 * variance). All rows share the timestep. Returns 0, or -1 after uc_err.
 * A two-model stage (SR) picks its model from s (the last step is
 * s->index == s->count - 1). */
typedef int (*uc_model_fn)(void *ctx, const uc_step *s, const float *x, float *out);
/* Standard normal noise for the whole batch: draw 0 is x_T, draw k >= 1 the
 * noise of step k-1 (drawn at every step, also where it is multiplied by 0).
 * out: n * channels * spatial floats. */
typedef int (*uc_noise_fn)(void *ctx, int draw, float *out, int64_t nelem);
/* Called after each step with the step's input x_t, its output x_{t-1}
 * and the (treated) x_0 prediction, each n * channels * spatial floats. */
typedef int (*uc_trace_fn)(void *ctx, const uc_step *s, const float *x_in, const float *sample,
                           const float *pred_xstart);

/* An edit (inpainting, RePaint: Lugmayr et al. 2022): the pixels marked
 * keep are known and the others are drawn to agree with them. Before each
 * step the kept pixels of its input x_t are replaced by the known picture
 * noised to that step, q(x_t | x_0) with fresh noise; after the last step
 * they are the known values exactly. The other pixels are resampled: the
 * step down to level L is taken `resample` times, going back up `jump`
 * levels in one draw of q(x_{L+jump} | x_L) between the takes, at the
 * levels L = 1, 1 + jump, 1 + 2 jump, ... with L + jump <= steps (the last
 * step, to x_0, is taken once). The network then runs
 * uc_edit_calls(steps, resample, jump) <= resample * steps times.
 * Noise draws in order: 0 is x_T; then per step taken: the noise of the
 * known picture, then the step's own; per jump, its noise. The same
 * known picture and mask serve every row. A mask with no kept pixel is
 * plain sampling, bit for bit (uc_diffusion_sample ignores the edit). */
#define UC_EDIT_MAX_RESAMPLE 100
typedef struct {
    const float *known;        /* [channels][spatial]: the picture x_0, in [-1, 1] */
    const unsigned char *keep; /* [spatial]: nonzero keeps the known pixel, 0 redraws it */
    int resample;              /* 1..UC_EDIT_MAX_RESAMPLE: takes of each step (1: none again) */
    int jump;                  /* >= 1: levels gone back up between the takes */
} uc_edit;

/* Model evaluations of an edit's loop over `steps` steps. */
int64_t uc_edit_calls(int steps, int resample, int jump);

/* Outpainting: the next s x s window of a cw x ch canvas (cw, ch >= s)
 * whose pixels are known[ch][cw] (nonzero: known) to inpaint. Candidates
 * are the positions on a grid of s/2 (and the last row and column); the
 * one with unknown pixels and the most known ones is taken (ties: top
 * first, then left). 1 and its corner in *x, *y; 0 when all is known. */
int uc_edit_window(const unsigned char *known, int cw, int ch, int s, int *x, int *y);

typedef struct {
    int64_t n, channels, spatial; /* batch shape */
    uc_sampler sampler;           /* DPM-Solver++(2M): plain sampling only, no edit */
    float eta;                    /* DDIM only */
    uc_denoise denoise;
    uc_model_fn model;
    void *model_ctx;
    uc_noise_fn noise;
    void *noise_ctx;
    uc_trace_fn trace;            /* optional */
    void *trace_ctx;
    const uc_edit *edit;          /* optional: inpainting (NULL: plain sampling) */
} uc_sample_opts;

/* What every sampling stage (prior, decoder, sr) takes from its caller:
 * one options block, the same for all three. The stage builds its schedule
 * from respacing once and keeps it for later calls with the same string. */
typedef struct {
    const char *respacing; /* "25", section counts "10,10,3,2,2", "ddimN", "fastN" */
    uc_sampler sampler;    /* uc_sampler_for_respacing(respacing) when the user chose none */
    float eta;             /* DDIM noise (0: deterministic) */
    uc_noise_fn noise;     /* draw 0: x_T; draw k: the noise of step k-1 */
    void *noise_ctx;
    uc_trace_fn trace; /* optional: every step's input, sample and x_0 */
    void *trace_ctx;
    void (*progress)(void *ctx, int done, int total); /* optional, after each step */
    void *progress_ctx;
    const uc_edit *edit; /* optional: inpainting, passed to uc_sample_opts.edit */
} uc_stage_opts;

/* The buffers of one denoising step over a batch, allocated once a loop
 * (the plain one and an edit's). */
typedef struct {
    size_t nel; /* n * channels * spatial */
    float *out, *mean, *log_var, *x0, *noise, *next;
    float *x0_prev;  /* DPM-Solver++: the x_0 of the last step taken */
    int64_t prev_t;  /* its spaced timestep; -1: none yet */
    int64_t *t;      /* [n] the spaced timestep of every row */
} uc_step_ws;
/* For o's batch shape (checked by the caller). */
void uc_step_ws_init(uc_step_ws *w, const uc_diffusion *d, const uc_sample_opts *o);
void uc_step_ws_free(uc_step_ws *w);
/* One step at s from x: the model, the posterior, the noise of draw
 * `draw` (drawn whatever the sampler), then DDPM, DDIM or DPM-Solver++(2M)
 * into w->next, and the trace. DPM-Solver++ takes its second-order step
 * when the last step through this w was at t + 1, first order at the first
 * and the last step. -1 with the
 * callback's message when one fails; the caller names the step. */
int uc_denoise_step(const uc_diffusion *d, const uc_sample_opts *o, const uc_step *s, int draw, const float *x,
                    uc_step_ws *w);

/* Run the whole loop from x_T (noise draw 0) down to t = 0; x receives the
 * final sample x_0 (n * channels * spatial floats). With o->edit and at
 * least one kept pixel, the edit's loop (uc_edit_sample). Returns 0, or -1
 * when a callback fails (its message kept, prefixed with the step). */
int uc_diffusion_sample(const uc_diffusion *d, const uc_sample_opts *o, float *x);
/* The edit's loop itself (repaint.c): o->edit required; DDPM or DDIM (an
 * error for DPM-Solver++, whose multistep history RePaint's jumps back up
 * would break). */
int uc_edit_sample(const uc_diffusion *d, const uc_sample_opts *o, float *x);

#endif
