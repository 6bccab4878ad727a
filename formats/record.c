/* record.c - see record.h. Records are msgpack maps held as msgpack_objects
 * in a zone that the record owns; new values are built in the same zone. */
#define _POSIX_C_SOURCE 200809L
#include "formats/record.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/base.h"

struct rec {
    msgpack_zone *zone;
    msgpack_object_kv *kv;
    int n, cap;
    long number;
    char path[128]; /* a nested map's place in its record ("uncond."), for messages */
};

/* memcpy that accepts the NULL pointers msgpack-c gives empty strings */
static void mcpy(void *d, const void *s, size_t n)
{
    if (n)
        memcpy(d, s, n);
}

/* ---- building objects in a zone ---- */

static void *zalloc(msgpack_zone *z, size_t n)
{
    void *p = msgpack_zone_malloc(z, n ? n : 1);
    if (!p)
        uc_oom(n);
    return p;
}

static msgpack_object obj_str(msgpack_zone *z, const char *s, size_t n)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_STR};
    char *p = zalloc(z, n);
    mcpy(p, s, n);
    o.via.str.ptr = p;
    o.via.str.size = (uint32_t)n;
    return o;
}

static msgpack_object obj_clone(msgpack_zone *z, msgpack_object o)
{
    msgpack_object c = o;
    switch (o.type) {
    case MSGPACK_OBJECT_STR:
        return obj_str(z, o.via.str.ptr, o.via.str.size);
    case MSGPACK_OBJECT_BIN: {
        char *p = zalloc(z, o.via.bin.size);
        mcpy(p, o.via.bin.ptr, o.via.bin.size);
        c.via.bin.ptr = p;
        return c;
    }
    case MSGPACK_OBJECT_EXT: {
        char *p = zalloc(z, o.via.ext.size);
        mcpy(p, o.via.ext.ptr, o.via.ext.size);
        c.via.ext.ptr = p;
        return c;
    }
    case MSGPACK_OBJECT_ARRAY:
        c.via.array.ptr = zalloc(z, o.via.array.size * sizeof(msgpack_object));
        for (uint32_t i = 0; i < o.via.array.size; i++)
            c.via.array.ptr[i] = obj_clone(z, o.via.array.ptr[i]);
        return c;
    case MSGPACK_OBJECT_MAP:
        c.via.map.ptr = zalloc(z, o.via.map.size * sizeof(msgpack_object_kv));
        for (uint32_t i = 0; i < o.via.map.size; i++) {
            c.via.map.ptr[i].key = obj_clone(z, o.via.map.ptr[i].key);
            c.via.map.ptr[i].val = obj_clone(z, o.via.map.ptr[i].val);
        }
        return c;
    default:
        return c;
    }
}

static msgpack_object obj_map_of(msgpack_zone *z, const rec *sub)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_MAP};
    o.via.map.size = (uint32_t)sub->n;
    o.via.map.ptr = zalloc(z, (size_t)sub->n * sizeof(msgpack_object_kv));
    for (int i = 0; i < sub->n; i++) {
        o.via.map.ptr[i].key = obj_clone(z, sub->kv[i].key);
        o.via.map.ptr[i].val = obj_clone(z, sub->kv[i].val);
    }
    return o;
}

/* ---- records ---- */

static rec *rec_empty(void)
{
    rec *r = uc_alloc(1, sizeof *r);
    r->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (!r->zone)
        uc_oom(MSGPACK_ZONE_CHUNK_SIZE);
    return r;
}

rec *rec_new(void)
{
    rec *r = rec_empty();
    rec_set_u64(r, "version", UC_REC_VERSION);
    return r;
}

void rec_free(rec *r)
{
    if (!r)
        return;
    msgpack_zone_free(r->zone);
    free(r->kv);
    uc_free(r);
}

static void push(rec *r, msgpack_object key, msgpack_object val)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->kv = uc_xrealloc(r->kv, (size_t)r->cap, sizeof *r->kv);
    }
    r->kv[r->n].key = key;
    r->kv[r->n].val = val;
    r->n++;
}

rec *rec_clone(const rec *src)
{
    rec *r = rec_empty();
    for (int i = 0; i < src->n; i++)
        push(r, obj_clone(r->zone, src->kv[i].key), obj_clone(r->zone, src->kv[i].val));
    r->number = src->number;
    memcpy(r->path, src->path, sizeof r->path);
    return r;
}

long rec_number(const rec *r) { return r->number; }
void rec_set_number(rec *r, long n) { r->number = n; }
int rec_count(const rec *r) { return r->n; }

const char *rec_key_at(const rec *r, int i)
{
    /* keys are validated as strings on read; return a zone copy with NUL */
    const msgpack_object *k = &r->kv[i].key;
    char *s = zalloc(r->zone, k->via.str.size + 1);
    mcpy(s, k->via.str.ptr, k->via.str.size);
    s[k->via.str.size] = 0;
    return s;
}

static int key_is(const msgpack_object *k, const char *key)
{
    size_t n = strlen(key);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && (n == 0 || memcmp(k->via.str.ptr, key, n) == 0);
}

