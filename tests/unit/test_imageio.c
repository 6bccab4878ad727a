/* test_imageio.c - base64, PNGs with their provenance record, the image
 * reader on PNG and record streams, pixel conversions. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/base.h"
#include "libcommon/image/imageio.h"

static char tmpdir[] = "/tmp/unclip-imageio-XXXXXX";

static void path_in_tmp(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

/* ---- base64 ---- */

static void check_b64(const char *plain, const char *want)
{
    char *s = uc_base64_encode(plain, strlen(plain));
    assert_string_equal(s, want);
    unsigned char *d;
    size_t n;
    assert_int_equal(uc_base64_decode(s, &d, &n), 0);
    assert_int_equal(n, strlen(plain));
    assert_memory_equal(d, plain, n);
    free(d);
    free(s);
}

static void test_base64(void **state)
{
    (void)state;
    /* RFC 4648 section 10 */
    check_b64("", "");
    check_b64("f", "Zg==");
    check_b64("fo", "Zm8=");
    check_b64("foo", "Zm9v");
    check_b64("foob", "Zm9vYg==");
    check_b64("fooba", "Zm9vYmE=");
    check_b64("foobar", "Zm9vYmFy");
    /* every byte value, every length up to 70 */
    unsigned char buf[256];
    for (int i = 0; i < 256; i++)
        buf[i] = (unsigned char)(i * 97 + 13);
    for (size_t len = 0; len <= 70; len++) {
        char *s = uc_base64_encode(buf + len, len);
        assert_int_equal(strlen(s), (len + 2) / 3 * 4);
        unsigned char *d;
        size_t n;
        assert_int_equal(uc_base64_decode(s, &d, &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(d, buf + len, len);
        free(d);
        free(s);
    }
    /* line breaks are skipped, padding optional */
    unsigned char *d;
    size_t n;
    assert_int_equal(uc_base64_decode("Zm9v\nYmE=\r\n", &d, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(d, "fooba", 5);
    free(d);
    assert_int_equal(uc_base64_decode("Zm8", &d, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(d, "fo", 2);
    free(d);
    /* rejects */
    assert_int_equal(uc_base64_decode("Zm9v!", &d, &n), -1);
    assert_non_null(strstr(uc_errmsg(), "invalid character"));
    assert_int_equal(uc_base64_decode("Zg=a", &d, &n), -1);
    assert_int_equal(uc_base64_decode("Z", &d, &n), -1);     /* 6 bits cannot end */
    assert_int_equal(uc_base64_decode("Zh==", &d, &n), -1);  /* non-zero spare bits */
    assert_int_equal(uc_base64_decode("Zm8==", &d, &n), -1); /* too much padding */
}

/* ---- PNG with provenance ---- */

static rec *sample_record(int h, int w, unsigned char seedpx)
{
    rec *r = rec_new();
    rec_set_str(r, "prompt", "a red cube on top of a blue cube");
    rec_set_str(r, "negative_prompt", "blurry");
    float emb[4] = {0.5f, -1.25f, 3.0f, 0.0f};
    rec_set_tensor(r, "text_emb", UC_F32, 1, (int64_t[]){4}, emb);
    rec_set_u64(r, "seed", 42);
    rec *st = rec_new();
    rec_del(st, "version");
    rec_set_str(st, "steps", "10,10,5");
    rec_set_str(st, "sampler", "ddpm");
    rec_set_f64(st, "guidance", 4.0);
    rec_set_stage(r, "params", "prior", st);
    rec_free(st);
    st = rec_new();
    rec_del(st, "version");
    rec_set_u64(st, "steps", 50);
    rec_set_str(st, "sampler", "ddim");
    rec_set_f64(st, "guidance", 8.5);
    rec_set_stage(r, "params", "decoder", st);
    rec_free(st);
    st = rec_new();
    rec_del(st, "version");
    rec_set_str(st, "id", "karlo-decoder-900m");
    rec_set_stage(r, "models", "decoder", st);
    rec_free(st);
    unsigned char *px = malloc((size_t)h * w * 3);
    for (int i = 0; i < h * w * 3; i++)
        px[i] = (unsigned char)(i * 7 + seedpx);
    rec_set_tensor(r, "image", UC_U8, 3, (int64_t[]){h, w, 3}, px);
    float *f = calloc((size_t)h * w * 3, sizeof *f);
    rec_set_tensor(r, "image_f32", UC_F32, 3, (int64_t[]){3, h, w}, f);
    free(f);
    free(px);
    return r;
}

static void test_png_record_roundtrip(void **state)
{
    (void)state;
    char path[256];
    path_in_tmp(path, sizeof path, "prov.png");
    rec *r = sample_record(5, 7, 3);
    FILE *f = fopen(path, "wb");
    assert_int_equal(uc_write_png_record(f, r), 0);
    fclose(f);

    uc_image img;
    assert_int_equal(uc_png_read_file(path, 0, &img), 0);
    assert_int_equal(img.w, 7);
    assert_int_equal(img.h, 5);
    assert_int_equal(img.channels, 3);
    assert_string_equal(uc_png_text_get(&img, "prompt"), "a red cube on top of a blue cube");
    assert_string_equal(uc_png_text_get(&img, "seed"), "42");
    assert_string_equal(uc_png_text_get(&img, "parameters"),
                        "a red cube on top of a blue cube\n"
                        "Negative prompt: blurry\n"
                        "Steps: 50, Sampler: ddim, CFG scale: 8.5, Seed: 42, Size: 7x5, Model: karlo-decoder-900m, "
                        "Prior steps: \"10,10,5\", Prior sampler: ddpm, Prior CFG scale: 4");
    assert_non_null(uc_png_text_get(&img, "unclip-record"));

    rec *back = uc_record_from_png(&img);
    assert_non_null(back);
    /* every field of the original except the float image, image last */
    assert_false(rec_has(back, "image_f32"));
    assert_string_equal(rec_get_str(back, "prompt"), "a red cube on top of a blue cube");
    assert_string_equal(rec_get_str(back, "negative_prompt"), "blurry");
    uint64_t seed;
    assert_int_equal(rec_get_u64(back, "seed", &seed), 0);
    assert_int_equal(seed, 42);
    float *emb = rec_get_f32(back, "text_emb", 1, (int64_t[]){4}, NULL);
    assert_non_null(emb);
    assert_true(emb[0] == 0.5f && emb[1] == -1.25f && emb[2] == 3.0f && emb[3] == 0.0f);
    uc_free(emb);
    rec *params = rec_get_map(back, "params");
    rec *dec = rec_get_map(params, "decoder");
    double g;
    assert_int_equal(rec_get_f64(dec, "guidance", &g), 0);
    assert_true(g == 8.5);
    rec_free(dec);
    rec_free(params);
    uc_tensor a, b;
    assert_int_equal(rec_get_tensor(r, "image", &a), 0);
    assert_int_equal(rec_get_tensor(back, "image", &b), 0);
    assert_int_equal(b.dtype, UC_U8);
    assert_true(uc_tensor_shape_is(&b, 3, (int64_t[]){5, 7, 3}));
    assert_memory_equal(a.data, b.data, a.nbytes);
    assert_string_equal(rec_key_at(back, 0), "version");
    uc_image_free(&img);
    rec_free(back);
    rec_free(r);
}

static void test_png_without_record(void **state)
{
    (void)state;
    char path[256];
    path_in_tmp(path, sizeof path, "ga.png");
    /* gray + alpha: opaque, transparent, half transparent */
    unsigned char ga[3 * 2] = {100, 255, 0, 0, 0, 128};
    FILE *f = fopen(path, "wb");
    assert_int_equal(uc_png_write(f, ga, 3, 1, 2, NULL, 0), 0);
    fclose(f);
    uc_image img;
    assert_int_equal(uc_png_read_file(path, 0, &img), 0);
    rec *r = uc_record_from_png(&img);
    assert_non_null(r);
    assert_int_equal(rec_count(r), 2); /* version, image */
    uc_tensor t;
    assert_int_equal(rec_get_tensor(r, "image", &t), 0);
    assert_true(uc_tensor_shape_is(&t, 3, (int64_t[]){1, 3, 3}));
    const unsigned char *p = t.data;
    /* 0 * 128/255 + 255 * 127/255 = 127 */
    unsigned char want[9] = {100, 100, 100, 255, 255, 255, 127, 127, 127};
    assert_memory_equal(p, want, 9);
    rec_free(r);
    uc_image_free(&img);

    /* RGBA composited on white, per channel */
    unsigned char rgba[4] = {255, 0, 50, 51};
    f = fopen(path, "wb");
    assert_int_equal(uc_png_write(f, rgba, 1, 1, 4, NULL, 0), 0);
    fclose(f);
    assert_int_equal(uc_png_read_file(path, 0, &img), 0);
    r = uc_record_from_png(&img);
    assert_int_equal(rec_get_tensor(r, "image", &t), 0);
    p = t.data;
    assert_int_equal(p[0], 255);
    assert_int_equal(p[1], 204);                          /* (0*51 + 255*204 + 127) / 255 */
    assert_int_equal(p[2], (50 * 51 + 255 * 204 + 127) / 255); /* 214 */
    rec_free(r);
    uc_image_free(&img);
}

static void test_png_bad_record(void **state)
{
    (void)state;
    char path[256];
    path_in_tmp(path, sizeof path, "bad.png");
    unsigned char px[3] = {1, 2, 3};
    const char *texts[] = {"@@not base64@@", "aGVsbG8gd29ybGQ=" /* "hello world": not msgpack */, ""};
    for (size_t k = 0; k < 3; k++) {
        uc_png_text tx = {"unclip-record", (char *)texts[k]};
        FILE *f = fopen(path, "wb");
        assert_int_equal(uc_png_write(f, px, 1, 1, 3, &tx, 1), 0);
        fclose(f);
        uc_image img;
        assert_int_equal(uc_png_read_file(path, 0, &img), 0);
        assert_null(uc_record_from_png(&img));
        assert_non_null(strstr(uc_errmsg(), "unclip-record"));
        uc_image_free(&img);
    }
    /* two records where one belongs */
    char *one;
    size_t n1;
    rec *r = rec_new();
    rec_encode(r, &one, &n1);
    rec_free(r);
    char two[64];
    memcpy(two, one, n1);
    memcpy(two + n1, one, n1);
    free(one);
    uc_png_text tx = {"unclip-record", uc_base64_encode(two, 2 * n1)};
    FILE *f = fopen(path, "wb");
    assert_int_equal(uc_png_write(f, px, 1, 1, 3, &tx, 1), 0);
    fclose(f);
    free(tx.text);
    uc_image img;
    assert_int_equal(uc_png_read_file(path, 0, &img), 0);
    assert_null(uc_record_from_png(&img));
    assert_string_equal(uc_errmsg(), "text chunk unclip-record: holds more than one record");
    uc_image_free(&img);
}

/* ---- the image reader ---- */

static void test_reader_pngs(void **state)
{
    (void)state;
    char path[256];
    path_in_tmp(path, sizeof path, "three.png");
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 3; i++) {
        rec *r = sample_record(2 + i, 3, (unsigned char)(10 * i));
        rec_set_u64(r, "index", (uint64_t)i);
        assert_int_equal(uc_write_png_record(f, r), 0);
        rec_free(r);
    }
    fclose(f);
    int fd = open(path, O_RDONLY);
    uc_image_reader *ir = uc_image_reader_open(fd, "three.png");
    for (int i = 0; i < 3; i++) {
        rec *r;
        assert_int_equal(uc_image_reader_next(ir, &r), 1);
        assert_int_equal(rec_number(r), i + 1);
        uint64_t idx;
        assert_int_equal(rec_get_u64(r, "index", &idx), 0);
        assert_int_equal(idx, i);
        uc_tensor t;
        assert_int_equal(rec_get_tensor(r, "image", &t), 0);
        assert_true(uc_tensor_shape_is(&t, 3, (int64_t[]){2 + i, 3, 3}));
        assert_int_equal(((const unsigned char *)t.data)[1], (unsigned char)(7 + 10 * i));
        rec_free(r);
    }
    rec *r;
    assert_int_equal(uc_image_reader_next(ir, &r), 0);
    assert_null(r);
    uc_image_reader_free(ir);
    close(fd);

    /* trailing bytes that are not a PNG are an error naming the image */
    f = fopen(path, "ab");
    fputs("garbage!", f);
    fclose(f);
    ir = uc_image_reader_open_path(path);
    assert_non_null(ir);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(uc_image_reader_next(ir, &r), 1);
        rec_free(r);
    }
    assert_int_equal(uc_image_reader_next(ir, &r), -1);
    assert_non_null(strstr(uc_errmsg(), "image 4"));
    assert_int_equal(uc_image_reader_next(ir, &r), -1);
    uc_image_reader_free(ir);

    /* a truncated PNG */
    FILE *in = fopen(path, "rb");
    path_in_tmp(path, sizeof path, "cut.png");
    FILE *out = fopen(path, "wb");
    char buf[100];
    size_t n = fread(buf, 1, sizeof buf, in);
    fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    ir = uc_image_reader_open_path(path);
    assert_int_equal(uc_image_reader_next(ir, &r), -1);
    assert_non_null(strstr(uc_errmsg(), "image 1"));
    uc_image_reader_free(ir);
}

static void test_reader_records(void **state)
{
    (void)state;
    char path[256];
    path_in_tmp(path, sizeof path, "recs.bin");
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 4; i++) {
        rec *r = rec_new();
        if (i > 0)
            rec_set_u64(r, "index", (uint64_t)i);
        assert_int_equal(rec_write(r, f), 0);
        rec_free(r);
    }
    fclose(f);
    uc_image_reader *ir = uc_image_reader_open_path(path);
    for (int i = 0; i < 4; i++) {
        rec *r;
        assert_int_equal(uc_image_reader_next(ir, &r), 1);
        assert_int_equal(rec_number(r), i + 1);
        uint64_t idx = 0;
        if (i > 0) {
            assert_int_equal(rec_get_u64(r, "index", &idx), 0);
            assert_int_equal(idx, i);
        } else {
            assert_false(rec_has(r, "index"));
        }
        rec_free(r);
    }
    rec *r;
    assert_int_equal(uc_image_reader_next(ir, &r), 0);
    uc_image_reader_free(ir);

    /* one record of 10 bytes: 8 sniffed, 2 read later */
    path_in_tmp(path, sizeof path, "tiny.bin");
    f = fopen(path, "wb");
    r = rec_new();
    rec_write(r, f);
    rec_free(r);
    assert_int_equal(ftell(f), 10);
    fclose(f);
    ir = uc_image_reader_open_path(path);
    assert_int_equal(uc_image_reader_next(ir, &r), 1);
    rec_free(r);
    assert_int_equal(uc_image_reader_next(ir, &r), 0);
    uc_image_reader_free(ir);

    /* a stream shorter than the sniffed bytes, cut inside its record */
    f = fopen(path, "wb");
    fwrite("\x81\xa7vers", 1, 6, f);
    fclose(f);
    ir = uc_image_reader_open_path(path);
    assert_int_equal(uc_image_reader_next(ir, &r), -1);
    assert_non_null(strstr(uc_errmsg(), "truncated"));
    uc_image_reader_free(ir);

    /* empty input: no images */
    path_in_tmp(path, sizeof path, "empty.bin");
    fclose(fopen(path, "wb"));
    ir = uc_image_reader_open_path(path);
    assert_int_equal(uc_image_reader_next(ir, &r), 0);
    uc_image_reader_free(ir);

    /* garbage that is neither */
    path_in_tmp(path, sizeof path, "junk.bin");
    f = fopen(path, "wb");
    fputs("\xc1\xc1\xc1\xc1 hello", f);
    fclose(f);
    ir = uc_image_reader_open_path(path);
    assert_int_equal(uc_image_reader_next(ir, &r), -1);
    assert_non_null(strstr(uc_errmsg(), "record 1"));
    uc_image_reader_free(ir);

    assert_null(uc_image_reader_open_path("/nonexistent/x.png"));
    assert_non_null(strstr(uc_errmsg(), "/nonexistent/x.png"));
}

/* ---- conversions ---- */

static void test_convert(void **state)
{
    (void)state;
    unsigned char px[2 * 3] = {0, 255, 51, 128, 127, 1};
    float x[6];
    uc_image_u8_to_f32(px, 1, 2, x);
    /* planar: channel 0 = {0, 128}, channel 1 = {255, 127}, channel 2 = {51, 1} */
    assert_true(x[0] == -1.0f && x[2] == 1.0f);
    assert_true(fabsf(x[1] - (128 / 127.5f - 1)) == 0.0f);
    assert_true(fabsf(x[4] - (51 / 127.5f - 1)) == 0.0f);
    unsigned char back[6];
    uc_image_f32_to_u8(x, 1, 2, back);
    /* the truncation loses at most one step (0.5 * 255 = 127.5 -> 127) */
    for (int i = 0; i < 6; i++)
        assert_true(px[i] - back[i] == 0 || px[i] - back[i] == 1);
    float y[3] = {2.0f, -3.0f, NAN};
    unsigned char z[3];
    uc_image_f32_to_u8(y, 1, 1, z);
    assert_int_equal(z[0], 255);
    assert_int_equal(z[1], 0);
    assert_int_equal(z[2], 0);
    float m[3] = {0.0f, 1.0f, -1.0f};
    uc_image_f32_to_u8(m, 1, 1, z);
    assert_int_equal(z[0], 127);
    assert_int_equal(z[1], 255);
    assert_int_equal(z[2], 0);
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
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),         cmocka_unit_test(test_png_record_roundtrip),
        cmocka_unit_test(test_png_without_record), cmocka_unit_test(test_png_bad_record),
        cmocka_unit_test(test_reader_pngs),    cmocka_unit_test(test_reader_records),
        cmocka_unit_test(test_convert),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
