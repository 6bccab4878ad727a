/* test_formats.c - safetensors, record stream and PNG: round trips and the
 * rejection of malformed input. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/png.h"
#include "formats/record.h"
#include "formats/safetensors.h"
#include "formats/base.h"

static char tmpdir[] = "/tmp/unclip-test-XXXXXX";

static void path_in_tmp(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

/* ---- half precision ---- */

static void test_f16_roundtrip(void **state)
{
    (void)state;
    /* every finite half converts to float and back exactly */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00)
            continue;
        float f = uc_f16_to_f32((uint16_t)h);
        assert_int_equal(uc_f32_to_f16(f), h);
    }
    assert_true(uc_f16_to_f32(0x3c00) == 1.0f);
    assert_true(uc_f16_to_f32(0xc000) == -2.0f);
    assert_int_equal(uc_f32_to_f16(65520.0f), 0x7c00); /* overflow to inf */
    assert_int_equal(uc_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
    assert_true(uc_bf16_to_f32(uc_f32_to_bf16(3.0f)) == 3.0f);
}

/* ---- safetensors ---- */

static void write_raw(const char *path, const char *header, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    uint64_t hl = strlen(header);
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(hl >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(header, 1, hl, f);
    fwrite(data, 1, n, f);
    fclose(f);
}

static void test_st_roundtrip(void **state)
{
    (void)state;
    char path[256];
    path_in_tmp(path, sizeof path, "a.safetensors");
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {0x3c00, 0x4000, 0xc000};
    st_out t[2] = {{.name = "w", .dtype = UC_F32, .ndim = 2, .shape = {2, 3}, .data = w},
                   {.name = "h", .dtype = UC_F16, .ndim = 1, .shape = {3}, .data = h}};
    const char *meta[] = {"unclip.stage", "clip"};
    assert_int_equal(st_write(path, t, 2, meta, 1), 0);
    st_file *f = st_open(path);
    assert_non_null(f);
    assert_int_equal(st_count(f), 2);
    assert_string_equal(st_meta(f, "unclip.stage"), "clip");
    const float *x = st_f32(f, "w", 2, (int64_t[]){2, 3});
    assert_non_null(x);
    assert_true(x[5] == 6.0f);
    const float *y = st_f32(f, "h", 1, (int64_t[]){3});
    assert_non_null(y);
    assert_true(y[0] == 1.0f && y[1] == 2.0f && y[2] == -2.0f);
    assert_null(st_f32(f, "w", 2, (int64_t[]){3, 2})); /* shape mismatch */
    assert_non_null(strstr(uc_errmsg(), "expected [3, 2]"));
    assert_null(st_f32(f, "missing", -1, NULL));
    assert_non_null(strstr(uc_errmsg(), "missing"));
    st_close(f);
}

/* Resident pages of this process (/proc/self/statm), or -1. */
static long resident_pages(void)
{
    long size, res;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    int n = fscanf(f, "%ld %ld", &size, &res);
    fclose(f);
    return n == 2 ? res : -1;
}

/* st_release gives back the pages of the tensors under a prefix (the
 * process's RSS drops) and the values read back the same afterwards. */
static void test_st_release(void **state)
{
    (void)state;
    char path[256];
    path_in_tmp(path, sizeof path, "rel.safetensors");
    enum { N = 4 << 20 }; /* 16 MB */
    float *big = malloc(N * sizeof *big), small[4] = {7, 8, 9, 10};
    assert_non_null(big);
    for (int i = 0; i < N; i++)
        big[i] = (float)(i % 1000);
    st_out t[2] = {{.name = "first.w", .dtype = UC_F32, .ndim = 1, .shape = {N}, .data = big},
                   {.name = "last.w", .dtype = UC_F32, .ndim = 1, .shape = {4}, .data = small}};
    assert_int_equal(st_write(path, t, 2, NULL, 0), 0);
    free(big);
    st_file *f = st_open(path);
    assert_non_null(f);
    const float *a = st_f32(f, "first.w", 1, (int64_t[]){N}), *b = st_f32(f, "last.w", 1, (int64_t[]){4});
    assert_non_null(a);
    assert_non_null(b);
    double sum = 0;
    for (int i = 0; i < N; i++) /* fault every page in */
        sum += a[i];
    long before = resident_pages();
    st_release(f, "last.");  /* nothing big under it */
    st_release(f, "nomatch."); /* no tensor: nothing */
    st_release(f, "first.");
    long after = resident_pages(), page = sysconf(_SC_PAGESIZE);
    assert_true(before > 0 && after > 0);
    if ((before - after) * page < 12L << 20)
        fail_msg("st_release gave back %ld bytes of a 16 MB tensor", (before - after) * page);
    double again = 0; /* read from the file again */
    for (int i = 0; i < N; i++)
        again += a[i];
    assert_true(again == sum);
    assert_true(a[N - 1] == (float)((N - 1) % 1000));
    assert_true(b[0] == 7.0f && b[3] == 10.0f);
    st_close(f);
}

static void expect_bad(const char *header, size_t ndata, const char *needle)
{
    char path[256];
    path_in_tmp(path, sizeof path, "bad.safetensors");
    unsigned char data[64] = {0};
    write_raw(path, header, data, ndata);
    st_file *f = st_open(path);
    if (f)
        fail_msg("accepted: %s", header);
    if (!strstr(uc_errmsg(), needle))
        fail_msg("message '%s' lacks '%s'", uc_errmsg(), needle);
}

static void test_st_rejects(void **state)
{
    (void)state;
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "outside");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16, "do not match");
    expect_bad("{\"a\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, "unknown dtype");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               16, "overlap");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4503599627370496,4503599627370496],\"data_offsets\":[0,16]}}", 16,
               "do not match");
    expect_bad("[1,2]", 0, "not a JSON object");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "bad shape");
    /* header length past the end */
    char path[256];
    path_in_tmp(path, sizeof path, "short.safetensors");
    FILE *f = fopen(path, "wb");
    unsigned char b[12] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    fwrite(b, 1, sizeof b, f);
    fclose(f);
    assert_null(st_open(path));
    assert_non_null(strstr(uc_errmsg(), "header length"));
}

