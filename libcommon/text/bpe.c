/* bpe.c - OpenAI CLIP's byte-level BPE tokenizer (clip/simple_tokenizer.py).
 *
 * encode(text):
 *   basic_clean       NFC (the ftfy stand-in), html.unescape twice, strip
 *   whitespace_clean  runs of White_Space -> ' ', strip
 *   lower             Python's str.lower (full mapping, final sigma)
 *   pre-tokenize      the CLIP pattern, leftmost-first alternation
 *   bpe               per pre-token: its UTF-8 bytes as symbols, the last with
 *                     '</w>', merge the best-ranked adjacent pair everywhere
 *                     (left to right, no overlaps) until no pair has a rank
 *
 * Text is handled as code points (uint32) from NFC to pre-tokenization.
 * Symbols are vocabulary ids. Python's tables are dicts built in order, so a
 * string (or a pair) that appears twice means its last id (rank): a merge
 * list with duplicates behaves as it does upstream. */
#define _POSIX_C_SOURCE 200809L /* readlink */
#include "libcommon/text/bpe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>
#include <zlib.h>

#include "formats/base.h"
#include "libcommon/text/html_entities.h"

#define GZ_MERGES 48894          /* 49152 - 256 - 2 lines used of OpenAI's file */
#define MAX_MERGES (1 << 20)     /* bound on a merge list */
#define MAX_MERGE_LINE 1024      /* bytes in one "a b" line */
#define MAX_MERGES_TEXT (64u << 20)
#define MAX_TEXT (16u << 20)     /* bytes of one text to encode */
#define PY_INT_MAX_DIGITS 4300   /* Python's int(str) limit (sys.int_info) */
#define NONE UINT32_MAX

struct uc_bpe {
    int nmerges;
    int nvocab;             /* 256 + 256 + nmerges + 2 */
    uint32_t sym[256];      /* byte -> id of its symbol */
    uint32_t sym_end[256];  /* byte -> id of its symbol + '</w>' */
    uint64_t *pair_key;     /* [pair_cap] left << 32 | right, UINT64_MAX = empty */
    uint32_t *pair_rank;    /* [pair_cap] merge rank (0 = first merge) */
    uint32_t *pair_id;      /* [pair_cap] id of the merged symbol */
    uint32_t pair_cap;      /* power of two */
    char *vocab;            /* the vocabulary's strings, concatenated in id order */
    uint32_t *vocab_off;    /* [nvocab + 1] offsets into vocab */
};

/* ---- bytes_to_unicode ---------------------------------------------------- */

/* Byte b's position in bytes_to_unicode order (its symbol id) and the code
 * point of the symbol. Printable Latin-1 bytes map to themselves, the other
 * 68 bytes to 256 + n in increasing byte order. */
static void byte_symbols(uint32_t pos[256], uint32_t cp[256])
{
    int n = 0, k = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
            pos[b] = (uint32_t)k++;
            cp[b] = (uint32_t)b;
        }
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
            pos[b] = (uint32_t)k++;
            cp[b] = 256u + (uint32_t)n++;
        }
}

/* ---- loading ------------------------------------------------------------- */

typedef struct {
    char *s;          /* concatenated strings */
    size_t len, scap;
    uint32_t *off;    /* [n + 1] */
    uint32_t *hash;   /* [n] */
    int n;
    uint32_t *slot;   /* [cap] id + 1, 0 = empty */
    uint32_t cap;
} strtab;

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = uc_fnv1a(s, n, UC_FNV_INIT) * 0x9E3779B97F4A7C15ULL;
    return (uint32_t)(h >> 32);
}

