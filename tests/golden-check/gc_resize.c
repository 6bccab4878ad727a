/* gc_resize.c - golden handler for Karlo's pre-SR resize (karlo/sr-resize):
 * io `image` [..., H, W] resized to `resized` [..., oh, ow] with
 * uc_resize_aa. The target size is config.high: one number (a square, as
 * torchvision's resize with [high, high]) or a pair [oh, ow]. */
#include <cjson/cJSON.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/image/resize.h"
#include "gc.h"

int gc_sr_resize(gc_case *c)
{
    const char *interp = gc_str(c->config, "interpolation", "bicubic");
    if (strcmp(interp, "bicubic") != 0 || !gc_num(c->config, "antialias", 1))
        return gc_fail(c, "config: only bicubic with antialias is implemented (got %s)", interp);
    int64_t oh, ow;
    const cJSON *high = gc_get(c->config, "high");
    if (cJSON_IsNumber(high)) {
        oh = ow = (int64_t)high->valuedouble;
    } else if (cJSON_IsArray(high) && cJSON_GetArraySize(high) == 2 &&
               cJSON_IsNumber(cJSON_GetArrayItem(high, 0)) && cJSON_IsNumber(cJSON_GetArrayItem(high, 1))) {
        oh = (int64_t)cJSON_GetArrayItem(high, 0)->valuedouble;
        ow = (int64_t)cJSON_GetArrayItem(high, 1)->valuedouble;
    } else {
        return gc_fail(c, "config.high: expected a size or [height, width]");
    }
    if (oh < 1 || ow < 1 || oh > 1 << 14 || ow > 1 << 14)
        return gc_fail(c, "config.high: size %lldx%lld out of range", (long long)oh, (long long)ow);

    uc_tensor t;
    float *x = gc_f32(c, "image", &t);
    if (!x)
        return -1;
    if (t.ndim < 2) {
        uc_free(x);
        return gc_fail(c, "image: rank %d, expected [..., H, W]", t.ndim);
    }
    int64_t H = t.shape[t.ndim - 2], W = t.shape[t.ndim - 1], planes = 1;
    for (int i = 0; i < t.ndim - 2; i++)
        planes *= t.shape[i];
    if (H < 1 || W < 1) {
        uc_free(x);
        return gc_fail(c, "image: empty plane");
    }
    float *y = uc_alloc((size_t)(planes * oh * ow), sizeof *y);
    uc_resize_aa(x, planes, H, W, y, oh, ow);
    int rc = gc_check(c, "resized", y, planes * oh * ow);
    uc_free(x);
    uc_free(y);
    return rc;
}