/* ---- records ---- */

static rec *sample_record(void)
{
    rec *r = rec_new();
    rec_set_str(r, "prompt", "a red cube");
    float e[4] = {0.5f, -1, 2, 3};
    rec_set_tensor(r, "text_emb", UC_F32, 1, (int64_t[]){4}, e);
    rec *u = rec_new();
    rec_set_str(u, "prompt", "");
    rec_set_map(r, "uncond", u);
    rec_free(u);
    rec_set_u64(r, "seed", 42);
    return r;
}

static void test_rec_roundtrip(void **state)
{
    (void)state;
    rec *r = sample_record();
    char *buf;
    size_t n;
    rec_encode(r, &buf, &n);
    rec_reader *rd = rec_reader_mem(buf, n, "mem");
    rec *q;
    assert_int_equal(rec_read(rd, &q), 1);
    assert_string_equal(rec_get_str(q, "prompt"), "a red cube");
    int64_t shape[1];
    float *e = rec_get_f32(q, "text_emb", 1, (int64_t[]){4}, shape);
    assert_non_null(e);
    assert_true(e[0] == 0.5f && e[3] == 3.0f);
    uc_free(e);
    assert_null(rec_get_f32(q, "text_emb", 1, (int64_t[]){5}, shape));
    assert_non_null(strstr(uc_errmsg(), "record 1 field text_emb"));
    rec *u = rec_get_map(q, "uncond");
    assert_non_null(u);
    assert_string_equal(rec_get_str(u, "prompt"), "");
    rec_free(u);
    /* fields keep their order; replacing keeps the position */
    rec_set_str(q, "prompt", "changed");
    assert_string_equal(rec_key_at(q, 0), "version");
    assert_string_equal(rec_key_at(q, 1), "prompt");
    rec_history_add(q, "test", 2, (char *[]){"test", "--x"});
    assert_true(rec_has(q, "history"));
    rec_free(q);
    assert_int_equal(rec_read(rd, &q), 0); /* clean end */
    assert_null(q);
    rec_free(r);
    rec_reader_free(rd);
    free(buf);
}

static void test_rec_truncated_everywhere(void **state)
{
    (void)state;
    rec *r = sample_record();
    char *buf;
    size_t n;
    rec_encode(r, &buf, &n);
    for (size_t cut = 1; cut < n; cut++) {
        rec_reader *rd = rec_reader_mem(buf, cut, "mem");
        rec *q = NULL;
        int rc = rec_read(rd, &q);
        if (rc != -1)
            fail_msg("cut at %zu gave %d", cut, rc);
        assert_non_null(strstr(uc_errmsg(), "record 1"));
        rec_reader_free(rd);
    }
    /* empty input is a clean end */
    rec_reader *rd = rec_reader_mem(buf, 0, "mem");
    rec *q;
    assert_int_equal(rec_read(rd, &q), 0);
    rec_reader_free(rd);
    rec_free(r);
    free(buf);
}

static void expect_rec_bad(const unsigned char *b, size_t n, const char *needle)
{
    rec_reader *rd = rec_reader_mem(b, n, "mem");
    rec *q = NULL;
    int rc = rec_read(rd, &q);
    rec_reader_free(rd);
    if (rc != -1) {
        rec_free(q);
        fail_msg("accepted bad record (%s)", needle);
    }
    if (!strstr(uc_errmsg(), needle))
        fail_msg("message '%s' lacks '%s'", uc_errmsg(), needle);
}