static void strtab_add(strtab *t, const char *s, size_t n)
{
    if (t->len + n > t->scap) {
        t->scap = (t->len + n) * 2;
        t->s = uc_xrealloc(t->s, t->scap, 1);
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->hash[t->n] = hash_bytes(s, n);
    t->off[++t->n] = (uint32_t)t->len;
}

/* Slot of string s (hash hs): the one holding it, or the empty one where
 * it goes. */
static uint32_t strtab_slot(const strtab *t, const char *s, size_t n, uint32_t hs)
{
    for (uint32_t h = hs & (t->cap - 1);; h = (h + 1) & (t->cap - 1)) {
        uint32_t id = t->slot[h];
        if (!id)
            return h;
        id--;
        if (t->hash[id] == hs && t->off[id + 1] - t->off[id] == n && memcmp(t->s + t->off[id], s, n) == 0)
            return h;
    }
}

static uint32_t strtab_find(const strtab *t, const char *s, size_t n)
{
    uint32_t id = t->slot[strtab_slot(t, s, n, hash_bytes(s, n))];
    return id ? id - 1 : NONE;
}

/* The last id whose string equals that of id. */
static uint32_t strtab_last(const strtab *t, uint32_t id)
{
    return t->slot[strtab_slot(t, t->s + t->off[id], t->off[id + 1] - t->off[id], t->hash[id])] - 1;
}

static uint32_t pair_slot(const uc_bpe *b, uint64_t key)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ULL;
    for (uint32_t i = (uint32_t)(h >> 32) & (b->pair_cap - 1);; i = (i + 1) & (b->pair_cap - 1))
        if (b->pair_key[i] == key || b->pair_key[i] == UINT64_MAX)
            return i;
}

/* Rank of the pair (l, r) and the merged id, or NONE. */
static uint32_t pair_find(const uc_bpe *b, uint32_t l, uint32_t r, uint32_t *id)
{
    uint32_t i = pair_slot(b, (uint64_t)l << 32 | r);
    if (b->pair_key[i] == UINT64_MAX)
        return NONE;
    *id = b->pair_id[i];
    return b->pair_rank[i];
}

static int valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

static uint32_t pow2_above(size_t n)
{
    uint32_t c = 16;
    while (c < 2 * n)
        c *= 2;
    return c;
}