static const msgpack_object *find(const rec *r, const char *key)
{
    for (int i = 0; i < r->n; i++)
        if (key_is(&r->kv[i].key, key))
            return &r->kv[i].val;
    return NULL;
}

static void put(rec *r, const char *key, msgpack_object val)
{
    for (int i = 0; i < r->n; i++)
        if (key_is(&r->kv[i].key, key)) {
            r->kv[i].val = val;
            return;
        }
    push(r, obj_str(r->zone, key, strlen(key)), val);
}

static int ferr(const rec *r, const char *key, const char *fmt, ...) UC_PRINTF(3, 4);
static int ferr(const rec *r, const char *key, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->number > 0)
        return uc_err("record %ld field %s%s: %s", r->number, r->path, key, msg);
    return uc_err("field %s%s: %s", r->path, key, msg);
}

int rec_has(const rec *r, const char *key) { return find(r, key) != NULL; }

static int get_uint(const msgpack_object *o, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *v = o->via.u64;
    return 0;
}

static int tensor_of(const rec *r, const char *key, const msgpack_object *o, uc_tensor *t)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return ferr(r, key, "not a tensor (expected a map {dtype, shape, data})");
    const msgpack_object *dt = NULL, *sh = NULL, *data = NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        const msgpack_object **slot = key_is(&kv->key, "dtype") ? &dt
                                      : key_is(&kv->key, "shape") ? &sh
                                      : key_is(&kv->key, "data") ? &data : NULL;
        if (!slot)
            return ferr(r, key, "tensor has an unexpected key");
        if (*slot)
            return ferr(r, key, "tensor has a duplicate key");
        *slot = &kv->val;
    }
    if (!dt || !sh || !data)
        return ferr(r, key, "tensor needs dtype, shape and data");
    if (dt->type != MSGPACK_OBJECT_STR)
        return ferr(r, key, "dtype is not a string");
    int d = uc_dtype_parse(dt->via.str.ptr, dt->via.str.size);
    if (d < 0)
        return ferr(r, key, "unknown dtype '%.*s'", (int)UC_MIN(dt->via.str.size, 16u), dt->via.str.ptr);
    if (sh->type != MSGPACK_OBJECT_ARRAY || sh->via.array.size > UC_MAXDIM)
        return ferr(r, key, "shape is not an array of at most %d sizes", UC_MAXDIM);
    if (data->type != MSGPACK_OBJECT_BIN)
        return ferr(r, key, "data is not binary");
    memset(t, 0, sizeof *t);
    t->dtype = (uc_dtype)d;
    t->ndim = (int)sh->via.array.size;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t v;
        if (get_uint(&sh->via.array.ptr[i], &v) || v > (uint64_t)INT64_MAX)
            return ferr(r, key, "shape[%d] is not a non-negative integer", i);
        t->shape[i] = (int64_t)v;
    }
    int64_t numel = uc_tensor_numel(t);
    size_t bytes;
    if (numel < 0 || uc_mul_ok((size_t)numel, uc_dtype_size(t->dtype), &bytes))
        return ferr(r, key, "shape product overflows");
    if (bytes != data->via.bin.size)
        return ferr(r, key, "%zu data bytes, but dtype %s and the shape need %zu", (size_t)data->via.bin.size,
                    uc_dtype_name(t->dtype), bytes);
    t->data = data->via.bin.ptr;
    t->nbytes = bytes;
    return 0;
}

int rec_get_tensor(const rec *r, const char *key, uc_tensor *t)
{
    const msgpack_object *o = find(r, key);
    if (!o)
        return ferr(r, key, "missing");
    return tensor_of(r, key, o, t);
}

float *rec_get_f32(const rec *r, const char *key, int ndim, const int64_t *want, int64_t *shape)
{
    uc_tensor t;
    char a[96];
    if (rec_get_tensor(r, key, &t))
        return NULL;
    if (t.dtype != UC_F32 && t.dtype != UC_F16 && t.dtype != UC_BF16 && t.dtype != UC_F64) {
        ferr(r, key, "dtype %s, expected a float type", uc_dtype_name(t.dtype));
        return NULL;
    }
    if (t.ndim != ndim) {
        ferr(r, key, "shape %s has rank %d, expected %d", uc_shape_str(&t, a, sizeof a), t.ndim, ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (want && want[i] >= 0 && want[i] != t.shape[i]) {
            ferr(r, key, "shape %s, dimension %d should be %lld", uc_shape_str(&t, a, sizeof a), i,
                 (long long)want[i]);
            return NULL;
        }
    int64_t n = uc_tensor_numel(&t);
    float *x = uc_alloc((size_t)n, sizeof(float));
    uc_tensor_to_f32(&t, x);
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(x[i]) <= REC_MAX_ABS)) {
            if (isfinite(x[i]))
                ferr(r, key, "element %lld is %g, past the bound of %g", (long long)i, (double)x[i], REC_MAX_ABS);
            else
                ferr(r, key, "element %lld is not finite", (long long)i);
            uc_free(x);
            return NULL;
        }
    if (shape)
        mcpy(shape, t.shape, (size_t)ndim * sizeof *shape);
    return x;
}

