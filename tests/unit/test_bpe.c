/* test_bpe.c - the CLIP BPE tokenizer: known encodings with OpenAI's merge
 * list (when the vocabulary is at hand), clip.tokenize padding, mask and
 * truncation, the text cleaning steps seen through a merge-free vocabulary,
 * BPE merge order on tiny merge lists, and refusal of bad input. Expected
 * values come from openai/CLIP's simple_tokenizer.py (ftfy as NFC). */
#define _DEFAULT_SOURCE /* mkstemp, fdopen */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "libcommon/text/bpe.h"
#include "formats/base.h"

static uc_bpe *clip_bpe; /* OpenAI's merges, or NULL when the file is missing */

static int setup(void **state)
{
    (void)state;
    const char *path = uc_bpe_default_path();
    struct stat sb;
    if (!path && stat("../shared/vocab/bpe_simple_vocab_16e6.txt.gz", &sb) == 0)
        path = "../shared/vocab/bpe_simple_vocab_16e6.txt.gz";
    if (!path) {
        printf("skipping: vocabulary not found (set UNCLIP_VOCAB); tests of OpenAI's merges skip\n");
        return 0;
    }
    double t0 = uc_now();
    clip_bpe = uc_bpe_load_gz(path);
    if (!clip_bpe) {
        printf("cannot load %s: %s\n", path, uc_errmsg());
        return -1;
    }
    printf("loaded %s in %.1f ms\n", path, (uc_now() - t0) * 1e3);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    uc_bpe_free(clip_bpe);
    return 0;
}

#define NEED_VOCAB()                                               \
    do {                                                           \
        if (!clip_bpe) {                                           \
            printf("skipping: vocabulary not found\n");            \
            skip();                                                \
        }                                                          \
    } while (0)

static void expect_ids(const uc_bpe *b, const char *text, const int32_t *want, int n)
{
    int32_t got[128];
    int k = uc_bpe_encode(b, text, got, 128);
    if (k != n)
        fail_msg("\"%s\": %d ids, expected %d (%s)", text, k, n, k < 0 ? uc_errmsg() : "");
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("\"%s\": id %d is %d, expected %d", text, i, got[i], want[i]);
}

#define EXPECT(b, text, ...)                                                   \
    do {                                                                       \
        static const int32_t w_[] = {__VA_ARGS__};                             \
        expect_ids(b, text, w_, (int)UC_COUNT(w_));                            \
    } while (0)

static void test_known(void **state)
{
    (void)state;
    NEED_VOCAB();
    assert_int_equal(uc_bpe_vocab_size(clip_bpe), 49408);
    assert_int_equal(uc_bpe_sot(clip_bpe), 49406);
    assert_int_equal(uc_bpe_eot(clip_bpe), 49407);
    EXPECT(clip_bpe, "a photo of a cat", 320, 1125, 539, 320, 2368);
    EXPECT(clip_bpe, "Hello, World!!!", 3306, 267, 1002, 995);
    EXPECT(clip_bpe, "it's", 585, 568);
    EXPECT(clip_bpe, "Tom &amp; Jerry", 2435, 261, 9164);
    EXPECT(clip_bpe, "fish &amp;amp; chips", 2759, 261, 8855);
    EXPECT(clip_bpe, "cafe\xcc\x81 au lait", 15304, 2566, 572, 585); /* NFC: e + U+0301 = é */
    EXPECT(clip_bpe, "\xc2\xbd cup and x\xc2\xb2 and \xe2\x85\xab o'clock", 33613, 1937, 537, 343, 41175, 537, 158,
           227, 375, 334, 262, 6716);
    EXPECT(clip_bpe, "a <|endoftext|> b", 320, 49407, 321);
    EXPECT(clip_bpe, "<|startoftext|>", 49406);
    int32_t none[1];
    assert_int_equal(uc_bpe_encode(clip_bpe, "   ", none, 1), 0);
    assert_int_equal(uc_bpe_encode(clip_bpe, "", none, 1), 0);
    /* the count is the full count even when max is smaller */
    assert_int_equal(uc_bpe_encode(clip_bpe, "a photo of a cat", none, 1), 5);
    assert_int_equal(none[0], 320);
    assert_int_equal(uc_bpe_encode(clip_bpe, "a photo of a cat", NULL, 0), 5);
}