uc_bpe *uc_bpe_load_text(const char *text, size_t len, int nmerges)
{
    if (!text)
        return uc_err("bpe merges: no text"), NULL;
    if (len > MAX_MERGES_TEXT)
        return uc_err("bpe merges: %zu bytes, more than the limit %u", len, MAX_MERGES_TEXT), NULL;
    if (nmerges > MAX_MERGES)
        return uc_err("bpe merges: %d requested, more than the limit %d", nmerges, MAX_MERGES), NULL;
    const char *end = text + len, *p = memchr(text, '\n', len);
    if (!p)
        return uc_err("bpe merges: no line after the header"), NULL;
    p++;

    /* Lines after the header: "first second", each part non-empty UTF-8. */
    int cap = nmerges >= 0 ? nmerges : 1024, n = 0;
    uint32_t(*parts)[3] = uc_alloc((size_t)cap + 1, sizeof *parts); /* offset, first len, second len */
    while (p < end && (nmerges < 0 || n < nmerges)) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t ll = (size_t)(le - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        const char *sp = memchr(p, ' ', ll);
        int line = n + 2;
        if (ll > MAX_MERGE_LINE) {
            uc_err("bpe merges line %d: %zu bytes, more than %d", line, ll, MAX_MERGE_LINE);
            goto fail;
        }
        if (!sp || sp == p || sp == p + ll - 1 || memchr(sp + 1, ' ', ll - (size_t)(sp - p) - 1)) {
            uc_err("bpe merges line %d: not two symbols separated by one space", line);
            goto fail;
        }
        if (!valid_utf8(p, ll)) {
            uc_err("bpe merges line %d: invalid UTF-8", line);
            goto fail;
        }
        if (n == MAX_MERGES) {
            uc_err("bpe merges: more than %d lines", MAX_MERGES);
            goto fail;
        }
        if (n == cap) {
            cap *= 2;
            parts = uc_xrealloc(parts, (size_t)cap + 1, sizeof *parts);
        }
        parts[n][0] = (uint32_t)(p - text);
        parts[n][1] = (uint32_t)(sp - p);
        parts[n][2] = (uint32_t)(ll - (size_t)(sp - p) - 1);
        n++;
        p = nl ? nl + 1 : end;
    }
    if (nmerges >= 0 && n < nmerges) {
        uc_err("bpe merges: %d lines after the header, %d needed", n, nmerges);
        goto fail;
    }

    /* The vocabulary as strings, in id order, and a string -> last id table. */
    uc_bpe *b = uc_alloc(1, sizeof *b);
    b->nmerges = n;
    b->nvocab = 512 + n + 2;
    strtab t = {.off = uc_alloc((size_t)b->nvocab + 1, sizeof(uint32_t)),
                .hash = uc_alloc((size_t)b->nvocab, sizeof(uint32_t)),
                .cap = pow2_above((size_t)b->nvocab)};
    t.slot = uc_alloc(t.cap, sizeof(uint32_t));
    uint32_t pos[256], cp[256], order[256];
    byte_symbols(pos, cp);
    for (int k = 0; k < 256; k++)
        order[pos[k]] = cp[k];
    for (int end_mark = 0; end_mark < 2; end_mark++)
        for (int k = 0; k < 256; k++) {
            char u[8 + 4];
            size_t m = (size_t)utf8proc_encode_char((utf8proc_int32_t)order[k], (utf8proc_uint8_t *)u);
            if (end_mark)
                memcpy(u + m, "</w>", 4), m += 4;
            strtab_add(&t, u, m);
        }
    for (int i = 0; i < n; i++) {
        size_t m = (size_t)parts[i][1] + parts[i][2];
        const char *a = text + parts[i][0];
        char buf[2 * MAX_MERGE_LINE];
        memcpy(buf, a, parts[i][1]);
        memcpy(buf + parts[i][1], a + parts[i][1] + 1, parts[i][2]);
        strtab_add(&t, buf, m);
    }
    strtab_add(&t, "<|startoftext|>", 15);
    strtab_add(&t, "<|endoftext|>", 13);
    for (int id = 0; id < b->nvocab; id++)
        t.slot[strtab_slot(&t, t.s + t.off[id], t.off[id + 1] - t.off[id], t.hash[id])] = (uint32_t)id + 1;
    for (int k = 0; k < 256; k++) {
        b->sym[k] = strtab_last(&t, pos[k]);
        b->sym_end[k] = strtab_last(&t, pos[k] + 256);
    }

    /* Pair -> (last rank, merged id). A merge naming a string that is not in
     * the vocabulary can never apply: every symbol of a word is one. */
    b->pair_cap = pow2_above((size_t)n);
    b->pair_key = uc_alloc(b->pair_cap, sizeof(uint64_t));
    b->pair_rank = uc_alloc(b->pair_cap, sizeof(uint32_t));
    b->pair_id = uc_alloc(b->pair_cap, sizeof(uint32_t));
    memset(b->pair_key, 0xff, (size_t)b->pair_cap * sizeof(uint64_t));
    for (int i = 0; i < n; i++) {
        const char *a = text + parts[i][0];
        uint32_t l = strtab_find(&t, a, parts[i][1]);
        uint32_t r = strtab_find(&t, a + parts[i][1] + 1, parts[i][2]);
        if (l == NONE || r == NONE)
            continue;
        uint32_t id = strtab_last(&t, 512 + (uint32_t)i);
        uint64_t key = (uint64_t)l << 32 | r;
        uint32_t s = pair_slot(b, key);
        b->pair_key[s] = key;
        b->pair_rank[s] = (uint32_t)i;
        b->pair_id[s] = id;
    }
    b->vocab = t.s; /* kept for uc_bpe_piece */
    b->vocab_off = t.off;
    uc_free(t.hash);
    uc_free(t.slot);
    uc_free(parts);
    return b;
fail:
    uc_free(parts);
    return NULL;
}