/* The length of the valid UTF-8 sequence (no NUL, no overlong form, no
 * surrogate, nothing above U+10FFFF) at s[0..n), or 0 when there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || len > n || c == 0 || c == 0xc0 || c == 0xc1 || c > 0xf4)
        return 0;
    for (size_t k = 1; k < len; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    if (len == 3 && ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0)))
        return 0;
    if (len == 4 && ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90)))
        return 0;
    return len;
}

static int utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0, len; i < n; i += len)
        if (!(len = utf8_seq(s + i, n - i)))
            return 0;
    return 1;
}

const char *rec_get_str(const rec *r, const char *key)
{
    const msgpack_object *o = find(r, key);
    if (!o) {
        ferr(r, key, "missing");
        return NULL;
    }
    if (o->type != MSGPACK_OBJECT_STR) {
        ferr(r, key, "not a string");
        return NULL;
    }
    if (!utf8_ok((const unsigned char *)o->via.str.ptr, o->via.str.size)) {
        ferr(r, key, "not valid UTF-8 (or holds a NUL byte)");
        return NULL;
    }
    char *s = zalloc(r->zone, o->via.str.size + 1);
    mcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = 0;
    return s;
}

int rec_get_u64(const rec *r, const char *key, uint64_t *v)
{
    const msgpack_object *o = find(r, key);
    if (!o)
        return ferr(r, key, "missing");
    if (get_uint(o, v))
        return ferr(r, key, "not a non-negative integer");
    return 0;
}

int rec_get_f64(const rec *r, const char *key, double *v)
{
    const msgpack_object *o = find(r, key);
    if (!o)
        return ferr(r, key, "missing");
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *v = o->via.f64; break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *v = (double)o->via.u64; break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *v = (double)o->via.i64; break;
    default: return ferr(r, key, "not a number");
    }
    if (!isfinite(*v))
        return ferr(r, key, "not finite");
    return 0;
}

/* The fields of a nested map s, at key of r, are named key.field in
 * messages (uncond.text_emb), below r's own place. */
static void set_path(rec *s, const rec *r, const char *key)
{
    size_t lp = strlen(r->path), lk = strlen(key);
    if (lp + lk + 2 > sizeof s->path) { /* a key far longer than any the tools use */
        memcpy(s->path, "(nested).", sizeof "(nested).");
        return;
    }
    memcpy(s->path, r->path, lp);
    memcpy(s->path + lp, key, lk);
    memcpy(s->path + lp + lk, ".", 2);
}

rec *rec_get_map(const rec *r, const char *key)
{
    const msgpack_object *o = find(r, key);
    if (!o) {
        ferr(r, key, "missing");
        return NULL;
    }
    if (o->type != MSGPACK_OBJECT_MAP) {
        ferr(r, key, "not a map");
        return NULL;
    }
    rec *s = rec_empty();
    s->number = r->number;
    set_path(s, r, key);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        if (o->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR) {
            rec_free(s);
            ferr(r, key, "map has a key that is not a string");
            return NULL;
        }
        push(s, obj_clone(s->zone, o->via.map.ptr[i].key), obj_clone(s->zone, o->via.map.ptr[i].val));
    }
    return s;
}

void rec_set_tensor(rec *r, const char *key, uc_dtype dt, int ndim, const int64_t *shape, const void *data)
{
    uc_tensor t = {.dtype = dt, .ndim = ndim};
    mcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
    size_t bytes = (size_t)uc_tensor_numel(&t) * uc_dtype_size(dt);
    msgpack_object m = {.type = MSGPACK_OBJECT_MAP};
    msgpack_object_kv *kv = zalloc(r->zone, 3 * sizeof *kv);
    kv[0].key = obj_str(r->zone, "dtype", 5);
    kv[0].val = obj_str(r->zone, uc_dtype_name(dt), strlen(uc_dtype_name(dt)));
    kv[1].key = obj_str(r->zone, "shape", 5);
    kv[1].val.type = MSGPACK_OBJECT_ARRAY;
    kv[1].val.via.array.size = (uint32_t)ndim;
    kv[1].val.via.array.ptr = zalloc(r->zone, (size_t)ndim * sizeof(msgpack_object));
    for (int i = 0; i < ndim; i++) {
        kv[1].val.via.array.ptr[i].type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        kv[1].val.via.array.ptr[i].via.u64 = (uint64_t)shape[i];
    }
    kv[2].key = obj_str(r->zone, "data", 4);
    kv[2].val.type = MSGPACK_OBJECT_BIN;
    char *p = zalloc(r->zone, bytes);
    mcpy(p, data, bytes);
    kv[2].val.via.bin.ptr = p;
    kv[2].val.via.bin.size = (uint32_t)bytes;
    m.via.map.size = 3;
    m.via.map.ptr = kv;
    put(r, key, m);
}

void rec_set_str(rec *r, const char *key, const char *s) { put(r, key, obj_str(r->zone, s, strlen(s))); }