static void test_tokenize(void **state)
{
    (void)state;
    NEED_VOCAB();
    int32_t tok[77];
    uint8_t mask[77];
    assert_int_equal(uc_tokenize(clip_bpe, "a photo of a cat", 77, 0, tok, mask), 0);
    static const int32_t want[] = {49406, 320, 1125, 539, 320, 2368, 49407};
    for (int i = 0; i < 77; i++) {
        assert_int_equal(tok[i], i < 7 ? want[i] : 0);
        assert_int_equal(mask[i], i < 7);
    }
    /* "a " x 100: 102 tokens, truncated to 77 with the last forced to EOT */
    char text[256] = "";
    for (int i = 0; i < 100; i++)
        strcat(text, "a ");
    assert_int_equal(uc_tokenize(clip_bpe, text, 77, 1, tok, mask), 0);
    assert_int_equal(tok[0], 49406);
    for (int i = 1; i < 76; i++)
        assert_int_equal(tok[i], 320);
    assert_int_equal(tok[76], 49407);
    for (int i = 0; i < 77; i++)
        assert_int_equal(mask[i], 1);
    /* 75 words fit exactly */
    text[150] = 0;
    assert_int_equal(uc_tokenize(clip_bpe, text, 77, 0, tok, mask), 0);
    assert_int_equal(tok[75], 320);
    assert_int_equal(tok[76], 49407);
    /* 76 do not: the error says how many tokens were needed */
    strcpy(text + 150, "a");
    assert_int_equal(uc_tokenize(clip_bpe, text, 77, 0, tok, mask), -1);
    assert_non_null(strstr(uc_errmsg(), "too long for context length 77"));
    assert_non_null(strstr(uc_errmsg(), "needs 78 tokens"));
    /* a context of 1 keeps only EOT, as clip.tokenize does */
    assert_int_equal(uc_tokenize(clip_bpe, "cat", 1, 1, tok, mask), 0);
    assert_int_equal(tok[0], 49407);
    assert_int_equal(uc_tokenize(clip_bpe, "cat", 0, 1, tok, mask), -1);
}

/* ---- the cleaning steps through a vocabulary without merges ----------- */

/* With no merges every byte is its own id and each pre-token ends in a
 * '</w>' id: decode to the pre-tokens, each followed by one space. */
static void decode_plain(const int32_t *ids, int n, char *out)
{
    uint8_t byte_of[256];
    int k = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
            byte_of[k++] = (uint8_t)b;
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE))
            byte_of[k++] = (uint8_t)b;
    for (int i = 0; i < n; i++) {
        if (ids[i] >= 512) {
            out += sprintf(out, "%s ", ids[i] == 512 ? "<SOT>" : "<EOT>");
            continue;
        }
        *out++ = (char)byte_of[ids[i] & 255];
        if (ids[i] >= 256)
            *out++ = ' ';
    }
    *out = 0;
}

static void expect_clean(const uc_bpe *b, const char *text, const char *want)
{
    int32_t ids[512];
    char got[1024];
    int n = uc_bpe_encode(b, text, ids, 512);
    if (n < 0 || n > 512)
        fail_msg("\"%s\": %d (%s)", text, n, uc_errmsg());
    decode_plain(ids, n, got);
    if (strcmp(got, want) != 0)
        fail_msg("\"%s\": got \"%s\", expected \"%s\"", text, got, want);
}