uc_bpe *uc_bpe_load_gz(const char *path)
{
    if (!path)
        return uc_err("bpe vocabulary: no path"), NULL;
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return uc_err("%s: %s", path, errno ? strerror(errno) : "cannot open"), NULL;
    /* Read until the header and GZ_MERGES lines are in (the rest is unused). */
    size_t len = 0, cap = 1u << 20, lines = 0;
    char *text = uc_xrealloc(NULL, cap, 1);
    for (;;) {
        if (len == cap) {
            if (cap >= MAX_MERGES_TEXT) {
                gzclose(f);
                uc_free(text);
                return uc_err("%s: more than %u bytes before merge %d", path, MAX_MERGES_TEXT, GZ_MERGES), NULL;
            }
            cap *= 2;
            text = uc_xrealloc(text, cap, 1);
        }
        int got = gzread(f, text + len, (unsigned)UC_MIN(cap - len, 64u << 10));
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            uc_err("%s: %s", path, msg);
            gzclose(f);
            uc_free(text);
            return NULL;
        }
        for (int i = 0; i < got; i++)
            lines += text[len + (size_t)i] == '\n';
        len += (size_t)got;
        if (got == 0 || lines > GZ_MERGES)
            break;
    }
    gzclose(f);
    uc_bpe *b = uc_bpe_load_text(text, len, GZ_MERGES);
    uc_free(text);
    if (!b)
        uc_err_prefix("%s", path);
    return b;
}

void uc_bpe_free(uc_bpe *b)
{
    if (!b)
        return;
    uc_free(b->pair_key);
    uc_free(b->pair_rank);
    uc_free(b->pair_id);
    uc_free(b->vocab);
    uc_free(b->vocab_off);
    uc_free(b);
}

int uc_bpe_vocab_size(const uc_bpe *b) { return b->nvocab; }

const char *uc_bpe_piece(const uc_bpe *b, int32_t id, size_t *len)
{
    if (id < 0 || id >= b->nvocab)
        return NULL;
    *len = b->vocab_off[id + 1] - b->vocab_off[id];
    return b->vocab + b->vocab_off[id];
}
int32_t uc_bpe_sot(const uc_bpe *b) { return b->nvocab - 2; }
int32_t uc_bpe_eot(const uc_bpe *b) { return b->nvocab - 1; }

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

const char *uc_bpe_default_path(void)
{
    static char path[4096 + 64];
    const char *name = "bpe_simple_vocab_16e6.txt.gz";
    const char *env = getenv("UNCLIP_VOCAB");
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
        return path;
    }
#ifdef UC_SHARE_DIR
    snprintf(path, sizeof path, "%s/%s", UC_SHARE_DIR, name);
    if (file_exists(path))
        return path;
#endif
    snprintf(path, sizeof path, "../shared/vocab/%s", name);
    if (file_exists(path))
        return path;
    /* ../shared/vocab from the directory above the binary's (ROOT/bin/x),
     * or from the two above that (ROOT/build/NAME/bin/x). */
    char dir[4096];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (n <= 0)
        return NULL;
    dir[n] = 0;
    for (int up = 0; up < 4; up++) {
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir)
            return NULL;
        *slash = 0; /* the binary's directory, then its ancestors */
        snprintf(path, sizeof path, "%s/../shared/vocab/%s", dir, name);
        if (up > 0 && file_exists(path))
            return path;
    }
    return NULL;
}

/* ---- text as code points ------------------------------------------------- */

typedef struct {
    uint32_t *p;
    size_t n, cap;
} cpvec;

static void put(cpvec *v, uint32_t c)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->p = uc_xrealloc(v->p, v->cap, sizeof *v->p);
    }
    v->p[v->n++] = c;
}

static uint8_t ccc(uint32_t c) { return (uint8_t)utf8proc_get_property((utf8proc_int32_t)c)->combining_class; }

/* UTF-8 -> NFC code points: canonical decomposition, a stable sort of each
 * run of marks by combining class (merge sort: utf8proc's own sort is
 * quadratic in the run), canonical composition. */