void rec_set_u64(rec *r, const char *key, uint64_t v)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER};
    o.via.u64 = v;
    put(r, key, o);
}

void rec_set_f64(rec *r, const char *key, double v)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_FLOAT64};
    o.via.f64 = v;
    put(r, key, o);
}

void rec_set_map(rec *r, const char *key, const rec *sub) { put(r, key, obj_map_of(r->zone, sub)); }

void rec_copy_field(rec *r, const rec *src, const char *key)
{
    const msgpack_object *o = find(src, key);
    if (o)
        put(r, key, obj_clone(r->zone, *o));
}

void rec_del(rec *r, const char *key)
{
    for (int i = 0; i < r->n; i++)
        if (key_is(&r->kv[i].key, key)) {
            memmove(&r->kv[i], &r->kv[i + 1], (size_t)(r->n - i - 1) * sizeof *r->kv);
            r->n--;
            return;
        }
}

void rec_set_stage(rec *r, const char *field, const char *stage, const rec *sub)
{
    const msgpack_object *o = find(r, field);
    rec *m = rec_empty();
    if (o && o->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < o->via.map.size; i++)
            push(m, obj_clone(m->zone, o->via.map.ptr[i].key), obj_clone(m->zone, o->via.map.ptr[i].val));
    rec_set_map(m, stage, sub);
    rec_set_map(r, field, m);
    rec_free(m);
}

void rec_history_add(rec *r, const char *tool, int argc, char **argv)
{
    const msgpack_object *o = find(r, "history");
    uint32_t n = (o && o->type == MSGPACK_OBJECT_ARRAY) ? o->via.array.size : 0;
    msgpack_object a = {.type = MSGPACK_OBJECT_ARRAY};
    a.via.array.size = n + 1;
    a.via.array.ptr = zalloc(r->zone, (n + 1) * sizeof(msgpack_object));
    for (uint32_t i = 0; i < n; i++)
        a.via.array.ptr[i] = o->via.array.ptr[i];
    rec *e = rec_empty();
    rec_set_str(e, "tool", tool);
    rec_set_str(e, "version", UC_VERSION);
    /* the arguments up to REC_HISTORY_ARGS bytes, then one note of what was
     * left out: a tool that writes a record per argument (clip-encode
     * "p1" ... "pN") would otherwise write N times all N of them */
    int keep = 1;
    size_t used = 0, left_bytes = 0;
    while (keep < argc && used + strlen(argv[keep]) <= REC_HISTORY_ARGS)
        used += strlen(argv[keep++]);
    for (int i = keep; i < argc; i++)
        left_bytes += strlen(argv[i]);
    msgpack_object args = {.type = MSGPACK_OBJECT_ARRAY};
    args.via.array.size = (uint32_t)(keep - 1 + (keep < argc));
    args.via.array.ptr = zalloc(e->zone, args.via.array.size * sizeof(msgpack_object));
    for (int i = 1; i < keep; i++)
        args.via.array.ptr[i - 1] = obj_str(e->zone, argv[i], strlen(argv[i]));
    if (keep < argc) {
        char note[128];
        snprintf(note, sizeof note, "(%d more arguments, %zu bytes, not kept: history keeps %d bytes of them)",
                 argc - keep, left_bytes, REC_HISTORY_ARGS);
        args.via.array.ptr[keep - 1] = obj_str(e->zone, note, strlen(note));
    }
    put(e, "arguments", args);
    a.via.array.ptr[n] = obj_map_of(r->zone, e);
    rec_free(e);
    put(r, "history", a);
}

/* ---- writing ---- */

/* msgpack-c's packer fails only when its buffer cannot grow */
static void pack(const rec *r, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int bad = msgpack_pack_map(&pk, (size_t)r->n);
    for (int i = 0; i < r->n && !bad; i++)
        bad = msgpack_pack_object(&pk, r->kv[i].key) || msgpack_pack_object(&pk, r->kv[i].val);
    if (bad)
        uc_oom(sb->alloc * 2);
}

int rec_encode(const rec *r, char **buf, size_t *n)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack(r, &sb);
    *n = sb.size;
    *buf = msgpack_sbuffer_release(&sb);
    return 0;
}

int rec_write(const rec *r, FILE *out)
{
    char *buf;
    size_t n;
    rec_encode(r, &buf, &n);
    size_t w = fwrite(buf, 1, n, out);
    free(buf);
    if (w != n || fflush(out) != 0)
        return uc_err("write error: %s", strerror(errno));
    return 0;
}

/* ---- reading ----
 *
 * Framing before parsing: a small scanner walks the msgpack structure of
 * the bytes received so far (resumably, without allocating) until one
 * top-level object is complete. Only then does msgpack-c parse it, so every
 * container count it allocates for is backed by bytes actually present, and
 * no record can grow past UC_REC_MAX. */

#define SCAN_DEPTH 32
/* Values in one record: msgpack-c gives each 24 bytes, so this bounds a
 * record's parsed size (a tensor is 4 values whatever its data). */
