/* gc_clip.c - golden handlers (stubs until this family lands). */
#include "gc.h"

int gc_clip_text(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_clip_image(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_clip_logits(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_clip_preprocess(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_karlo_clip_text(gc_case *c) { return gc_fail(c, "not implemented yet"); }
int gc_layout_hf_clip(gc_case *c) { return gc_fail(c, "not implemented yet"); }
