#define _GNU_SOURCE /* memfd_create */
/* fuzz_config - model-file metadata and stage configs: the stage's open
 * function (CLIP, prior, decoder, sr; all four when the metadata names no
 * known stage) on a hostile model file, and the diffusion settings of the
 * ones that load.
 *
 * Input: the safetensors header JSON, then optionally a NUL byte and data
 * bytes. The harness frames it as a model file (u64 header length, header,
 * data) and extends the data with zeros up to the largest end offset the
 * header names (up to 64 MiB), so mutations of the JSON (the metadata's
 * unclip.stage and unclip.config, tensor names and shapes) stay well-formed
 * files and the corpus holds headers only. Offsets and lengths themselves
 * are fuzz_safetensors's business. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libcommon/models/clip.h"
#include "libcommon/models/decoder.h"
#include "libcommon/sample/diffusion.h"
#include "libcommon/models/prior.h"
#include "libcommon/models/sr.h"

#define PAD_MAX ((size_t)64 << 20)

/* The largest data_offsets end in the header (or 0), and which stage its
 * metadata names: 0 clip, 1 prior, 2 decoder, 3 sr, -1 none of them. */
static size_t scan_header(const char *json, size_t len, int *stage)
{
    static const char *stages[] = {"clip", "prior", "decoder", "sr"};
    cJSON *root = cJSON_ParseWithLength(json, len);
    size_t need = 0;
    *stage = -1;
    for (cJSON *it = root ? root->child : NULL; it; it = it->next) {
        cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        cJSON *end = cJSON_IsArray(off) ? cJSON_GetArrayItem(off, 1) : NULL;
        if (cJSON_IsNumber(end) && end->valuedouble > (double)need && end->valuedouble <= (double)PAD_MAX)
            need = (size_t)end->valuedouble;
        cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "unclip.stage");
        for (int i = 0; cJSON_IsString(st) && i < 4; i++)
            if (strcmp(st->valuestring, stages[i]) == 0)
                *stage = i;
    }
    cJSON_Delete(root);
    return need;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t hlen = nul ? (size_t)(nul - data) : size;
    const uint8_t *body = nul ? nul + 1 : data + size;
    size_t blen = (size_t)(data + size - body);
    int stage;
    size_t need = scan_header((const char *)data, hlen, &stage);

    int fd = memfd_create("fuzz-model", 0);
    if (fd < 0)
        return 0;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int ok = write(fd, len8, 8) == 8 && write(fd, data, hlen) == (ssize_t)hlen &&
             (blen == 0 || write(fd, body, blen) == (ssize_t)blen) &&
             (blen >= need || ftruncate(fd, (off_t)(8 + hlen + need)) == 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    /* the opener of the stage the file names, or all four (each refuses
     * the others' files) */
    if (ok && (stage < 0 || stage == 0))
        clip_free(clip_open(path));
    uc_prior *p = ok && (stage < 0 || stage == 1) ? uc_prior_open(path) : NULL;
    if (p) { /* every respacing through the prior's own schedule cache */
        static const char *respacings[] = {NULL, "", "5", "ddim3", "fast27", "2,1", "5"};
        for (size_t i = 0; i < sizeof respacings / sizeof *respacings; i++)
            uc_prior_schedule(p, respacings[i], NULL);
        uc_prior_free(p);
    }
    /* the decoder's and sr's schedules, built through their handles */
    static const char *respacings[] = {NULL, "", "5", "ddim3", "fast27", "2,1"};
    uc_decoder *d = ok && (stage < 0 || stage == 2) ? uc_decoder_open(path) : NULL;
    for (size_t i = 0; d && i < sizeof respacings / sizeof *respacings; i++)
        uc_decoder_steps(d, respacings[i]);
    uc_decoder_free(d);
    uc_sr *s = ok && (stage < 0 || stage == 3) ? uc_sr_open(path) : NULL;
    for (size_t i = 0; s && i < sizeof respacings / sizeof *respacings; i++)
        uc_sr_steps(s, respacings[i]);
    uc_sr_free(s);
    close(fd);
    return 0;
}