#define SCAN_VALUES ((uint64_t)1 << 20)

typedef struct {
    size_t pos;                 /* bytes of the current message scanned */
    uint64_t values;            /* values of the current message scanned */
    int depth;
    uint64_t left[SCAN_DEPTH];  /* elements still expected per open level */
} scan_state;

static void scan_reset(scan_state *s)
{
    s->pos = 0;
    s->values = 0;
    s->depth = 1;
    s->left[0] = 1;
}

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* 1: a complete object of s->pos bytes; 0: need more bytes; -1: malformed
 * (the message is in *why). */
static int scan(scan_state *s, const unsigned char *b, size_t n, const char **why)
{
    for (;;) {
        while (s->depth > 0 && s->left[s->depth - 1] == 0)
            s->depth--;
        if (s->depth == 0)
            return 1;
        if (s->pos >= n)
            return 0;
        unsigned c = b[s->pos];
        size_t h = 1, lenbytes = 0;
        uint64_t payload = 0, count = 0;
        int is_container = 0, count_mult = 1;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            h = 1;
        } else if (c >= 0x80 && c <= 0x8f) {
            is_container = 1, count = c & 15, count_mult = 2;
        } else if (c >= 0x90 && c <= 0x9f) {
            is_container = 1, count = c & 15;
        } else if (c >= 0xa0 && c <= 0xbf) {
            payload = c & 31;
        } else {
            switch (c) {
            case 0xc4: case 0xd9: lenbytes = 1; break;
            case 0xc5: case 0xda: lenbytes = 2; break;
            case 0xc6: case 0xdb: lenbytes = 4; break;
            case 0xc7: lenbytes = 1, h = 2; break;
            case 0xc8: lenbytes = 2, h = 2; break;
            case 0xc9: lenbytes = 4, h = 2; break;
            case 0xca: h = 5; break;
            case 0xcb: h = 9; break;
            case 0xcc: case 0xd0: h = 2; break;
            case 0xcd: case 0xd1: h = 3; break;
            case 0xce: case 0xd2: h = 5; break;
            case 0xcf: case 0xd3: h = 9; break;
            case 0xd4: h = 3; break;
            case 0xd5: h = 4; break;
            case 0xd6: h = 6; break;
            case 0xd7: h = 10; break;
            case 0xd8: h = 18; break;
            case 0xdc: is_container = 1, lenbytes = 2; break;
            case 0xdd: is_container = 1, lenbytes = 4; break;
            case 0xde: is_container = 1, lenbytes = 2, count_mult = 2; break;
            case 0xdf: is_container = 1, lenbytes = 4, count_mult = 2; break;
            default: *why = "malformed msgpack data"; return -1; /* 0xc1 */
            }
        }
        if (lenbytes) {
            if (s->pos + 1 + lenbytes > n)
                return 0;
            uint64_t v = be(b + s->pos + 1, (int)lenbytes);
            h += lenbytes;
            if (is_container)
                count = v;
            else
                payload = v;
        }
        count *= (uint64_t)count_mult;
        if (s->pos + h + payload > UC_REC_MAX || count > UC_REC_MAX) {
            *why = "larger than the record size limit";
            return -1;
        }
        if (s->pos + h + payload > n)
            return 0;
        if (++s->values > SCAN_VALUES) {
            *why = "more than 1048576 values";
            return -1;
        }
        s->pos += h + (size_t)payload;
        s->left[s->depth - 1]--;
        if (is_container && count > 0) {
            if (s->depth == SCAN_DEPTH) {
                *why = "nested too deeply";
                return -1;
            }
            s->left[s->depth++] = count;
        }
    }
}

struct rec_reader {
    int fd;            /* -1 for memory streams */
    char *name;
    unsigned char *buf;
    size_t len, cap;   /* bytes held; the current message starts at 0 */
    scan_state scan;
    long count;        /* records returned so far */
    int eof, failed;
};

static rec_reader *reader_new(int fd, const char *name)
{
    rec_reader *r = uc_alloc(1, sizeof *r);
    r->fd = fd;
    r->name = uc_strdup(name);
    scan_reset(&r->scan);
    return r;
}

static void reader_push(rec_reader *r, const void *data, size_t n)
{
    if (n == 0)
        return;
    if (r->len + n > r->cap) {
        r->cap = UC_MAX(r->len + n, r->cap ? 2 * r->cap : (size_t)1 << 16);
        r->buf = uc_xrealloc(r->buf, r->cap, 1);
    }
    mcpy(r->buf + r->len, data, n);
    r->len += n;
}

rec_reader *rec_reader_new(int fd, const char *name) { return reader_new(fd, name); }

rec_reader *rec_reader_new_prefixed(int fd, const char *name, const void *prefix, size_t n)
{
    rec_reader *r = reader_new(fd, name);
    reader_push(r, prefix, n);
    return r;
}

rec_reader *rec_reader_mem(const void *data, size_t n, const char *name)
{
    rec_reader *r = reader_new(-1, name);
    reader_push(r, data, n);
    r->eof = 1;
    return r;
}

