/* safetensors.c - see safetensors.h */
#define _DEFAULT_SOURCE /* madvise */
#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/base.h"

struct st_file {
    char *path;
    const unsigned char *map;
    size_t size;
    size_t header; /* 8 + the header length */
    st_entry *entries;
    const st_entry **byname; /* entries sorted by name, for st_get */
    int n;
    char **meta; /* key, value pairs */
    int nmeta;
    float **owned; /* widened copies handed out by st_f32 */
    int nowned;
};

static int cmp_begin(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    uintptr_t p = (uintptr_t)x->t.data, q = (uintptr_t)y->t.data;
    return p < q ? -1 : p > q;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

static int parse_u64(const cJSON *j, uint64_t *out)
{
    /* JSON numbers arrive as double: exact up to 2^53, which bounds any file
     * that can exist here. */
    if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble > 9007199254740992.0 ||
        j->valuedouble != (double)(uint64_t)j->valuedouble)
        return -1;
    *out = (uint64_t)j->valuedouble;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A metadata name that appears twice, or NULL (JSON allows duplicates;
 * which one a reader takes is then anyone's guess, so they are refused). */
static const char *meta_dup(const st_file *f)
{
    if (f->nmeta < 2)
        return NULL;
    char **names = uc_alloc((size_t)f->nmeta, sizeof *names);
    for (int i = 0; i < f->nmeta; i++)
        names[i] = f->meta[2 * i];
    qsort(names, (size_t)f->nmeta, sizeof *names, cmp_str);
    const char *dup = NULL;
    for (int i = 1; i < f->nmeta && !dup; i++)
        if (!strcmp(names[i - 1], names[i]))
            dup = names[i];
    uc_free(names);
    return dup;
}

static int parse_header(st_file *f, const char *json, size_t len, size_t data_size,
                        const unsigned char *data)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return uc_err("header is not a JSON object");
    }
    int count = cJSON_GetArraySize(root);
    f->entries = uc_alloc((size_t)count + 1, sizeof *f->entries);
    int rc = -1;
    for (cJSON *it = root->child; it; it = it->next) {
        const char *name = it->string;
        if (!name)
            goto out;
        if (strcmp(name, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) {
                uc_err("__metadata__ is not an object");
                goto out;
            }
            if (f->meta) {
                uc_err("__metadata__: duplicate name");
                goto out;
            }
            int m = cJSON_GetArraySize(it);
            f->meta = uc_alloc((size_t)m * 2 + 1, sizeof(char *));
            for (cJSON *kv = it->child; kv; kv = kv->next) {
                if (!cJSON_IsString(kv)) {
                    uc_err("__metadata__.%s is not a string", kv->string);
                    goto out;
                }
                f->meta[2 * f->nmeta] = uc_strdup(kv->string);
                f->meta[2 * f->nmeta + 1] = uc_strdup(kv->valuestring);
                f->nmeta++;
            }
            if (meta_dup(f)) {
                uc_err("__metadata__.%.64s: duplicate name", meta_dup(f));
                goto out;
            }
            continue;
        }
        st_entry *e = &f->entries[f->n];
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsObject(it) || !cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
            cJSON_GetArraySize(off) != 2) {
            uc_err("tensor %s: needs dtype, shape and data_offsets", name);
            goto out;
        }
        int d = uc_dtype_parse(dt->valuestring, strlen(dt->valuestring));
        if (d < 0) {
            uc_err("tensor %s: unknown dtype %.16s", name, dt->valuestring);
            goto out;
        }
        e->t.dtype = (uc_dtype)d;
        e->t.ndim = cJSON_GetArraySize(sh);
        if (e->t.ndim > UC_MAXDIM) {
            uc_err("tensor %s: rank %d above %d", name, e->t.ndim, UC_MAXDIM);
            goto out;
        }
        int k = 0;
        for (cJSON *s = sh->child; s; s = s->next, k++) {
            uint64_t v;
            if (parse_u64(s, &v) || v > (uint64_t)INT64_MAX) {
                uc_err("tensor %s: bad shape", name);
                goto out;
            }
            e->t.shape[k] = (int64_t)v;
        }
        uint64_t b, en;
        if (parse_u64(off->child, &b) || parse_u64(off->child->next, &en) || b > en || en > data_size) {
            uc_err("tensor %s: data_offsets outside the %zu data bytes", name, data_size);
            goto out;
        }
        int64_t numel = uc_tensor_numel(&e->t);
        size_t want;
        if (numel < 0 || uc_mul_ok((size_t)numel, uc_dtype_size(e->t.dtype), &want) || want != en - b) {
            uc_err("tensor %s: %llu data bytes do not match its dtype and shape", name,
                   (unsigned long long)(en - b));
            goto out;
        }
        e->name = uc_strdup(name);
        e->t.data = data + b;
        e->t.nbytes = (size_t)(en - b);
        f->n++;
    }
    /* Duplicate names by sorting (a header may name a million tensors). */
    f->byname = uc_alloc((size_t)f->n + 1, sizeof *f->byname);
    for (int i = 0; i < f->n; i++)
        f->byname[i] = &f->entries[i];
    qsort(f->byname, (size_t)f->n, sizeof *f->byname, cmp_name);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->byname[i - 1]->name, f->byname[i]->name) == 0) {
            uc_err("tensor %s: duplicate name", f->byname[i]->name);
            goto out;
        }
    /* Overlap check on a sorted copy (order of the file is kept for users). */
    st_entry *sorted = uc_alloc((size_t)f->n + 1, sizeof *sorted);
    memcpy(sorted, f->entries, (size_t)f->n * sizeof *sorted);
    qsort(sorted, (size_t)f->n, sizeof *sorted, cmp_begin);
    rc = 0;
    for (int i = 1; i < f->n; i++) {
        const unsigned char *prev_end = (const unsigned char *)sorted[i - 1].t.data + sorted[i - 1].t.nbytes;
        if ((const unsigned char *)sorted[i].t.data < prev_end) {
            rc = uc_err("tensors %s and %s overlap", sorted[i - 1].name, sorted[i].name);
            break;
        }
    }
    uc_free(sorted);