static int nfc(const char *s, size_t len, cpvec *out)
{
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t c, d[32];
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0)
            return uc_err("text: invalid UTF-8 at byte %zu", i);
        i += (size_t)k;
        int last = 0;
        utf8proc_ssize_t m = utf8proc_decompose_char(c, d, 32, UTF8PROC_COMPOSE, &last);
        if (m < 0 || m > 32)
            return uc_err("text: cannot decompose U+%04X", (unsigned)c);
        for (utf8proc_ssize_t j = 0; j < m; j++)
            put(out, (uint32_t)d[j]);
    }
    uint32_t *tmp = NULL;
    for (size_t i = 0; i < out->n;) {
        size_t j = i;
        while (j < out->n && ccc(out->p[j]))
            j++;
        if (j - i > 1) { /* bottom-up merge sort of p[i..j) by class */
            size_t m = j - i;
            uint32_t *a = out->p + i;
            tmp = uc_xrealloc(tmp, m, sizeof *tmp);
            for (size_t w = 1; w < m; w *= 2) {
                for (size_t lo = 0; lo < m; lo += 2 * w) {
                    size_t mid = UC_MIN(lo + w, m), hi = UC_MIN(lo + 2 * w, m), x = lo, y = mid, o = lo;
                    while (x < mid && y < hi)
                        tmp[o++] = ccc(a[y]) < ccc(a[x]) ? a[y++] : a[x++];
                    while (x < mid)
                        tmp[o++] = a[x++];
                    while (y < hi)
                        tmp[o++] = a[y++];
                }
                memcpy(a, tmp, m * sizeof *a);
            }
        }
        i = j == i ? i + 1 : j;
    }
    uc_free(tmp);
    if (out->n) {
        utf8proc_ssize_t m = utf8proc_normalize_utf32((utf8proc_int32_t *)out->p, (utf8proc_ssize_t)out->n,
                                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0)
            return uc_err("text: %s", utf8proc_errmsg(m));
        out->n = (size_t)m;
    }
    return 0;
}

static int entity_cmp(const void *key, const void *e) { return strcmp(key, ((const uc_html_entity *)e)->name); }

/* Named reference s[0..n) (ASCII only), or NULL. */
static const uc_html_entity *entity(const uint32_t *s, size_t n)
{
    char name[UC_HTML_NAME_MAX + 1];
    if (n > UC_HTML_NAME_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] >= 0x80)
            return NULL;
        name[i] = (char)s[i];
    }
    name[n] = 0;
    return bsearch(name, uc_html_entities, UC_COUNT(uc_html_entities), sizeof uc_html_entities[0], entity_cmp);
}

/* The text a numeric reference to v becomes (v saturates above 0x10FFFF). */
static void charref(cpvec *out, uint64_t v)
{
    for (size_t i = 0; i < UC_COUNT(uc_html_charref_fix); i++)
        if (uc_html_charref_fix[i][0] == v) {
            put(out, uc_html_charref_fix[i][1]);
            return;
        }
    if ((v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF) {
        put(out, 0xFFFD);
        return;
    }
    for (size_t i = 0; i < UC_COUNT(uc_html_charref_drop); i++)
        if (uc_html_charref_drop[i] == v)
            return;
    put(out, (uint32_t)v);
}

static int hexval(uint32_t c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (int)((c | 0x20) - 'a' + 10);
    return -1;
}

/* Python's html.unescape: every match of
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * left to right, replaced by its character(s); an unknown name by its
 * longest known prefix (of 2 or more characters) and the rest. */
static int unescape(const uint32_t *s, size_t n, cpvec *out)
{
    out->n = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '&') {
            put(out, s[i++]);
            continue;
        }
        size_t j = i + 1;
        if (j < n && s[j] == '#') {
            int hex = j + 1 < n && (s[j + 1] | 0x20) == 'x';
            size_t k = j + 1 + (size_t)hex, d = k;
            uint64_t v = 0;
            while (k < n && (hex ? hexval(s[k]) >= 0 : s[k] >= '0' && s[k] <= '9')) {
                v = v * (hex ? 16 : 10) + (uint64_t)hexval(s[k]);
                if (v > 0x110000)
                    v = 0x110000;
                k++;
            }
            if (k == d) { /* "&#" not followed by a number: no match here */
                put(out, s[i++]);
                continue;
            }
            if (!hex && k - d > PY_INT_MAX_DIGITS)
                return uc_err("text: numeric character reference with %zu digits (Python refuses more than %d)",
                              k - d, PY_INT_MAX_DIGITS);
            charref(out, v);
            i = k + (k < n && s[k] == ';');
            continue;
        }
        size_t k = j;
        while (k < n && k - j < 32 && s[k] != '\t' && s[k] != '\n' && s[k] != '\f' && s[k] != ' ' &&
               s[k] != '<' && s[k] != '&' && s[k] != '#' && s[k] != ';')
            k++;
        if (k == j) {
            put(out, s[i++]);
            continue;
        }
        size_t semi = k < n && s[k] == ';', len = k - j + semi, next = k + semi;
        const uc_html_entity *e = entity(s + j, len);
        size_t x = len;
        for (; !e && --x >= 2;)
            e = entity(s + j, x);
        if (e) {
            put(out, e->cp[0]);
            if (e->cp[1])
                put(out, e->cp[1]);
            j += x;
        } else {
            put(out, '&');
        }
        while (j < next)
            put(out, s[j++]);
        i = next;
    }
    return 0;
}