void rec_reader_free(rec_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    free(r->name);
    uc_free(r);
}

static int cmp_key(const void *a, const void *b)
{
    const msgpack_object *x = *(const msgpack_object *const *)a, *y = *(const msgpack_object *const *)b;
    if (x->via.str.size != y->via.str.size)
        return x->via.str.size < y->via.str.size ? -1 : 1;
    return x->via.str.size ? memcmp(x->via.str.ptr, y->via.str.ptr, x->via.str.size) : 0;
}

/* The first duplicate key of map o or of any map nested in it (field names
 * the top-level field), or NULL. Values are bounded per record, so sorting
 * each map's keys is cheap. */
static const msgpack_object *nested_dup(const msgpack_object *o, int depth)
{
    if (depth > SCAN_DEPTH)
        return NULL; /* the framing scanner already refused deeper nesting */
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            const msgpack_object *d = nested_dup(&o->via.array.ptr[i], depth + 1);
            if (d)
                return d;
        }
        return NULL;
    }
    if (o->type != MSGPACK_OBJECT_MAP)
        return NULL;
    uint32_t n = o->via.map.size;
    const msgpack_object *dup = NULL;
    if (n > 1) {
        const msgpack_object **keys = uc_alloc(n, sizeof *keys);
        uint32_t m = 0;
        for (uint32_t i = 0; i < n; i++)
            if (o->via.map.ptr[i].key.type == MSGPACK_OBJECT_STR)
                keys[m++] = &o->via.map.ptr[i].key;
        qsort(keys, m, sizeof *keys, cmp_key);
        for (uint32_t i = 1; i < m && !dup; i++)
            if (cmp_key(&keys[i - 1], &keys[i]) == 0)
                dup = keys[i];
        uc_free(keys);
    }
    for (uint32_t i = 0; i < n && !dup; i++)
        dup = nested_dup(&o->via.map.ptr[i].val, depth + 1);
    return dup;
}

static int validate(rec *rc, rec_reader *r)
{
    uint64_t v;
    for (int i = 0; i < rc->n; i++)
        if (rc->kv[i].key.type != MSGPACK_OBJECT_STR)
            return uc_err("%s: record %ld: a key is not a string", r->name, rc->number);
    /* duplicates by sorting: a record may have a million keys */
    const msgpack_object **keys = uc_alloc((size_t)rc->n + 1, sizeof *keys);
    for (int i = 0; i < rc->n; i++)
        keys[i] = &rc->kv[i].key;
    qsort(keys, (size_t)rc->n, sizeof *keys, cmp_key);
    for (int i = 1; i < rc->n; i++)
        if (cmp_key(&keys[i - 1], &keys[i]) == 0) {
            const msgpack_object *k = keys[i];
            uc_free(keys);
            return uc_err("%s: record %ld field %.*s: duplicate key", r->name, rc->number,
                          (int)UC_MIN(k->via.str.size, 64u), k->via.str.ptr);
        }
    uc_free(keys);
    for (int i = 0; i < rc->n; i++) {
        const msgpack_object *k = nested_dup(&rc->kv[i].val, 1);
        if (k)
            return uc_err("%s: record %ld field %.*s: duplicate key %.*s inside it", r->name, rc->number,
                          (int)UC_MIN(rc->kv[i].key.via.str.size, 64u), rc->kv[i].key.via.str.ptr,
                          (int)UC_MIN(k->via.str.size, 64u), k->via.str.ptr);
    }
    if (!rec_has(rc, "version"))
        return uc_err("%s: record %ld field version: missing (not an unclip record stream?)", r->name,
                      rc->number);
    if (rec_get_u64(rc, "version", &v))
        return uc_err_prefix("%s", r->name);
    if (v != UC_REC_VERSION)
        return uc_err("%s: record %ld field version: unknown format version %llu (this build reads %d)",
                      r->name, rc->number, (unsigned long long)v, UC_REC_VERSION);
    return 0;
}

static int fail(rec_reader *r, const char *why)
{
    r->failed = 1;
    return uc_err("%s: record %ld: %s", r->name, r->count + 1, why);
}

