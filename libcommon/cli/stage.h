/* stage.h - what the stage tools share beyond cli.h: the sampling options,
 * the seed and RNG key of each record, the inputs they stream, the text
 * conditioning they read, the provenance they write and the image outputs
 * of decoder-diffuse and upsample (PNGs or records, stdout or -o). Like
 * cli.h, these exit with a message on bad input. */
#ifndef UNCLIP_STAGE_H
#define UNCLIP_STAGE_H

#include <stdint.h>
#include <stdio.h>

#include "formats/record.h"
#include "libcommon/cli/cli.h"
#include "libcommon/sample/diffusion.h"
#include "libcommon/image/imageio.h"
#include "libcommon/models/model.h"

/* ---- options ---- */

/* -S/--steps: a respacing string of at most UC_RESPACING_MAX characters. */
const char *uc_parse_steps(const uc_cli *c, const char *arg);
/* -g/--guidance: a scale in (0, 1e6]. */
double uc_parse_guidance(const uc_cli *c, const char *arg);
/* --sampler: ddpm, ddim or dpm++2m. */
uc_sampler uc_parse_sampler(const uc_cli *c, const char *arg);

/* ---- seeds ---- */

/* -s when given, else the record's seed field, else 0. */
uint64_t uc_record_seed(const uc_cli *c, const rec *r, const char *src);

/* ---- noise: data of the record, never its position in a stream ---- */

/* The record's noise key: its noise_key field (set where the record is
 * born: clip-encode, and every stage that writes N records per input);
 * for a record made elsewhere, FNV-1a 64 of its prompt, else of its image,
 * image_emb or text_emb bytes, else 0. Exits 1 on a malformed field. */
uint64_t uc_record_noise_key(const uc_cli *c, const rec *r, const char *src);
/* The noise key of a prompt record: FNV-1a 64 of prompt, NUL, negative.
 * Every noise key is kept to 53 bits (exact in JSON). */
uint64_t uc_noise_key_text(const char *prompt, const char *negative);
/* The noise key of an image record: FNV-1a 64 of its pixel bytes. */
uint64_t uc_noise_key_bytes(const void *data, size_t n);
/* The RNG key of a stage's draws for a record: a hash of (seed, the
 * record's noise key, the stage's name); candidate c of sample i draws
 * from stream i * best_of + c. */
uint64_t uc_stage_key(uint64_t seed, uint64_t noise_key, const char *stage);
/* The noise key of output i of a stage that writes N records per input. */
uint64_t uc_output_noise_key(uint64_t noise_key, const char *stage, uint64_t i);
/* params.<stage> fields of a draw: threads, seed, noise_key (the input's),
 * index. */
void uc_set_draw(const uc_cli *c, rec *params, uint64_t seed, uint64_t noise_key, uint64_t index);

/* ---- inputs ---- */

/* The records of the FILE arguments (none: standard input), in order. */
typedef struct {
    const uc_cli *cli;
    char **names;        /* [n] the FILE arguments; "-" is standard input */
    int n, next;         /* how many, the next to open */
    int images;          /* 1: PNGs or records (uc_image_reader); 0: records */
    const char *src;     /* the current input in messages ("stdin" for -) */
    uint64_t ordinal;    /* the last record's number over all inputs, from 1 */
    uint64_t first;      /* ordinal when the current input was opened */
    rec_reader *rr;      /* the current input (records) */
    uc_image_reader *ir; /* the current input (images) */
    rec *r;              /* the current record */
} uc_inputs;

void uc_inputs_init(uc_inputs *in, const uc_cli *c, int n, char **names, int images);
/* The next record, which in owns until the next call; NULL after the last
 * input. Exits 1 on a read error or an input with no record. */
rec *uc_inputs_next(uc_inputs *in);

/* After the records a tool takes from ir (the first of an input, or the
 * first two): what follows must be the end or valid records, never bytes
 * that are not one (exit 1 naming them). With one == NULL further records
 * are read and ignored (the tool uses the first ones, as documented); else
 * a further record exits 1: "src: more than one record (record 2
 * follows; <one>)". */
void uc_input_rest(const uc_cli *c, uc_image_reader *ir, const char *src, const char *one);

/* ---- text conditioning (from clip-encode) ---- */

typedef struct {
    float *emb;          /* text_emb [D] */
    float *seq;          /* text_seq [T, W] */
    unsigned char *mask; /* token_mask [T], 0 or 1 */
} uc_text_in;

/* Field pre + key of r as F32 with exactly the dims want[ndim]; NULL and
 * uc_err naming src, the record, the field and what `model` needs. */
float *uc_field_f32(const rec *r, const char *src, const char *pre, const char *key, int ndim, const int64_t *want,
                    const char *model);
