/* base.h - the bottom layer's helpers, which every part of unclip uses:
 * error reporting, checked allocation, half-float conversions, file
 * reading, checksums.
 *
 * Errors: library functions return 0 on success and -1 on failure, after
 * recording one short message with uc_err(). The caller (a tool) prints it
 * once, prefixed with the tool name. Messages name what was wrong ("record 3
 * field text_emb: ...") and never end with a newline. */
#ifndef UNCLIP_BASE_H
#define UNCLIP_BASE_H

#include <stddef.h>
#include <stdint.h>

#define UC_VERSION "0.1.0"

#if defined(__GNUC__)
#define UC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define UC_PRINTF(a, b)
#endif

/* Record an error message (printf-style); always returns -1. */
int uc_err(const char *fmt, ...) UC_PRINTF(1, 2);
/* Prefix the current message: "<prefix>: <old message>"; returns -1. */
int uc_err_prefix(const char *fmt, ...) UC_PRINTF(1, 2);
/* The last recorded message ("" when none). */
const char *uc_errmsg(void);

/* Allocation that ends the process with a message on exhaustion: through
 * the handler a program sets (every tool's exits 1, see cli.h), else by
 * abort(). Sizes are checked for overflow (n * size). uc_alloc returns 64-byte aligned, zeroed
 * memory; free it with uc_free. */
void *uc_alloc(size_t n, size_t size);
/* What happens when an allocation fails: fn(bytes asked) must not return. */
void uc_set_oom_handler(void (*fn)(size_t bytes));
/* The end of a failed allocation made outside uc_alloc (msgpack's zones):
 * the handler (the tools': a message and exit 1), else abort. */
void uc_oom(size_t bytes);
void uc_free(void *p);
/* The same without zeroing, for buffers the caller fills at once. */
void *uc_alloc_raw(size_t n, size_t size);
void *uc_xrealloc(void *p, size_t n, size_t size);
char *uc_strdup(const char *s);

/* The memory budget: the most a tool may ask for the large buffers of one
 * piece of work (a model's workspace, the images and batches it holds),
 * checked before the work starts. Default UC_MEM_BUDGET_DEFAULT; the tools
 * set it from --memory-budget or $UNCLIP_MEMORY_BUDGET (cli.h). */
#define UC_MEM_BUDGET_DEFAULT ((uint64_t)4 << 30) /* 4 GiB */
void uc_mem_set_budget(uint64_t bytes);
uint64_t uc_mem_budget(void);
/* 0 when `bytes` fit both the budget and what the address-space limit
 * (ulimit -v) leaves beside what the process holds now; else -1 and
 * uc_err("<what> needs X GiB, more than <which limit>"). */
int uc_mem_fits(const char *what, double bytes);
/* "1.5 GiB", "320 MiB", "12 KiB" into buf. */
const char *uc_bytes_str(double bytes, char *buf, size_t n);

/* n * m with overflow detection: returns 0 and sets *out, or -1. */
int uc_mul_ok(size_t n, size_t m, size_t *out);

/* Half and bfloat16 conversions (exact widening; narrowing rounds to
 * nearest even). */
float uc_f16_to_f32(uint16_t h);
uint16_t uc_f32_to_f16(float f);
float uc_bf16_to_f32(uint16_t h);
uint16_t uc_f32_to_bf16(float f);

/* Whole file into memory (NUL-terminated); limit bounds the size. */
int uc_read_file(const char *path, size_t limit, char **data, size_t *len);

/* FNV-1a 64 over bytes, for checksums shown to humans. */
uint64_t uc_fnv1a(const void *data, size_t n, uint64_t h);
#define UC_FNV_INIT 0xcbf29ce484222325ULL

/* SHA-256 (FIPS 180-4), streamed: init, update any number of times, final
 * writes the 32-byte digest. Model files' unclip.checksum is "sha256:" and
 * the hex digest of their tensor data (formats/MODEL.md). */
typedef struct {
    uint32_t h[8];
    uint64_t len;           /* bytes so far */
    unsigned char buf[64];  /* a partial block */
    size_t n;               /* bytes in buf */
} uc_sha256;
void uc_sha256_init(uc_sha256 *s);
void uc_sha256_update(uc_sha256 *s, const void *data, size_t n);
void uc_sha256_final(uc_sha256 *s, unsigned char out[32]);

double uc_now(void); /* monotonic seconds */

#define UC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define UC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define UC_COUNT(a) (sizeof(a) / sizeof((a)[0]))

#endif