static void test_rec_rejects(void **state)
{
    (void)state;
    /* not a map */
    expect_rec_bad((const unsigned char *)"\x93\x01\x02\x03", 4, "not a map");
    /* no version */
    expect_rec_bad((const unsigned char *)"\x81\xa1x\x01", 4, "version");
    /* unknown version */
    expect_rec_bad((const unsigned char *)"\x81\xa7version\x07", 10, "unknown format version");
    /* duplicate key */
    expect_rec_bad((const unsigned char *)"\x82\xa7version\x01\xa7version\x01", 19, "duplicate");
    /* non-string key */
    expect_rec_bad((const unsigned char *)"\x82\xa7version\x01\x05\x01", 12, "not a string");
    /* a tensor whose data is shorter than its shape says */
    rec *r = rec_new();
    float e[2] = {1, 2};
    rec_set_tensor(r, "t", UC_F32, 1, (int64_t[]){2}, e);
    char *buf;
    size_t n;
    rec_encode(r, &buf, &n);
    /* patch shape [2] -> [3]: find the 0x91 0x02 (array of one, 2) */
    for (size_t i = 0; i + 1 < n; i++)
        if ((unsigned char)buf[i] == 0x91 && buf[i + 1] == 2)
            buf[i + 1] = 3;
    rec_reader *rd = rec_reader_mem(buf, n, "mem");
    rec *q;
    assert_int_equal(rec_read(rd, &q), 1);
    uc_tensor t;
    assert_int_equal(rec_get_tensor(q, "t", &t), -1);
    assert_non_null(strstr(uc_errmsg(), "record 1 field t"));
    rec_free(q);
    rec_reader_free(rd);
    free(buf);
    /* NaN is refused by rec_get_f32 */
    float bad[2] = {1, 0};
    bad[1] = bad[1] / bad[1];
    rec_set_tensor(r, "t", UC_F32, 1, (int64_t[]){2}, bad);
    assert_null(rec_get_f32(r, "t", 1, NULL, NULL));
    assert_non_null(strstr(uc_errmsg(), "not finite"));
    rec_free(r);
}

/* ---- PNG ---- */

static void test_png_roundtrip(void **state)
{
    (void)state;
    char path[256];
    path_in_tmp(path, sizeof path, "a.png");
    unsigned char px[4 * 3 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (unsigned char)(i * 7);
    uc_png_text tx[2] = {{"prompt", "un cube rouge \xc3\xa9t\xc3\xa9"}, {"seed", "42"}};
    FILE *f = fopen(path, "wb");
    assert_int_equal(uc_png_write(f, px, 4, 3, 3, tx, 2), 0);
    fclose(f);
    uc_image img;
    assert_int_equal(uc_png_read_file(path, 0, &img), 0);
    assert_int_equal(img.w, 4);
    assert_int_equal(img.h, 3);
    assert_int_equal(img.channels, 3);
    assert_memory_equal(img.px, px, sizeof px);
    assert_string_equal(uc_png_text_get(&img, "prompt"), "un cube rouge \xc3\xa9t\xc3\xa9");
    assert_string_equal(uc_png_text_get(&img, "seed"), "42");
    uc_image_free(&img);
    /* truncated file */
    FILE *in = fopen(path, "rb");
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, in);
    fclose(in);
    for (size_t cut = 8; cut < n; cut += 13) {
        FILE *o = fopen(path, "wb");
        fwrite(buf, 1, cut, o);
        fclose(o);
        if (uc_png_read_file(path, 0, &img) == 0) {
            /* the IEND chunk may be the only thing cut: pixels still complete */
            assert_true(cut > n - 16);
            uc_image_free(&img);
        }
    }
    /* bad CRC */
    buf[40] ^= 0xff;
    FILE *o = fopen(path, "wb");
    fwrite(buf, 1, n, o);
    fclose(o);
    assert_int_equal(uc_png_read_file(path, 0, &img), -1);
}

/* ---- SHA-256: FIPS 180-4's examples, and any split of the input ---- */