static void test_cleaning(void **state)
{
    (void)state;
    static const char header[] = "#version: 0.2\n";
    uc_bpe *b = uc_bpe_load_text(header, strlen(header), -1);
    assert_non_null(b);
    assert_int_equal(uc_bpe_vocab_size(b), 514);
    /* html.unescape twice: named with and without ';', longest legacy prefix,
     * numeric with Python's replacements (NUL, C1, surrogates, too large,
     * dropped controls, CR) */
    expect_clean(b, "Tom &amp; Jerry", "tom & jerry ");
    expect_clean(b, "&amp;amp;lt;", "& lt ; ");
    expect_clean(b, "&notit; &LT3 &ampx &#x41;&#66 &#X1f600;",
                 "\xc2\xac it ; < 3 & x ab \xf0\x9f\x98\x80 ");
    expect_clean(b, "&#0;&#x80;&#xD800;&#129;&#1;&#99999999999;&#13;x",
                 "\xef\xbf\xbd\xe2\x82\xac\xef\xbf\xbd\xc2\x81\xef\xbf\xbd x ");
    expect_clean(b, "&CounterClockwiseContourIntegral; &Unknown;", "\xe2\x88\xb3 & unknown ; ");
    expect_clean(b, "&#; &# &#x; &", "&#; &# &# x ; & ");
    /* str.lower: final sigma, U+0130 -> i + U+0307 (a mark: its own pre-token) */
    expect_clean(b, "\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\xa3 \xce\x91\xce\xa3.",
                 "\xce\xbf\xce\xb4\xce\xbf\xcf\x82 \xcf\x83 \xce\xb1\xcf\x82 . ");
    expect_clean(b, "\xc4\xb0stanbul", "i \xcc\x87 stanbul ");
    /* NFC, with marks reordered by combining class before composing */
    expect_clean(b, "cafe\xcc\x81", "caf\xc3\xa9 ");
    expect_clean(b, "a\xcc\x96\xcc\x81\xcc\x96\xcc\x81", "\xc3\xa1 \xcc\x96\xcc\x96\xcc\x81 ");
    /* \s (White_Space) runs collapse; strip also removes U+001C..U+001F */
    expect_clean(b, "\xe3\x80\x80" "a\xc2\xa0\xe2\x80\x83" "b\x1c c\x1c", "a b \x1c c ");
    /* contractions under IGNORECASE (U+017F matches 's'), special tokens */
    expect_clean(b, "'S '\xc5\xbf x's DON'T <|\xc5\xbftartoftext|> <|endoftext|>",
                 "'s '\xc5\xbf x 's don 't <|\xc5\xbftartoftext|> <EOT> ");
    /* letters run, numbers one at a time, the rest runs */
    expect_clean(b, "\xe2\x85\xab \xc2\xbd x\xc2\xb2 1234 ab!?cd", "\xe2\x85\xbb \xc2\xbd x \xc2\xb2 1 2 3 4 ab !? cd ");
    uc_bpe_free(b);
}

/* ---- merge order -------------------------------------------------------- */

static void test_load_text(void **state)
{
    (void)state;
    /* ids: a = 64, b = 65, c = 66, +256 with '</w>'; merges from 512 */
    static const char m[] = "#version: 0.2\na b\nab c</w>\na a\naa a</w>\n";
    uc_bpe *b = uc_bpe_load_text(m, strlen(m), -1);
    assert_non_null(b);
    assert_int_equal(uc_bpe_vocab_size(b), 512 + 4 + 2);
    assert_int_equal(uc_bpe_sot(b), 516);
    assert_int_equal(uc_bpe_eot(b), 517);
    EXPECT(b, "abc", 513);          /* a b c</w> -> ab c</w> -> abc</w> */
    EXPECT(b, "ab", 64, 65 + 256);  /* (a, b</w>) is no merge */
    EXPECT(b, "c", 66 + 256);
    /* (a, a) merges left to right without overlap: aa aa a</w>, then aa aaa</w> */
    EXPECT(b, "aaaaa", 514, 515);
    EXPECT(b, "aaaa", 514, 64, 64 + 256);
    EXPECT(b, "<|startoftext|>x", 516, 87 + 256);
    uc_bpe_free(b);

    /* nmerges keeps the first lines only */
    b = uc_bpe_load_text(m, strlen(m), 1);
    assert_non_null(b);
    assert_int_equal(uc_bpe_vocab_size(b), 515);
    EXPECT(b, "abc", 512, 66 + 256);
    uc_bpe_free(b);

    /* a later duplicate takes over (Python's dicts): the pair "b c" ranks 2,
     * after "a b", and the string "bc" is id 514, not 512 */
    static const char dup[] = "#h\nb c\na b\nb c\n";
    b = uc_bpe_load_text(dup, strlen(dup), -1);
    assert_non_null(b);
    EXPECT(b, "abcd", 513, 66, 67 + 256);
    EXPECT(b, "bcd", 514, 67 + 256);
    uc_bpe_free(b);

    /* a long word: the heap-based merge is not quadratic */
    size_t n = (1u << 20) + 1; /* a x n: aa x n/2 and a</w>, then aa aaa</w> */
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    big[n] = 0;
    b = uc_bpe_load_text(m, strlen(m), -1);
    double t0 = uc_now();
    assert_int_equal(uc_bpe_encode(b, big, NULL, 0), (int)(n / 2));
    assert_true(uc_now() - t0 < 5.0);
    free(big);
    uc_bpe_free(b);
}