/* str.isspace (strip) and the regex module's \s (White_Space). */
static int py_isspace(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}
static int re_space(uint32_t c) { return py_isspace(c) && !(c >= 0x1C && c <= 0x1F); }

static void strip(cpvec *v)
{
    size_t a = 0, z = v->n;
    while (a < z && py_isspace(v->p[a]))
        a++;
    while (z > a && py_isspace(v->p[z - 1]))
        z--;
    if (a)
        memmove(v->p, v->p + a, (z - a) * sizeof *v->p);
    v->n = z - a;
}

/* Case_Ignorable and Cased of Unicode's DerivedCoreProperties (what Python
 * uses for the final sigma): categories, plus the few characters listed. */
static int case_ignorable(uint32_t c)
{
    static const uint32_t extra[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,  0x5F4,  0x2018, 0x2019,
                                     0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        for (size_t i = 0; i < UC_COUNT(extra); i++)
            if (extra[i] == c)
                return 1;
        return 0;
    }
}

/* Cased, for characters that are not Case_Ignorable. */
static int cased(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT || c == 0xAA ||
           c == 0xBA || (c >= 0x2160 && c <= 0x217F) || (c >= 0x24B6 && c <= 0x24E9) ||
           (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

/* Python's str.lower: full lowercase mapping (U+0130 is the one character
 * whose mapping is two code points), and U+03A3 becomes final sigma after a
 * cased letter not followed by one (case-ignorable characters skipped). */
static void lower(const uint32_t *s, size_t n, cpvec *out)
{
    out->n = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c == 0x130) {
            put(out, 'i');
            put(out, 0x307);
        } else if (c == 0x3A3) {
            size_t j = i;
            while (j > 0 && case_ignorable(s[j - 1]))
                j--;
            int fin = j > 0 && cased(s[j - 1]);
            if (fin) {
                j = i + 1;
                while (j < n && case_ignorable(s[j]))
                    j++;
                fin = j == n || !cased(s[j]);
            }
            put(out, fin ? 0x3C2 : 0x3C3);
        } else {
            put(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)c));
        }
    }
}

/* ---- pre-tokenizer ------------------------------------------------------- */

