/* fuzz_tokenizer - the CLIP BPE tokenizer on hostile text and merge lists.
 *
 * Input: one selector byte, then the rest.
 *   even selector: the rest is a prompt, encoded with OpenAI's vocabulary
 *                  (uc_bpe_default_path; a small built-in merge list when it
 *                  is absent) by uc_bpe_encode and by uc_tokenize with and
 *                  without truncation.
 *   odd selector:  the rest is "MERGES\0TEXT": a merge list as a model file
 *                  carries it (unclip.tokenizer.merges), loaded with
 *                  uc_bpe_load_text, then used on TEXT.
 * Every id must be below the vocabulary size and the mask must cover
 * exactly SOT..EOT. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "libcommon/text/bpe.h"
#include "formats/base.h"

#define CTX 77

static const char builtin_merges[] = "#version: 0.2\n"
                                     "t h\ni n\nth e</w>\na n\nr e\nc u\ncu b\ncub e</w>\no n</w>\n"
                                     "r ed</w>\ne d</w>\nb l\nbl u\nblu e</w>\ng r\ngr e\ngre en</w>\n";

static uc_bpe *standard;

static void check(const uc_bpe *b, const char *text)
{
    int n = uc_bpe_encode(b, text, NULL, 0);
    if (n < 0)
        return;
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (uc_bpe_encode(b, text, ids, n) != n)
        abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= uc_bpe_vocab_size(b))
            abort();
    free(ids);
    int32_t tok[CTX];
    uint8_t mask[CTX];
    for (int truncate = 0; truncate < 2; truncate++) {
        if (uc_tokenize(b, text, CTX, truncate, tok, mask))
            continue;
        int len = 0;
        while (len < CTX && mask[len])
            len++;
        if (len < 2 || tok[0] != uc_bpe_sot(b) || tok[len - 1] != uc_bpe_eot(b))
            abort();
        for (int i = len; i < CTX; i++)
            if (mask[i] || tok[i])
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!standard) {
        const char *path = uc_bpe_default_path();
        standard = path ? uc_bpe_load_gz(path) : NULL;
        if (!standard)
            standard = uc_bpe_load_text(builtin_merges, sizeof builtin_merges - 1, -1);
        if (!standard)
            abort();
    }
    char *buf = malloc(size);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0; /* the text ends at the first NUL, as a C string does */
    if ((data[0] & 1) == 0) {
        check(standard, buf);
    } else {
        size_t mlen = strlen(buf);
        uc_bpe *b = uc_bpe_load_text(buf, mlen, (data[0] & 2) ? -1 : 4);
        if (b) {
            check(b, mlen < size - 1 ? buf + mlen + 1 : "a red cube");
            uc_bpe_free(b);
        }
    }
    free(buf);
    return 0;
}