/* The text fields of r and of its uncond map, checked against a model with
 * D = text_emb width, T = tokens, W = text_seq width. */
void uc_text_pair(const uc_cli *c, const rec *r, const char *src, const char *model, int64_t D, int64_t T, int64_t W,
                  uc_text_in *cond, uc_text_in *uncond);
void uc_text_in_free(uc_text_in *t);

/* ---- outputs ---- */

/* Exits 1 unless x[0..n) are all finite, naming the input, the record, the
 * field the stage was about to write and the stage: a stage checks what it
 * produces, so an input far out of range or a damaged model never becomes
 * a picture of NaN written with exit status 0. */
void uc_check_finite(const uc_cli *c, const char *src, const rec *r, const char *field, const float *x, int64_t n);

/* models.<stage> = {id, checksum}; checksum NULL: none. */
void uc_set_model(rec *out, const char *stage, const char *id, const char *checksum);
/* models.<stage> of an open model file: {id, checksum}, and verified =
 * "sha256" when --verify recomputed the checksum from the tensor data. */
void uc_set_model_info(rec *out, const char *stage, const uc_model_info *m);

/* ---- the CLIP that made a record's embeddings ---- */

/* A record's models.clip, stamped by clip-encode and passed on by every
 * later stage: the CLIP whose embeddings the record carries. */
typedef struct {
    int known;         /* 0: the record has no models.clip */
    char id[256];      /* models.clip.id ("" when absent) */
    char checksum[80]; /* models.clip.checksum ("" when absent) */
} uc_record_clip;

/* Read r's models.clip; exits 1 naming the field when models or
 * models.clip is not a map, or id or checksum not a string. */
void uc_get_record_clip(const uc_cli *c, const rec *r, const char *src, uc_record_clip *out);
/* Unless --any-clip, exits 1 when the model m declares the CLIPs it pairs
 * with (unclip.clip) and r's CLIP is not one of them, or r has no
 * models.clip; the one line names the input, the record, the field
 * models.clip, the record's CLIP and the model's. */
void uc_check_pairing(const uc_cli *c, const rec *r, const char *src, const uc_model_info *m);
/* Unless --any-clip, exits 1 when the embeddings of records a and b come
 * from two CLIPs (their models.clip checksums differ) or from a known and
 * an unknown one; two records that both lack models.clip pass (the output
 * stays without one, which a stage whose model declares its CLIP refuses). */
void uc_check_same_clip(const uc_cli *c, const rec *a, const char *src_a, const rec *b, const char *src_b);

/* An output record carrying a new image embedding e [n]: base with the text
 * fields of `text` (NULL: base's own), without the fields that describe
 * base's picture (image, image_f32, source). */
rec *uc_emb_record(const rec *base, const rec *text, const float *e, int64_t n);
/* Add the history entry, write out to standard output and free it. */
void uc_emit_record(const uc_cli *c, rec *out);

/* Images out: PNGs carrying their record (concatenated on stdout, or one
 * file each from a pattern with one %d) or one record stream. */
enum { UC_OUT_PNG, UC_OUT_RECORD };
enum { UC_OPT_FLOAT = 0x1000 };
#define UC_IMAGE_OUT_SHORTOPTS "f:o:"
#define UC_IMAGE_OUT_LONGOPTS {"format", 1, 0, 'f'}, {"float", 0, 0, UC_OPT_FLOAT}, {"output", 1, 0, 'o'}

typedef struct {
    int format;       /* -f: UC_OUT_PNG (default) or UC_OUT_RECORD */
    int want_float;   /* --float: records also get image_f32 */
    const char *path; /* -o, or NULL: standard output; for PNGs a pattern
                         with one %d, or a plain name for one picture */
    FILE *f;          /* the record stream (or the one PNG of a plain name) */
    long n;           /* outputs written */
} uc_image_out;

/* Handle -f, --float or -o: 1 when opt was one of them. */
int uc_image_out_option(uc_image_out *o, const uc_cli *c, int opt, const char *arg);
/* After the options: exits 2 for a PNG -o pattern without exactly one %d,
 * 1 when the folder of -o is missing or not writable. */
void uc_image_out_check(const uc_image_out *o, const uc_cli *c);
/* Open the record stream (before the first output). */
void uc_image_out_open(uc_image_out *o, const uc_cli *c);
/* Add the history entry, write out and free it. */
void uc_image_out_emit(uc_image_out *o, const uc_cli *c, rec *out);
/* Commit a record file written with -o. */
void uc_image_out_close(uc_image_out *o, const uc_cli *c);

/* ---- progress ---- */

/* A sampler's progress callback: uc_progress with a label. */
typedef struct {
    const uc_cli *cli;
    char label[48];
} uc_step_progress;

void uc_step_progress_fn(void *ctx, int done, int total);

#endif