/* ---- refusals ------------------------------------------------------------ */

static void test_bad_input(void **state)
{
    (void)state;
    static const char m[] = "#version: 0.2\na b\n";
    uc_bpe *b = uc_bpe_load_text(m, strlen(m), -1);
    assert_non_null(b);
    int32_t ids[8];
    static const char *bad[] = {"\xff", "abc\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "a\x80"};
    for (size_t i = 0; i < UC_COUNT(bad); i++) {
        assert_int_equal(uc_bpe_encode(b, bad[i], ids, 8), -1);
        assert_non_null(strstr(uc_errmsg(), "invalid UTF-8"));
    }
    assert_int_equal(uc_bpe_encode(b, NULL, ids, 8), -1);
    int32_t tok[8];
    assert_int_equal(uc_tokenize(b, "\xff", 8, 1, tok, NULL), -1);
    /* a decimal reference longer than Python's int() accepts */
    char *longref = malloc(4400);
    strcpy(longref, "&#");
    memset(longref + 2, '1', 4301);
    strcpy(longref + 4303, ";");
    assert_int_equal(uc_bpe_encode(b, longref, ids, 8), -1);
    longref[4302] = ';';
    longref[4303] = 0; /* 4300 digits: fine (too large -> U+FFFD) */
    assert_int_equal(uc_bpe_encode(b, longref, ids, 8), 3); /* U+FFFD: 3 bytes, no merges */
    free(longref);
    uc_bpe_free(b);

    /* merge lists */
    assert_null(uc_bpe_load_gz("/nonexistent/bpe_simple_vocab_16e6.txt.gz"));
    assert_non_null(strstr(uc_errmsg(), "/nonexistent/"));
    assert_null(uc_bpe_load_gz(NULL));
    assert_null(uc_bpe_load_text(NULL, 0, -1));
    static const char *lists[] = {
        "no header line",
        "#h\na b c\n",     /* three symbols */
        "#h\nab\n",        /* one */
        "#h\na  b\n",      /* two spaces */
        "#h\na b\n\nc d\n", /* empty line */
        "#h\n\xff b\n",    /* bad UTF-8 */
    };
    for (size_t i = 0; i < UC_COUNT(lists); i++)
        if (uc_bpe_load_text(lists[i], strlen(lists[i]), -1))
            fail_msg("merge list %zu accepted", i);
    assert_null(uc_bpe_load_text(m, strlen(m), 2)); /* asks for more lines than there are */
    assert_non_null(strstr(uc_errmsg(), "1 lines after the header, 2 needed"));
    assert_null(uc_bpe_load_text(m, strlen(m), 1 << 30));
    /* a line longer than the bound */
    char *line = malloc(3000);
    strcpy(line, "#h\n");
    memset(line + 3, 'x', 2000);
    strcpy(line + 2003, " y\n");
    assert_null(uc_bpe_load_text(line, strlen(line), -1));
    free(line);
    /* a file that is not gzip is read as it is; too short a list is refused */
    char path[] = "/tmp/test_bpe_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(m, f);
    fclose(f);
    assert_null(uc_bpe_load_gz(path));
    assert_non_null(strstr(uc_errmsg(), "48894 needed"));
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known),     cmocka_unit_test(test_tokenize), cmocka_unit_test(test_cleaning),
        cmocka_unit_test(test_load_text), cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