int rec_read(rec_reader *r, rec **out)
{
    *out = NULL;
    if (r->failed)
        return -1;
    const char *why = NULL;
    int st;
    while ((st = scan(&r->scan, r->buf, r->len, &why)) == 0) {
        if (r->eof) {
            if (r->len == 0)
                return 0;
            return fail(r, "stream ends inside the record (truncated)");
        }
        if (r->cap - r->len < ((size_t)1 << 16)) {
            r->cap = r->cap ? 2 * r->cap : (size_t)1 << 16;
            r->buf = uc_xrealloc(r->buf, r->cap, 1);
        }
        ssize_t got;
        do
            got = read(r->fd, r->buf + r->len, r->cap - r->len);
        while (got < 0 && errno == EINTR);
        if (got < 0)
            return fail(r, strerror(errno));
        if (got == 0)
            r->eof = 1;
        r->len += (size_t)got;
    }
    if (st < 0)
        return fail(r, why);
    size_t msg = r->scan.pos, off = 0;
    long num = ++r->count;
    /* msgpack-c's objects point into the bytes they were parsed from: keep
     * the message in the record's own zone. */
    rec *rc = rec_empty();
    rc->number = num;
    char *bytes = zalloc(rc->zone, msg);
    mcpy(bytes, r->buf, msg);
    memmove(r->buf, r->buf + msg, r->len - msg);
    r->len -= msg;
    scan_reset(&r->scan);
    msgpack_object obj;
    msgpack_unpack_return ret = msgpack_unpack(bytes, msg, &off, rc->zone, &obj);
    if (ret == MSGPACK_UNPACK_NOMEM_ERROR)
        uc_oom(msg);
    if (ret != MSGPACK_UNPACK_SUCCESS || off != msg || obj.type != MSGPACK_OBJECT_MAP) {
        rec_free(rc);
        r->count--;
        return fail(r, obj.type != MSGPACK_OBJECT_MAP && ret == MSGPACK_UNPACK_SUCCESS ? "not a map"
                                                                                         : "malformed msgpack data");
    }
    for (uint32_t i = 0; i < obj.via.map.size; i++)
        push(rc, obj.via.map.ptr[i].key, obj.via.map.ptr[i].val);
    if (validate(rc, r)) {
        rec_free(rc);
        r->failed = 1;
        return -1;
    }
    *out = rc;
    return 1;
}

/* ---- JSON rendering ---- */

static cJSON *json_of(const rec *r, const char *key, const msgpack_object *o, int full);

/* Values of t from element i, at most CHUNK of them, as double: the
 * statistics and --full's values are read a chunk at a time, never the
 * whole tensor widened at once (a 64 Mpixel picture is 192 M values). */
#define CHUNK 4096
static int64_t chunk_of(const uc_tensor *t, int64_t i, int64_t n, double *out)
{
    int64_t m = UC_MIN(CHUNK, n - i);
    size_t es = uc_dtype_size(t->dtype);
    uc_tensor part = *t;
    part.ndim = 1;
    part.shape[0] = m;
    part.data = (const unsigned char *)t->data + (size_t)i * es;
    part.nbytes = (size_t)m * es;
    if (t->dtype == UC_F32 || t->dtype == UC_F16 || t->dtype == UC_BF16 || t->dtype == UC_F64) {
        float x[CHUNK];
        uc_tensor_to_f32(&part, x);
        for (int64_t k = 0; k < m; k++)
            out[k] = x[k];
    } else {
        int64_t x[CHUNK];
        uc_tensor_to_i64(&part, x);
        for (int64_t k = 0; k < m; k++)
            out[k] = (double)x[k];
    }
    return m;
}

/* The tensors whose every value --full prints: their "values" is a marker
 * in the cJSON tree (\001 index \001, a byte cJSON escapes in every string,
 * so only a marker can hold it), replaced by the values as rec_dump_json
 * writes, so they never become one cJSON node each. */
static _Thread_local uc_tensor *full_t;
static _Thread_local int full_n, full_cap;

static cJSON *tensor_json(const uc_tensor *t, int full)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "dtype", uc_dtype_name(t->dtype));
    cJSON *sh = cJSON_AddArrayToObject(j, "shape");
    for (int i = 0; i < t->ndim; i++)
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[i]));
    int64_t n = uc_tensor_numel(t);
    double mn = INFINITY, mx = -INFINITY, sum = 0, x[CHUNK];
    if (full && n > 8) {
        if (full_n == full_cap) {
            full_cap = full_cap ? 2 * full_cap : 8;
            full_t = uc_xrealloc(full_t, (size_t)full_cap, sizeof *full_t);
        }
        full_t[full_n] = *t;
        char mark[32];
        snprintf(mark, sizeof mark, "\001%d\001", full_n++);
        cJSON_AddItemToObject(j, "values", cJSON_CreateRaw(mark));
    } else {
        cJSON *vals = cJSON_AddArrayToObject(j, "values");
        int64_t m = chunk_of(t, 0, UC_MIN(n, 8), x);
        for (int64_t i = 0; i < m; i++)
            cJSON_AddItemToArray(vals, cJSON_CreateNumber(x[i]));
    }
    for (int64_t i = 0; i < n;) {
        int64_t m = chunk_of(t, i, n, x);
        for (int64_t k = 0; k < m; k++) {
            mn = fmin(mn, x[k]);
            mx = fmax(mx, x[k]);
            sum += x[k];
        }
        i += m;
    }
    if (n > 0) {
        cJSON_AddNumberToObject(j, "min", mn);
        cJSON_AddNumberToObject(j, "max", mx);
        cJSON_AddNumberToObject(j, "mean", sum / (double)n);
    }
    char hex[24];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)uc_fnv1a(t->data, t->nbytes, UC_FNV_INIT));
    cJSON_AddStringToObject(j, "fnv1a", hex);
    return j;
}

/* The values of full_t[k] as a JSON array with the bytes cJSON would give
 * it: an integer written by hand as cJSON's "%1.15g" writes it, any other
 * number by cJSON itself (one number item reused). */
