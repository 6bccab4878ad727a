/* gc_tokenizer.c - golden handler for clip/tokenizer: clip.tokenize of every
 * string in case.json with OpenAI's merge list, compared exactly with the
 * io tensor `tokens` [N, context_length], and the truncate=False outcome
 * compared with `tokenize_truncate_false_raises`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "libcommon/text/bpe.h"
#include "formats/base.h"
#include "gc.h"

/* A string of the case as UTF-8: from `text_codepoints` when given (exact
 * even for text JSON cannot carry), else `text`. NULL when malformed. */
static char *case_text(const cJSON *s)
{
    const cJSON *cps = cJSON_GetObjectItemCaseSensitive(s, "text_codepoints");
    if (cJSON_IsArray(cps)) {
        int n = cJSON_GetArraySize(cps);
        char *t = uc_alloc((size_t)n * 4 + 1, 1), *o = t;
        for (const cJSON *c = cps->child; c; c = c->next) {
            /* "U+00E9" (or a plain number) */
            double v = -1;
            char *e = NULL;
            if (cJSON_IsNumber(c))
                v = c->valuedouble;
            else if (cJSON_IsString(c) && strncmp(c->valuestring, "U+", 2) == 0 && c->valuestring[2])
                v = (double)strtoul(c->valuestring + 2, &e, 16);
            if ((e && *e) || v < 1 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
                uc_free(t);
                return NULL;
            }
            o += utf8proc_encode_char((utf8proc_int32_t)v, (utf8proc_uint8_t *)o);
        }
        *o = 0;
        return t;
    }
    const char *text = gc_str(s, "text", NULL);
    return text ? uc_strdup(text) : NULL;
}

int gc_clip_tokenizer(gc_case *c)
{
    struct stat sb;
    if (!c->vocab || stat(c->vocab, &sb) != 0)
        return gc_fail(c, "vocabulary not found at %s (set UNCLIP_VOCAB)", c->vocab ? c->vocab : "(no path)");
    uc_bpe *b = uc_bpe_load_gz(c->vocab);
    if (!b)
        return gc_fail(c, "%s", uc_errmsg());
    int ctx = (int)gc_num(c->config, "context_length", 77);
    int vocab = (int)gc_num(c->config, "vocab_size", uc_bpe_vocab_size(b));
    int sot = (int)gc_num(c->config, "sot_token", uc_bpe_sot(b));
    int eot = (int)gc_num(c->config, "eot_token", uc_bpe_eot(b));
    const cJSON *strs = gc_get(c->json, "strings");
    int n = cJSON_GetArraySize(strs), rc = 0;
    if (vocab != uc_bpe_vocab_size(b) || sot != uc_bpe_sot(b) || eot != uc_bpe_eot(b)) {
        gc_fail(c, "config vocab_size %d sot %d eot %d, the merge list gives %d %d %d", vocab, sot, eot,
                uc_bpe_vocab_size(b), uc_bpe_sot(b), uc_bpe_eot(b));
        uc_bpe_free(b);
        return -1;
    }
    if (!cJSON_IsArray(strs) || n < 1 || ctx < 2 || ctx > 4096) {
        uc_bpe_free(b);
        return gc_fail(c, "case.json: need a strings array and context_length in [2, 4096]");
    }
    int64_t *got = uc_alloc((size_t)n * (size_t)ctx, sizeof *got);
    int32_t *tok = uc_alloc((size_t)ctx, sizeof *tok), *tok2 = uc_alloc((size_t)ctx, sizeof *tok2);
    uint8_t *mask = uc_alloc((size_t)ctx, 1);
    int i = 0;
    for (const cJSON *s = strs->child; s && rc == 0; s = s->next, i++) {
        char *text = case_text(s);
        if (!text) {
            rc = gc_fail(c, "strings[%d]: no text", i);
            break;
        }
        if (uc_tokenize(b, text, ctx, 1, tok, mask)) {
            rc = gc_fail(c, "strings[%d]: %s", i, uc_errmsg());
        } else {
            int used = ctx - 1; /* SOT .. the last EOT (text may hold EOTs too) */
            while (used > 0 && tok[used] != eot)
                used--;
            for (int j = 0; j < ctx && rc == 0; j++) {
                got[(size_t)i * (size_t)ctx + (size_t)j] = tok[j];
                if (mask[j] != (j <= used))
                    rc = gc_fail(c, "strings[%d]: mask[%d] = %d with EOT at %d", i, j, mask[j], used);
            }
            const cJSON *raises = cJSON_GetObjectItemCaseSensitive(s, "tokenize_truncate_false_raises");
            int want_err = raises && !cJSON_IsNull(raises);
            int r2 = uc_tokenize(b, text, ctx, 0, tok2, NULL);
            if (rc == 0 && want_err && r2 == 0)
                rc = gc_fail(c, "strings[%d]: truncate=0 accepted a text that clip.tokenize refuses", i);
            else if (rc == 0 && !want_err && r2 != 0)
                rc = gc_fail(c, "strings[%d]: truncate=0 refused: %s", i, uc_errmsg());
            else if (rc == 0 && !want_err && memcmp(tok, tok2, (size_t)ctx * sizeof *tok) != 0)
                rc = gc_fail(c, "strings[%d]: truncate=0 gave other tokens", i);
            else if (rc == 0 && want_err && !strstr(uc_errmsg(), "too long for context length"))
                rc = gc_fail(c, "strings[%d]: truncate=0 error does not say it is too long: %s", i,
                             uc_errmsg());
        }
        uc_free(text);
    }
    if (rc == 0)
        rc = gc_check_i64(c, "tokens", got, (int64_t)n * ctx);
    uc_free(got);
    uc_free(tok);
    uc_free(tok2);
    uc_free(mask);
    uc_bpe_free(b);
    return rc;
}