static int is_letter(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

static int is_number(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

/* s starts with the ASCII literal lit under re.IGNORECASE (simple case
 * folding: for these letters only ASCII case and U+017F ~ 's'). */
static size_t starts_ci(const uint32_t *s, size_t n, const char *lit)
{
    size_t k = 0;
    for (; lit[k]; k++) {
        if (k == n)
            return 0;
        uint32_t c = s[k] == 0x17F ? 's' : (s[k] >= 'A' && s[k] <= 'Z') ? s[k] + 32 : s[k];
        if (c != (uint32_t)(unsigned char)lit[k])
            return 0;
    }
    return k;
}

/* The regex module tests a negated class under IGNORECASE against every
 * case variant: U+0345 (a mark whose variants are iota) matches none of the
 * pattern and is skipped like whitespace. */
static int unmatched(uint32_t c) { return re_space(c) || c == 0x345; }

/* Length of the pre-token at s (n > 0), 0 when s[0] starts none
 * (whitespace). The pattern, leftmost alternative first:
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|
 *   [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+ */
static size_t pretoken(const uint32_t *s, size_t n)
{
    static const char *lits[] = {"<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    size_t k;
    for (size_t i = 0; i < UC_COUNT(lits); i++)
        if ((k = starts_ci(s, n, lits[i])))
            return k;
    if (is_letter(s[0])) {
        for (k = 1; k < n && is_letter(s[k]); k++)
            ;
        return k;
    }
    if (is_number(s[0]))
        return 1;
    for (k = 0; k < n && !unmatched(s[k]) && !is_letter(s[k]) && !is_number(s[k]); k++)
        ;
    return k;
}

/* ---- BPE ----------------------------------------------------------------- */

typedef struct {
    uint32_t *sym, *next, *prev; /* [n] linked list of symbols; sym NONE = merged away */
    uint64_t *heap;              /* rank << 32 | position, a min-heap */
    size_t nheap, cap;
    uint64_t *batch;
} bpe_work;

static void heap_push(bpe_work *w, uint64_t e)
{
    size_t i = w->nheap++;
    while (i && w->heap[(i - 1) / 2] > e) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = e;
}

static uint64_t heap_pop(bpe_work *w)
{
    uint64_t top = w->heap[0], e = w->heap[--w->nheap];
    size_t i = 0, n = w->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && w->heap[c + 1] < w->heap[c])
            c++;
        if (w->heap[c] >= e)
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n)
        w->heap[i] = e;
    return top;
}

/* Queue the pair starting at position p, if it has a rank. */
static void push_pair(const uc_bpe *b, bpe_work *w, uint32_t p)
{
    uint32_t id = 0;
    if (p == NONE || w->next[p] == NONE)
        return;
    uint32_t r = pair_find(b, w->sym[p], w->sym[w->next[p]], &id);
    if (r != NONE)
        heap_push(w, (uint64_t)r << 32 | p);
}

/* Python's bpe(): repeatedly take the best-ranked pair present and merge
 * every occurrence left to right. All queued pairs of the best rank form one
 * batch, applied in position order, re-checked as they go (a merge can
 * consume the left symbol of the next occurrence); pairs formed by the batch
 * wait in the heap for the following rounds. Writes the ids to out. */
static void bpe_word(const uc_bpe *b, bpe_work *w, const uint8_t *bytes, size_t n, int32_t *out, int max,
                     long long *count)
{
    if (n > w->cap) {
        w->cap = n;
        w->sym = uc_xrealloc(w->sym, n, sizeof(uint32_t));
        w->next = uc_xrealloc(w->next, n, sizeof(uint32_t));
        w->prev = uc_xrealloc(w->prev, n, sizeof(uint32_t));
        w->heap = uc_xrealloc(w->heap, 3 * n, sizeof(uint64_t));
        w->batch = uc_xrealloc(w->batch, n, sizeof(uint64_t));
    }
    for (size_t i = 0; i < n; i++) {
        w->sym[i] = i + 1 < n ? b->sym[bytes[i]] : b->sym_end[bytes[i]];
        w->next[i] = i + 1 < n ? (uint32_t)i + 1 : NONE;
        w->prev[i] = i ? (uint32_t)i - 1 : NONE;
    }
    w->nheap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        push_pair(b, w, (uint32_t)i);
    while (w->nheap) {
        uint64_t rank = w->heap[0] >> 32;
        size_t nb = 0;
        while (w->nheap && w->heap[0] >> 32 == rank)
            w->batch[nb++] = heap_pop(w);
        for (size_t k = 0; k < nb; k++) {
            uint32_t p = (uint32_t)w->batch[k], q = w->next[p], id = 0;
            if (w->sym[p] == NONE || q == NONE || pair_find(b, w->sym[p], w->sym[q], &id) != rank)
                continue;
            w->sym[p] = id;
            w->sym[q] = NONE;
            w->next[p] = w->next[q];
            if (w->next[q] != NONE)
                w->prev[w->next[q]] = p;
            push_pair(b, w, w->prev[p]);
            push_pair(b, w, p);
        }
    }
    for (uint32_t p = 0; p != NONE; p = w->next[p]) {
        if (*count < max)
            out[*count] = (int32_t)w->sym[p];
        (*count)++;
    }
}

int uc_bpe_encode(const uc_bpe *b, const char *text, int32_t *ids, int max)
{
    if (!b || !text)
        return uc_err("bpe encode: no %s", b ? "text" : "tokenizer");
    size_t len = strlen(text);
    if (len > MAX_TEXT)
        return uc_err("text: %zu bytes, more than the limit %u", len, MAX_TEXT);
    if (max < 0 || !ids)
        max = 0;
    cpvec a = {0}, c = {0};
    int rc = -1;
    long long count = 0;
    bpe_work w = {0};
    uint8_t *bytes = NULL;

    /* basic_clean, whitespace_clean, lower */
    if (nfc(text, len, &a) || unescape(a.p, a.n, &c) || unescape(c.p, c.n, &a))
        goto done;
    strip(&a);
    c.n = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (!re_space(a.p[i]))
            put(&c, a.p[i]);
        else if (i == 0 || !re_space(a.p[i - 1]))
            put(&c, ' ');
    }
    strip(&c);
    lower(c.p, c.n, &a);

    bytes = uc_alloc(4 * a.n + 1, 1);
    for (size_t i = 0; i < a.n;) {
        size_t k = pretoken(a.p + i, a.n - i);
        if (!k) {
            i++;
            continue;
        }
        size_t nb = 0;
        for (size_t j = i; j < i + k; j++)
            nb += (size_t)utf8proc_encode_char((utf8proc_int32_t)a.p[j], bytes + nb);
        i += k;
        int32_t special = -1;
        if (nb == 15 && memcmp(bytes, "<|startoftext|>", 15) == 0)
            special = uc_bpe_sot(b);
        else if (nb == 13 && memcmp(bytes, "<|endoftext|>", 13) == 0)
            special = uc_bpe_eot(b);
        if (special >= 0) {
            if (count < max)
                ids[count] = special;
            count++;
        } else {
            bpe_word(b, &w, bytes, nb, ids, max, &count);
        }
    }
    if (count > INT32_MAX) {
        uc_err("text: %lld tokens", count);
        goto done;
    }
    rc = (int)count;
done:
    uc_free(a.p);
    uc_free(c.p);
    uc_free(bytes);
    uc_free(w.sym);
    uc_free(w.next);
    uc_free(w.prev);
    uc_free(w.heap);
    uc_free(w.batch);
    return rc;
}

int uc_tokenize(const uc_bpe *b, const char *text, int ctx, int truncate, int32_t *tokens, uint8_t *mask)
{
    if (ctx < 1 || ctx > (1 << 24))
        return uc_err("tokenize: context length %d out of range", ctx);
    if (!tokens)
        return uc_err("tokenize: no token buffer");
    memset(tokens, 0, (size_t)ctx * sizeof *tokens);
    if (mask)
        memset(mask, 0, (size_t)ctx);
    int n = uc_bpe_encode(b, text, tokens + 1, ctx - 1);
    if (n < 0)
        return -1;
    long long need = (long long)n + 2;
    if (need > ctx && !truncate) {
        memset(tokens, 0, (size_t)ctx * sizeof *tokens);
        return uc_err("text is too long for context length %d: it needs %lld tokens", ctx, need);
    }
    int used = need > ctx ? ctx : (int)need;
    tokens[0] = uc_bpe_sot(b);
    tokens[used - 1] = uc_bpe_eot(b);
    if (mask)
        memset(mask, 1, (size_t)used);
    return 0;
}