static int write_values(FILE *out, int k)
{
    const uc_tensor *t = &full_t[k];
    int64_t n = uc_tensor_numel(t);
    double x[CHUNK];
    cJSON *num = cJSON_CreateNumber(0);
    char buf[CHUNK * 8 + 64];
    int rc = fputc('[', out) == EOF;
    for (int64_t i = 0; i < n && !rc;) {
        int64_t m = chunk_of(t, i, n, x);
        size_t w = 0;
        for (int64_t j = 0; j < m; j++) {
            if (i + j > 0)
                buf[w++] = ',';
            /* an integer (not -0) as cJSON prints it ("%1.15g"), without sprintf */
            if (fabs(x[j]) < 1e9 && x[j] == (double)(long)x[j] && !signbit(x[j])) {
                char d[16];
                int nd = 0;
                long v = (long)x[j];
                if (v < 0)
                    buf[w++] = '-', v = -v;
                do
                    d[nd++] = (char)('0' + v % 10);
                while ((v /= 10));
                while (nd)
                    buf[w++] = d[--nd];
            } else {
                cJSON_SetNumberValue(num, x[j]);
                if (!cJSON_PrintPreallocated(num, buf + w, 40, 0))
                    snprintf(buf + w, 40, "null");
                w += strlen(buf + w);
            }
            if (w > sizeof buf - 64) {
                rc |= fwrite(buf, 1, w, out) != w;
                w = 0;
            }
        }
        rc |= fwrite(buf, 1, w, out) != w;
        i += m;
    }
    cJSON_Delete(num);
    return rc || fputc(']', out) == EOF ? -1 : 0;
}

static int looks_like_tensor(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_MAP && o->via.map.size == 3 && key_is(&o->via.map.ptr[0].key, "dtype");
}

static cJSON *json_of(const rec *r, const char *key, const msgpack_object *o, int full)
{
    char tmp[64];
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return cJSON_CreateNull();
    case MSGPACK_OBJECT_BOOLEAN: return cJSON_CreateBool(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        /* digits, exactly: cJSON would print a number of 16 or 17 digits
         * (a noise key) with an exponent */
        snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)o->via.u64);
        return cJSON_CreateRaw(tmp);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return cJSON_CreateNumber((double)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return isfinite(o->via.f64) ? cJSON_CreateNumber(o->via.f64) : cJSON_CreateNull();
    case MSGPACK_OBJECT_STR: {
        /* JSON text must be UTF-8: a byte that is not part of a valid
         * sequence (or a NUL) is shown as U+FFFD */
        const unsigned char *p = (const unsigned char *)o->via.str.ptr;
        size_t n = o->via.str.size, w = 0;
        char *s = uc_alloc(3 * n + 1, 1);
        for (size_t i = 0, len; i < n; i += len) {
            if ((len = utf8_seq(p + i, n - i))) {
                memcpy(s + w, p + i, len);
                w += len;
            } else {
                memcpy(s + w, "\xef\xbf\xbd", 3);
                w += 3;
                len = 1;
            }
        }
        cJSON *j = cJSON_CreateString(s);
        uc_free(s);
        return j;
    }
    case MSGPACK_OBJECT_BIN: {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "bin_bytes", o->via.bin.size);
        return j;
    }
    case MSGPACK_OBJECT_ARRAY: {
        cJSON *a = cJSON_CreateArray();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            cJSON_AddItemToArray(a, json_of(r, key, &o->via.array.ptr[i], full));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        uc_tensor t;
        if (looks_like_tensor(o) && tensor_of(r, key, o, &t) == 0)
            return tensor_json(&t, full);
        cJSON *m = cJSON_CreateObject();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            char name[256];
            if (k->type == MSGPACK_OBJECT_STR)
                snprintf(name, sizeof name, "%.*s", (int)UC_MIN(k->via.str.size, 255u), k->via.str.ptr);
            else
                snprintf(name, sizeof name, "?");
            cJSON_AddItemToObject(m, name, json_of(r, name, &o->via.map.ptr[i].val, full));
        }
        return m;
    }
    default: return cJSON_CreateString("(ext)");
    }
}

int rec_dump_json(const rec *r, FILE *out, int full)
{
    msgpack_object m = {.type = MSGPACK_OBJECT_MAP};
    m.via.map.size = (uint32_t)r->n;
    m.via.map.ptr = r->kv;
    full_n = 0;
    cJSON *j = json_of(r, "", &m, full);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    int rc = 0;
    for (char *p = s, *q; !rc; p = q) {
        q = strchr(p, '\001');
        if (!q) {
            rc = fprintf(out, "%s\n", p) < 0;
            break;
        }
        rc = fwrite(p, 1, (size_t)(q - p), out) != (size_t)(q - p);
        char *end;
        long k = strtol(q + 1, &end, 10);
        q = end + 1; /* past the closing \001 */
        if (!rc)
            rc = write_values(out, (int)k);
    }
    free(s);
    full_n = 0;
    return rc ? uc_err("write error: %s", strerror(errno)) : 0;
}