out:
    cJSON_Delete(root);
    return rc;
}

st_file *st_open(const char *path)
{
    st_file *f = uc_alloc(1, sizeof *f);
    f->path = uc_strdup(path);
    /* without blocking: a FIFO given as a model would wait for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        uc_err("%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        st_close(f);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size < 8) {
        close(fd);
        uc_err("%s: not a safetensors file (%s)", path, S_ISREG(sb.st_mode) ? "too short" : "not a regular file");
        st_close(f);
        return NULL;
    }
    f->size = (size_t)sb.st_size;
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        uc_err("%s: mmap: %s", path, strerror(errno));
        st_close(f);
        return NULL;
    }
    f->map = m;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f->map[i];
    if (hlen > ST_HEADER_MAX || hlen > f->size - 8) {
        uc_err("%s: header length %llu past the end of the file or above the limit", path,
               (unsigned long long)hlen);
        st_close(f);
        return NULL;
    }
    f->header = 8 + (size_t)hlen;
    if (parse_header(f, (const char *)f->map + 8, (size_t)hlen, f->size - 8 - (size_t)hlen,
                     f->map + 8 + hlen)) {
        uc_err_prefix("%s", path);
        st_close(f);
        return NULL;
    }
    return f;
}

void st_close(st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap((void *)f->map, f->size);
    for (int i = 0; i < f->n; i++)
        free((char *)f->entries[i].name);
    uc_free(f->entries);
    uc_free(f->byname);
    for (int i = 0; i < 2 * f->nmeta; i++)
        free(f->meta[i]);
    uc_free(f->meta);
    for (int i = 0; i < f->nowned; i++)
        uc_free(f->owned[i]);
    free(f->owned);
    free(f->path);
    uc_free(f);
}

const char *st_path(const st_file *f) { return f->path; }
int st_count(const st_file *f) { return f->n; }
const st_entry *st_at(const st_file *f, int i) { return (i >= 0 && i < f->n) ? &f->entries[i] : NULL; }
int st_meta_count(const st_file *f) { return f->nmeta; }

const unsigned char *st_header(const st_file *f, size_t *n)
{
    *n = f->header;
    return f->map;
}

void st_meta_at(const st_file *f, int i, const char **key, const char **val)
{
    *key = f->meta[2 * i];
    *val = f->meta[2 * i + 1];
}

const uc_tensor *st_get(const st_file *f, const char *name)
{
    st_entry key = {.name = name};
    const st_entry *k = &key, *const *e = bsearch(&k, f->byname, (size_t)f->n, sizeof *f->byname, cmp_name);
    return e ? &(*e)->t : NULL;
}

const char *st_meta(const st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    return NULL;
}

/* madvise(DONTNEED) the pages wholly inside [at, at + n). */
static void drop_pages(const void *at, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)at;
    uintptr_t lo = (a + page - 1) & ~(page - 1), hi = (a + (uintptr_t)n) & ~(page - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

const float *st_f32(st_file *f, const char *name, int ndim, const int64_t *shape)
{
    const uc_tensor *t = st_get(f, name);
    char a[96], b[96];
    if (!t) {
        uc_err("tensor %s: missing from %s", name, f->path);
        return NULL;
    }
    if (ndim >= 0 && !uc_tensor_shape_is(t, ndim, shape)) {
        uc_tensor want = {.ndim = ndim};
        memcpy(want.shape, shape, (size_t)ndim * sizeof *shape);
        uc_err("tensor %s: shape %s, expected %s", name, uc_shape_str(t, a, sizeof a),
               uc_shape_str(&want, b, sizeof b));
        return NULL;
    }
    if (t->dtype == UC_F32 && ((uintptr_t)t->data & 3) == 0)
        return t->data;
    if (t->dtype != UC_F32 && t->dtype != UC_F16 && t->dtype != UC_BF16 && t->dtype != UC_F64) {
        uc_err("tensor %s: dtype %s, expected a float type", name, uc_dtype_name(t->dtype));
        return NULL;
    }
    float *w = uc_alloc_raw((size_t)uc_tensor_numel(t), sizeof(float));
    uc_tensor_to_f32(t, w);
    /* The widened copy serves from now on: give back the pages of the stored
     * bytes (read from the file again if anyone touches them), so that an
     * F16 file does not cost its own size on top of the F32 copies. */
    drop_pages(t->data, t->nbytes);
    f->owned = uc_xrealloc(f->owned, (size_t)f->nowned + 1, sizeof *f->owned);
    f->owned[f->nowned++] = w;
    return w;
}

void st_release(st_file *f, const char *prefix)
{
    size_t len = strlen(prefix);
    for (int i = 0; i < f->n; i++)
        if (!strncmp(f->entries[i].name, prefix, len))
            drop_pages(f->entries[i].t.data, f->entries[i].t.nbytes);
}

const float *st_f32f(st_file *f, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return st_f32(f, name, ndim, shape);
}

/* ---- writing ---- */

int st_write(const char *path, const st_out *t, int n, const char *const *meta_kv, int nmeta)
{
    cJSON *root = cJSON_CreateObject();
    if (nmeta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < nmeta; i++)
            cJSON_AddStringToObject(m, meta_kv[2 * i], meta_kv[2 * i + 1]);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uc_tensor u = {.dtype = t[i].dtype, .ndim = t[i].ndim};
        memcpy(u.shape, t[i].shape, sizeof u.shape);
        uint64_t bytes = (uint64_t)uc_tensor_numel(&u) * uc_dtype_size(t[i].dtype);
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        cJSON_AddStringToObject(e, "dtype", uc_dtype_name(t[i].dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int k = 0; k < t[i].ndim; k++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[k]));
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t jl = strlen(json), padded = (jl + 7) & ~(size_t)7;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        free(json);
        return uc_err("%s: %s", tmp, strerror(errno));
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(json, 1, jl, fp);
    for (size_t i = jl; i < padded; i++)
        fputc(' ', fp);
    free(json);
    for (int i = 0; i < n; i++) {
        uc_tensor u = {.dtype = t[i].dtype, .ndim = t[i].ndim};
        memcpy(u.shape, t[i].shape, sizeof u.shape);
        size_t bytes = (size_t)uc_tensor_numel(&u) * uc_dtype_size(t[i].dtype);
        if (bytes && fwrite(t[i].data, 1, bytes, fp) != bytes)
            break;
    }
    if (ferror(fp) | fclose(fp) || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return uc_err("%s: write failed: %s", path, strerror(e));
    }
    return 0;
}