static void hex32(const unsigned char d[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void test_sha256(void **state)
{
    (void)state;
    static const struct {
        const char *in, *hex;
    } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    unsigned char d[32];
    char hex[65];
    uc_sha256 s;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = strlen(cases[i].in);
        for (size_t cut = 0; cut <= n; cut++) { /* two updates, split anywhere */
            uc_sha256_init(&s);
            uc_sha256_update(&s, cases[i].in, cut);
            uc_sha256_update(&s, cases[i].in + cut, n - cut);
            uc_sha256_final(&s, d);
            hex32(d, hex);
            assert_string_equal(hex, cases[i].hex);
        }
    }
    /* a million 'a', in pieces of 997 bytes (across block boundaries) */
    char buf[997];
    memset(buf, 'a', sizeof buf);
    uc_sha256_init(&s);
    size_t left = 1000000;
    while (left) {
        size_t k = left < sizeof buf ? left : sizeof buf;
        uc_sha256_update(&s, buf, k);
        left -= k;
    }
    uc_sha256_final(&s, d);
    hex32(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* The memory budget: what fits, what does not, and the message. */
static void test_mem_budget(void **state)
{
    (void)state;
    uint64_t old = uc_mem_budget();
    uc_mem_set_budget((uint64_t)64 << 20);
    assert_int_equal(uc_mem_fits("small", 1 << 20), 0);
    assert_int_equal(uc_mem_fits("a big thing", 100.0 * (1 << 20)), -1);
    assert_string_equal(uc_errmsg(), "a big thing needs 100 MiB, more than the memory budget of 64 MiB (--memory-budget)");
    uc_mem_set_budget(old);
    assert_int_equal(uc_mem_budget(), UC_MEM_BUDGET_DEFAULT);
    char b[32];
    assert_string_equal(uc_bytes_str(1.5 * (1 << 30), b, sizeof b), "1.5 GiB");
    assert_string_equal(uc_bytes_str(3 << 10, b, sizeof b), "3 KiB");
}

/* history keeps REC_HISTORY_ARGS bytes of arguments, then one note. */
static void test_history_bounded(void **state)
{
    (void)state;
    enum { N = 1000 };
    static char args[N][16];
    char *argv[N + 1];
    argv[0] = "tool";
    for (int i = 0; i < N; i++) {
        snprintf(args[i], sizeof args[i], "prompt %04u", (unsigned)i % 10000u); /* 11 bytes each */
        argv[i + 1] = args[i];
    }
    rec *r = rec_new();
    rec_history_add(r, "tool", N + 1, argv);
    char *s;
    size_t len;
    FILE *f = open_memstream(&s, &len);
    assert_int_equal(rec_dump_json(r, f, 0), 0);
    fclose(f);
    /* 4096 / 11 = 372 kept, then the note of the 628 left out */
    assert_non_null(strstr(s, "\"prompt 0371\",\"(628 more arguments, 6908 bytes, not kept: history keeps 4096 "
                              "bytes of them)\"]"));
    assert_null(strstr(s, "prompt 0372"));
    free(s);
    rec_free(r);
}

/* --full writes the values as it goes; the bytes are those cJSON gives an
 * array of the same numbers (integers, fractions, huge and tiny, -0). */
static void test_dump_full_streamed(void **state)
{
    (void)state;
    static const float v[12] = {0.1f, -3.0f, 1e20f, 1e-7f, -0.0f, 2147483648.0f, 123456.789f, 7.0f,
                                0.3333333f, -1e-30f, 65504.0f, 1.5f};
    static const int32_t iv[10] = {0, -1, 2147483647, -2147483647 - 1, 5, 6, 7, 8, 9, 10};
    rec *r = rec_new();
    rec_set_tensor(r, "f", UC_F32, 2, (int64_t[]){3, 4}, v);
    rec_set_tensor(r, "i", UC_I32, 1, (int64_t[]){10}, iv);
    char *s;
    size_t len;
    FILE *f = open_memstream(&s, &len);
    assert_int_equal(rec_dump_json(r, f, 1), 0);
    fclose(f);
    cJSON *a = cJSON_CreateArray(), *b = cJSON_CreateArray();
    for (int i = 0; i < 12; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    for (int i = 0; i < 10; i++)
        cJSON_AddItemToArray(b, cJSON_CreateNumber(iv[i]));
    char *ja = cJSON_PrintUnformatted(a), *jb = cJSON_PrintUnformatted(b);
    char want[1024];
    snprintf(want, sizeof want, "\"values\":%s,", ja);
    assert_non_null(strstr(s, want));
    snprintf(want, sizeof want, "\"values\":%s,", jb);
    assert_non_null(strstr(s, want));
    assert_int_equal(s[len - 1], '\n');
    assert_null(strchr(s, '\001'));
    free(ja), free(jb), free(s);
    cJSON_Delete(a), cJSON_Delete(b);
    rec_free(r);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_roundtrip),   cmocka_unit_test(test_st_roundtrip),
        cmocka_unit_test(test_st_rejects),      cmocka_unit_test(test_rec_roundtrip),
        cmocka_unit_test(test_rec_truncated_everywhere), cmocka_unit_test(test_rec_rejects),
        cmocka_unit_test(test_png_roundtrip),   cmocka_unit_test(test_st_release),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_mem_budget),
        cmocka_unit_test(test_history_bounded), cmocka_unit_test(test_dump_full_streamed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
